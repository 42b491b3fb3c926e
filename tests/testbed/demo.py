"""`make demo`: the autoscaler doing its main job on this machine, in about a minute.

It brings up the bench's kube-apiserver and Redis, installs the CRDs, creates a worker
Deployment at 0 replicas and a ScaledObject on a Redis stream, starts `autoscale run` as a
separate process, then plays a workload: a backlog arrives (0 -> N), grows, is worked off and
acknowledged, and after the cooldown the Deployment returns to 0. Every change of the replica
count is printed as it happens, with the operator's own reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from tests.testbed.bench import Bench
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok
from tests.testbed.services import Redis

NAMESPACE = "demo"
STREAM = "orders"
REPO = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="autoscale-demo-"))
    bench = Bench(("kube", "redis"), workdir=workdir)
    say("starting a real kube-apiserver (with etcd) and Redis on loopback ...")
    bench.start()
    kube = bench.services["kube"]
    store = bench.services["redis"]
    assert isinstance(kube, KubeAPIServer)
    assert isinstance(store, Redis)
    operator: ManagedProcess | None = None
    stop_watching = threading.Event()
    try:
        subprocess.run(
            [sys.executable, "-m", "autoscale", "crds"],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        crds = subprocess.run(
            [sys.executable, "-m", "autoscale", "crds"],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout
        kube.kubectl("apply", "--server-side", "-f", "-", input=crds)
        kube.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.autoscale.dev")
        kube.kubectl("create", "namespace", NAMESPACE)
        client = redis.Redis.from_url(store.url, decode_responses=True)
        client.xgroup_create(STREAM, "workers", id="$", mkstream=True)
        apply(kube, deployment())
        apply(kube, scaled_object(f"{LOOPBACK}:{store.port}"))
        say(f"kubeconfig: {kube.kubeconfig}  (try: kubectl get so,deploy -n {NAMESPACE})")

        health = free_port()
        operator = ManagedProcess(
            "autoscale",
            [
                sys.executable,
                "-m",
                "autoscale",
                "run",
                f"--kubeconfig={kube.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--metrics-port={free_port()}",
                f"--health-port={health}",
                f"--bind-address={LOOPBACK}",
            ],
            log_path=workdir / "operator.log",
            cwd=REPO,
        )
        deadline = time.monotonic() + 60
        while not http_ok(f"http://{LOOPBACK}:{health}/readyz"):
            if time.monotonic() > deadline or not operator.running():
                raise operator.fail("the operator did not become ready")
            time.sleep(0.3)
        say("operator running: `autoscale run` (log: " + str(operator.log_path) + ")")
        watcher = threading.Thread(target=watch, args=(kube, operator, stop_watching), daemon=True)
        watcher.start()

        say("Deployment 'worker' is at 0 replicas; nothing is pending.")
        time.sleep(3)
        say("a backlog arrives: 7 orders delivered to the consumer group, not yet acknowledged")
        ids = deliver(client, 7)
        time.sleep(6)
        say("more work: 8 more orders pending (15 in all; pendingEntriesCount is 3, max 8)")
        ids += deliver(client, 8)
        time.sleep(6)
        say("the workers finish: all 15 orders acknowledged; cooldownPeriod is 10 s")
        client.xack(STREAM, "workers", *ids)
        time.sleep(16)
        so = json.loads(kube.kubectl("get", "so", "worker", "-n", NAMESPACE, "-o", "json").stdout)
        conditions = {c["type"]: c["status"] for c in so["status"]["conditions"]}
        say(f"ScaledObject conditions: {conditions}")
        print(kube.kubectl("get", "so", "-n", NAMESPACE).stdout, flush=True)
        say("done: the Deployment went 0 -> N -> 0 on real Redis backlog.")
        return 0
    finally:
        stop_watching.set()
        if operator is not None:
            operator.stop()
        bench.stop()


def watch(kube: KubeAPIServer, operator: ManagedProcess, stop: threading.Event) -> None:
    """Print each replica change, with the operator's log line explaining it."""
    last = None
    seen_lines = 0
    while not stop.wait(0.3):
        done = kube.kubectl(
            "get",
            "deployment",
            "worker",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.replicas}",
            check=False,
        )
        count = done.stdout.strip() if done.returncode == 0 else None
        lines = operator.log_path.read_text(errors="replace").splitlines()
        reasons = [line for line in lines[seen_lines:] if " -> " in line]
        seen_lines = len(lines)
        if count != last and count is not None:
            why = reasons[-1].split(": ", 1)[-1] if reasons else ""
            say(f"  replicas: {last if last is not None else '?'} -> {count}   {why}")
            last = count


def deliver(client: Any, count: int) -> list[str]:
    for i in range(count):
        client.xadd(STREAM, {"order": str(i)})
    delivered = client.xreadgroup("workers", "worker-1", {STREAM: ">"}, count=count)
    return [entry_id for entry_id, _ in delivered[0][1]]


def apply(kube: KubeAPIServer, manifest: dict[str, Any]) -> None:
    kube.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifest))


def deployment() -> dict[str, Any]:
    labels = {"app": "worker"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "worker", "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "worker", "image": "registry.example/order-worker:1"}]
                },
            },
        },
    }


def scaled_object(address: str) -> dict[str, Any]:
    # Exactly a KEDA manifest, but for its apiVersion.
    return {
        "apiVersion": "autoscale.dev/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "worker"},
        "spec": {
            "scaleTargetRef": {"name": "worker"},
            "pollingInterval": 1,
            "cooldownPeriod": 10,
            "maxReplicaCount": 8,
            "triggers": [
                {
                    "type": "redis-streams",
                    "metadata": {
                        "address": address,
                        "stream": STREAM,
                        "consumerGroup": "workers",
                        "pendingEntriesCount": "3",
                    },
                }
            ],
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
