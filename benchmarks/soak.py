"""Soak: one operator process, N ScaledObjects over the five sources, random source faults.

    .venv/bin/python -m benchmarks.soak --objects 1000 --duration 3600

What it does: starts a fresh bench (kube-apiserver, Kafka, RabbitMQ, Redis, SQS on moto,
Prometheus), creates N Deployments at 0 and N ScaledObjects spread evenly over the five
trigger types (redis-streams, kafka, rabbitmq over AMQP and over HTTP, aws-sqs-queue,
prometheus), each on its own stream, topic, queue or series, a fifth of them with `fallback`.
It starts `autoscale run` as one process with deploy/base's ServiceAccount (`--admin` for the
bench's admin instead), waits until every object was polled once and one more polling interval,
then for `--duration` seconds:

- faults: every `--fault-gap` seconds (random within the range) one source is stopped
  (SIGTERM, then restarted on the same ports), killed (SIGKILL, then restarted) or frozen
  (SIGSTOP, then SIGCONT) for a random 20-120 s;
- backlogs: every `--activation-every` seconds a backlog appears on a random idle object whose
  source is healthy, and is drained 60-240 s later;
- checks: a Deployment watch records every replica change. An activation is missed when a
  backlog on a healthy source has not lifted the Deployment from 0 within pollingInterval +
  `--slack` (activations whose source faulted meanwhile are counted apart). A scale-down is
  wrong when it takes the Deployment below what a backlog the source still holds asks for
  (re-read from the source at that moment), or when it happens while the object's source is
  faulted and the object has no fallback (fallback objects may go to their fallback count);
- every 30 s: the operator's RSS, threads, open fds and TCP connections to each source
  server (from /proc), and its own metrics (polls, poll errors, scale operations).

Results: benchmarks/results/soak-<date>.{json,md} (and .png when matplotlib is installed).
This is a benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import platform
import queue
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import redis
import requests
import yaml

from tests.testbed.bench import Bench
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import LOOPBACK, ManagedProcess, ServiceError, free_port, http_ok
from tests.testbed.services import SQS, Kafka, Prometheus, RabbitMQ, Redis

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "soak"
TARGET = 5  # backlog per replica, every trigger type
FALLBACK_REPLICAS = 3
MAX_REPLICAS = 10
KINDS = ("redis", "kafka", "rabbitmq", "sqs", "prometheus")
FAULTS = ("stop", "kill", "freeze")
RBAC_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role"}
RBAC_KINDS |= {"RoleBinding"}

# --- remembering how each bench process was started, to start it again -------------------------

_SPAWNS: dict[int, dict[str, Any]] = {}
_original_init = ManagedProcess.__init__


def _recording_init(self: ManagedProcess, name: str, args: Any, **kwargs: Any) -> None:
    _original_init(self, name, args, **kwargs)
    _SPAWNS[self.pid] = {"name": name, "args": list(args), **kwargs}


ManagedProcess.__init__ = _recording_init  # type: ignore[method-assign]


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} soak: {message}", flush=True)


# --- sources -----------------------------------------------------------------------------------


class Source:
    """One bench server that faults can stop, kill or freeze, and that can start again."""

    def __init__(self, kind: str, service: Any, ready: Any, ports: list[int]) -> None:
        self.kind = kind
        self.service = service
        self.ready = ready  # () -> bool: the server answers a real request
        self.ports = ports  # the server's ports the operator may connect to
        self.lock = threading.RLock()
        self.faulted = False
        self.faults: list[dict[str, Any]] = []  # kind, start, end (monotonic), restart seconds

    @property
    def process(self) -> ManagedProcess:
        process: ManagedProcess = self.service.process
        return process

    def fault(self, kind: str, seconds: float) -> dict[str, Any]:
        with self.lock:  # no backlog operation is half-way through on this source
            self.faulted = True
        record: dict[str, Any] = {"source": self.kind, "kind": kind, "start": time.monotonic()}
        record["seconds"] = round(seconds, 1)
        self.faults.append(record)
        process = self.process
        spawn = _SPAWNS[process.pid]
        if kind == "freeze":
            os.killpg(process.pid, signal.SIGSTOP)
            time.sleep(seconds)
            os.killpg(process.pid, signal.SIGCONT)
        else:
            if kind == "stop":
                process.stop(timeout=30)
            else:
                process.kill()
                with contextlib.suppress(Exception):
                    process.stop(timeout=5)  # close its log, forget it
            time.sleep(seconds)
            back = time.monotonic()
            self.service.process = self._start_again(spawn)
            if hasattr(self.service, "processes"):
                self.service.processes[0] = self.service.process
            record["restart_s"] = round(time.monotonic() - back, 1)
        deadline = time.monotonic() + 180
        while not self._ready() and time.monotonic() < deadline:
            time.sleep(0.5)
        record["end"] = time.monotonic()
        return record

    def _ready(self) -> bool:
        try:
            return bool(self.ready())
        except Exception:
            return False

    def _start_again(self, spawn: dict[str, Any]) -> ManagedProcess:
        """The same command line, environment and ports; tried again while a port lingers."""
        for attempt in range(20):
            kwargs = {k: v for k, v in spawn.items() if k not in ("name", "args")}
            process = ManagedProcess(spawn["name"], spawn["args"], **kwargs)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and process.running():
                if self._ready():
                    return process
                time.sleep(0.5)
            log(f"{self.kind}: restart attempt {attempt + 1} failed: {process.log_tail(3)}")
            process.stop()
            time.sleep(2)
        raise ServiceError(f"{self.kind} did not come back")

    def healthy_since(self, seconds: float) -> bool:
        """Healthy now, and no fault ended less than `seconds` ago."""
        if self.faulted:
            return False
        ends = [f.get("end", math.inf) for f in self.faults]
        return not ends or time.monotonic() - max(ends) > seconds

    def faulted_during(self, start: float, end: float) -> bool:
        return any(f["start"] <= end and f.get("end", math.inf) >= start for f in self.faults)


class Exporter:
    """A /metrics endpoint Prometheus scrapes: `soak_backlog{object=...}` per prometheus object."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.port = free_port()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = [f'soak_backlog{{object="{k}"}} {v}' for k, v in exporter.values.items()]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class AsyncRunner:
    """A private event loop in a thread, for the asyncio clients (aiokafka)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)


@dataclass
class Obj:
    name: str
    kind: str  # the source
    key: str  # its stream, topic, queue or series
    fallback: bool
    trigger: dict[str, Any]
    backlog: int = 0  # what the harness last put there (0: none)
    drain_at: float = 0.0
    activation: dict[str, Any] | None = None
    history: list[tuple[float, int]] = field(default_factory=list)


class Backlogs:
    """Making, draining and reading each object's backlog on its own source."""

    def __init__(self, bench: Bench, exporter: Exporter, workdir: Path) -> None:
        self.redis_server: Redis = bench.services["redis"]  # type: ignore[assignment]
        self.kafka: Kafka = bench.services["kafka"]  # type: ignore[assignment]
        self.rabbit: RabbitMQ = bench.services["rabbitmq"]  # type: ignore[assignment]
        self.sqs_server: SQS = bench.services["sqs"]  # type: ignore[assignment]
        self.prom: Prometheus = bench.services["prometheus"]  # type: ignore[assignment]
        self.exporter = exporter
        self.aio = AsyncRunner()
        self.redis = redis.Redis.from_url(
            self.redis_server.url, decode_responses=True, socket_timeout=5, socket_connect_timeout=3
        )
        self.rabbit_http = requests.Session()
        self.rabbit_http.auth = (RabbitMQ.USER, RabbitMQ.PASSWORD)
        self.sqs = boto3.client(
            "sqs",
            endpoint_url=self.sqs_server.url,
            region_name="eu-west-1",
            aws_access_key_id="AKIDSOAK",
            aws_secret_access_key="soak-not-a-secret",
        )
        self.sqs_urls: dict[str, str] = {}
        self.producer: Any = None

    # --- setup ---

    def create(self, objects: list[Obj]) -> None:
        for obj in objects:
            if obj.kind == "redis":
                self.redis.xgroup_create(obj.key, "workers", id="$", mkstream=True)
            elif obj.kind == "rabbitmq":
                self._rabbit("PUT", f"/api/queues/%2F/{obj.key}", json={"durable": True})
            elif obj.kind == "sqs":
                self.sqs_urls[obj.key] = self.sqs.create_queue(QueueName=obj.key)["QueueUrl"]
            elif obj.kind == "prometheus":
                self.exporter.values[obj.key] = 0
        topics = [o.key for o in objects if o.kind == "kafka"]
        if topics:
            self.aio.run(self._create_topics(topics), timeout=300)
        # An append-only file, fsync'd on every write: a restarted Redis has its streams back.
        self.redis.config_set("appendonly", "yes")
        self.redis.config_set("appendfsync", "always")

    async def _create_topics(self, topics: list[str]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka.bootstrap)
        await admin.start()
        try:
            for i in range(0, len(topics), 50):
                await admin.create_topics(
                    [
                        NewTopic(t, num_partitions=1, replication_factor=1)
                        for t in topics[i : i + 50]
                    ]
                )
        finally:
            await admin.close()

    def _rabbit(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        response = self.rabbit_http.request(
            method, self.rabbit.management_url(path), timeout=10, **kwargs
        )
        response.raise_for_status()
        return response

    # --- backlog ---

    def make(self, obj: Obj, count: int) -> None:
        if obj.kind == "redis":
            pipe = self.redis.pipeline()
            for i in range(count):
                pipe.xadd(obj.key, {"job": str(i)})
            pipe.execute()
            self.redis.xreadgroup("workers", "worker", {obj.key: ">"}, count=count)
        elif obj.kind == "kafka":
            self.aio.run(self._produce(obj.key, count))
        elif obj.kind == "rabbitmq":
            for _ in range(count):
                self._rabbit(
                    "POST",
                    "/api/exchanges/%2F/amq.default/publish",
                    json={
                        "properties": {"delivery_mode": 2},
                        "routing_key": obj.key,
                        "payload": "job",
                        "payload_encoding": "string",
                    },
                )
        elif obj.kind == "sqs":
            entries = [{"Id": str(i), "MessageBody": "job"} for i in range(count)]
            for i in range(0, count, 10):
                self.sqs.send_message_batch(
                    QueueUrl=self.sqs_urls[obj.key], Entries=entries[i : i + 10]
                )
        else:
            self.exporter.values[obj.key] = count

    def drain(self, obj: Obj) -> None:
        if obj.kind == "redis":
            pending = self.redis.xpending_range(obj.key, "workers", min="-", max="+", count=10000)
            ids = [p["message_id"] for p in pending]
            if ids:
                self.redis.xack(obj.key, "workers", *ids)
        elif obj.kind == "kafka":
            self.aio.run(self._commit_to_end(obj.key))
        elif obj.kind == "rabbitmq":
            self._rabbit("DELETE", f"/api/queues/%2F/{obj.key}/contents")
        elif obj.kind == "sqs":
            self.sqs.purge_queue(QueueUrl=self.sqs_urls[obj.key])
        else:
            self.exporter.values[obj.key] = 0

    def read(self, obj: Obj) -> int:
        """What the source holds now (the harness's own read, for classifying a scale-down)."""
        if obj.kind == "redis":
            return int(self.redis.xpending(obj.key, "workers")["pending"])
        if obj.kind == "kafka":
            return int(self.aio.run(self._lag(obj.key), timeout=20))
        if obj.kind == "rabbitmq":
            # The management API's figures lag a second or two; ask AMQP-free but fresh enough.
            body = self._rabbit("GET", f"/api/queues/%2F/{obj.key}").json()
            return int(body.get("messages", 0))
        if obj.kind == "sqs":
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.sqs_urls[obj.key],
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            return int(attributes["ApproximateNumberOfMessages"]) + int(
                attributes["ApproximateNumberOfMessagesNotVisible"]
            )
        return int(self.prom_value(obj.key))

    def prom_value(self, key: str) -> float:
        found = self.prom.query(f'sum(soak_backlog{{object="{key}"}})')
        return float(found[0]["value"][1]) if found else 0.0

    def restore(self, obj: Obj) -> None:
        """After a restart: recreate what a source without persistence lost (moto's queues)."""
        if obj.kind == "sqs":
            self.sqs_urls[obj.key] = self.sqs.create_queue(QueueName=obj.key)["QueueUrl"]
            if obj.backlog:
                self.make(obj, obj.backlog)

    async def _produce(self, topic: str, count: int) -> None:
        from aiokafka import AIOKafkaProducer

        if self.producer is None:
            self.producer = AIOKafkaProducer(
                bootstrap_servers=self.kafka.bootstrap, request_timeout_ms=10000
            )
            await self.producer.start()
        try:
            batch = [self.producer.send(topic, b"job") for _ in range(count)]
            for sent in batch:
                await (await sent)
        except Exception:
            with contextlib.suppress(Exception):
                await self.producer.stop()
            self.producer = None
            raise

    async def _consumer(self, topic: str) -> Any:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.kafka.bootstrap,
            group_id=topic,
            enable_auto_commit=False,
            request_timeout_ms=10000,
        )
        await consumer.start()
        return consumer

    async def _commit_to_end(self, topic: str) -> None:
        from aiokafka import TopicPartition

        consumer = await self._consumer(topic)
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            end = (await consumer.end_offsets([partition]))[partition]
            await consumer.commit({partition: end})
        finally:
            await consumer.stop()

    async def _lag(self, topic: str) -> int:
        from aiokafka import TopicPartition

        consumer = await self._consumer(topic)
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            end = (await consumer.end_offsets([partition]))[partition]
            committed = await consumer.committed(partition)
            start = (await consumer.beginning_offsets([partition]))[partition]
            return int(end - (committed if committed is not None else start))
        finally:
            await consumer.stop()


