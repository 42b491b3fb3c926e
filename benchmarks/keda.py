"""KEDA's operator, built from the Go module proxy, to run side by side with ours on the bench.

`python -m benchmarks.keda build` builds it into the bench cache; `python -m benchmarks.keda demo`
shows it working on the bench: a kube-apiserver (no controller-manager, so no HPA controller),
Redis, Kafka and Prometheus, one ScaledObject per trigger type the benchmark uses, each taken
0 -> 1 by KEDA's operator when a backlog appears and back to 0 after the cooldown.

The pinned release is KEDA v2.21.0: the newest v2 release the Go module proxy lists for
`github.com/kedacore/keda/v2` (it lists v2.15.1, v2.16.1, v2.20.2 and v2.21.0) and it builds
with the Go 1.26 of these machines (its go.mod asks for go 1.26.0).

Why a wrapper module: `go install github.com/kedacore/keda/v2/cmd/operator@v2.21.0` is refused
because KEDA's go.mod has a `replace` directive (and an `exclude`); both only apply in the main
module. The wrapper requires KEDA at the release and copies those directives, read from the
release's own go.mod, so the build uses the dependency versions KEDA's release does (the same
trap as kube-apiserver's staging modules, see tests/testbed/install.py).

Running it without a cluster around it (see `command`): credentials are the bench's admin
kubeconfig (KEDA's operator needs read on most things and write on HPAs, `/scale`, events and its
own CRDs' status: the admin user covers it, which is fine for a benchmark); leader election off;
no certificate rotation, no webhook or APIService patching; the metrics apiserver and the
admission webhooks are separate KEDA binaries that are not run. The operator always serves its
gRPC metrics service (for the metrics apiserver) over mutual TLS and stops if it finds no
certificates, so `command` gives it throwaway ones on a free loopback port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.testbed.cache import building, cache_root, format_duration, is_stamped, locked, log
from tests.testbed.install import (
    InstallError,
    _go_build,
    _go_env,
    _require_tool,
    _run,
    _write_files,
)
from tests.testbed.pki import TinyCA
from tests.testbed.procs import LOOPBACK, free_port

MODULE = "github.com/kedacore/keda/v2"
VERSION = "2.21.0"
RECIPE = 2  # bump when the way it is built changes, so caches rebuild
PACKAGE = f"{MODULE}/cmd/operator"
CRD_FILES = (
    "keda.sh_scaledobjects.yaml",
    "keda.sh_scaledjobs.yaml",
    "keda.sh_triggerauthentications.yaml",
    "keda.sh_clustertriggerauthentications.yaml",
    # The operator also runs the CloudEventSource controllers: without these two CRDs their
    # caches never sync and controller-runtime stops the manager after its sync timeout.
    "eventing.keda.sh_cloudeventsources.yaml",
    "eventing.keda.sh_clustercloudeventsources.yaml",
)
COMPONENT = f"keda v{VERSION}"


def keda_dir() -> Path:
    return cache_root() / f"keda-v{VERSION}-r{RECIPE}"


def binary_path() -> Path:
    return keda_dir() / "keda-operator"


def ensure_built() -> Path:
    """The KEDA operator binary of the pinned release, built once into the bench cache."""
    binary = binary_path()
    if is_stamped(keda_dir()):
        return binary
    root = cache_root()
    with locked(root):
        if is_stamped(keda_dir()):  # built by whoever held the lock before us
            return binary
        _build(root)
    return binary


def _build(root: Path) -> None:
    _require_tool("go", f"build KEDA's operator ({MODULE}) from the Go module proxy")
    env = _go_env(root)
    started = time.monotonic()
    workdir = root / "src" / f"keda-v{VERSION}"
    shutil.rmtree(workdir, ignore_errors=True)
    _write_files(
        workdir, {"tools.go": f'//go:build tools\n\npackage tools\n\nimport _ "{PACKAGE}"\n'}
    )
    log(COMPONENT, "step 1/3: resolving modules (downloads about 1.5 GB on a cold cache)")
    _run(COMPONENT, ["go", "mod", "init", "local/kedabench"], cwd=workdir, env=env)
    info = json.loads(
        _run(
            COMPONENT,
            ["go", "mod", "download", "-json", f"{MODULE}@v{VERSION}"],
            cwd=workdir,
            env=env,
        )
    )
    upstream = json.loads(
        _run(COMPONENT, ["go", "mod", "edit", "-json", info["GoMod"]], cwd=workdir, env=env)
    )
    _check_go(upstream.get("Go", ""), env, workdir)
    edits = [f"-require={MODULE}@v{VERSION}", f"-go={upstream['Go']}"]
    for replace in upstream.get("Replace") or []:
        old, new = replace["Old"], replace["New"]
        if not new.get("Version"):
            raise InstallError(
                f"{COMPONENT}: go.mod replaces {old['Path']} with the local path {new['Path']}, "
                "which a wrapper module cannot follow"
            )
        old_spec = old["Path"] + (f"@{old['Version']}" if old.get("Version") else "")
        edits.append(f"-replace={old_spec}={new['Path']}@{new['Version']}")
    for exclude in upstream.get("Exclude") or []:
        edits.append(f"-exclude={exclude['Path']}@{exclude['Version']}")
    _run(COMPONENT, ["go", "mod", "edit", *edits], cwd=workdir, env=env)
    godebug = re.findall(r"^godebug .*$", Path(info["GoMod"]).read_text(), re.M)
    if godebug:  # keep the release's GODEBUG defaults
        with open(workdir / "go.mod", "a") as gomod:
            gomod.write("\n" + "\n".join(godebug) + "\n")
    stop = _heartbeat("resolving modules", started)
    try:
        _run(COMPONENT, ["go", "mod", "tidy"], cwd=workdir, env=env)
    finally:
        stop()
    resolved = time.monotonic()
    log(COMPONENT, f"modules resolved in {format_duration(resolved - started)}")
    commit = (info.get("Origin") or {}).get("Hash", "")
    ldflags = f"-s -w -X {MODULE}/version.Version={VERSION} -X {MODULE}/version.GitCommit={commit}"
    with building(keda_dir()) as staging:
        log(COMPONENT, "step 2/3: compiling the operator (about 20-40 minutes cold on 2 cores)")
        _go_build(
            COMPONENT, PACKAGE, staging / "keda-operator", cwd=workdir, env=env, ldflags=ldflags
        )
        compiled = time.monotonic()
        log(COMPONENT, "step 3/3: copying the CRDs from the same module source")
        (staging / "crds").mkdir()
        for name in CRD_FILES:
            shutil.copyfile(
                Path(info["Dir"]) / "config" / "crd" / "bases" / name, staging / "crds" / name
            )
        go_version = _run(COMPONENT, ["go", "env", "GOVERSION"], cwd=workdir, env=env).strip()
        (staging / "build.json").write_text(
            json.dumps(
                {
                    "module": MODULE,
                    "version": VERSION,
                    "commit": commit,
                    "go": go_version,
                    "resolve_seconds": round(resolved - started, 1),
                    "compile_seconds": round(compiled - resolved, 1),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
                indent=2,
            )
            + "\n"
        )
    log(COMPONENT, f"built in {format_duration(time.monotonic() - started)} into {keda_dir()}")


def _check_go(required: str, env: dict[str, str], workdir: Path) -> None:
    have = _run(COMPONENT, ["go", "env", "GOVERSION"], cwd=workdir, env=env).strip()
    if _version_tuple(have.removeprefix("go")) < _version_tuple(required):
        raise InstallError(f"{COMPONENT}: needs Go {required} or later, `go` is {have}")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def _heartbeat(what: str, since: float) -> Callable[[], None]:
    """Say every 30 s that a long silent step is still going."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(30):
            log(COMPONENT, f"still {what} ({format_duration(time.monotonic() - since)})")

    threading.Thread(target=beat, daemon=True).start()
    return done.set


