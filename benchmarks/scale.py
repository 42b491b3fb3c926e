"""Scale benchmark: N ScaledObjects on one operator process, against the bench's real services.

    .venv/bin/python -m benchmarks.scale --objects 1000 --polling-interval 30 --duration 120

What it does: starts the bench's kube-apiserver and Redis (the Redis streams scaler; more
sources come with the performance work), creates N Deployments at 0 and N ScaledObjects, starts
`autoscale run` as its own process, waits until every object has been polled once, then
measures a steady period in which nothing changes, then a reaction test: a backlog appears on
a sample of objects and the time until their /scale is patched is recorded.

Figures (written as JSON and a Markdown table to benchmarks/results/):
- time from start until every object was polled once;
- polls per second sustained (the operator's own poll-latency histogram count);
- tick lateness p50 / p99 against the schedule (the operator's lateness histogram);
- operator CPU seconds per 1,000 polls and as a share of one core (from /proc);
- RSS total and per ScaledObject;
- Kubernetes API requests per minute by verb while nothing changes (the apiserver's own
  apiserver_request_total, so every client is counted; the harness itself reads only the
  apiserver and operator metrics endpoints during that window);
- TCP connections from the operator to each source server;
- reaction latency from a backlog appearing to /scale patched, p50 / p99.

This is a benchmark, not a test: it asserts nothing. Quote figures from one run, side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.testbed.bench import Bench
from tests.testbed.kube import KubeAPIServer
from tests.testbed.procs import LOOPBACK, ManagedProcess, free_port, http_ok
from tests.testbed.services import Redis

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAMESPACE = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--polling-interval", type=int, default=30)
    parser.add_argument(
        "--duration", type=float, default=120.0, help="seconds of steady state to measure"
    )
    parser.add_argument("--reaction-samples", type=int, default=20)
    parser.add_argument("--label", default="", help="a name for this run in the results")
    args = parser.parse_args()
    result = run(args.objects, args.polling_interval, args.duration, args.reaction_samples)
    result["label"] = args.label
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"scale-{args.objects}-{time.strftime('%Y%m%dT%H%M%S')}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def run(objects: int, interval: int, duration: float, samples: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="autoscale-bench-"))
    bench = Bench(("kube", "redis"), workdir=workdir)
    bench.start()
    operator: ManagedProcess | None = None
    try:
        kube, store = bench.services["kube"], bench.services["redis"]
        assert isinstance(kube, KubeAPIServer)
        assert isinstance(store, Redis)
        create_objects(kube, store, objects, interval)
        client = redis.Redis.from_url(store.url, decode_responses=True)
        metrics_port, health_port = free_port(), free_port()
        started = time.monotonic()
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
                "--log-level=warning",
            ],
            log_path=workdir / "operator.log",
            cwd=REPO,
        )
        scrape = f"http://{LOOPBACK}:{metrics_port}/metrics"
        while not http_ok(f"http://{LOOPBACK}:{health_port}/healthz"):
            time.sleep(0.2)
        while polled_objects(scrape) < objects:
            if not operator.running():
                raise operator.fail("the operator exited")
            time.sleep(0.5)
        first_poll_all = time.monotonic() - started
        time.sleep(min(interval, 10))  # let status writes from the first poll settle

        before = snapshot(kube, scrape, operator.pid)
        time.sleep(duration)
        after = snapshot(kube, scrape, operator.pid)
        steady = compare(before, after)

        reactions = react(kube, client, min(samples, objects))
        connections = established(operator.pid, store.port)
        rss = rss_bytes(operator.pid)
    finally:
        if operator is not None:
            operator.stop()
        bench.stop()
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "scenario": {
            "objects": objects,
            "polling_interval_s": interval,
            "steady_duration_s": duration,
            "source": "redis-streams",
        },
        "first_poll_of_all_s": round(first_poll_all, 2),
        **steady,
        "rss_mib": round(rss / 2**20, 1),
        "rss_per_object_kib": round(rss / 1024 / objects, 1),
        "connections": {"redis": connections},
        "reaction_s": {
            "p50": round(statistics.median(reactions), 2),
            "p99": round(percentile(reactions, 0.99), 2),
            "samples": len(reactions),
        },
    }


def create_objects(kube: KubeAPIServer, store: Redis, objects: int, interval: int) -> None:
    kube.kubectl("apply", "--server-side", "-f", "-", input=crds())
    kube.kubectl("wait", "--for=condition=Established", "crd/scaledobjects.autoscale.dev")
    kube.kubectl("create", "namespace", NAMESPACE)
    client = redis.Redis.from_url(store.url)
    pipe = client.pipeline()
    for i in range(objects):
        pipe.xgroup_create(f"s{i}", "workers", id="$", mkstream=True)
    pipe.execute()
    client.close()
    batch: list[dict[str, Any]] = []
    for i in range(objects):
        name = f"w{i:05d}"
        labels = {"app": name}
        batch.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name},
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
        batch.append(
            {
                "apiVersion": "autoscale.dev/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": name},
                "spec": {
                    "scaleTargetRef": {"name": name},
                    "pollingInterval": interval,
                    "maxReplicaCount": 10,
                    "triggers": [
                        {
                            "type": "redis-streams",
                            "metadata": {
                                "address": f"{LOOPBACK}:{store.port}",
                                "stream": f"s{i}",
                                "consumerGroup": "workers",
                                "pendingEntriesCount": "5",
                            },
                        }
                    ],
                },
            }
        )
        if len(batch) >= 500:
            apply_list(kube, batch)
            batch = []
    if batch:
        apply_list(kube, batch)


def crds() -> str:
    from autoscale import crd_manifests

    return crd_manifests.render_crds()


def apply_list(kube: KubeAPIServer, items: list[dict[str, Any]]) -> None:
    kube.kubectl(
        "apply",
        "--server-side",
        "-n",
        NAMESPACE,
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}),
    )


# --- measurements ---------------------------------------------------------------------------


def families(
    url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def polled_objects(scrape: str) -> int:
    try:
        found = families(scrape)
    except OSError:
        return 0
    family = found.get("autoscale_scaler_metrics_value")
    return len({s.labels.get("scaledObject") for s in family.samples}) if family else 0


def snapshot(kube: KubeAPIServer, scrape: str, pid: int) -> dict[str, Any]:
    operator = families(scrape)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    polls = sum(
        s.value
        for s in operator["autoscale_scaler_metrics_latency_seconds"].samples
        if s.name.endswith("_count")
    )
    lateness = {
        float(s.labels["le"]): s.value
        for s in operator["autoscale_loop_lateness_seconds"].samples
        if s.name.endswith("_bucket")
    }
    return {
        "time": time.monotonic(),
        "cpu": cpu,
        "polls": polls,
        "lateness": lateness,
        "requests": apiserver_requests(kube),
    }


def apiserver_requests(kube: KubeAPIServer) -> dict[str, float]:
    """apiserver_request_total summed by verb, read through kubectl's raw access (admin)."""
    text = kube.kubectl("get", "--raw", "/metrics").stdout
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                verb = sample.labels.get("verb", "?")
                totals[verb] = totals.get(verb, 0.0) + sample.value
    return totals


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    seconds = after["time"] - before["time"]
    polls = after["polls"] - before["polls"]
    cpu = after["cpu"] - before["cpu"]
    buckets = {
        le: after["lateness"][le] - before["lateness"].get(le, 0.0) for le in after["lateness"]
    }
    verbs = sorted(set(after["requests"]) | set(before["requests"]))
    per_minute = {
        verb: round(
            (after["requests"].get(verb, 0) - before["requests"].get(verb, 0)) * 60 / seconds, 1
        )
        for verb in verbs
    }
    # The two metric reads of the harness itself (kubectl get --raw) are GETs: subtract them.
    per_minute["GET"] = round(max(0.0, per_minute.get("GET", 0.0) - 60 / seconds), 1)
    return {
        "polls_per_second": round(polls / seconds, 2),
        "cpu_share_of_one_core": round(cpu / seconds, 3),
        "cpu_seconds_per_1000_polls": round(cpu / polls * 1000, 3) if polls else None,
        "lateness_s": {
            "p50": histogram_quantile(buckets, 0.5),
            "p99": histogram_quantile(buckets, 0.99),
        },
        "api_requests_per_minute": {k: v for k, v in per_minute.items() if v},
    }