# --- the objects -------------------------------------------------------------------------------


def build_objects(count: int, bench: Bench, exporter: Exporter, fallback_share: float) -> list[Obj]:
    rng = random.Random(7)
    redis_server: Redis = bench.services["redis"]  # type: ignore[assignment]
    kafka: Kafka = bench.services["kafka"]  # type: ignore[assignment]
    sqs: SQS = bench.services["sqs"]  # type: ignore[assignment]
    prom: Prometheus = bench.services["prometheus"]  # type: ignore[assignment]
    objects = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        name = f"{kind[:2]}-{i:04d}"
        key = name
        if kind == "redis":
            trigger = {
                "type": "redis-streams",
                "metadata": {
                    "address": f"{LOOPBACK}:{redis_server.port}",
                    "stream": key,
                    "consumerGroup": "workers",
                    "pendingEntriesCount": str(TARGET),
                },
            }
        elif kind == "kafka":
            trigger = {
                "type": "kafka",
                "metadata": {
                    "bootstrapServers": kafka.bootstrap,
                    "consumerGroup": key,
                    "topic": key,
                    "lagThreshold": str(TARGET),
                    "offsetResetPolicy": "earliest",
                    "allowIdleConsumers": "true",
                },
            }
        elif kind == "rabbitmq":
            protocol = "amqp" if (i // len(KINDS)) % 2 == 0 else "http"
            trigger = {
                "type": "rabbitmq",
                "metadata": {"queueName": key, "mode": "QueueLength", "value": str(TARGET)},
                "authenticationRef": {"name": f"rabbitmq-{protocol}"},
            }
        elif kind == "sqs":
            trigger = {
                "type": "aws-sqs-queue",
                "metadata": {
                    "queueURL": f"{sqs.url}/123456789012/{key}",
                    "queueLength": str(TARGET),
                    "awsRegion": "eu-west-1",
                    "awsEndpoint": sqs.url,
                },
                "authenticationRef": {"name": "aws"},
            }
        else:
            trigger = {
                "type": "prometheus",
                "metadata": {
                    "serverAddress": prom.url,
                    "query": f'sum(soak_backlog{{object="{key}"}})',
                    "threshold": str(TARGET),
                    "ignoreNullValues": "false",
                },
            }
        objects.append(Obj(name, kind, key, rng.random() < fallback_share, trigger))
    return objects


def manifests(
    objects: list[Obj], interval: int, cooldown: int, window: int
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for obj in objects:
        labels = {"app": obj.name}
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": obj.name},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "w", "image": "example/worker:1"}]},
                    },
                },
            }
        )
        spec: dict[str, Any] = {
            "scaleTargetRef": {"name": obj.name},
            "pollingInterval": interval,
            "cooldownPeriod": cooldown,
            "minReplicaCount": 0,
            "maxReplicaCount": MAX_REPLICAS,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": window}}
                }
            },
            "triggers": [obj.trigger],
        }
        if obj.fallback:
            spec["fallback"] = {"failureThreshold": 3, "replicas": FALLBACK_REPLICAS}
        items.append(
            {
                "apiVersion": "autoscale.dev/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": obj.name},
                "spec": spec,
            }
        )
    return items