def build_info() -> dict[str, Any]:
    """What `ensure_built` recorded: version, commit, Go version, cold build seconds."""
    info: dict[str, Any] = json.loads((keda_dir() / "build.json").read_text())
    return info


def crd_manifests() -> list[dict[str, Any]]:
    """The CRDs KEDA's operator watches, from the pinned release's config/crd/bases.

    ScaledObject, ScaledJob, (Cluster)TriggerAuthentication, and (Cluster)CloudEventSource,
    which the operator needs too (see CRD_FILES).
    """
    crds = ensure_built().parent / "crds"
    manifests: list[dict[str, Any]] = []
    for name in CRD_FILES:
        manifests.extend(
            doc for doc in yaml.safe_load_all((crds / name).read_text()) if doc is not None
        )
    return manifests


def command(
    kubeconfig: Path, namespace: str, metrics_port: int
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment to run KEDA's operator against the bench's kube-apiserver.

    `namespace` is the one namespace to watch, or "" for all. Prometheus metrics are served on
    http://127.0.0.1:<metrics_port>/metrics. The operator's gRPC metrics service (for KEDA's
    metrics apiserver, not run here) cannot be turned off: it gets a free loopback port and
    throwaway certificates in `<kubeconfig's directory>/keda-grpc-certs`.
    """
    certs = _grpc_certs(kubeconfig.parent / "keda-grpc-certs")
    argv = [
        str(ensure_built()),
        "--leader-elect=false",
        f"--metrics-bind-address={LOOPBACK}:{metrics_port}",
        "--health-probe-bind-address=0",  # 0 turns it off
        f"--metrics-service-bind-address={LOOPBACK}:{free_port()}",
        f"--cert-dir={certs}",
        f"--ca-dir={certs / 'trusted'}",
        "--enable-cert-rotation=false",
        "--enable-webhook-patching=false",
        "--enable-apiservice-patching=false",
        "--zap-encoder=console",
        "--zap-log-level=info",
    ]
    home = namespace or "keda"  # where leader election would run and cluster-wide secrets live
    env = {
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACE": namespace,
        "POD_NAMESPACE": home,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": home,
    }
    return argv, env


def _grpc_certs(directory: Path) -> Path:
    """ca.crt, tls.crt and tls.key for the operator's gRPC server, made once per directory."""
    if (directory / "tls.key").is_file():
        return directory
    staging = Path(tempfile.mkdtemp(prefix=".keda-certs-", dir=directory.parent))
    ca = TinyCA("keda-bench-ca")
    (staging / "ca.crt").write_bytes(ca.cert_pem)
    leaf = ca.issue("keda-operator", hosts=("localhost", LOOPBACK), server=True, client=True)
    (staging / "tls.crt").write_bytes(leaf.cert_pem)
    (staging / "tls.key").write_bytes(leaf.key_pem)
    (staging / "tls.key").chmod(0o600)
    (staging / "trusted").mkdir()  # --ca-dir: no extra CAs for scalers
    with contextlib.suppress(OSError):  # another caller may have won the race: theirs is as good
        os.replace(staging, directory)
    shutil.rmtree(staging, ignore_errors=True)
    return directory


