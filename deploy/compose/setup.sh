#!/bin/sh
# One-shot `setup` service of docker-compose.yml, run in the k3s image (it has kubectl):
# waits for k3s, writes a kubeconfig for the other containers (server https://k3s:6443),
# installs the CRDs (crds/, the files `autoscale crds` prints) and the sample worker with
# its ScaledObject.
set -eu

until [ -s /output/kubeconfig.yaml ]; do
  echo "setup: waiting for k3s to write its kubeconfig"
  sleep 2
done
cp /output/kubeconfig.yaml /shared/kubeconfig
kubectl config set-cluster default --server=https://k3s:6443 --kubeconfig=/shared/kubeconfig
chmod 0644 /shared/kubeconfig
export KUBECONFIG=/shared/kubeconfig

until kubectl get --raw=/readyz >/dev/null 2>&1; do
  echo "setup: waiting for the API server"
  sleep 2
done
kubectl apply --server-side --field-manager=autoscale-compose -f /crds/
for crd in scaledobjects triggerauthentications clustertriggerauthentications; do
  kubectl wait --for=condition=Established "crd/$crd.autoscale.dev" --timeout=60s
done
kubectl apply --server-side --field-manager=autoscale-compose -f /compose/worker.yaml
echo "setup: done; watch with: docker compose exec k3s kubectl get deployment worker -w"