def auth_objects(bench: Bench) -> list[dict[str, Any]]:
    rabbit: RabbitMQ = bench.services["rabbitmq"]  # type: ignore[assignment]
    user = f"{RabbitMQ.USER}:{RabbitMQ.PASSWORD}"
    values = {
        "amqp": f"amqp://{user}@{LOOPBACK}:{rabbit.amqp_port}/%2F",
        "http": f"http://{user}@{LOOPBACK}:{rabbit.management_port}/%2F",
        "awsAccessKeyID": "AKIDSOAK",
        "awsSecretAccessKey": "soak-not-a-secret",
    }
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "soak-credentials"},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }

    def auth(name: str, refs: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "autoscale.dev/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": name},
            "spec": {
                "secretTargetRef": [
                    {"parameter": p, "name": "soak-credentials", "key": k} for p, k in refs.items()
                ]
            },
        }

    return [
        secret,
        auth("rabbitmq-amqp", {"host": "amqp"}),
        auth("rabbitmq-http", {"host": "http"}),
        auth(
            "aws",
            {"awsAccessKeyID": "awsAccessKeyID", "awsSecretAccessKey": "awsSecretAccessKey"},
        ),
    ]


def apply(
    kube: KubeAPIServer, items: list[dict[str, Any]], namespace: str | None = NAMESPACE
) -> None:
    for i in range(0, len(items), 400):
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items[i : i + 400]})
        where = ["-n", namespace] if namespace else []
        kube.kubectl("apply", "--server-side", "--force-conflicts", *where, "-f", "-", input=body)


def operator_credentials(kube: KubeAPIServer, src: Path, admin: bool) -> tuple[Path, str]:
    """deploy/base's ServiceAccount and RBAC, really applied, or the admin kubeconfig."""
    if admin:
        return kube.kubeconfig, "admin (system:masters)"
    rendered = kube.kubectl("kustomize", str(src / "deploy" / "base")).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
    apply(kube, objects, namespace=None)
    sa = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]
    path = kube.kubeconfig_for_service_account(sa["namespace"], sa["name"])
    deadline = time.monotonic() + 30
    while kube.kubectl(
        "auth", "can-i", "list", "scaledobjects.autoscale.dev", "-A", kubeconfig=path, check=False
    ).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError("the operator's RBAC never took effect")
        time.sleep(0.5)
    return path, f"ServiceAccount {sa['namespace']}/{sa['name']} with deploy/base's RBAC"


# --- watching the Deployments ------------------------------------------------------------------


