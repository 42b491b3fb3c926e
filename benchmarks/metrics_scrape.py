"""What one scrape of the operator's /metrics costs at N ScaledObjects, without a cluster.

Fills a `Metrics` as the poll loops would (N objects x T triggers: one successful poll each,
one tick each, a few errors and scale operations), then measures:

- `render()` alone: bytes, lines, wall and CPU seconds (best of a few runs);
- HTTP scrapes of `health.serve_metrics` on a real socket (plain, gzip as Prometheus asks,
  and two gzip scrapes at once) while the event loop keeps polling (N / polling interval
  `observe_trigger` calls a second) and a ticker task measures its own lateness: how long
  the event loop was blocked.

The scraper runs in a thread of its own, so only the server's side of a scrape is on the loop.

    .venv/bin/python -m benchmarks.metrics_scrape --objects 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import threading
import time
import urllib.request
from typing import Any

from autoscale import health
from autoscale.metrics import Metrics

TRIGGER_TYPE = "redis-streams"


def fill(metrics: Metrics, objects: int, triggers: int, rng: random.Random) -> None:
    for i in range(objects):
        namespace, name = f"team-{i % 50:02d}", f"worker-{i:05d}"
        for t in range(triggers):
            poll(metrics, namespace, name, t, rng)
        metrics.observe_object(
            namespace=namespace, name=name, current=i % 7, desired=i % 5, paused=False
        )
        if i % 10 == 0:
            metrics.trigger_error(
                namespace=namespace, name=name, trigger=TRIGGER_TYPE, metric=f"s0-{name}"
            )
        if i % 4 == 0:
            metrics.scaled(namespace=namespace, name=name, direction="up")


def poll(metrics: Metrics, namespace: str, name: str, t: int, rng: random.Random) -> None:
    metrics.observe_trigger(
        namespace=namespace,
        name=name,
        trigger=TRIGGER_TYPE,
        metric=f"s{t}-{name}",
        value=float(rng.randrange(1000)),
        target=10.0,
        active=True,
        latency=rng.uniform(0.001, 0.2),
    )


def time_render(metrics: Metrics, runs: int) -> dict[str, Any]:
    best_wall = best_cpu = float("inf")
    body = b""
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.thread_time()
        body = metrics.render()
        best_cpu = min(best_cpu, time.thread_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return {
        "bytes": len(body),
        "mib": round(len(body) / 2**20, 2),
        "lines": body.count(b"\n"),
        "sample_lines": sum(1 for line in body.splitlines() if not line.startswith(b"#")),
        "render_wall_s": round(best_wall, 3),
        "render_cpu_s": round(best_cpu, 3),
    }


def fetch(url: str, gzip: bool) -> int:
    """Bytes on the wire (compressed when the server compressed)."""
    headers = {"Accept-Encoding": "gzip"} if gzip else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return len(response.read())


class Ticker:
    """Sleeps `period` seconds in a loop and records how late each wake-up was."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.worst = 0.0

    def reset(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, loop.time() - due)


async def poller(metrics: Metrics, objects: int, interval: float, rng: random.Random) -> None:
    """The loops' updates: every object polled once per `interval`, in slices of 10 ms."""
    per_slice = max(1, round(objects * 0.01 / interval))
    i = 0
    while True:
        for _ in range(per_slice):
            name = f"worker-{i % objects:05d}"
            poll(metrics, f"team-{i % objects % 50:02d}", name, 0, rng)
            i += 1
        await asyncio.sleep(0.01)


async def scrapes(metrics: Metrics, objects: int, rounds: int, interval: float) -> dict[str, Any]:
    rng = random.Random(2)
    ticker = Ticker()
    tasks = [
        asyncio.create_task(ticker.run()),
        asyncio.create_task(poller(metrics, objects, interval, rng)),
    ]
    rounds_by_kind = (("single", 1, False), ("single_gzip", 1, True), ("two_at_once_gzip", 2, True))
    results: dict[str, Any] = {kind: [] for kind, _, _ in rounds_by_kind}
    try:
        async with health.serve_metrics(metrics, host="127.0.0.1", port=0) as server:
            url = f"{server.url}/metrics"
            await asyncio.sleep(0.5)
            ticker.reset()
            await asyncio.sleep(1.0)
            results["idle_worst_lateness_s"] = round(ticker.worst, 4)
            for kind, parallel, gzip in rounds_by_kind:
                for _ in range(rounds):
                    await asyncio.sleep(0.3)
                    ticker.reset()
                    cpu, wall = time.process_time(), time.perf_counter()
                    sizes = await asyncio.gather(
                        *(asyncio.to_thread(fetch, url, gzip) for _ in range(parallel))
                    )
                    results[kind].append(
                        {
                            "wall_s": round(time.perf_counter() - wall, 3),
                            "process_cpu_s": round(time.process_time() - cpu, 3),
                            "loop_blocked_worst_s": round(ticker.worst, 4),
                            "bytes": sizes,
                        }
                    )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--triggers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--polling-interval", type=float, default=30.0)
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() after filling: shows how much of the remaining stall is the cyclic "
        "collector's full passes over every live object, which a render's garbage triggers",
    )
    args = parser.parse_args()

    metrics = Metrics()
    started = time.perf_counter()
    fill(metrics, args.objects, args.triggers, random.Random(1))
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    report: dict[str, Any] = {
        "objects": args.objects,
        "triggers_per_object": args.triggers,
        "gc_freeze": args.gc_freeze,
        "fill_s": round(time.perf_counter() - started, 2),
        "threads": threading.active_count(),
        "render": time_render(metrics, args.rounds),
    }
    report["http"] = asyncio.run(scrapes(metrics, args.objects, args.rounds, args.polling_interval))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