def histogram_quantile(buckets: dict[float, float], q: float) -> float | None:
    """Prometheus-style linear interpolation inside the bucket that holds the quantile."""
    ordered = sorted(buckets.items())
    total = ordered[-1][1] if ordered else 0
    if not total:
        return None
    rank, previous_le, previous_count = q * total, 0.0, 0.0
    for le, count in ordered:
        if count >= rank:
            if le == float("inf"):
                return previous_le
            share = (
                (rank - previous_count) / (count - previous_count) if count > previous_count else 0
            )
            return round(previous_le + (le - previous_le) * share, 4)
        previous_le, previous_count = le, count
    return None


def react(kube: KubeAPIServer, client: Any, samples: int) -> list[float]:
    """Seconds from a backlog appearing to the Deployment's /scale patched, per object."""
    started: dict[str, float] = {}
    for i in range(samples):
        stream = f"s{i}"
        for n in range(6):
            client.xadd(stream, {"n": n})
        client.xreadgroup("workers", "c", {stream: ">"}, count=6)
        started[f"w{i:05d}"] = time.monotonic()
    reacted: dict[str, float] = {}
    deadline = time.monotonic() + 120
    while len(reacted) < samples and time.monotonic() < deadline:
        listing = json.loads(
            kube.kubectl(
                "get", "deployments", "-n", NAMESPACE, "-o", "json", "--chunk-size=0"
            ).stdout
        )
        now = time.monotonic()
        for item in listing["items"]:
            name = item["metadata"]["name"]
            if name in started and name not in reacted and item["spec"].get("replicas"):
                reacted[name] = now - started[name]
        time.sleep(0.2)
    return sorted(reacted.values())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def established(pid: int, port: int) -> int:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if (
                fields[3] == "01"
                and int(fields[2].rsplit(":", 1)[1], 16) == port
                and fields[9] in inodes
            ):
                count += 1
    return count