# --- the demo ---------------------------------------------------------------------------------

NAMESPACE = "keda-demo"
COOLDOWN = 10
STREAM, STREAM_GROUP = "emails", "mailers"
TOPIC, KAFKA_GROUP = "orders", "order-workers"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def demo() -> int:
    """KEDA's operator taking three Deployments (redis-streams, kafka, prometheus) 0 -> 1 -> 0."""
    from tests.testbed.bench import Bench
    from tests.testbed.kube import KubeAPIServer
    from tests.testbed.procs import ManagedProcess, http_ok
    from tests.testbed.services import Kafka, Prometheus, Redis

    built = time.monotonic()
    binary = ensure_built()
    say(f"KEDA operator: {binary} ({format_duration(time.monotonic() - built)} to ensure)")
    workdir = Path(tempfile.mkdtemp(prefix="keda-demo-"))
    bench = Bench(("kube", "redis", "kafka", "prometheus"), workdir=workdir)
    operator: ManagedProcess | None = None
    exporter: Any = None
    try:
        say("starting the bench: kube-apiserver (with etcd), Redis, Kafka, Prometheus ...")
        bench.start()
        kube, store, kafka, prom = (
            bench.services[n] for n in ("kube", "redis", "kafka", "prometheus")
        )
        assert isinstance(kube, KubeAPIServer)
        assert isinstance(store, Redis)
        assert isinstance(kafka, Kafka)
        assert isinstance(prom, Prometheus)
        exporter = _Exporter(prom)
        targets = _setup(kube, store, kafka, prom)

        metrics_port = free_port()
        argv, extra_env = command(kube.kubeconfig, NAMESPACE, metrics_port)
        operator = ManagedProcess(
            "keda-operator",
            argv,
            env={**os.environ, **extra_env},
            log_path=workdir / "keda-operator.log",
        )
        metrics_url = f"http://{LOOPBACK}:{metrics_port}/metrics"
        _wait(lambda: http_ok(metrics_url), 60, "KEDA's metrics endpoint", operator)
        say(f"KEDA operator running, pid {operator.pid}, log {operator.log_path}")
        _wait(
            lambda: all(_ready(kube, name) for name in targets),
            60,
            "every ScaledObject Ready",
            operator,
        )
        say("ScaledObjects Ready; KEDA made one HPA each (no HPA controller runs on the bench):")
        print(kube.kubectl("get", "so,hpa,deploy", "-n", NAMESPACE).stdout, flush=True)
        time.sleep(3)
        for name in targets:
            _expect_replicas(kube, name, 0)

        say("backlog: 9 emails delivered unacknowledged, 40 orders unconsumed, gauge at 25")
        appeared = time.monotonic()
        ids = _deliver_emails(store, 9)
        _run_async(_produce(kafka, 40))
        exporter.set(25)
        reaction = _wait_all(kube, targets, "1", 90, operator, since=appeared)
        for name, seconds in reaction.items():
            say(f"{name}: 0 -> 1 by KEDA {seconds:.1f} s after the backlog appeared")
        time.sleep(4)
        for name in targets:
            _expect_replicas(kube, name, 1)  # 1 -> N is the HPA controller's job, absent here
        say("still 1 each after 4 s: going further is the HPA's job, and no HPA controller runs")

        say(
            "backlog consumed: emails acknowledged, orders committed, gauge at 0 "
            f"(cooldown {COOLDOWN} s)"
        )
        consumed = time.monotonic()
        store_client = _redis(store)
        store_client.xack(STREAM, STREAM_GROUP, *ids)
        store_client.close()
        _run_async(_consume(kafka, 40))
        exporter.set(0)
        back = _wait_all(kube, targets, "0", COOLDOWN + 90, operator, since=consumed)
        for name, seconds in back.items():
            say(f"{name}: 1 -> 0 by KEDA {seconds:.1f} s after the backlog was consumed")
        print(kube.kubectl("get", "so,hpa,deploy", "-n", NAMESPACE).stdout, flush=True)
        errors = _metric_sum(metrics_url, "keda_scaled_object_errors_total")
        say(f"keda_scaled_object_errors_total = {errors:g}")
        say("done: KEDA's operator scaled all three 0 -> 1 -> 0 on the bench")
        return 0
    except KeyboardInterrupt:
        say("interrupted: cleaning up")
        return 130
    finally:
        if operator is not None:
            operator.stop()
        if exporter is not None:
            exporter.close()
        bench.stop()


