"""The operator's HTTP endpoints over real sockets: /metrics, /healthz and /readyz on port 0."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoscale import health
from autoscale.metrics import Metrics

HOST = "127.0.0.1"


async def _get(url: str, *, accept: str | None = None) -> tuple[int, str, str]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, response.headers["Content-Type"], await response.text()


async def test_metrics_endpoint_serves_the_registry() -> None:
    """GET /metrics on the bound port returns what Metrics holds, in the text format."""
    metrics = Metrics()
    metrics.observe_object(namespace="shop", name="orders", current=2, desired=5, paused=False)
    async with health.serve_metrics(metrics, host=HOST, port=0) as server:
        assert server.port > 0
        assert server.url == f"http://{HOST}:{server.port}"
        status, content_type, text = await _get(f"{server.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    key = (
        "autoscale_scaledobject_desired_replicas",
        (("namespace", "shop"), ("scaledObject", "orders")),
    )
    assert samples[key] == 5.0


async def test_metrics_endpoint_is_live_not_a_snapshot() -> None:
    """A scrape sees values set after the server started."""
    metrics = Metrics()
    async with health.serve_metrics(metrics, host=HOST, port=0) as server:
        _, _, before = await _get(f"{server.url}/metrics")
        metrics.set_leader(True)
        _, _, after = await _get(f"{server.url}/metrics")
    assert "autoscale_leader 0.0" in before
    assert "autoscale_leader 1.0" in after


async def test_metrics_endpoint_speaks_openmetrics_when_asked() -> None:
    """A scraper that accepts OpenMetrics gets it."""
    async with health.serve_metrics(Metrics(), host=HOST, port=0) as server:
        status, content_type, text = await _get(
            f"{server.url}/metrics", accept="application/openmetrics-text; version=1.0.0"
        )
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [
        pytest.param(None, False, id="none"),
        pytest.param("identity", False, id="identity"),
        pytest.param("gzip", True, id="gzip"),
        pytest.param("deflate, gzip;q=0.5", True, id="gzip-weighted"),
        pytest.param("gzip;q=0", False, id="gzip-refused"),
    ],
)
async def test_metrics_are_gzipped_when_the_scraper_accepts_it(
    accept_encoding: str | None, compressed: bool
) -> None:
    """Prometheus asks for gzip and gets it; a scraper that does not gets plain text."""
    metrics = Metrics()
    metrics.observe_object(namespace="shop", name="orders", current=2, desired=5, paused=False)
    headers = {"Accept-Encoding": accept_encoding} if accept_encoding else {}
    async with (
        health.serve_metrics(metrics, host=HOST, port=0) as server,
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"]) as s,
        s.get(f"{server.url}/metrics", headers=headers) as response,
    ):
        raw = await response.read()
        encoding = response.headers.get("Content-Encoding")
    if compressed:
        assert encoding == "gzip"
        raw = gzip.decompress(raw)
    else:
        assert encoding is None
    assert (
        b'autoscale_scaledobject_desired_replicas{namespace="shop",scaledObject="orders"} 5.0'
        in raw
    )


async def test_metrics_are_rendered_off_the_event_loop_thread() -> None:
    """The registry is collected on another thread than the one running the event loop."""
    threads: list[threading.Thread] = []
    metrics = Metrics()
    metrics.track_leader(lambda: threads.append(threading.current_thread()) is None)
    async with health.serve_metrics(metrics, host=HOST, port=0) as server:
        status, _, text = await _get(f"{server.url}/metrics")
    assert status == 200
    assert "autoscale_leader 1.0" in text
    assert threads
    assert threading.current_thread() not in threads


async def test_scrapes_during_a_render_share_it_and_later_ones_render_again() -> None:
    """Requests that arrive while a render of their format runs get that body; a request after
    it finished gets a fresh render (nothing is cached)."""
    renders: list[int] = []
    metrics = Metrics()
    metrics.track_leader(lambda: renders.append(1) is None)
    with ThreadPoolExecutor(max_workers=1) as executor:
        shared = health._SharedRenders(metrics, executor)
        first, second = await asyncio.gather(shared.encode(("", False)), shared.encode(("", False)))
        assert first is second
        assert len(renders) == 1
        await shared.encode(("", False))
        assert len(renders) == 2
        plain, zipped = await asyncio.gather(shared.encode(("", False)), shared.encode(("", True)))
        assert len(renders) == 4
        assert gzip.decompress(zipped[0]).split(b"\n")[0] == plain[0].split(b"\n")[0]


async def test_unknown_paths_are_404() -> None:
    """Only /metrics is served on the metrics port."""
    async with health.serve_metrics(Metrics(), host=HOST, port=0) as server:
        status, _, _ = await _get(f"{server.url}/healthz")
    assert status == 404


@pytest.mark.parametrize(
    ("path", "live", "ready", "status", "body"),
    [
        pytest.param("/healthz", True, False, 200, "ok", id="live"),
        pytest.param("/healthz", False, True, 503, "not live", id="not-live"),
        pytest.param("/readyz", False, True, 200, "ok", id="ready"),
        pytest.param("/readyz", True, False, 503, "not ready", id="not-ready"),
    ],
)
async def test_probes(path: str, live: bool, ready: bool, status: int, body: str) -> None:
    """/healthz and /readyz answer 200 "ok" or 503 with a short reason, from their own check."""
    async with health.serve_health(
        host=HOST, port=0, live=lambda: live, ready=lambda: ready
    ) as server:
        got_status, content_type, text = await _get(f"{server.url}{path}")
    assert (got_status, text) == (status, body)
    assert content_type.startswith("text/plain")


async def test_probes_follow_their_checks() -> None:
    """Each request calls the check again: readiness flips with the state it reads."""
    state = {"ready": False}
    async with health.serve_health(
        host=HOST, port=0, live=lambda: True, ready=lambda: state["ready"]
    ) as server:
        first, _, _ = await _get(f"{server.url}/readyz")
        state["ready"] = True
        second, _, _ = await _get(f"{server.url}/readyz")
    assert (first, second) == (503, 200)


async def test_a_check_that_raises_fails_the_probe() -> None:
    """A check that raises answers 503, and the server keeps serving."""

    def broken() -> bool:
        raise RuntimeError("boom")

    async with health.serve_health(host=HOST, port=0, live=broken, ready=lambda: True) as server:
        status, _, text = await _get(f"{server.url}/healthz")
        ready, _, _ = await _get(f"{server.url}/readyz")
    assert status == 503
    assert text.startswith("not live")
    assert "boom" not in text
    assert ready == 200


async def test_both_servers_side_by_side_then_the_ports_are_closed() -> None:
    """Two servers on two free ports; after exit nothing listens there any more."""
    async with (
        health.serve_metrics(Metrics(), host=HOST, port=0) as metrics_server,
        health.serve_health(host=HOST, port=0, live=lambda: True, ready=lambda: True) as probes,
    ):
        assert metrics_server.port != probes.port
        assert (await _get(f"{metrics_server.url}/metrics"))[0] == 200
        assert (await _get(f"{probes.url}/readyz"))[0] == 200
    for port in (metrics_server.port, probes.port):
        with pytest.raises(OSError):  # noqa: PT011 - refused, whatever the errno
            socket.create_connection((HOST, port), timeout=1).close()


async def test_a_fixed_port_is_used_and_freed() -> None:
    """An explicit port is bound as given, and can be bound again after shutdown."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    for _ in range(2):
        async with health.serve_health(
            host=HOST, port=port, live=lambda: True, ready=lambda: True
        ) as server:
            assert server.port == port
            assert (await _get(f"{server.url}/healthz"))[0] == 200


async def test_shutdown_does_not_wait_for_idle_keep_alive_connections() -> None:
    """Leaving the block returns promptly even with a client's keep-alive connection open."""
    async with aiohttp.ClientSession() as session:
        async with health.serve_health(
            host=HOST, port=0, live=lambda: True, ready=lambda: True
        ) as server:
            async with session.get(f"{server.url}/healthz") as response:
                assert response.status == 200
            loop = asyncio.get_running_loop()
            started = loop.time()
        assert loop.time() - started < health.SHUTDOWN_TIMEOUT


async def test_a_busy_port_fails_loudly() -> None:
    """A port already in use raises OSError on entry instead of serving nothing."""
    async with health.serve_metrics(Metrics(), host=HOST, port=0) as server:
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            async with health.serve_metrics(Metrics(), host=HOST, port=server.port):
                pass
