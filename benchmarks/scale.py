"""Scale benchmark: N ScaledObjects over Redis streams, Kafka and Prometheus, on a fresh bench.

    .venv/bin/python -m benchmarks.scale --objects 1000                 # ours, 30 s polling
    .venv/bin/python -m benchmarks.scale --objects 1000 --operator keda
    .venv/bin/python -m benchmarks.scale --objects 1000 --compare       # ours, then KEDA
    .venv/bin/python -m benchmarks.scale --objects 10000 --replicas 3 --shards 12

Every run starts its own kube-apiserver (+etcd), Redis, Kafka and Prometheus (tests/testbed),
so the apiserver's request counters see only this run. Then:

1. sources: a few Redis streams, Kafka topics and Prometheus series, each shared by about
   --share objects, every object with its own consumer group or query (benchmarks/sources.py);
2. N Deployments at 0 replicas and N ScaledObjects, created over the REST API with bounded
   concurrency (--concurrency);
3. the operator (benchmarks/operators.py): ours as 1 or --replicas processes, or KEDA's;
4. start-up: time from the operator's start until every object was polled once (ours: each
   object has an `autoscale_scaler_metrics_value` series; KEDA: `keda_scaler_metrics_value`),
   and until every object had its status written (a watch on the ScaledObjects, both kinds);
5. steady window (--duration s) in which nothing changes: polls/s, tick lateness, CPU, RSS,
   apiserver requests by verb (its own apiserver_request_total) and writes by client (its audit
   log), connections to each source (/proc); the operator is scraped every --scrape-every s,
   as a Prometheus would, for the lateness-over-time plot;
6. reaction (--rounds rounds): a backlog appears on one entity of each source, and every object
   on it is timed from the backlog being visible in the source to its Deployment's replicas
   changing (a watch on the Deployments): 0 -> 1 (activation), then, ours only, 1 -> 4.

Writes benchmarks/results/scale-<operator>-<N>-<time>.{json,md} and PNG plots (matplotlib, Agg;
skipped with a note when matplotlib is missing: `pip install -e .[bench]`). A benchmark, not a
test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import measure, report
from benchmarks.kubeapi import KubeREST, Watch
from benchmarks.operators import Launched, api_group, crd_manifests, launch
from benchmarks.sources import (
    ACTIVATION_BACKLOG,
    MAX_REPLICAS,
    SCALE_OUT_BACKLOG,
    SCALE_OUT_REPLICAS,
    SOURCES,
    Layout,
    Sources,
    name_of,
)
from tests.testbed.bench import Bench
from tests.testbed.kube import KubeAPIServer
from tests.testbed.services import Kafka, Prometheus, Redis

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAMESPACE = "bench"
WRITES = ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION")


@dataclass(frozen=True)
class Config:
    objects: int = 100
    polling_interval: int = 30
    duration: float = 120.0
    operator: str = "ours"
    replicas: int = 1
    shards: int = 0
    share: int = 50
    rounds: int = 2
    scrape_every: float = 30.0
    settle: float = 10.0
    concurrency: int = 32
    log_level: str = "warning"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--objects", type=int, default=100, help="ScaledObjects (default 100)")
    p.add_argument("--polling-interval", type=int, default=30, help="seconds (default 30)")
    p.add_argument("--duration", type=float, default=120.0, help="steady window, s (120)")
    p.add_argument("--operator", choices=("ours", "keda"), default="ours")
    p.add_argument("--compare", action="store_true", help="ours then KEDA, one table of ratios")
    p.add_argument("--replicas", type=int, default=1, help="operator processes (ours)")
    p.add_argument("--shards", type=int, default=0, help="shard Leases (ours; 0: not sharded)")
    p.add_argument("--share", type=int, default=50, help="objects per stream/topic/series")
    p.add_argument("--rounds", type=int, default=2, help="reaction rounds (one entity each)")
    p.add_argument(
        "--scrape-every", type=float, default=30.0, help="operator scrape period in steady, s"
    )
    p.add_argument("--settle", type=float, default=10.0, help="s after start-up before steady")
    p.add_argument("--concurrency", type=int, default=32, help="object creations in flight")
    p.add_argument("--log-level", default="warning", help="ours: --log-level")
    p.add_argument("--label", default="", help="a name for this run in the results")
    p.add_argument("--results", type=Path, default=RESULTS, help="output directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = ".venv/bin/python -m benchmarks.scale " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    base = {
        "objects": args.objects,
        "polling_interval": args.polling_interval,
        "duration": args.duration,
        "replicas": args.replicas,
        "shards": args.shards,
        "share": args.share,
        "rounds": args.rounds,
        "scrape_every": args.scrape_every,
        "settle": args.settle,
        "concurrency": args.concurrency,
        "log_level": args.log_level,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kinds = ("ours", "keda") if args.compare else (args.operator,)
    results = []
    for kind in kinds:
        config = Config(**{**base, "operator": kind})
        if kind == "keda":
            config = Config(**{**asdict(config), "replicas": 1, "shards": 0})
        try:
            result = run(config)
        except Exception as exc:
            if not args.compare:
                raise
            # The comparison still reports ours; the note says why KEDA has no figures.
            result = {"scenario": asdict(config), "error": f"{type(exc).__name__}: {exc}"}
            print(f"{kind} run failed: {result['error']}", file=sys.stderr)
        result["label"] = args.label
        result["command"] = command
        stem = f"scale-{kind}-{args.objects}-{stamp}"
        save(args.results, stem, result)
        results.append(result)
    if args.compare:
        text = report.compare_markdown(results[0], results[1])
        stem = f"compare-{args.objects}-{stamp}"
        (args.results / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.results / f"{stem}.md").write_text(text)
        print(text)
    return 0


def save(directory: Path, stem: str, result: dict[str, Any]) -> None:
    if "error" not in result:
        result["plots"] = report.plots(result, directory, stem)
    (directory / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    text = report.markdown(result)
    (directory / f"{stem}.md").write_text(text)
    print(text)


# --- one run ---------------------------------------------------------------------------------


def run(config: Config) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="autoscale-bench-"))
    result: dict[str, Any] = {
        "machine": measure.machine(),
        "git": measure.git_commit(REPO),
        "scenario": asdict(config),
    }
    log(f"{config.operator}: {config.objects} objects; bench in {workdir}")
    bench = Bench(("kube", "redis", "kafka", "prometheus"), workdir=workdir)
    bench.start()
    launched: Launched | None = None
    sources: Sources | None = None
    watches: list[Watch] = []
    try:
        kube = bench.services["kube"]
        redis, kafka, prom = (bench.services[n] for n in ("redis", "kafka", "prometheus"))
        assert isinstance(kube, KubeAPIServer)
        assert isinstance(redis, Redis)
        assert isinstance(kafka, Kafka)
        assert isinstance(prom, Prometheus)
        rest = KubeREST(kube.kubeconfig, workdir / "rest")
        layout = Layout(config.objects, config.share, config.rounds)
        sources = Sources(layout, redis, kafka, prom)
        log("preparing sources")
        sources.prepare()
        group, version = api_group(config.operator)
        started = time.monotonic()
        install_crds(kube, config.operator)
        crds_s = time.monotonic() - started
        started = time.monotonic()
        created = create_objects(rest, sources, config, group, version)
        creation_s = time.monotonic() - started
        result["setup"] = {
            "sources_s": sources.timings,
            "install_crds_s": round(crds_s, 2),
            "create_objects_s": round(creation_s, 2),
            "objects_created": created,
            "creations_per_second": round(created / creation_s, 1),
            "entities": {s: layout.entities(s) for s in SOURCES},
        }
        log(f"created {created} objects in {creation_s:.1f} s")

        collection = f"/apis/{group}/{version}/namespaces/{NAMESPACE}/scaledobjects"
        status_seen: dict[str, float] = {}

        def on_status(kind: str, obj: dict[str, Any], now: float) -> None:
            name = obj["metadata"]["name"]
            if name not in status_seen and obj.get("status", {}).get("conditions"):
                status_seen[name] = now

        watches.append(Watch(rest, collection, on_status))
        launched = launch(
            config.operator,
            kubeconfig=kube.kubeconfig,
            namespace=NAMESPACE,
            workdir=workdir,
            replicas=config.replicas,
            shards=config.shards,
            log_level=config.log_level,
        )
        result["operator_command"] = launched.describe
        t0 = time.time()
        result["startup"] = startup(launched, config, t0, status_seen)
        watches.pop().stop()
        log(f"start-up: {result['startup']}")
        time.sleep(config.settle)

        log(f"steady window of {config.duration:.0f} s")
        result["steady"] = steady(launched, rest, kube, sources, config)
        log("reaction")
        result["reaction"] = reaction(launched, rest, sources, config)
        result["connections_after_reaction"] = connection_counts(launched, sources, rest)
    finally:
        for watch in watches:
            watch.stop()
        if launched is not None:
            launched.stop()
        if sources is not None:
            sources.stop()
        bench.stop()
    return result


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def install_crds(kube: KubeAPIServer, kind: str) -> None:
    manifests = crd_manifests(kind)
    listing = {"apiVersion": "v1", "kind": "List", "items": manifests}
    kube.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(listing))
    for manifest in manifests:
        name = f"crd/{manifest['metadata']['name']}"
        # `kubectl wait` fails rather than waits while the CRD has no conditions yet.
        deadline = time.monotonic() + 120
        while True:
            waited = kube.kubectl("wait", "--for=condition=Established", name, check=False)
            if waited.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never became Established: {waited.stderr.strip()}")
            time.sleep(0.5)
    kube.kubectl("create", "namespace", NAMESPACE)


def create_objects(
    rest: KubeREST, sources: Sources, config: Config, group: str, version: str
) -> int:
    """N Deployments then N ScaledObjects, streamed (no list of 2N manifests held)."""
    deployments = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    scaled = f"/apis/{group}/{version}/namespaces/{NAMESPACE}/scaledobjects"

    def items() -> Any:
        for i in range(config.objects):
            yield deployments, deployment(name_of(i))
        for i in range(config.objects):
            yield scaled, scaled_object(name_of(i), sources.trigger(i), config, group, version)

    return rest.create_all(items(), concurrency=config.concurrency)


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "w", "image": "registry.example/worker:1"}]},
            },
        },
    }


def scaled_object(
    name: str, trigger: dict[str, Any], config: Config, group: str, version: str
) -> dict[str, Any]:
    return {
        "apiVersion": f"{group}/{version}",
        "kind": "ScaledObject",
        "metadata": {"name": name},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": config.polling_interval,
            "minReplicaCount": 0,
            "maxReplicaCount": MAX_REPLICAS,
            "triggers": [trigger],
        },
    }


# --- phases ----------------------------------------------------------------------------------


def poll_metric(kind: str) -> str:
    """A series every polled object has, whether the poll succeeded or failed."""
    if kind == "keda":
        return "keda_scaler_metrics_latency_seconds"
    return "autoscale_scaler_errors_total"


def scrape_all(launched: Launched) -> list[str]:
    texts = []
    for url in launched.metrics_urls:
        try:
            texts.append(measure.scrape(url))
        except OSError:
            texts.append("")
    return texts


def startup(
    launched: Launched, config: Config, t0: float, status_seen: dict[str, float]
) -> dict[str, Any]:
    """Until every object was polled once (and had a status written), bounded."""
    launched.wait_ready()
    ready_s = time.time() - t0
    # A scrape of the operator's /metrics grows with N and (ours, today) encodes on its event
    # loop, stalling its polls. So the free signal comes first (status writes, seen by the
    # watch) and the metrics are scraped only once every object has a status, then again
    # until every object shows a poll, spaced at 3x a scrape's duration (at most a quarter of
    # the operator's time); without every status by the deadline, one scrape counts the polls.
    deadline = time.monotonic() + max(300.0, 4 * config.polling_interval + config.objects / 20)
    metric = poll_metric(config.operator)
    polled_all: float | None = None
    polled = 0
    scrapes = 0
    while True:
        launched.check_running()
        all_statuses = len(status_seen) >= config.objects
        late = time.monotonic() >= deadline
        if all_statuses or late:
            scraped = time.monotonic()
            seen: set[str] = set()
            for text in scrape_all(launched):
                seen |= measure.objects_with(text, metric)
            took = time.monotonic() - scraped
            scrapes += 1
            polled = len(seen)
            if polled >= config.objects:
                polled_all = time.time() - t0
            if polled_all is not None or late:
                break
            time.sleep(max(2.0, 3 * took))
        else:
            time.sleep(0.25)
    statuses = sorted(status_seen.values())
    return {
        "ready_s": round(ready_s, 2),
        "first_poll_of_all_s": round(polled_all, 2) if polled_all is not None else None,
        "polled_objects": polled,
        "first_status_of_all_s": (
            round(statuses[-1] - t0, 2) if len(statuses) >= config.objects else None
        ),
        "statuses_written": len(statuses),
        "scrapes": scrapes,
        "how": f"polled: a {metric} series for every object, scraped once every object had a "
        "status (an upper bound); status: a watch on the ScaledObjects",
    }


def operator_sample(launched: Launched, kind: str) -> dict[str, Any]:
    # The scrape's own cost to the operator (it grows with N) is kept apart from the rest.
    cpu_before = sum(measure.cpu_seconds(pid) for pid in launched.pids)
    scraped = time.monotonic()
    texts = scrape_all(launched)
    scrape_seconds = time.monotonic() - scraped
    cpu = [measure.cpu_seconds(pid) for pid in launched.pids]
    sample: dict[str, Any] = {
        "time": time.time(),
        "cpu": cpu,
        "rss": [measure.rss_bytes(pid) for pid in launched.pids],
        "scrape_cpu": sum(cpu) - cpu_before,
        "scrape_seconds": scrape_seconds,
        "scrape_bytes": sum(len(text) for text in texts),
    }
    errors = (
        "keda_scaler_detail_errors_total" if kind == "keda" else "autoscale_scaler_errors_total"
    )
    sample["errors"] = sum(measure.sum_of(text, errors) for text in texts)
    if kind == "keda":
        sample["polls"] = None
        sample["lateness_values"] = [
            v
            for text in texts
            for v in measure.values_of(text, "keda_internal_scale_loop_latency_seconds")
        ]
    else:
        sample["polls"] = sum(
            measure.sum_of(text, "autoscale_poll_duration_seconds_count") for text in texts
        )
        buckets: dict[float, float] = {}
        for text in texts:
            for le, count in measure.buckets_of(text, "autoscale_loop_lateness_seconds").items():
                buckets[le] = buckets.get(le, 0.0) + count
        sample["lateness_buckets"] = buckets
    return sample


def connection_counts(launched: Launched, sources: Sources, rest: KubeREST) -> dict[str, Any]:
    ports = {**sources.ports(), "kube-apiserver": int(rest.server.rsplit(":", 1)[1])}
    per_process = [measure.connections(pid, ports) for pid in launched.pids]
    total = {name: sum(p[name] for p in per_process) for name in ports}
    return {"total": total, "per_process": per_process}


def steady(
    launched: Launched, rest: KubeREST, kube: KubeAPIServer, sources: Sources, config: Config
) -> dict[str, Any]:
    audit_offset = kube.audit_log.stat().st_size if kube.audit_log.exists() else 0
    requests_before = rest.request_totals()
    first = operator_sample(launched, config.operator)
    timeline: list[dict[str, Any]] = []
    previous = first
    end = first["time"] + config.duration
    while (left := end - time.time()) > 0:
        # A scrape stalls ours for its duration: keep them at most a tenth of the window.
        spacing = max(config.scrape_every, 10 * previous["scrape_seconds"])
        time.sleep(min(spacing, left))
        launched.check_running()
        current = operator_sample(launched, config.operator)
        timeline.append(window(previous, current, first["time"]))
        previous = current
    last = previous
    requests_after = rest.request_totals()
    status_writes: dict[str, int] = {}
    audit_writes = writes_by_user(kube.audit_log, audit_offset, status_writes)
    seconds = last["time"] - first["time"]

    by_verb: dict[str, float] = {}
    by_resource: dict[str, float] = {}
    for key in set(requests_before) | set(requests_after):
        delta = requests_after.get(key, 0.0) - requests_before.get(key, 0.0)
        if not delta:
            continue
        verb, resource = key
        by_verb[verb] = by_verb.get(verb, 0.0) + delta
        by_resource[f"{verb} {resource}"] = delta
    # The harness's own two GET /metrics are not in apiserver_request_total (the apiserver
    # counts only some non-resource paths, /metrics not among them): nothing to subtract.
    per_minute = {v: round(n * 60 / seconds, 1) for v, n in sorted(by_verb.items()) if n > 0}
    resource_per_minute = {
        k: round(n * 60 / seconds, 1)
        for k, n in sorted(by_resource.items(), key=lambda kv: -kv[1])
        if n > 0
    }

    cpu = sum(last["cpu"]) - sum(first["cpu"])
    cpu_per_process = [
        round((b - a) / seconds, 3) for a, b in zip(first["cpu"], last["cpu"], strict=False)
    ]
    rss = sum(last["rss"])
    out: dict[str, Any] = {
        "seconds": round(seconds, 1),
        "operator_scrapes": len(timeline) + 1,
        "cpu_share_of_one_core": round(cpu / seconds, 3),
        "cpu_share_per_process": cpu_per_process,
        "cpu_share_without_scrapes": round(
            (cpu - sum(w["scrape_cpu"] for w in timeline)) / seconds, 3
        ),
        "metrics_scrape": {
            "bytes": last["scrape_bytes"],
            "seconds": round(last["scrape_seconds"], 3),
            "operator_cpu_s": round(last["scrape_cpu"], 3),
        },
        "rss_mib": round(rss / 2**20, 1),
        "rss_mib_per_process": [round(r / 2**20, 1) for r in last["rss"]],
        "rss_per_object_kib": round(rss / 1024 / config.objects, 1),
        "api_requests_per_minute": per_minute,
        "api_requests_per_minute_by_resource": resource_per_minute,
        "api_writes_by_user": {
            user: round(n * 60 / seconds, 1) for user, n in sorted(audit_writes.items())
        },
        # Which ScaledObjects' status was written while nothing changed (the 20 most written).
        "status_writes_by_object": dict(sorted(status_writes.items(), key=lambda kv: -kv[1])[:20]),
        "poll_errors": round(last["errors"] - first["errors"]),
        "connections": connection_counts(launched, sources, rest),
        "timeline": timeline,
    }
    if config.operator == "keda":
        values = [v for w in timeline for v in w["lateness_values"]]
        out.update(
            polls_per_second=None,
            cpu_seconds_per_1000_polls=None,
            lateness_s={
                "p50": measure.percentile(values, 0.5),
                "p99": measure.percentile(values, 0.99),
                "how": "keda_internal_scale_loop_latency_seconds: each object's last tick "
                "deviation, as sampled at every scrape of the window",
            },
        )
    else:
        polls = last["polls"] - first["polls"]
        buckets = measure.bucket_delta(last["lateness_buckets"], first["lateness_buckets"])
        out.update(
            polls_per_second=round(polls / seconds, 2),
            expected_polls_per_second=round(config.objects / config.polling_interval, 2),
            cpu_seconds_per_1000_polls=round(cpu / polls * 1000, 3) if polls else None,
            lateness_s={
                "p50": measure.histogram_quantile(buckets, 0.5),
                "p99": measure.histogram_quantile(buckets, 0.99),
                "ticks": round(max(buckets.values(), default=0.0)),
                "how": "autoscale_loop_lateness_seconds histogram over the window, interpolated",
            },
        )
    return out


def window(previous: dict[str, Any], current: dict[str, Any], origin: float) -> dict[str, Any]:
    """One scrape interval of the steady window, for the plots."""
    seconds = current["time"] - previous["time"]
    entry: dict[str, Any] = {
        "t": round(current["time"] - origin, 1),
        "cpu_share": round((sum(current["cpu"]) - sum(previous["cpu"])) / seconds, 3),
        "rss_mib": round(sum(current["rss"]) / 2**20, 1),
        "scrape_cpu": round(current["scrape_cpu"], 3),
    }
    if current["polls"] is None:
        values = current["lateness_values"]
        entry["lateness_values"] = values
        entry["lateness_p50"] = measure.percentile(values, 0.5)
        entry["lateness_p99"] = measure.percentile(values, 0.99)
    else:
        buckets = measure.bucket_delta(current["lateness_buckets"], previous["lateness_buckets"])
        entry["polls_per_second"] = round((current["polls"] - previous["polls"]) / seconds, 2)
        entry["lateness_p50"] = measure.histogram_quantile(buckets, 0.5)
        entry["lateness_p99"] = measure.histogram_quantile(buckets, 0.99)
    return entry


def writes_by_user(
    audit_log: Path, offset: int, objects: dict[str, int] | None = None
) -> dict[str, float]:
    """Writes the audit log recorded after `offset`, by user (the apiserver's own included).
    With `objects`, also counts the ScaledObject status writes per object name into it."""
    counts: dict[str, float] = {}
    if not audit_log.exists():
        return counts
    with audit_log.open("rb") as handle:
        handle.seek(offset)
        for line in handle:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            user = event.get("user", {}).get("username", "?")
            ref = event.get("objectRef", {})
            what = ref.get("resource", "?") + (
                "/" + ref["subresource"] if "subresource" in ref else ""
            )
            key = f"{user} {event.get('verb', '?')} {what}"
            counts[key] = counts.get(key, 0.0) + 1
            if objects is not None and what == "scaledobjects/status":
                name = ref.get("name", "?")
                objects[name] = objects.get(name, 0) + 1
    return counts


def reaction(
    launched: Launched, rest: KubeREST, sources: Sources, config: Config
) -> dict[str, Any]:
    """Backlog -> replicas changed, per object, for 0 -> 1 and (ours) 1 -> 4."""
    changes: dict[str, list[tuple[float, int]]] = {}

    def on_deployment(kind: str, obj: dict[str, Any], now: float) -> None:
        replicas = int(obj.get("spec", {}).get("replicas") or 0)
        history = changes.setdefault(obj["metadata"]["name"], [])
        if not history or history[-1][1] != replicas:
            history.append((now, replicas))

    watch = Watch(rest, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", on_deployment)
    phases = [("activation", ACTIVATION_BACKLOG, 1)]
    if config.operator != "keda":  # KEDA leaves 1 -> N to the HPA, which the bench lacks
        phases.append(("scale_out", SCALE_OUT_BACKLOG, SCALE_OUT_REPLICAS))
    samples: list[dict[str, Any]] = []
    origin = time.time()
    try:
        for round_ in range(config.rounds):
            for phase, backlog, want in phases:
                seen: dict[int, tuple[float, float]] = {}
                for source in SOURCES:
                    if round_ < sources.layout.entities(source):
                        before = time.time()
                        for i, at in sources.make_backlog(source, round_, backlog).items():
                            seen[i] = (before, at)
                deadline = time.monotonic() + 2 * config.polling_interval + 30
                reached: dict[int, float] = {}
                while len(reached) < len(seen) and time.monotonic() < deadline:
                    launched.check_running()
                    for i, (before, at) in seen.items():
                        if i in reached:
                            continue
                        for when, replicas in list(changes.get(name_of(i), ())):
                            if when >= before and replicas >= want:
                                reached[i] = max(0.0, when - at)
                                break
                    time.sleep(0.2)
                for i, (_, at) in seen.items():
                    samples.append(
                        {
                            "object": name_of(i),
                            "source": sources.layout.source(i),
                            "phase": phase,
                            "round": round_,
                            "t": round(at - origin, 2),
                            "latency_s": round(reached[i], 3) if i in reached else None,
                        }
                    )
                log(f"round {round_} {phase}: {len(reached)}/{len(seen)} reacted")
    finally:
        watch.stop()
    summary: dict[str, Any] = {"samples": samples}
    for phase, _, want in phases:
        mine = [s for s in samples if s["phase"] == phase]
        latencies = [s["latency_s"] for s in mine if s["latency_s"] is not None]
        summary[phase] = {
            "to_replicas": want,
            "p50": measure.percentile(latencies, 0.5),
            "p99": measure.percentile(latencies, 0.99),
            "max": max(latencies, default=None),
            "reacted": len(latencies),
            "missed": len(mine) - len(latencies),
            "by_source": {
                source: {
                    "p50": measure.percentile(
                        [
                            s["latency_s"]
                            for s in mine
                            if s["source"] == source and s["latency_s"] is not None
                        ],
                        0.5,
                    ),
                    "p99": measure.percentile(
                        [
                            s["latency_s"]
                            for s in mine
                            if s["source"] == source and s["latency_s"] is not None
                        ],
                        0.99,
                    ),
                }
                for source in SOURCES
            },
        }
    return summary


if __name__ == "__main__":
    raise SystemExit(main())