def _setup(kube: Any, store: Any, kafka: Any, prom: Any) -> dict[str, dict[str, Any]]:
    kube.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": crd_manifests()}),
    )
    for crd in crd_manifests():
        kube.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}")
    kube.kubectl("create", "namespace", NAMESPACE)
    client = _redis(store)
    client.xgroup_create(STREAM, STREAM_GROUP, id="$", mkstream=True)
    client.close()
    _run_async(_create_topic(kafka))
    triggers = {
        "redis-worker": {
            "type": "redis-streams",
            "metadata": {
                "address": f"{LOOPBACK}:{store.port}",
                "stream": STREAM,
                "consumerGroup": STREAM_GROUP,
                "pendingEntriesCount": "3",
            },
        },
        "kafka-worker": {
            "type": "kafka",
            "metadata": {
                "bootstrapServers": kafka.bootstrap,
                "consumerGroup": KAFKA_GROUP,
                "topic": TOPIC,
                "lagThreshold": "10",
                "offsetResetPolicy": "earliest",
            },
        },
        "prometheus-worker": {
            "type": "prometheus",
            "metadata": {
                "serverAddress": prom.url,
                "query": "sum(keda_demo_backlog)",
                "threshold": "10",
            },
        },
    }
    items: list[dict[str, Any]] = []
    for name, trigger in triggers.items():
        labels = {"app": name}
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "worker", "image": f"example/{name}:1"}]},
                    },
                },
            }
        )
        items.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {
                    "scaleTargetRef": {"name": name},
                    "pollingInterval": 1,
                    "cooldownPeriod": COOLDOWN,
                    "maxReplicaCount": 8,
                    "triggers": [trigger],
                },
            }
        )
    kube.kubectl(
        "apply",
        "--server-side",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )
    return triggers