def markdown(result: dict[str, Any]) -> str:
    scenario = result["scenario"]
    api = ", ".join(f"{verb} {rate}" for verb, rate in result["api_requests_per_minute"].items())
    rows = [
        ("ScaledObjects", scenario["objects"]),
        ("pollingInterval", f"{scenario['polling_interval_s']} s"),
        ("time until every object was polled once", f"{result['first_poll_of_all_s']} s"),
        ("polls per second (steady)", result["polls_per_second"]),
        (
            "tick lateness p50 / p99",
            f"{result['lateness_s']['p50']} s / {result['lateness_s']['p99']} s",
        ),
        ("operator CPU (share of one core)", result["cpu_share_of_one_core"]),
        ("CPU seconds per 1,000 polls", result["cpu_seconds_per_1000_polls"]),
        ("RSS total / per object", f"{result['rss_mib']} MiB / {result['rss_per_object_kib']} KiB"),
        ("API requests per minute while nothing changes", api or "none"),
        ("connections to Redis", result["connections"]["redis"]),
        (
            "reaction backlog -> /scale p50 / p99",
            f"{result['reaction_s']['p50']} s / {result['reaction_s']['p99']} s",
        ),
    ]
    lines = [
        f"### {scenario['objects']} ScaledObjects ({result.get('label') or 'run'})",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {value} |" for name, value in rows]
    machine = result["machine"]
    lines += [
        "",
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
