"""deploy/ on the bench's real kube-apiserver: every manifest passes server-side dry run, and the
operator's RBAC grants what it needs and refuses what it does not.

- `kubectl kustomize` renders deploy/base and each overlay; CRDs and Namespaces are applied for
  real (what depends on them cannot be dry-run otherwise), everything else with
  `--dry-run=server`, which runs admission: the restricted Pod Security level warns about the
  operator's pod template if it falls short of it.
- The bench's helm (`helm template`) renders deploy/helm/autoscale with default and
  non-default values; both pass the same dry run, the default render names the same objects with
  the same RBAC and pod security as deploy/base, and bad values are refused by the schema.
- RBAC is applied for real and checked with `kubectl auth can-i --as=system:serviceaccount:...`:
  for deploy/base (whose ServiceAccount the e2e suite's operator runs as), for the
  secret-namespaces component, and for the chart's namespaced mode.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscale import crd_manifests
from tests.conftest import IN_CI
from tests.e2e.conftest import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT
from tests.e2e.harness import REPO, Operator, wait_for
from tests.testbed import versions
from tests.testbed.cache import is_stamped
from tests.testbed.install import paths
from tests.testbed.kube import KubeAPIServer

pytestmark = pytest.mark.testbed

DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "autoscale"
SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
RBAC_KINDS = {
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
}

# A minimal ServiceMonitor CRD (the Prometheus Operator's kind, schema left open), so the
# ServiceMonitors of the component and the chart can be dry-run like everything else.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


# --- helpers -------------------------------------------------------------------------------------


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def dump(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def apply(kube: KubeAPIServer, objects: list[dict[str, Any]], *, dry_run: bool = False) -> str:
    """Server-side apply; returns kubectl's stderr (warnings). Dry run goes through admission."""
    if not objects:
        return ""
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=autoscale-tests"]
    if dry_run:
        args.append("--dry-run=server")
    result = kube.kubectl(*args, "-f", "-", input=dump(objects), check=False)
    assert result.returncode == 0, f"kubectl apply failed:\n{result.stderr}"
    return result.stderr


def ensure_namespaces(kube: KubeAPIServer, names: set[str]) -> None:
    for name in sorted(names):
        if kube.kubectl("get", "namespace", name, check=False).returncode:
            kube.kubectl("create", "namespace", name)


def dry_run_everything(kube: KubeAPIServer, objects: list[dict[str, Any]]) -> None:
    """CRDs and Namespaces for real (and established), the rest with --dry-run=server; no
    admission warning allowed (Pod Security "restricted" warns through the namespace label)."""
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    rest = [o for o in objects if o["kind"] not in {"CustomResourceDefinition", "Namespace"}]
    apply(kube, crds)
    for crd in crds:
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}")
    apply(kube, namespaces)
    used = {o["metadata"]["namespace"] for o in rest if "namespace" in o["metadata"]}
    ensure_namespaces(kube, used)
    for name in used:  # Pod Security admission warns about pod templates below "restricted"
        kube.kubectl(
            "label", "namespace", name, "pod-security.kubernetes.io/warn=restricted", "--overwrite"
        )
    warnings = apply(kube, rest, dry_run=True)
    assert "Warning" not in warnings, warnings


def kustomize(kube: KubeAPIServer, directory: Path) -> list[dict[str, Any]]:
    return documents(kube.kubectl("kustomize", str(directory)).stdout)


def can_i(
    kube: KubeAPIServer,
    verb: str,
    resource: str,
    *,
    namespace: str | None = None,
    subresource: str | None = None,
    name: str | None = None,
    user: str = SA,
) -> bool:
    args = ["auth", "can-i", verb, f"{resource}/{name}" if name else resource, f"--as={user}"]
    args.append(f"--namespace={namespace}" if namespace else "--all-namespaces")
    if subresource:
        args.append(f"--subresource={subresource}")
    result = kube.kubectl(*args, check=False)
    answer = result.stdout.strip()
    assert answer in {"yes", "no"}, f"kubectl {' '.join(args)}: {result.stdout}{result.stderr}"
    return answer == "yes"


def assert_rbac(kube: KubeAPIServer, checks: list[tuple[bool, dict[str, Any]]], user: str) -> None:
    """Every (expected, can_i kwargs) holds; the failures are listed together."""
    wrong = []
    for expected, check in checks:
        if can_i(kube, user=user, **check) != expected:
            wrong.append(f"{'should' if expected else 'must not'} be allowed: {check}")
    assert not wrong, "\n".join(wrong)