class DeploymentWatch:
    """Every change of a Deployment's spec.replicas in the namespace, with the time it was seen."""

    def __init__(self, kube: KubeAPIServer, workdir: Path) -> None:
        config = yaml.safe_load(kube.kubeconfig.read_text())
        user = config["users"][0]["user"]
        cert, key = workdir / "watch.crt", workdir / "watch.key"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the bench's CA
        self.session.cert = (str(cert), str(key))
        self.session.verify = str(kube.ca_file)
        self.url = f"{kube.server}/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
        self.replicas: dict[str, int] = {}
        self.changes: queue.Queue[tuple[float, str, int, int]] = queue.Queue()
        self.relists = 0
        self.stopped = False
        threading.Thread(target=self._run, daemon=True, name="watch").start()

    def _set(self, name: str, count: int, now: float) -> None:
        old = self.replicas.get(name)
        self.replicas[name] = count
        if old is not None and old != count:
            self.changes.put((now, name, old, count))

    def _run(self) -> None:
        while not self.stopped:
            try:
                listing = self.session.get(self.url, timeout=60).json()
                now = time.monotonic()
                for item in listing["items"]:
                    self._set(item["metadata"]["name"], item["spec"].get("replicas", 1), now)
                version = listing["metadata"]["resourceVersion"]
                self.relists += 1
                while not self.stopped:
                    params = {"watch": "1", "resourceVersion": version, "timeoutSeconds": "300"}
                    params["allowWatchBookmarks"] = "true"
                    with self.session.get(self.url, params=params, stream=True, timeout=330) as r:
                        r.raise_for_status()
                        for line in r.iter_lines():
                            if not line:
                                continue
                            event = json.loads(line)
                            if event["type"] == "ERROR":
                                raise RuntimeError(event["object"].get("message"))
                            version = event["object"]["metadata"]["resourceVersion"]
                            if event["type"] in ("ADDED", "MODIFIED"):
                                item = event["object"]
                                self._set(
                                    item["metadata"]["name"],
                                    item["spec"].get("replicas", 1),
                                    time.monotonic(),
                                )
            except Exception as exc:  # list again
                log(f"deployment watch: {type(exc).__name__}: {exc}; listing again")
                time.sleep(1)


# --- measuring the operator --------------------------------------------------------------------


def proc_figures(pid: int, ports: dict[str, list[int]]) -> dict[str, Any]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) * 1024  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    inodes = set()
    fds = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        fds += 1
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    by_port: Counter[int] = Counter()
    states: Counter[str] = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                remote = int(fields[2].rsplit(":", 1)[1], 16)
                states[fields[3]] += 1
                if fields[3] == "01":
                    by_port[remote] += 1
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": round(rss / 2**20, 1),
        "threads": threads,
        "fds": fds,
        "sockets": len(inodes),
        "tcp_not_established": sum(v for k, v in states.items() if k != "01"),
        "connections": {kind: sum(by_port[p] for p in ps) for kind, ps in ports.items()},
        "cpu_s": round(cpu, 1),
    }