class _Exporter:
    """A gauge `keda_demo_backlog` served over HTTP and scraped by the bench's Prometheus."""

    def __init__(self, prom: Any) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.prom = prom
        self.registry = CollectorRegistry()
        self.gauge = Gauge("keda_demo_backlog", "Demo backlog", registry=self.registry)
        port = free_port()
        self.server, self.thread = start_http_server(port, addr=LOOPBACK, registry=self.registry)
        prom.add_target("keda-demo", f"{LOOPBACK}:{port}")
        self.set(0)

    def set(self, value: float) -> None:
        self.gauge.set(value)
        _wait(
            lambda: any(
                float(s["value"][1]) == value for s in self.prom.query("sum(keda_demo_backlog)")
            ),
            30,
            f"Prometheus to scrape keda_demo_backlog={value:g}",
        )

    def close(self) -> None:
        self.prom.remove_target("keda-demo")
        self.server.shutdown()


def _redis(store: Any) -> Any:
    import redis

    return redis.Redis.from_url(store.url, decode_responses=True)


def _deliver_emails(store: Any, count: int) -> list[str]:
    client = _redis(store)
    try:
        for i in range(count):
            client.xadd(STREAM, {"email": str(i)})
        delivered = client.xreadgroup(STREAM_GROUP, "mailer-1", {STREAM: ">"}, count=count)
        return [entry_id for entry_id, _ in delivered[0][1]]
    finally:
        client.close()


def _run_async(coroutine: Any) -> Any:
    import asyncio

    return asyncio.run(coroutine)


async def _create_topic(kafka: Any) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=4, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(kafka: Any, count: int) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(TOPIC, f"order {i}".encode(), partition=i % 4)
        await producer.flush()
    finally:
        await producer.stop()


async def _consume(kafka: Any, count: int) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=kafka.bootstrap,
        group_id=KAFKA_GROUP,
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


def _replicas(kube: Any, name: str) -> str:
    done = kube.kubectl(
        "get", "deployment", name, "-n", NAMESPACE, "-o", "jsonpath={.spec.replicas}", check=False
    )
    return str(done.stdout.strip()) if done.returncode == 0 else "?"


def _ready(kube: Any, name: str) -> bool:
    done = kube.kubectl(
        "get",
        "scaledobject",
        name,
        "-n",
        NAMESPACE,
        "-o",
        'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
        check=False,
    )
    return done.returncode == 0 and done.stdout.strip() == "True"


def _expect_replicas(kube: Any, name: str, want: int) -> None:
    have = _replicas(kube, name)
    if have != str(want):
        raise RuntimeError(f"{name}: expected {want} replicas, found {have}")


def _wait_all(
    kube: Any, names: Any, want: str, timeout: float, operator: Any, since: float | None = None
) -> dict[str, float]:
    """Seconds from `since` (default now) until each Deployment reached `want` replicas."""
    start = since if since is not None else time.monotonic()
    reached: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(reached) < len(names):
        for name in names:
            if name not in reached and _replicas(kube, name) == want:
                reached[name] = time.monotonic() - start
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(reached))
            raise operator.fail(
                f"{', '.join(missing)} did not reach {want} replicas in {timeout:g} s"
            )
        if not operator.running():
            raise operator.fail("KEDA's operator exited")
        time.sleep(0.3)
    return reached


def _wait(check: Callable[[], bool], timeout: float, what: str, operator: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if operator is not None and not operator.running():
            raise operator.fail(f"exited while waiting for {what}")
        if time.monotonic() > deadline:
            if operator is not None:
                raise operator.fail(f"timed out waiting for {what}")
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _metric_sum(url: str, name: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


@contextlib.contextmanager
def _timed(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    log(COMPONENT, f"{what} took {format_duration(time.monotonic() - started)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.keda", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("build", help="build KEDA's operator into the bench cache (once)")
    sub.add_parser("demo", help="show KEDA's operator scaling 0 -> 1 -> 0 on the bench")
    args = parser.parse_args(argv)
    if args.action == "build":
        try:
            with _timed("ensure_built"):
                binary = ensure_built()
        except InstallError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps({"binary": str(binary), **build_info()}, indent=2))
        return 0
    return demo()


if __name__ == "__main__":
    sys.exit(main())