@pytest.fixture(scope="module")
def helm() -> Path:
    binary = paths().helm
    if not is_stamped(binary.parent):
        message = f"helm v{versions.HELM} is not built; run `python -m tests.testbed install helm`"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(f"TEST BENCH NOT INSTALLED: {message}")
    return binary


def helm_template(
    helm: Path,
    tmp_path: Path,
    values: dict[str, Any] | None = None,
    *,
    release: str = "autoscale",
    namespace: str = OPERATOR_NAMESPACE,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    values_file = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    values_file.write_text(yaml.safe_dump(values or {}))
    result = subprocess.run(
        [
            str(helm),
            "template",
            release,
            str(CHART),
            f"--namespace={namespace}",
            f"--kube-version={versions.KUBERNETES}",
            f"--values={values_file}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HELM_CACHE_HOME": str(tmp_path / "helm-cache")},
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def service_monitor_crd(kube: KubeAPIServer) -> None:
    apply(kube, [SERVICE_MONITOR_CRD])
    kube.kubectl("wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com")


@pytest.fixture
def cluster_objects(kube: KubeAPIServer) -> Iterator[list[dict[str, Any]]]:
    """Cluster-scoped RBAC objects a test creates for real, deleted after it."""
    created: list[dict[str, Any]] = []
    yield created
    for obj in created:
        kube.kubectl(
            "delete",
            obj["kind"].lower(),
            obj["metadata"]["name"],
            "--ignore-not-found",
            check=False,
        )


def apply_rbac(
    kube: KubeAPIServer, objects: list[dict[str, Any]], cluster_objects: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Really apply the Namespaces, ServiceAccounts and RBAC among `objects`."""
    rbac = [o for o in objects if o["kind"] in RBAC_KINDS]
    namespaces = {o["metadata"]["namespace"] for o in rbac if "namespace" in o["metadata"]}
    ensure_namespaces(
        kube, namespaces - {o["metadata"]["name"] for o in rbac if o["kind"] == "Namespace"}
    )
    apply(kube, [o for o in rbac if o["kind"] == "Namespace"])
    apply(kube, [o for o in rbac if o["kind"] != "Namespace"])
    cluster_objects.extend(o for o in rbac if o["kind"] in {"ClusterRole", "ClusterRoleBinding"})
    return rbac


# --- the copies of crds/ -------------------------------------------------------------------------


@pytest.mark.parametrize("copy", [DEPLOY / "base" / "crds", CHART / "files" / "crds"], ids=str)
def test_the_crd_copies_are_byte_for_byte_those_of_crds(copy: Path) -> None:
    """kustomize and helm cannot read ../../crds: their copies must never drift from it."""
    originals = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    copies = {p.name: p.read_bytes() for p in copy.glob("*.yaml")}
    assert set(copies) == set(originals) == set(crd_manifests.CRD_FILES)
    for name, text in originals.items():
        assert copies[name] == text, f"{copy / name} differs from crds/{name}: copy it again"


# --- kustomize -----------------------------------------------------------------------------------


def test_the_base_holds_every_object_the_operator_needs(kube: KubeAPIServer) -> None:
    objects = kustomize(kube, DEPLOY / "base")
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["Namespace", "ServiceAccount", "Deployment", "PodDisruptionBudget", "Service"]
        + ["CustomResourceDefinition"] * 3
        + ["ClusterRole"] * 2
        + ["ClusterRoleBinding"] * 2
        + ["Role", "RoleBinding"]
    )
    by_kind = {o["kind"]: o for o in objects}
    crds = {o["metadata"]["name"]: o for o in objects if o["kind"] == "CustomResourceDefinition"}
    for crd in crd_manifests.load_crds():
        assert crds[crd["metadata"]["name"]]["spec"] == crd["spec"]
    deployment = by_kind["Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert container["args"][:2] == ["run", "--leader-elect"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert_restricted(spec)
    assert by_kind["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    service = by_kind["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert spec["serviceAccountName"] == by_kind["ServiceAccount"]["metadata"]["name"]


def assert_restricted(spec: dict[str, Any]) -> None:
    """The pod security the issue asks for, field by field."""
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]], "/tmp must be a writable emptyDir"


@pytest.mark.parametrize(
    "directory",
    ["base", "overlays/restricted-secrets", "overlays/monitoring"],
)
def test_kustomizations_pass_server_side_dry_run(
    kube: KubeAPIServer, service_monitor_crd: None, directory: str
) -> None:
    objects = kustomize(kube, DEPLOY / directory)
    dry_run_everything(kube, objects)


def test_the_monitoring_overlay_adds_a_service_monitor_for_the_metrics_service(
    kube: KubeAPIServer,
) -> None:
    objects = kustomize(kube, DEPLOY / "overlays" / "monitoring")
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    (service,) = [o for o in objects if o["kind"] == "Service"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]


def test_the_restricted_secrets_overlay_has_no_cluster_wide_secret_binding(
    kube: KubeAPIServer,
) -> None:
    objects = kustomize(kube, DEPLOY / "overlays" / "restricted-secrets")
    secret_bindings = [
        o
        for o in objects
        if o["kind"] in {"ClusterRoleBinding", "RoleBinding"}
        and o["roleRef"]["name"] == "autoscale-operator-secrets"
    ]
    assert sorted((o["kind"], o["metadata"]["namespace"]) for o in secret_bindings) == [
        ("RoleBinding", "autoscale-system"),
        ("RoleBinding", "team-a"),
    ]


def test_an_overlay_moving_the_operator_to_another_namespace_moves_every_reference(
    kube: KubeAPIServer, tmp_path: Path
) -> None:
    """`namespace:` in a user's overlay reaches the bindings' subjects too."""
    shutil_copy_deploy(tmp_path)
    overlay = tmp_path / "mine"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "namespace: platform-autoscale\nresources:\n  - ../deploy/base\n"
    )
    objects = kustomize(kube, overlay)
    for obj in objects:
        if "namespace" in obj["metadata"]:
            assert obj["metadata"]["namespace"] == "platform-autoscale", key(obj)
        for subject in obj.get("subjects", []):
            assert subject["namespace"] == "platform-autoscale", key(obj)
    (namespace,) = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == "platform-autoscale"


def shutil_copy_deploy(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("helm"))


# --- helm ----------------------------------------------------------------------------------------

NON_DEFAULT_VALUES: dict[str, Any] = {
    "image": {
        "repository": "registry.example/autoscale",
        "digest": "sha256:" + "ab" * 32,
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "registry"}],
    "replicas": 3,
    "leaderElection": {"leaseName": "my-lease", "leaseDuration": 20, "renewDeadline": 15},
    "watchNamespaces": ["team-a", "team-b"],
    "logFormat": "text",
    "logLevel": "debug",
    "pollTimeout": 5,
    "crds": {"install": False},
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
    "rbac": {
        "secretNamespaces": ["team-a"],
        "scaleTargets": [{"apiGroups": ["apps"], "resources": ["deployments/scale"]}],
    },
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    # Helm merges maps with the defaults: null drops the default CPU limit.
    "resources": {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"cpu": None, "memory": "256Mi"},
    },
    "podDisruptionBudget": {"minAvailable": 2},
    "extraEnv": [{"name": "AWS_REGION", "value": "eu-west-1"}],
    "extraArgs": ["--retry-period=1"],
    "podAnnotations": {"example.com/team": "platform"},
    "podLabels": {"team": "platform"},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                        ]
                    }
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
}


def test_helm_lint_passes_strictly(helm: Path) -> None:
    result = subprocess.run(
        [str(helm), "lint", "--strict", str(CHART), f"--kube-version={versions.KUBERNETES}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", [{}, NON_DEFAULT_VALUES], ids=["defaults", "non-default"])
def test_the_rendered_chart_passes_server_side_dry_run(
    kube: KubeAPIServer,
    helm: Path,
    service_monitor_crd: None,
    tmp_path: Path,
    values: dict[str, Any],
) -> None:
    objects = documents(helm_template(helm, tmp_path, values).stdout)
    assert objects
    dry_run_everything(kube, objects)


def test_non_default_values_reach_the_objects(helm: Path, tmp_path: Path) -> None:
    objects = documents(helm_template(helm, tmp_path, NON_DEFAULT_VALUES).stdout)
    by_key = {key(o): o for o in objects}
    kinds = {o["kind"] for o in objects}
    assert "CustomResourceDefinition" not in kinds  # crds.install: false
    deployment = by_key[("Deployment", OPERATOR_NAMESPACE, "autoscale-operator")]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"] == "registry.example/autoscale@sha256:" + "ab" * 32
    assert container["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert deployment["spec"]["replicas"] == 3
    assert container["args"] == [
        "run",
        "--leader-elect=true",
        "--lease-name=my-lease",
        "--lease-duration=20",
        "--renew-deadline=15",
        "--retry-period=2",
        "--namespace=team-a",
        "--namespace=team-b",
        "--metrics-port=8080",
        "--health-port=8081",
        "--poll-timeout=5",
        "--log-format=text",
        "--log-level=debug",
        "--retry-period=1",
    ]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {"example.com/team": "platform"}
    assert template["metadata"]["labels"]["team"] == "platform"
    for field in ("nodeSelector", "tolerations", "affinity", "priorityClassName"):
        assert spec[field] == NON_DEFAULT_VALUES[field]
    assert_restricted(spec)
    monitor = by_key[("ServiceMonitor", OPERATOR_NAMESPACE, "autoscale-operator")]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    sa = by_key[("ServiceAccount", OPERATOR_NAMESPACE, "autoscale-operator")]
    assert sa["metadata"]["annotations"] == NON_DEFAULT_VALUES["serviceAccount"]["annotations"]
    pdb = by_key[("PodDisruptionBudget", OPERATOR_NAMESPACE, "autoscale-operator")]
    assert pdb["spec"]["minAvailable"] == 2
    # Namespaced RBAC: RoleBindings in the watched namespaces and the release's, no cluster-wide
    # binding of the namespaced rules; Secrets only in team-a and the release's namespace.
    bindings = sorted(
        (o["kind"], o["metadata"].get("namespace", ""), o["roleRef"]["name"])
        for o in objects
        if o["kind"] in {"RoleBinding", "ClusterRoleBinding"}
    )
    assert bindings == [
        ("ClusterRoleBinding", "", "autoscale-operator-clustertriggerauthentications"),
        ("RoleBinding", "autoscale-system", "autoscale-operator"),
        ("RoleBinding", "autoscale-system", "autoscale-operator-leader-election"),
        ("RoleBinding", "autoscale-system", "autoscale-operator-secrets"),
        ("RoleBinding", "team-a", "autoscale-operator"),
        ("RoleBinding", "team-a", "autoscale-operator-secrets"),
        ("RoleBinding", "team-b", "autoscale-operator"),
    ]
    role = by_key[("Role", OPERATOR_NAMESPACE, "autoscale-operator-leader-election")]
    assert role["rules"][1]["resourceNames"] == ["my-lease"]


def test_the_default_chart_renders_the_objects_of_the_kustomize_base(
    kube: KubeAPIServer, helm: Path, tmp_path: Path
) -> None:
    """Same objects (kind, namespace, name), same RBAC rules and bindings, same CRDs, and the
    same pod: security, probes, ports, resources, volumes, env."""
    chart = documents(helm_template(helm, tmp_path).stdout)
    base = kustomize(kube, DEPLOY / "base")
    assert sorted(map(key, chart)) == sorted(
        k
        for k in map(key, base)
        if k[0] != "Namespace"  # helm installs into a namespace
    )
    chart_by, base_by = {key(o): o for o in chart}, {key(o): o for o in base}
    for k, obj in base_by.items():
        if obj["kind"] in {"ClusterRole", "Role"}:
            assert chart_by[k]["rules"] == obj["rules"], k
        if obj["kind"] in {"ClusterRoleBinding", "RoleBinding"}:
            assert chart_by[k]["roleRef"] == obj["roleRef"], k
            assert chart_by[k]["subjects"] == obj["subjects"], k
        if obj["kind"] == "CustomResourceDefinition":
            assert chart_by[k]["spec"] == obj["spec"], k
            assert chart_by[k]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        if obj["kind"] == "PodDisruptionBudget":
            assert chart_by[k]["spec"]["minAvailable"] == obj["spec"]["minAvailable"]
    name = ("Deployment", OPERATOR_NAMESPACE, "autoscale-operator")
    chart_pod = chart_by[name]["spec"]["template"]["spec"]
    base_pod = base_by[name]["spec"]["template"]["spec"]
    assert chart_by[name]["spec"]["replicas"] == base_by[name]["spec"]["replicas"]
    for field in (
        "securityContext",
        "volumes",
        "serviceAccountName",
        "automountServiceAccountToken",
    ):
        assert chart_pod[field] == base_pod[field], field
    (chart_container,) = chart_pod["containers"]
    (base_container,) = base_pod["containers"]
    for field in ("securityContext", "ports", "livenessProbe", "readinessProbe", "resources"):
        assert chart_container[field] == base_container[field], field
    assert chart_container["env"] == base_container["env"]
    assert "--leader-elect=true" in chart_container["args"]
    assert "--log-format=json" in chart_container["args"]
    assert "--log-format=json" in base_container["args"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"logFormat": "xml"}, "logFormat"),
        ({"replicas": -1}, "replicas"),
        ({"replicas": "two"}, "replicas"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"extraArgs": ["run"]}, "extraArgs"),
        ({"replicaCount": 2}, "replicaCount"),  # a typo is an error, not silently ignored
        ({"leaderElection": {"enabled": False}}, "leaderElection"),  # 2 replicas, no election
        (
            {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}},
            "metrics.service.enabled",
        ),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_bad_values_are_refused(
    helm: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    result = helm_template(helm, tmp_path, values, check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_a_single_replica_may_run_without_leader_election(helm: Path, tmp_path: Path) -> None:
    objects = documents(
        helm_template(helm, tmp_path, {"replicas": 1, "leaderElection": {"enabled": False}}).stdout
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert "--leader-elect=false" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [o for o in objects if "leader-election" in o["metadata"]["name"]]


def test_sharding_runs_every_replica_with_shards_and_names_each_lease_in_the_role(
    kube: KubeAPIServer, helm: Path, service_monitor_crd: None, tmp_path: Path
) -> None:
    values = {"replicas": 3, "leaderElection": {"enabled": False}, "sharding": {"shards": 3}}
    objects = documents(helm_template(helm, tmp_path, values).stdout)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--shards=3" in args
    assert "--leader-elect=false" in args
    assert "--lease-name=autoscale-operator" in args
    (role,) = [
        o for o in objects if o["kind"] == "Role" and "leader-election" in o["metadata"]["name"]
    ]
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named[0]["resourceNames"] == [
        "autoscale-operator",
        *(f"autoscale-operator-{part}-{i}" for i in range(3) for part in ("shard", "member")),
    ]
    dry_run_everything(kube, objects)


def test_sharding_and_leader_election_are_refused_together(helm: Path, tmp_path: Path) -> None:
    result = helm_template(helm, tmp_path, {"sharding": {"shards": 4}}, check=False)
    assert result.returncode != 0
    assert "sharding.shards and leaderElection.enabled exclude each other" in result.stderr


# --- RBAC, both ways -----------------------------------------------------------------------------


def operator_needs(namespace: str, own_namespace: str, lease: str) -> list[dict[str, Any]]:
    """Every call `autoscale run` makes (autoscale/kube.py, auth.py, leader.py), as can-i checks."""
    ns = {"namespace": namespace}
    return [
        {"verb": "list", "resource": "scaledobjects.autoscale.dev"},  # all namespaces
        {"verb": "watch", "resource": "scaledobjects.autoscale.dev"},
        {"verb": "list", "resource": "scaledobjects.autoscale.dev", **ns},
        {"verb": "watch", "resource": "scaledobjects.autoscale.dev", **ns},
        {"verb": "patch", "resource": "scaledobjects.autoscale.dev", **ns},  # finalizers
        {"verb": "patch", "resource": "scaledobjects.autoscale.dev", "subresource": "status", **ns},
        {"verb": "list", "resource": "triggerauthentications.autoscale.dev", **ns},
        {"verb": "watch", "resource": "triggerauthentications.autoscale.dev", **ns},
        {"verb": "list", "resource": "clustertriggerauthentications.autoscale.dev"},
        {"verb": "watch", "resource": "clustertriggerauthentications.autoscale.dev"},
        {"verb": "get", "resource": "deployments.apps", "subresource": "scale", **ns},
        {"verb": "patch", "resource": "deployments.apps", "subresource": "scale", **ns},
        {"verb": "get", "resource": "statefulsets.apps", "subresource": "scale", **ns},
        {"verb": "patch", "resource": "statefulsets.apps", "subresource": "scale", **ns},
        # Any kind with a /scale subresource (the e2e suite scales a custom resource).
        {"verb": "patch", "resource": "gadgets.e2e.autoscale.dev", "subresource": "scale", **ns},
        {"verb": "get", "resource": "rollouts.argoproj.io", "subresource": "scale", **ns},
        {"verb": "get", "resource": "deployments.apps", **ns},
        {"verb": "list", "resource": "deployments.apps", **ns},
        {"verb": "watch", "resource": "deployments.apps", **ns},
        {"verb": "list", "resource": "statefulsets.apps", **ns},
        {"verb": "watch", "resource": "statefulsets.apps", **ns},
        {"verb": "list", "resource": "horizontalpodautoscalers.autoscaling"},
        {"verb": "list", "resource": "horizontalpodautoscalers.autoscaling", **ns},
        {"verb": "create", "resource": "events", **ns},
        {"verb": "list", "resource": "configmaps", **ns},
        {"verb": "watch", "resource": "configmaps", **ns},
        {"verb": "list", "resource": "serviceaccounts", **ns},  # podIdentity: role annotation
        {"verb": "watch", "resource": "serviceaccounts", **ns},
        {"verb": "list", "resource": "secrets", **ns},
        {"verb": "watch", "resource": "secrets", **ns},
        {"verb": "list", "resource": "secrets", "namespace": own_namespace},  # ClusterTA
        {"verb": "create", "resource": "leases.coordination.k8s.io", "namespace": own_namespace},
        {
            "verb": "get",
            "resource": "leases.coordination.k8s.io",
            "name": lease,
            "namespace": own_namespace,
        },
        {
            "verb": "update",
            "resource": "leases.coordination.k8s.io",
            "name": lease,
            "namespace": own_namespace,
        },
    ]


def operator_must_not(namespace: str, own_namespace: str, lease: str) -> list[dict[str, Any]]:
    """What the operator never does, and a compromised operator must not be able to."""
    ns = {"namespace": namespace}
    return [
        {"verb": "create", "resource": "deployments.apps", **ns},
        {"verb": "update", "resource": "deployments.apps", **ns},
        {"verb": "patch", "resource": "deployments.apps", **ns},  # only its /scale
        {"verb": "delete", "resource": "deployments.apps", **ns},
        {"verb": "update", "resource": "deployments.apps", "subresource": "scale", **ns},
        {"verb": "create", "resource": "scaledobjects.autoscale.dev", **ns},
        {"verb": "update", "resource": "scaledobjects.autoscale.dev", **ns},
        {"verb": "delete", "resource": "scaledobjects.autoscale.dev", **ns},
        {"verb": "get", "resource": "scaledobjects.autoscale.dev", **ns},
        {"verb": "patch", "resource": "triggerauthentications.autoscale.dev", **ns},
        {"verb": "delete", "resource": "clustertriggerauthentications.autoscale.dev"},
        {"verb": "get", "resource": "secrets", **ns},
        {"verb": "create", "resource": "secrets", **ns},
        {"verb": "update", "resource": "secrets", **ns},
        {"verb": "delete", "resource": "secrets", **ns},
        {"verb": "update", "resource": "configmaps", **ns},
        {"verb": "update", "resource": "serviceaccounts", **ns},
        {"verb": "get", "resource": "pods", **ns},
        {"verb": "create", "resource": "pods", **ns},
        {"verb": "create", "resource": "pods", "subresource": "exec", **ns},
        {"verb": "create", "resource": "serviceaccounts", "subresource": "token", **ns},
        {"verb": "update", "resource": "nodes"},
        {"verb": "create", "resource": "namespaces"},
        {"verb": "create", "resource": "horizontalpodautoscalers.autoscaling", **ns},
        {"verb": "watch", "resource": "horizontalpodautoscalers.autoscaling", **ns},
        {"verb": "patch", "resource": "events", **ns},
        {"verb": "delete", "resource": "events", **ns},
        {"verb": "create", "resource": "customresourcedefinitions.apiextensions.k8s.io"},
        {"verb": "create", "resource": "clusterrolebindings.rbac.authorization.k8s.io"},
        {"verb": "escalate", "resource": "clusterroles.rbac.authorization.k8s.io"},
        {"verb": "impersonate", "resource": "serviceaccounts", **ns},
        {"verb": "create", "resource": "leases.coordination.k8s.io", **ns},  # not its namespace
        {
            "verb": "update",
            "resource": "leases.coordination.k8s.io",
            "name": "kube-scheduler",
            "namespace": own_namespace,
        },
        {
            "verb": "delete",
            "resource": "leases.coordination.k8s.io",
            "name": lease,
            "namespace": own_namespace,
        },
    ]


def test_deploy_base_rbac_grants_what_the_operator_needs_and_refuses_the_rest(
    crds: KubeAPIServer, operator_kubeconfig: Path, namespace: str
) -> None:
    """deploy/base's RBAC, as applied by the e2e session (the suite's operator runs as it)."""
    checks = [
        (True, c) for c in operator_needs(namespace, OPERATOR_NAMESPACE, "autoscale-operator")
    ]
    checks += [
        (False, c) for c in operator_must_not(namespace, OPERATOR_NAMESPACE, "autoscale-operator")
    ]
    assert_rbac(crds, checks, SA)


def test_the_e2e_operator_runs_as_the_deploy_service_account(
    crds: KubeAPIServer, namespace: str, operator: Any, operator_kubeconfig: Path
) -> None:
    """The `operator` fixture's process authenticates as deploy/base's ServiceAccount: its
    Lease is written by that user, and the token's identity is the ServiceAccount's."""
    whoami = json.loads(
        crds.kubectl("auth", "whoami", "-o", "json", kubeconfig=operator_kubeconfig).stdout
    )
    assert whoami["status"]["userInfo"]["username"] == SA
    op: Operator = operator("--leader-elect")
    wait_for(
        lambda: (
            crds.kubectl(
                "get", "lease", "autoscale-operator", "-n", namespace, check=False
            ).returncode
            == 0
        ),
        timeout=30,
        what="the operator's Lease",
    )
    writers = set()
    for line in crds.audit_log.read_text().splitlines():
        entry = json.loads(line)
        ref = entry.get("objectRef", {})
        if ref.get("resource") == "leases" and ref.get("namespace") == namespace:
            writers.add(entry["user"]["username"])
    assert writers == {SA}, writers
    assert op.process.running()


def test_the_secret_namespaces_component_limits_secret_reads(
    kube: KubeAPIServer, tmp_path: Path, cluster_objects: list[dict[str, Any]]
) -> None:
    """A user's overlay over deploy/base with the component, in its own namespace and with a
    name prefix (so it stands apart from the e2e session's RBAC), plus a RoleBinding for one
    application namespace, exactly as deploy/README.md shows."""
    suffix = uuid.uuid4().hex[:6]
    own, team, other = f"t-rbac-{suffix}", f"t-team-{suffix}", f"t-other-{suffix}"
    shutil_copy_deploy(tmp_path)
    (tmp_path / "ops").mkdir()
    (tmp_path / "ops" / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": own,
                "namePrefix": f"t{suffix}-",
                "resources": ["../deploy/base"],
                "components": ["../deploy/components/secret-namespaces"],
            }
        )
    )
    (tmp_path / "top").mkdir()
    binding = yaml.safe_load(
        (DEPLOY / "overlays" / "restricted-secrets" / "secrets-team-a.yaml").read_text()
    )
    binding["metadata"].update(name=f"t{suffix}-autoscale-operator-secrets", namespace=team)
    binding["roleRef"]["name"] = f"t{suffix}-autoscale-operator-secrets"
    binding["subjects"] = [
        {"kind": "ServiceAccount", "name": f"t{suffix}-autoscale-operator", "namespace": own}
    ]
    (tmp_path / "top" / "binding.yaml").write_text(yaml.safe_dump(binding))
    (tmp_path / "top" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../ops\n  - binding.yaml\n"
    )
    ensure_namespaces(kube, {team, other})
    apply_rbac(kube, kustomize(kube, tmp_path / "top"), cluster_objects)
    user = f"system:serviceaccount:{own}:t{suffix}-autoscale-operator"
    lease = "autoscale-operator"  # resourceNames are not prefixed: the flag's default
    wait_for(
        lambda: can_i(kube, "create", "events", namespace=other, user=user), timeout=30, what="RBAC"
    )
    checks = [
        (True, {"verb": "list", "resource": "secrets", "namespace": own}),
        (True, {"verb": "watch", "resource": "secrets", "namespace": own}),
        (True, {"verb": "list", "resource": "secrets", "namespace": team}),
        (True, {"verb": "watch", "resource": "secrets", "namespace": team}),
        (False, {"verb": "list", "resource": "secrets", "namespace": other}),
        (False, {"verb": "watch", "resource": "secrets", "namespace": other}),
        (False, {"verb": "list", "resource": "secrets"}),  # cluster-wide
        (False, {"verb": "get", "resource": "secrets", "namespace": team}),
    ]
    # Everything else stays as in the base, in any namespace.
    checks += [
        (True, c)
        for c in operator_needs(other, own, lease)
        if c["resource"] != "secrets" or c.get("namespace") == own
    ]
    assert_rbac(kube, checks, user)


def test_the_charts_namespaced_rbac_for_watched_namespaces(
    kube: KubeAPIServer, helm: Path, tmp_path: Path, cluster_objects: list[dict[str, Any]]
) -> None:
    """watchNamespaces: the operator may act in the watched namespaces (and read Secrets
    there and in its own), and nowhere else; ClusterTriggerAuthentications stay readable."""
    suffix = uuid.uuid4().hex[:6]
    own, watched, other = f"t-helm-{suffix}", f"t-watched-{suffix}", f"t-other-{suffix}"
    release = f"r{suffix}"
    ensure_namespaces(kube, {own, watched, other})
    objects = documents(
        helm_template(
            helm, tmp_path, {"watchNamespaces": [watched]}, release=release, namespace=own
        ).stdout
    )
    apply_rbac(kube, objects, cluster_objects)
    user = f"system:serviceaccount:{own}:{release}-autoscale-operator"
    lease = f"{release}-autoscale-operator"
    wait_for(
        lambda: can_i(kube, "create", "events", namespace=watched, user=user),
        timeout=30,
        what="RBAC",
    )
    needs = [c for c in operator_needs(watched, own, lease) if "namespace" in c]
    checks = [(True, c) for c in needs]
    checks += [(True, {"verb": "list", "resource": "clustertriggerauthentications.autoscale.dev"})]
    checks += [
        (True, {"verb": "list", "resource": "scaledobjects.autoscale.dev", "namespace": own})
    ]
    # Not in another namespace, and not cluster-wide.
    for check in needs:
        if check.get("namespace") == watched:
            checks.append((False, {**check, "namespace": other}))
    checks += [
        (False, {"verb": "list", "resource": "scaledobjects.autoscale.dev"}),
        (False, {"verb": "list", "resource": "secrets"}),
        (False, {"verb": "list", "resource": "horizontalpodautoscalers.autoscaling"}),
    ]
    checks += [(False, c) for c in operator_must_not(watched, own, lease)]
    assert_rbac(kube, checks, user)


# --- the docker compose sample's manifests --------------------------------------------------


def test_the_compose_samples_workload_passes_server_side_dry_run(
    crds: KubeAPIServer, namespace: str
) -> None:
    """deploy/compose/worker.yaml, which the compose stack applies into k3s."""
    objects = documents((DEPLOY / "compose" / "worker.yaml").read_text())
    assert {o["kind"] for o in objects} == {"Deployment", "ScaledObject"}
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    warnings = apply(crds, objects, dry_run=True)
    assert "Warning" not in warnings, warnings


# --- the Grafana dashboard -----------------------------------------------------------------------

DASHBOARD = DEPLOY / "grafana" / "autoscale-dashboard.json"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, Grafana's variables filled in as Grafana
    would for "All" and a one-minute rate interval."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = (
                target["expr"]
                .replace("$__rate_interval", "1m")
                .replace("$namespace", ".*")
                .replace("$scaledObject", ".*")
            )
            queries.append((panel["title"], expr))
    return queries


def exposed_names() -> set[str]:
    """Every sample name the operator's /metrics can expose."""
    from autoscale.metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        else:
            names.add(family.name)
    return names


def test_the_dashboard_uses_only_the_operators_metrics_and_shows_every_documented_one() -> None:
    used = {
        name
        for _, expr in dashboard_queries()
        for name in re.findall(r"\bautoscale_[a-z_]+\b", expr)
    }
    exposed = exposed_names()
    assert used <= exposed, f"not exposed by the operator: {sorted(used - exposed)}"
    documented = set(
        re.findall(r"`(autoscale_[a-z_]+)`", (REPO / "docs" / "metrics.md").read_text())
    )
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    assert documented <= shown, f"documented but not on the dashboard: {documented - shown}"
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "scaledObject"} <= variables
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_every_dashboard_panel_shows_data_from_a_real_operator(
    crds: KubeAPIServer,
    namespace: str,
    redis_server: Any,
    stream: Any,
    prometheus: Any,
    operator: Any,
) -> None:
    """The bench's Prometheus (the release the compose stack runs) scrapes an operator that
    scales a Deployment 0 -> N; every query of the dashboard is valid PromQL there and returns
    at least one series."""
    from tests.e2e.harness import make_pending
    from tests.e2e.workloads import apply as apply_manifest
    from tests.e2e.workloads import deployment, redis_trigger, replicas, scaled_object

    client, name = stream
    apply_manifest(crds, namespace, deployment("worker", replicas=0))
    address = f"127.0.0.1:{redis_server.port}"
    apply_manifest(
        crds,
        namespace,
        scaled_object("worker", "worker", [redis_trigger(address, name, pending=1)]),
    )
    op: Operator = operator()
    target = f"autoscale-{namespace}"
    prometheus.add_target(target, f"127.0.0.1:{op.metrics_port}")
    try:
        make_pending(client, name, 3)
        wait_for(
            lambda: replicas(crds, namespace, "deployment", "worker") == 3,
            timeout=60,
            what="the worker scaled to 3",
        )
        empty: dict[str, str] = {}

        def all_show_data() -> bool:
            empty.clear()
            for title, expr in dashboard_queries():
                scoped = expr.replace('namespace=~".*"', f'namespace="{namespace}"')
                # A filter panel ("paused == 1") is empty while nothing is paused: the series
                # under the filter must exist.
                scoped = re.sub(r"\s*== 1$", "", scoped)
                if not prometheus.query(scoped):
                    empty[title] = scoped
            return not empty

        try:
            wait_for(all_show_data, timeout=90, interval=2, what="data on every panel")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; empty: {empty}") from None
    finally:
        prometheus.remove_target(target)