def poll_marks(text: str) -> dict[str, float]:
    """Per ScaledObject, a figure that moves whenever its loop polls: the last poll's timestamp
    (`autoscale_scaledobject_last_poll_timestamp_seconds`), or on operators before it existed
    the per-trigger poll-latency histogram's count (up to commit 03fd8a1); empty for the
    commits in between, which export neither."""
    marks: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("autoscale_scaledobject_last_poll_timestamp_seconds{"):
            found = re.search(r'scaledObject="([^"]+)"', line)
            if found:
                marks[found.group(1)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("autoscale_scaler_metrics_latency_seconds_count{"):
            found = re.search(r'scaledObject="([^"]+)"', line)
            if found:
                name = found.group(1)
                marks[name] = marks.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return marks


def metric_sums(text: str) -> dict[str, float]:
    wanted = {
        "polls": "autoscale_poll_duration_seconds_count",
        "polls_before_03fd8a1": "autoscale_scaler_metrics_latency_seconds_count",
        "poll_errors": "autoscale_scaler_errors_total",
        "object_errors": "autoscale_scaledobject_errors_total",
        "scale_ops": "autoscale_scale_operations_total",
        "tasks": "autoscale_asyncio_tasks",
    }
    sums = dict.fromkeys(wanted, 0.0)
    objects = set()
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for figure, metric in wanted.items():
            if name == metric:
                sums[figure] += float(line.rsplit(" ", 1)[1])
        if name == "autoscale_scaler_metrics_value":
            found = re.search(r'scaledObject="([^"]+)"', line)
            if found:
                objects.add(found.group(1))
    sums["polls"] += sums.pop("polls_before_03fd8a1")
    sums["objects_with_a_value"] = len(objects)
    return sums


# --- the soak ----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="autoscale-soak-"))
        self.src = REPO
        self.t0 = 0.0
        self.samples: list[dict[str, Any]] = []
        self.fault_log: list[dict[str, Any]] = []
        self.activations: list[dict[str, Any]] = []
        self.scale_downs: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.poll_history: list[tuple[float, dict[str, float]]] = []
        self.stop_event = threading.Event()

    # setup

    def setup(self) -> None:
        args = self.args
        log(f"workdir {self.workdir}; starting the bench")
        # Our own record of the bench, never the shared `up` state file of other engineers.
        os.environ["AUTOSCALE_TESTBED_RUN"] = str(self.workdir / "run")
        services = ("kube", "redis", "sqs", "prometheus", "rabbitmq", "kafka")
        self.bench = Bench(services, workdir=self.workdir)
        self.bench.start()
        kube: KubeAPIServer = self.bench.services["kube"]  # type: ignore[assignment]
        self.kube = kube
        self.exporter = Exporter()
        prom: Prometheus = self.bench.services["prometheus"]  # type: ignore[assignment]
        prom.add_target("soak", f"{LOOPBACK}:{self.exporter.port}")
        self.backlogs = Backlogs(self.bench, self.exporter, self.workdir)
        s = self.bench.services
        self.sources = {
            "redis": Source("redis", s["redis"], s["redis"]._pong, [s["redis"].port]),  # type: ignore[attr-defined]
            "kafka": Source(
                "kafka",
                s["kafka"],
                lambda: self._kafka_ready(),
                [s["kafka"].port, s["kafka"].sasl_port],  # type: ignore[attr-defined]
            ),
            "rabbitmq": Source(
                "rabbitmq",
                s["rabbitmq"],
                lambda: self.backlogs._rabbit("GET", "/api/overview").ok,
                [s["rabbitmq"].amqp_port, s["rabbitmq"].management_port],  # type: ignore[attr-defined]
            ),
            "sqs": Source(
                "sqs",
                s["sqs"],
                lambda: http_ok(f"{s['sqs'].url}/moto-api/"),  # type: ignore[attr-defined]
                [s["sqs"].port],  # type: ignore[attr-defined]
            ),
            "prometheus": Source(
                "prometheus",
                s["prometheus"],
                lambda: http_ok(f"{s['prometheus'].url}/-/ready"),  # type: ignore[attr-defined]
                [s["prometheus"].port],  # type: ignore[attr-defined]
            ),
        }
        # Redis restarts with its append-only file (its stream data survives a restart).
        spawn = _SPAWNS[s["redis"].process.pid]  # type: ignore[attr-defined]
        spawn["args"][spawn["args"].index("--appendonly") + 1] = "yes"
        spawn["args"] += ["--appendfsync", "always"]

        self.objects = build_objects(args.objects, self.bench, self.exporter, args.fallback_share)
        self.by_name = {o.name: o for o in self.objects}
        log("creating streams, topics, queues and series")
        self.backlogs.create(self.objects)
        from autoscale import crd_manifests

        kube.kubectl("apply", "--server-side", "-f", "-", input=crd_manifests.render_crds())
        kube.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.autoscale.dev")
        kube.kubectl("create", "namespace", NAMESPACE)
        self.kubeconfig, self.identity = operator_credentials(kube, self.src, args.admin)
        apply(kube, auth_objects(self.bench))
        log(f"applying {args.objects} Deployments and ScaledObjects")
        apply(kube, manifests(self.objects, args.polling_interval, args.cooldown, args.window))
        self.watch = DeploymentWatch(kube, self.workdir)

    def _kafka_ready(self) -> bool:
        async def probe() -> bool:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.bench.services["kafka"].bootstrap,  # type: ignore[attr-defined]
                request_timeout_ms=5000,
            )
            await admin.start()
            try:
                await admin.list_topics()
                return True
            finally:
                await admin.close()

        return bool(self.backlogs.aio.run(probe(), timeout=20))

    def start_operator(self) -> None:
        self.metrics_port, self.health_port = free_port(), free_port()
        self.operator_log = self.workdir / "operator.log"
        self.operator = ManagedProcess(
            "autoscale",
            [
                sys.executable,
                "-m",
                "autoscale",
                "run",
                f"--kubeconfig={self.kubeconfig}",
                f"--namespace={NAMESPACE}",
                f"--metrics-port={self.metrics_port}",
                f"--health-port={self.health_port}",
                f"--bind-address={LOOPBACK}",
                "--log-format=json",
                "--log-level=info",
            ],
            log_path=self.operator_log,
            env={**os.environ, "POD_NAMESPACE": NAMESPACE},
            cwd=self.src,
        )
        self.started = time.monotonic()

    def scrape(self) -> str:
        response = requests.get(f"http://{LOOPBACK}:{self.metrics_port}/metrics", timeout=30)
        return response.text

    def warm_up(self) -> None:
        deadline = time.monotonic() + 900
        polled = 0
        while time.monotonic() < deadline:
            if not self.operator.running():
                raise self.operator.fail("the operator exited during warm-up")
            with contextlib.suppress(OSError, requests.RequestException):
                polled = int(metric_sums(self.scrape())["objects_with_a_value"])
            if polled >= len(self.objects):
                break
            if int(time.monotonic() - self.started) % 60 < 3:
                log(f"warm-up: {polled} of {len(self.objects)} objects polled")
            time.sleep(3)
        self.first_poll_s = round(time.monotonic() - self.started, 1)
        log(f"{polled} objects polled once after {self.first_poll_s} s; one more interval")
        time.sleep(self.args.polling_interval)

    # the threads

    def sample(self) -> dict[str, Any]:
        ports = {kind: source.ports for kind, source in self.sources.items()}
        ports["kube"] = [self.kube.port]
        figures: dict[str, Any] = {"t": round(time.monotonic() - self.t0, 1)}
        figures["load1"] = float(Path("/proc/loadavg").read_text().split()[0])
        figures.update(proc_figures(self.operator.pid, ports))
        try:
            text = self.scrape()
            figures.update(metric_sums(text))
            self.poll_history.append((time.monotonic(), poll_marks(text)))
            del self.poll_history[:-40]  # 20 minutes at the default sampling
        except (OSError, requests.RequestException) as exc:
            figures["scrape_error"] = type(exc).__name__
        figures["faulted"] = [k for k, s in self.sources.items() if s.faulted]
        self.samples.append(figures)
        return figures

    def sampler(self) -> None:
        while not self.stop_event.wait(self.args.sample_every):
            try:
                f = self.sample()
                log(
                    f"t={f['t']:.0f}s rss={f['rss_mib']}MiB threads={f['threads']} fds={f['fds']} "
                    f"conns={f['connections']} polls={f.get('polls')} "
                    f"errors={f.get('poll_errors')} tasks={f.get('tasks')} "
                    f"faulted={f['faulted']}"
                )
                self.save()
            except Exception:
                self.errors.append(traceback.format_exc())

    def faulter(self) -> None:
        low, high = self.args.fault_gap
        while not self.stop_event.wait(self.rng.uniform(low, high)):
            if time.monotonic() - self.t0 > self.args.duration - min(300, self.args.duration / 5):
                return  # leave the end of the run fault-free, to see everything recover
            source = self.sources[self.rng.choice(KINDS)]
            kind = self.rng.choice(FAULTS)
            seconds = self.rng.uniform(20, 120)
            log(f"fault: {kind} {source.kind} for {seconds:.0f} s")
            try:
                source.fault(kind, seconds)
                if source.kind == "sqs" and kind != "freeze":
                    with source.lock:
                        for obj in self.objects:
                            if obj.kind == "sqs":
                                self.backlogs.restore(obj)
            except Exception:
                self.errors.append(traceback.format_exc())
                log(f"fault on {source.kind} failed: {traceback.format_exc()}")
            finally:
                record = source.faults[-1]
                record["end"] = time.monotonic()
                source.faulted = False
            log(f"fault over: {source.kind} back after {time.monotonic() - record['start']:.0f} s")
            self.fault_log.append(
                {
                    "source": record["source"],
                    "kind": record["kind"],
                    "at_s": round(record["start"] - self.t0, 1),
                    "seconds": record["seconds"],
                    "back_after_s": round(record.get("end", time.monotonic()) - record["start"], 1),
                }
            )

    def driver(self) -> None:
        """Backlogs appear on idle objects and drain later; activations are checked."""
        interval = self.args.polling_interval
        next_activation = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            self.check_activations(now)
            self.check_changes()
            ending = now - self.t0 > self.args.duration - 60
            if now >= next_activation and not ending:
                next_activation = now + self.args.activation_every
                idle = [
                    o
                    for o in self.objects
                    if o.backlog == 0
                    and o.activation is None
                    and self.watch.replicas.get(o.name) == 0
                    and self.sources[o.kind].healthy_since(interval * 2)
                ]
                if idle:
                    self.activate(self.rng.choice(idle))
            for obj in self.objects:
                if obj.backlog and now >= obj.drain_at:
                    self.drain(obj)
            time.sleep(0.5)

    def activate(self, obj: Obj) -> None:
        source = self.sources[obj.kind]
        expected = self.rng.randint(1, 4)
        with source.lock:
            if source.faulted:
                return
            try:
                self.backlogs.make(obj, expected * TARGET)
            except Exception as exc:
                self.errors.append(f"backlog on {obj.name}: {type(exc).__name__}: {exc}")
                return
            now = time.monotonic()
        obj.backlog = expected * TARGET
        obj.drain_at = now + self.rng.uniform(60, 240)
        obj.activation = {
            "object": obj.name,
            "source": obj.kind,
            "at_s": round(now - self.t0, 1),
            "start": now,
            "expected": expected,
        }

    def drain(self, obj: Obj) -> None:
        source = self.sources[obj.kind]
        with source.lock:
            if not source.healthy_since(0):
                return
            try:
                self.backlogs.drain(obj)
            except Exception as exc:
                self.errors.append(f"drain of {obj.name}: {type(exc).__name__}: {exc}")
                obj.drain_at = time.monotonic() + 10
                return
            obj.backlog = 0

    def check_activations(self, now: float, final: bool = False) -> None:
        deadline_after = self.args.polling_interval + self.args.slack
        for obj in self.objects:
            act = obj.activation
            if act is None:
                continue
            up = next((t for t, count in obj.history if t >= act["start"] and count > 0), None)
            if up is not None or now - act["start"] > deadline_after:
                act["latency_s"] = round(up - act["start"], 2) if up is not None else None
                end = act["start"] + deadline_after
                act["source_faulted"] = self.sources[obj.kind].faulted_during(act["start"], end)
                if up is not None:
                    act["outcome"] = "scaled up"
                elif act["source_faulted"]:
                    act["outcome"] = "not checked: its source faulted meanwhile"
                elif obj.backlog == 0:
                    act["outcome"] = "not checked: drained before the deadline"
                elif final and now - act["start"] <= deadline_after:
                    act["outcome"] = "not checked: the run ended first"
                else:
                    act["outcome"] = "MISSED"
                    log(f"MISSED activation: {act}")
                act["start_abs"] = act.pop("start")
                self.activations.append(act)
                obj.activation = None

    def check_changes(self) -> None:
        while True:
            try:
                when, name, old, new = self.watch.changes.get_nowait()
            except queue.Empty:
                return
            obj = self.by_name.get(name)
            if obj is None:
                continue
            obj.history.append((when, new))
            if new >= old:
                continue
            self.scale_downs.append(self.classify_down(obj, when, old, new))

    def classify_down(self, obj: Obj, when: float, old: int, new: int) -> dict[str, Any]:
        source = self.sources[obj.kind]
        record: dict[str, Any] = {
            "object": obj.name,
            "source": obj.kind,
            "at_s": round(when - self.t0, 1),
            "from": old,
            "to": new,
            "fallback": obj.fallback,
            "harness_backlog": obj.backlog,
        }
        # Faulted: from 2 s after a fault began until it ended (a decision can rest on a poll
        # made just before the fault).
        faulted = any(f["start"] + 2 <= when <= f.get("end", math.inf) for f in source.faults)
        record["source_faulted"] = faulted
        if faulted:
            if obj.fallback and new == FALLBACK_REPLICAS:
                record["verdict"] = "ok: fallback count while the source is faulted"
            else:
                record["verdict"] = "WRONG: scaled down while its source was faulted"
        elif obj.backlog:
            needed = min(MAX_REPLICAS, math.ceil(obj.backlog / TARGET))
            if new >= needed:
                record["verdict"] = "ok: still at least what the backlog asks for"
            else:
                with source.lock:
                    try:
                        held = self.backlogs.read(obj) if not source.faulted else None
                    except Exception as exc:
                        held = None
                        record["read_error"] = type(exc).__name__
                record["source_holds"] = held
                if held is None:
                    record["verdict"] = "unclear: the source could not be read"
                elif held >= needed * TARGET - (TARGET - 1) and new < math.ceil(held / TARGET):
                    record["verdict"] = "WRONG: below what the backlog asks for"
                else:
                    record["verdict"] = "ok: the source lost the backlog (restart)"
        else:
            record["verdict"] = "ok: no backlog"
        if record["verdict"].startswith("WRONG"):
            log(f"WRONG scale-down: {record}")
        return record

    # the run

    def run(self) -> dict[str, Any]:
        try:
            self.setup()
            self.start_operator()
            self.warm_up()
            self.t0 = time.monotonic()
            self.sample()
            log(f"soak starts: {self.args.duration:.0f} s")
            threads = [
                threading.Thread(target=self.sampler, daemon=True),
                threading.Thread(target=self.faulter, daemon=True),
                threading.Thread(target=self.driver, daemon=True),
            ]
            for thread in threads:
                thread.start()
            while time.monotonic() - self.t0 < self.args.duration:
                if not self.operator.running():
                    self.errors.append(f"the operator exited ({self.operator.popen.returncode})")
                    break
                time.sleep(1)
            self.stop_event.set()
            for thread in threads:
                thread.join(timeout=400)
            # Two polling intervals with no fault, so the last figures show recovered sources.
            time.sleep(2 * self.args.polling_interval)
            self.check_changes()
            self.check_activations(time.monotonic(), final=True)
            self.sample()
        finally:
            if hasattr(self, "operator") and self.operator.running():
                self.operator.stop(timeout=20)
            for source in getattr(self, "sources", {}).values():
                with contextlib.suppress(Exception):
                    os.killpg(source.process.pid, signal.SIGCONT)
            if getattr(getattr(self, "backlogs", None), "producer", None) is not None:
                with contextlib.suppress(Exception):
                    self.backlogs.aio.run(self.backlogs.producer.stop(), timeout=10)
            if hasattr(self, "watch"):
                self.watch.stopped = True
            logs = Path("/tmp/soak-logs")
            logs.mkdir(exist_ok=True)
            self.kept_log = logs / f"{self.stem}-operator.log"
            with contextlib.suppress(OSError, AttributeError):
                self.kept_log.write_bytes(self.operator_log.read_bytes())
            self.bench.stop()
        return self.result()

    def stalled_loops(self) -> dict[str, Any]:
        """Objects that did not poll at all over the last 10 minutes (or, in a shorter run,
        since the earliest kept sample at least 3 polling intervals back): their loop has
        stopped."""
        if len(self.poll_history) < 2 or not self.poll_history[-1][1]:
            # Not measurable: the operator exports no per-object poll figure.
            return {"window_s": None, "count": None, "by_source": {}, "objects": []}
        end, last = self.poll_history[-1]
        window = max(600.0, 3.0 * self.args.polling_interval)
        older = [(t, c) for t, c in self.poll_history if end - t >= 3 * self.args.polling_interval]
        start, first = next(
            ((t, c) for t, c in older if end - t <= window),
            older[0] if older else self.poll_history[0],
        )
        stalled = sorted(
            name for name in self.by_name if last.get(name, 0.0) == first.get(name, 0.0)
        )
        return {
            "window_s": round(end - start),
            "count": len(stalled),
            "by_source": dict(Counter(self.by_name[n].kind for n in stalled)),
            "objects": stalled[:200],
        }

    def operator_log_summary(self) -> dict[str, Any]:
        levels: Counter[str] = Counter()
        messages: Counter[str] = Counter()
        tracebacks = []
        for line in self.kept_log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = {"level": "raw", "msg": line}
            levels[str(entry.get("level", "?"))] += 1
            text = json.dumps(entry)
            if re.search(r"Traceback|crashed|the operator stopped", text):
                tracebacks.append(text[:2000])
            if str(entry.get("level", "")).lower() in ("warning", "error", "critical", "raw"):
                messages[re.sub(r"\d+", "N", str(entry.get("msg", "")))[:120]] += 1
        return {
            "lines_by_level": dict(levels),
            "tracebacks_or_crashes": len(tracebacks),
            "first_tracebacks": tracebacks[:5],
            "top_warnings": messages.most_common(12),
        }

    def result(self) -> dict[str, Any]:
        commit = subprocess.run(
            ["git", "-C", str(self.src), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(self.src), "status", "--porcelain", "--", "autoscale"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        faults = Counter(f"{f['kind']}" for f in self.fault_log)
        by_source = Counter(f"{f['source']}" for f in self.fault_log)
        for act in self.activations:  # how late a missed activation came, if it came at all
            start = act.pop("start_abs", None)
            if act["outcome"] == "MISSED" and start is not None:
                history = self.by_name[act["object"]].history
                up = next((t for t, count in history if t >= start and count > 0), None)
                act["eventually_after_s"] = round(up - start, 1) if up is not None else None
        outcomes = Counter(a["outcome"] for a in self.activations)
        late = sorted(
            a["eventually_after_s"] for a in self.activations if a.get("eventually_after_s")
        )
        verdicts = Counter(d["verdict"] for d in self.scale_downs)
        latencies = sorted(a["latency_s"] for a in self.activations if a["latency_s"] is not None)
        return {
            "command": " ".join(["python -m benchmarks.soak", *sys.argv[1:]]),
            "commit": commit,
            "autoscale_dirty": bool(dirty),
            "started_utc": self.started_utc,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "shared": load_note(self.samples),
            },
            "scenario": {
                **{k: v for k, v in vars(self.args).items() if k != "results"},
                "operator_credentials": self.identity,
                "fallback_objects": sum(o.fallback for o in self.objects),
                "objects_by_source": dict(Counter(o.kind for o in self.objects)),
            },
            "first_poll_of_all_s": self.first_poll_s,
            "faults": {
                "by_kind": dict(faults),
                "by_source": dict(by_source),
                "list": self.fault_log,
            },
            "activations": {
                "outcomes": dict(outcomes),
                "latency_p50_s": latencies[len(latencies) // 2] if latencies else None,
                "latency_p99_s": latencies[int(len(latencies) * 0.99)] if latencies else None,
                "latency_max_s": latencies[-1] if latencies else None,
                "missed_but_scaled_later": len(late),
                "missed_later_after_s_max": late[-1] if late else None,
                "list": self.activations,
            },
            "scale_downs": {"verdicts": dict(verdicts), "list": self.scale_downs},
            "samples": self.samples,
            "trend": trend(self.samples),
            "operator_log": self.operator_log_summary(),
            "stalled_loops": self.stalled_loops(),
            "harness_errors": self.errors[:50],
            "watch_relists": self.watch.relists,
        }

    def save(self) -> None:
        """The samples so far, in case the run dies before the end."""
        partial = self.args.results / f"{self.stem}.partial.json"
        partial.write_text(
            json.dumps({"samples": self.samples, "faults": self.fault_log}, indent=1) + "\n"
        )


def load_note(samples: list[dict[str, Any]]) -> str:
    """The machine's 1-minute load average over the run (everything on it, the bench included)."""
    loads = sorted(s["load1"] for s in samples if "load1" in s)
    if not loads:
        return "load average not recorded"
    return (
        f"1-minute load average during the soak: median {loads[len(loads) // 2]}, max {loads[-1]}"
    )


def trend(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Start (after warm-up), middle and end of each figure, and its least-squares slope."""
    found: dict[str, Any] = {}
    usable = [s for s in samples if "rss_mib" in s]
    if len(usable) < 2:
        return found
    figures = ["rss_mib", "threads", "fds", "sockets"]
    if all(s.get("tasks") for s in usable):  # operators that export their task count
        figures.append("tasks")

    def slope(points: list[dict[str, Any]], figure: str) -> float | None:
        xs = [s["t"] / 3600 for s in points]
        ys = [float(s[figure]) for s in points]
        if len(xs) < 2:
            return None
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        var = sum((x - mean_x) ** 2 for x in xs)
        return round(sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var, 2)

    half = usable[len(usable) // 2 :]
    for figure in figures:
        ys = [float(s[figure]) for s in usable]
        found[figure] = {
            "start": ys[0],
            "middle": ys[len(ys) // 2],
            "end": ys[-1],
            "min": min(ys),
            "max": max(ys),
            "slope_per_hour": slope(usable, figure),
            "slope_second_half_per_hour": slope(half, figure),
        }
    return found


def markdown(result: dict[str, Any]) -> str:
    sc = result["scenario"]
    tr = result["trend"]
    act = result["activations"]
    downs = result["scale_downs"]["verdicts"]
    wrong = sum(v for k, v in downs.items() if k.startswith("WRONG"))
    missed = act["outcomes"].get("MISSED", 0)
    checked = act["outcomes"].get("scaled up", 0) + missed
    log_summary = result["operator_log"]
    stalled = result.get("stalled_loops") or {"count": None, "window_s": None, "by_source": {}}
    first, last = result["samples"][0], result["samples"][-1]

    def row(figure: str, unit: str = "") -> str:
        t = tr.get(figure, {})
        return (
            f"| {figure} | {t.get('start')}{unit} | {t.get('middle')}{unit} | {t.get('end')}{unit} "
            f"| {t.get('min')} to {t.get('max')} | {t.get('slope_per_hour')}{unit}/h "
            f"| {t.get('slope_second_half_per_hour')}{unit}/h |"
        )

    faults = ", ".join(f"{k} {v}" for k, v in sorted(result["faults"]["by_kind"].items()))
    by_source = ", ".join(f"{k} {v}" for k, v in sorted(result["faults"]["by_source"].items()))
    spread = ", ".join(f"{k} {v}" for k, v in sc["objects_by_source"].items())
    lines = [
        f"### Soak: {sc['objects']} ScaledObjects, {sc['duration'] / 60:g} minutes, "
        "random source faults",
        "",
        "```sh",
        result["command"].replace("python", ".venv/bin/python", 1),
        "```",
        "",
        f"Commit `{result['commit'][:12]}` (a clean snapshot: `git clone` of the repository, the "
        f"operator started from it), {result['started_utc']}. Machine: "
        f"{result['machine']['cpus']} CPUs, Python {result['machine']['python']}, "
        f"{result['machine']['platform']}, {result['machine']['shared']}.",
        "",
        f"Objects: {sc['objects']} ({spread}; "
        f"rabbitmq half AMQP, half HTTP), {sc['fallback_objects']} with `fallback` "
        f"(failureThreshold 3, replicas {FALLBACK_REPLICAS}); pollingInterval "
        f"{sc['polling_interval']} s, cooldownPeriod {sc['cooldown']} s, scale-down "
        f"stabilization {sc['window']} s. The operator runs as {sc['operator_credentials']}. "
        f"Every object was polled once {result['first_poll_of_all_s']} s after the operator "
        "started; measurement starts one polling interval later.",
        "",
        "| operator process | start | middle | end | range | slope, whole run | slope, 2nd half |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        row("rss_mib", " MiB"),
        row("threads"),
        row("fds"),
        row("sockets"),
        *([row("tasks")] if "tasks" in tr else []),
        "",
        f"Faults injected: {sum(result['faults']['by_kind'].values())} ({faults}; by source: "
        f"{by_source}), each 20 to 120 s before the restart or thaw.",
        "",
        f"Activations: {checked} checked, **{missed} missed** (deadline pollingInterval + "
        f"{sc['slack']} s); "
        + ", ".join(f"{k}: {v}" for k, v in act["outcomes"].items() if k != "MISSED")
        + (
            f"; of the missed, {act['missed_but_scaled_later']} scaled up later (at most "
            f"{act['missed_later_after_s_max']} s after the backlog appeared)"
            if act["missed_but_scaled_later"]
            else ("; none of the missed ever scaled up" if missed else "")
        )
        + f". Backlog -> replicas > 0: p50 {act['latency_p50_s']} s, p99 {act['latency_p99_s']} s,"
        f" max {act['latency_max_s']} s (CPU-sensitive: see the load above).",
        "",
        f"Scale-downs: {sum(downs.values())} checked, **{wrong} wrong**; "
        + "; ".join(f"{k}: {v}" for k, v in downs.items())
        + ".",
        "",
        f"Operator connections per source at start / end: {first['connections']} / "
        f"{last['connections']}; polls {last.get('polls', 0) - first.get('polls', 0):.0f}, poll "
        f"errors {last.get('poll_errors', 0) - first.get('poll_errors', 0):.0f}, scale operations "
        f"{last.get('scale_ops', 0) - first.get('scale_ops', 0):.0f} during the soak; operator CPU "
        f"{last['cpu_s'] - first['cpu_s']:.0f} s over {last['t'] - first['t']:.0f} s "
        "(see the load above).",
        "",
        f"Operator log: {log_summary['lines_by_level']}; tracebacks or crash lines: "
        f"**{log_summary['tracebacks_or_crashes']}**.",
        "",
        (
            f"Loops that stopped: {stalled['count']} ScaledObjects did not poll at all in the "
            f"last {stalled['window_s']} s ({stalled['by_source']})."
            if stalled["count"] is not None
            else "Loops that stopped: not measurable (this operator exports no per-object poll "
            "figure)."
        )
        + (
            " Tasks: the operator's asyncio task count (`autoscale_asyncio_tasks`)."
            if "tasks" in tr
            else " The asyncio task count is not exported by this operator; stopped loops, "
            "threads and open file descriptors (from /proc) stand in for it."
        ),
        "",
    ]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    samples = [s for s in result["samples"] if "rss_mib" in s]
    minutes = [s["t"] / 60 for s in samples]
    figure, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(minutes, [s["rss_mib"] for s in samples])
    axes[0].set_ylabel("RSS (MiB)")
    axes[1].plot(minutes, [s["threads"] for s in samples], label="threads")
    axes[1].plot(minutes, [s["fds"] for s in samples], label="open fds")
    axes[1].legend()
    for kind in KINDS:
        axes[2].plot(minutes, [s["connections"].get(kind, 0) for s in samples], label=kind)
    axes[2].set_ylabel("connections")
    axes[2].legend(fontsize="small")
    for fault in result["faults"]["list"]:
        for axis in axes:
            start = fault["at_s"] / 60
            axis.axvspan(start, start + fault["back_after_s"] / 60, color="red", alpha=0.1)
    axes[2].set_xlabel("minutes (red: a source faulted)")
    figure.suptitle(f"soak, {result['scenario']['objects']} ScaledObjects")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds, after warm-up")
    parser.add_argument("--polling-interval", type=int, default=20)
    parser.add_argument("--cooldown", type=int, default=60)
    parser.add_argument("--window", type=int, default=30, help="scale-down stabilization, s")
    parser.add_argument("--fallback-share", type=float, default=0.2)
    parser.add_argument("--fault-gap", type=float, nargs=2, default=(60.0, 180.0))
    parser.add_argument("--activation-every", type=float, default=5.0)
    parser.add_argument("--slack", type=float, default=30.0, help="seconds beyond pollingInterval")
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--admin", action="store_true", help="run the operator as admin")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # A background job starts with SIGINT ignored; either signal stops the run cleanly.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    soak = Soak(args)
    soak.started_utc = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    soak.stem = f"soak-{time.strftime('%Y%m%dT%H%M', time.gmtime())}{args.label}"
    result = soak.run()
    (args.results / f"{soak.stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (args.results / f"{soak.stem}.md").write_text(text)
    if plot(result, args.results / f"{soak.stem}.png"):
        log(f"plot: {soak.stem}.png")
    with contextlib.suppress(FileNotFoundError):
        (args.results / f"{soak.stem}.partial.json").unlink()
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
