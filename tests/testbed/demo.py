"""`make demo`: the autoscaler doing its main job on this machine, in about two minutes.

It brings up the bench's kube-apiserver, Kafka and Redis, installs the CRDs, creates two worker
Deployments at 0 replicas with ScaledObjects (one on Kafka consumer lag, one on Redis stream
entries), starts `autoscale run` as a separate process, then plays a workload: backlogs arrive
(0 -> N), are worked off, and after the cooldown both Deployments return to 0. A table shows,
live, each object's backlog, decision and replicas. Ctrl-C at any point stops everything.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from tests.testbed.bench import Bench
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok
from tests.testbed.services import Kafka, Redis

NAMESPACE = "demo"
REPO = Path(__file__).resolve().parents[2]
OBJECTS = ("orders-worker", "emails-worker")
TOPIC, GROUP, STREAM = "orders", "order-workers", "emails"
COOLDOWN = 10


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Our own handler, not Python's default: asyncio.run() replaces only the default one, with a
    # handler that cancels the running coroutine, and a client library that swallows that
    # cancellation (or a SIGINT landing between two steps) would lose the Ctrl-C.
    signal.signal(signal.SIGINT, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="autoscale-demo-"))
    bench = Bench(("kube", "kafka", "redis"), workdir=workdir)
    operator: ManagedProcess | None = None
    board: Board | None = None
    try:
        say("starting a real kube-apiserver (with etcd), Apache Kafka and Redis on loopback ...")
        bench.start()
        kube, kafka, store = (bench.services[n] for n in ("kube", "kafka", "redis"))
        assert isinstance(kube, KubeAPIServer)
        assert isinstance(kafka, Kafka)
        assert isinstance(store, Redis)
        setup(kube, kafka, store)
        say(f"kubeconfig: {kube.kubeconfig}  (try: kubectl get so,deploy -n {NAMESPACE})")

        metrics_port, health_port = free_port(), free_port()
        operator = ManagedProcess(
            "autoscale",
            [
                sys.executable,
                "-m",
                "autoscale",
                "run",
                f"--kubeconfig={kube.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--metrics-port={metrics_port}",
                f"--health-port={health_port}",
                f"--bind-address={LOOPBACK}",
            ],
            log_path=workdir / "operator.log",
            cwd=REPO,
        )
        deadline = time.monotonic() + 60
        while not http_ok(f"http://{LOOPBACK}:{health_port}/readyz"):
            if time.monotonic() > deadline or not operator.running():
                raise operator.fail("the operator did not become ready")
            time.sleep(0.3)
        say(f"operator running: autoscale run (log: {operator.log_path})")
        board = Board(kube, operator, metrics_port)
        board.start()

        time.sleep(4)
        board.note("a backlog arrives: 40 orders on Kafka, 9 emails pending on Redis")
        asyncio.run(produce_orders(kafka, 40))
        client = redis.Redis.from_url(store.url, decode_responses=True)
        ids = deliver_emails(client, 9)
        time.sleep(12)
        board.note("the workers catch up: orders consumed and committed, emails acknowledged")
        asyncio.run(consume_orders(kafka, 40))
        client.xack(STREAM, "mailers", *ids)
        client.close()
        wait_for_zero(kube, timeout=COOLDOWN + 40)
        time.sleep(2)
        board.stop()
        print(kube.kubectl("get", "so", "-n", NAMESPACE).stdout, flush=True)
        say("done: both Deployments went 0 -> N -> 0 on real backlogs. Cleaning up.")
        return 0
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        if board is not None:
            board.stop()
        if operator is not None:
            operator.stop()
        bench.stop()


# --- the workload ---------------------------------------------------------------------------


def setup(kube: KubeAPIServer, kafka: Kafka, store: Redis) -> None:
    crds = kube_crds()
    kube.kubectl("apply", "--server-side", "-f", "-", input=crds)
    kube.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.autoscale.dev")
    kube.kubectl("create", "namespace", NAMESPACE)
    asyncio.run(create_topic(kafka))
    client = redis.Redis.from_url(store.url)
    client.xgroup_create(STREAM, "mailers", id="$", mkstream=True)
    client.close()
    triggers = {
        "orders-worker": {
            "type": "kafka",
            "metadata": {
                "bootstrapServers": kafka.bootstrap,
                "consumerGroup": GROUP,
                "topic": TOPIC,
                "lagThreshold": "10",
                "offsetResetPolicy": "earliest",
            },
        },
        "emails-worker": {
            "type": "redis-streams",
            "metadata": {
                "address": f"{LOOPBACK}:{store.port}",
                "stream": STREAM,
                "consumerGroup": "mailers",
                "pendingEntriesCount": "3",
            },
        },
    }
    for name, trigger in triggers.items():
        labels = {"app": name}
        apply(
            kube,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "worker", "image": f"example/{name}:1"}]},
                    },
                },
            },
        )
        apply(
            kube,
            {  # exactly a KEDA manifest but for its apiVersion
                "apiVersion": "autoscale.dev/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": name},
                "spec": {
                    "scaleTargetRef": {"name": name},
                    "pollingInterval": 1,
                    "cooldownPeriod": COOLDOWN,
                    "maxReplicaCount": 8,
                    "triggers": [trigger],
                },
            },
        )


def kube_crds() -> str:
    from autoscale import crd_manifests

    return crd_manifests.render_crds()


def apply(kube: KubeAPIServer, manifest: dict[str, Any]) -> None:
    kube.kubectl("apply", "--server-side", "-n", NAMESPACE, "-f", "-", input=json.dumps(manifest))


async def create_topic(kafka: Kafka) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()


async def produce_orders(kafka: Kafka, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        for i in range(count):  # one burst, so the backlog appears at once
            await producer.send(TOPIC, f"order {i}".encode(), partition=i % 4)
        await producer.flush()
    finally:
        await producer.stop()


async def consume_orders(kafka: Kafka, count: int) -> None:
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=kafka.bootstrap,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen = 0
        while seen < count:
            batch = await consumer.getmany(timeout_ms=2000)
            seen += sum(len(records) for records in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()


def deliver_emails(client: Any, count: int) -> list[str]:
    for i in range(count):
        client.xadd(STREAM, {"email": str(i)})
    delivered = client.xreadgroup("mailers", "mailer-1", {STREAM: ">"}, count=count)
    return [entry_id for entry_id, _ in delivered[0][1]]


def wait_for_zero(kube: KubeAPIServer, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(replicas(kube, name) == "0" for name in OBJECTS):
            return
        time.sleep(0.5)
    raise RuntimeError("the Deployments did not return to 0 in time")


def replicas(kube: KubeAPIServer, name: str) -> str:
    done = kube.kubectl(
        "get", "deployment", name, "-n", NAMESPACE, "-o", "jsonpath={.spec.replicas}", check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "?"


# --- the live table -------------------------------------------------------------------------


class Board:
    """Redraws a small table every half second (or prints changes when not on a terminal)."""

    def __init__(self, kube: KubeAPIServer, operator: ManagedProcess, metrics_port: int) -> None:
        self.kube = kube
        self.operator = operator
        self.metrics_url = f"http://{LOOPBACK}:{metrics_port}/metrics"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.live = sys.stdout.isatty()
        self.drawn = 0
        self.last: list[str] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        if not self.stopped.is_set():
            self.stopped.set()
            self.thread.join(timeout=5)

    def note(self, message: str) -> None:
        with self.lock:
            self.drawn = 0  # keep the note above the table
            say(message)

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            with self.lock:
                self.draw(self.rows())

    def rows(self) -> list[str]:
        values = self.metrics()
        decisions = self.decisions()
        header = (
            f"{'SCALEDOBJECT':<15} {'BACKLOG':>8} {'DESIRED':>8} {'REPLICAS':>9}  LAST DECISION"
        )
        rows = [header]
        for name in OBJECTS:
            backlog = values.get(("autoscale_scaler_metrics_value", name))
            desired = values.get(("autoscale_scaledobject_desired_replicas", name))
            rows.append(
                f"{name:<15} {_fmt(backlog):>8} {_fmt(desired):>8} "
                f"{replicas(self.kube, name):>9}  {decisions.get(name, '')[:70]}"
            )
        return rows

    def draw(self, rows: list[str]) -> None:
        if self.live:
            if self.drawn:
                sys.stdout.write(f"\x1b[{self.drawn}F")
            for row in rows:
                sys.stdout.write("\x1b[2K" + row + "\n")
            sys.stdout.flush()
            self.drawn = len(rows)
        elif rows != self.last:
            for row in rows[1:]:
                if row not in self.last:
                    say("  " + row)
            self.last = rows

    def metrics(self) -> dict[tuple[str, str], float]:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        found: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.labels.get("scaledObject")
                if name:
                    found[(sample.name, name)] = sample.value
        return found

    def decisions(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for line in self.operator.log_path.read_text(errors="replace").splitlines():
            for name in OBJECTS:
                marker = f"{NAMESPACE}/{name} "
                if marker in line and " -> " in line:
                    found[name] = line.split(marker, 1)[1]
        return found


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


if __name__ == "__main__":
    raise SystemExit(main())
