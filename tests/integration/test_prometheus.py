"""prometheus against the bench's real Prometheus 2.42, scraping an exporter each test starts.

Values are exact: a gauge the test sets, read through a real scrape and a real instant query.
Authentication and headers are proven at a small reverse proxy the test runs in front of
Prometheus: it records every request (headers, query string, client connection) and refuses
those without the expected credentials, echoing what it got so that scrubbing is tested too.
A TLS variant of the proxy requires a client certificate from its own CA.
"""

from __future__ import annotations

import asyncio
import base64
import math
import socket
import ssl
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, MultiDict
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from autoscale.errors import ScalerError, ScalerQueryError, ScalerUnavailableError
from autoscale.scalers.base import MetricSample
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.prometheus import PrometheusScaler
from tests.testbed.pki import TinyCA
from tests.testbed.procs import LOOPBACK, free_port
from tests.testbed.services import Prometheus

pytestmark = pytest.mark.testbed

TOKEN = "bearer-T0ken-never-in-any-text"
PASSWORD = "s3cret-Pässword-for-the-test"


@pytest.fixture
async def connections() -> AsyncIterator[SharedClients]:
    pool = SharedClients()
    yield pool
    await pool.aclose()


class Exporter:
    """A /metrics endpoint in a private registry, scraped by the bench's Prometheus every 1 s
    as job `job`."""

    def __init__(self, prometheus: Prometheus, job: str) -> None:
        self.prometheus = prometheus
        self.job = job
        self.registry = CollectorRegistry()
        self.backlog = Gauge("backlog", "Jobs waiting", ["queue"], registry=self.registry)
        self.port = free_port()

    def selector(self, queue: str | None = None) -> str:
        """PromQL selecting this exporter's backlog (one queue, or all of them)."""
        extra = f', queue="{queue}"' if queue is not None else ""
        return f'backlog{{job="{self.job}"{extra}}}'

    async def set(self, queue: str, value: float) -> None:
        """Set the gauge and wait until Prometheus has scraped exactly that value."""
        self.backlog.labels(queue=queue).set(value)
        await self.scraped(self.selector(queue), value)

    async def scraped(self, promql: str, value: float, within: float = 30.0) -> None:
        def seen() -> bool:
            result = self.prometheus.query(promql)
            if len(result) != 1:
                return False
            got = float(result[0]["value"][1])
            return got == value or (math.isnan(got) and math.isnan(value))

        deadline = time.monotonic() + within
        while not await asyncio.to_thread(seen):
            assert time.monotonic() < deadline, f"{promql} never read {value} in {within}s"
            await asyncio.sleep(0.2)


@pytest.fixture
def exporter(prometheus: Prometheus, unique_name: str) -> Iterator[Exporter]:
    found = Exporter(prometheus, unique_name)
    server, thread = start_http_server(found.port, addr=LOOPBACK, registry=found.registry)
    prometheus.add_target(unique_name, f"{LOOPBACK}:{found.port}")
    try:
        yield found
    finally:
        prometheus.remove_target(unique_name)
        server.shutdown()
        thread.join()


@dataclass
class Seen:
    """One request as the proxy received it."""

    headers: CIMultiDict[str]
    query: MultiDict[str]
    peer: tuple[str, int] | None


@dataclass
class Proxy:
    """A reverse proxy to Prometheus that records requests and checks credentials."""

    upstream: str
    url: str = ""
    require: dict[str, str] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(Seen(CIMultiDict(request.headers), MultiDict(request.query), peer))
        for name, wanted in self.require.items():
            got = request.headers.get(name, "")
            if got != wanted:
                # Echo what came: the scaler must scrub credentials from the error it reports.
                return web.Response(status=401, text=f"rejected: {name} was {got!r}")
        assert self.session is not None
        async with self.session.get(
            self.upstream + request.path, params=list(request.query.items())
        ) as answer:
            return web.Response(
                status=answer.status, body=await answer.read(), content_type=answer.content_type
            )


async def start_proxy(upstream: str, tls: ssl.SSLContext | None = None) -> tuple[Proxy, Any]:
    proxy = Proxy(upstream)
    proxy.session = aiohttp.ClientSession()
    app = web.Application()
    app.router.add_get("/{tail:.*}", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOOPBACK, port, ssl_context=tls).start()
    proxy.url = f"{'https' if tls else 'http'}://{LOOPBACK}:{port}"
    return proxy, runner


@pytest.fixture
async def proxy(prometheus: Prometheus) -> AsyncIterator[Proxy]:
    found, runner = await start_proxy(prometheus.url)
    yield found
    await runner.cleanup()
    assert found.session is not None
    await found.session.close()


def make(
    server: str,
    connections: SharedClients,
    metadata: dict[str, str],
    auth: dict[str, str] | None = None,
    *,
    index: int = 0,
) -> PrometheusScaler:
    return PrometheusScaler.from_trigger(
        trigger_index=index,
        trigger_name=None,
        metadata={"serverAddress": server, "threshold": "10", **metadata},
        auth_params=auth or {},
        resolved_env={},
        connections=connections,
    )


async def sample_once(scaler: PrometheusScaler) -> MetricSample:
    try:
        return await scaler.sample()
    finally:
        await scaler.aclose()


def all_text(exc: BaseException) -> str:
    """Everything an exception can put in a log: the whole chain, messages and reprs."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


# ---------------------------------------------------------------------------------------------
# Values


async def test_exact_value_of_a_known_gauge(
    prometheus: Prometheus, connections: SharedClients, exporter: Exporter
) -> None:
    """A gauge at 42.5, scraped and queried: exactly 42.5, with threshold and activation."""
    await exporter.set("orders", 42.5)
    scaler = make(
        prometheus.url,
        connections,
        {"query": exporter.selector("orders"), "threshold": "20", "activationThreshold": "5"},
        index=2,
    )
    sample = await sample_once(scaler)
    assert sample == MetricSample(
        name="s2-prometheus", value=42.5, target=20.0, activation_target=5.0
    )


async def test_aggregations_and_scalars(
    prometheus: Prometheus, connections: SharedClients, exporter: Exporter
) -> None:
    """sum() over two series is one series; scalar() gives a scalar result, read too."""
    await exporter.set("a", 3)
    await exporter.set("b", 4)
    for query in (f"sum({exporter.selector()})", f"scalar(sum({exporter.selector()}))"):
        sample = await sample_once(make(prometheus.url, connections, {"query": query}))
        assert sample.value == 7.0


async def test_empty_result_under_both_ignore_null_values_settings(
    prometheus: Prometheus, connections: SharedClients, exporter: Exporter
) -> None:
    """No series: 0 by default (KEDA's default), a non-transient error with "false"."""
    await exporter.set("orders", 1)
    query = exporter.selector("no-such-queue")
    assert (await sample_once(make(prometheus.url, connections, {"query": query}))).value == 0.0
    strict = make(prometheus.url, connections, {"query": query, "ignoreNullValues": "false"})
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(strict)
    assert str(info.value) == (
        f"trigger[0] (prometheus): {prometheus.url}: the query returned no series (an empty "
        "vector) and ignoreNullValues is false: what the query selects may be gone (e.g. its "
        "target is down)"
    )
    assert not info.value.transient


async def test_nan_follows_ignore_null_values_and_inf_is_always_an_error(
    prometheus: Prometheus, connections: SharedClients, exporter: Exporter
) -> None:
    """A NaN sample: 0, or an error with ignoreNullValues false; +Inf: an error either way."""
    await exporter.set("nan", math.nan)
    query = exporter.selector("nan")
    assert (await sample_once(make(prometheus.url, connections, {"query": query}))).value == 0.0
    with pytest.raises(ScalerQueryError, match="the query returned NaN and ignoreNullValues"):
        await sample_once(
            make(prometheus.url, connections, {"query": query, "ignoreNullValues": "false"})
        )
    await exporter.set("inf", math.inf)
    with pytest.raises(ScalerQueryError, match=r"the query returned \+Inf, which cannot be"):
        await sample_once(make(prometheus.url, connections, {"query": exporter.selector("inf")}))


async def test_several_series_are_an_error_naming_them(
    prometheus: Prometheus, connections: SharedClients, exporter: Exporter
) -> None:
    """Two queues, no aggregation: an error with the count, the series and the remedy."""
    await exporter.set("a", 1)
    await exporter.set("b", 2)
    instance = f"{LOOPBACK}:{exporter.port}"
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(make(prometheus.url, connections, {"query": exporter.selector()}))
    assert str(info.value) == (
        f"trigger[0] (prometheus): {prometheus.url}: the query returned 2 series "
        f'(backlog{{instance="{instance}", job="{exporter.job}", queue="a"}}, '
        f'backlog{{instance="{instance}", job="{exporter.job}", queue="b"}}); it must return '
        "exactly one: aggregate them, e.g. sum(...) or max(...)"
    )


async def test_activation(
    prometheus: Prometheus, connections: SharedClients, exporter: Exporter
) -> None:
    """Active only when the value exceeds activationThreshold; the same scaler sees changes."""
    await exporter.set("orders", 3)
    scaler = make(
        prometheus.url,
        connections,
        {"query": exporter.selector("orders"), "activationThreshold": "3"},
    )
    try:
        first = await scaler.sample()
        assert (first.value, first.activation_target) == (3.0, 3.0)
        assert not first.value > first.activation_target
        await exporter.set("orders", 4)
        second = await scaler.sample()
        assert second.value == 4.0
        assert second.value > second.activation_target
    finally:
        await scaler.aclose()


async def test_query_parameters_reach_prometheus(
    prometheus: Prometheus, connections: SharedClients
) -> None:
    """`time` in queryParameters sets the evaluation time: time() returns it."""
    scaler = make(
        prometheus.url, connections, {"query": "time()", "queryParameters": "time=1700000000.5"}
    )
    assert (await sample_once(scaler)).value == 1700000000.5


async def test_bad_query_and_wrong_path_are_query_errors(
    prometheus: Prometheus, connections: SharedClients
) -> None:
    """Prometheus' own parse error, and a 404 for a serverAddress that is not the API."""
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(make(prometheus.url, connections, {"query": "sum(backlog"}))
    assert str(info.value).startswith(
        f"trigger[0] (prometheus): {prometheus.url}: HTTP 400 Bad Request: bad_data: "
        'invalid parameter "query": 1:12: parse error:'
    )
    with pytest.raises(ScalerQueryError) as info:
        await sample_once(make(prometheus.url + "/nope", connections, {"query": "up"}))
    assert str(info.value) == (
        f"trigger[0] (prometheus): {prometheus.url}/nope: HTTP 404 Not Found: 404 page not found"
    )


# ---------------------------------------------------------------------------------------------
# What is sent, seen at the proxy


async def test_namespace_query_parameters_and_custom_headers_are_sent_exactly(
    connections: SharedClients, proxy: Proxy
) -> None:
    """The query string is query, timeout, namespace and queryParameters (no time=); the
    custom headers arrive as written, non-ASCII text as UTF-8."""
    scaler = make(
        proxy.url,
        connections,
        {
            "query": "vector(5)",
            "namespace": "team-a",
            "queryParameters": "dedup=true,partial_response=false",
            "customHeaders": "X-Scope-OrgID=tenant-1,X-Client-Id=cïd ✓",
            "timeout": "2s",
        },
    )
    assert (await sample_once(scaler)).value == 5.0
    [seen] = proxy.seen
    assert sorted(seen.query.items()) == [
        ("dedup", "true"),
        ("namespace", "team-a"),
        ("partial_response", "false"),
        ("query", "vector(5)"),
        ("timeout", "2000ms"),
    ]
    assert seen.headers["X-Scope-OrgID"] == "tenant-1"
    assert seen.headers["X-Client-Id"] == "cïd ✓"  # UTF-8 on the wire, as Go sends it
    assert seen.headers["User-Agent"].startswith("autoscale/")
    assert "Authorization" not in seen.headers


@pytest.mark.parametrize(
    ("metadata", "auth", "required"),
    [
        pytest.param(
            {"authModes": "bearer"},
            {"bearerToken": TOKEN},
            {"Authorization": f"Bearer {TOKEN}"},
            id="bearer",
        ),
        pytest.param(
            {"authModes": "basic"},
            {"username": "admin", "password": PASSWORD},
            {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()},
            id="basic-utf8",
        ),
        pytest.param(
            {},
            {"authModes": "custom", "customAuthHeader": "X-Auth-Token", "customAuthValue": TOKEN},
            {"X-Auth-Token": TOKEN},
            id="custom-modes-from-auth-params",
        ),
        pytest.param(
            {"authModes": "bearer,custom", "customHeaders": "X-Scope-OrgID=tenant-9"},
            {"bearerToken": TOKEN, "customAuthHeader": "X-Api-Key", "customAuthValue": PASSWORD},
            {
                "Authorization": f"Bearer {TOKEN}",
                "X-Api-Key": PASSWORD,
                "X-Scope-OrgID": "tenant-9",
            },
            id="bearer-custom-and-headers-together",
        ),
    ],
)
async def test_credentials_are_sent_and_accepted(
    connections: SharedClients,
    proxy: Proxy,
    metadata: dict[str, str],
    auth: dict[str, str],
    required: dict[str, str],
) -> None:
    """Each auth mode's header arrives exactly; the proxy lets the query through to Prometheus."""
    proxy.require = required
    scaler = make(proxy.url, connections, {"query": "vector(9)", **metadata}, auth)
    assert (await sample_once(scaler)).value == 9.0
    [seen] = proxy.seen
    for name, value in required.items():
        assert seen.headers.getall(name) == [value]


@pytest.mark.parametrize(
    ("metadata", "auth"),
    [
        pytest.param({"authModes": "bearer"}, {"bearerToken": TOKEN}, id="bearer"),
        pytest.param(
            {"authModes": "basic"}, {"username": "admin", "password": PASSWORD}, id="basic"
        ),
    ],
)
async def test_refused_credentials_are_a_query_error_without_them(
    connections: SharedClients,
    proxy: Proxy,
    metadata: dict[str, str],
    auth: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """401 is not transient; the proxy echoes the header it got, and the scaler's error (and
    everything chained to it, and the logs) shows neither the token, the password nor the
    encoded Basic credentials."""
    caplog.set_level("DEBUG")
    proxy.require = {"Authorization": "Bearer something-else"}
    scaler = make(proxy.url, connections, {"query": "vector(1)", **metadata}, auth)
    with pytest.raises(ScalerError) as info:
        await sample_once(scaler)
    assert isinstance(info.value, ScalerQueryError)
    assert str(info.value) == (
        f"trigger[0] (prometheus): {proxy.url}: HTTP 401 Unauthorized: rejected: "
        + (
            "Authorization was 'Bearer ***'"
            if "bearerToken" in auth
            else "Authorization was 'Basic ***'"
        )
    )
    assert info.value.__cause__ is None
    assert info.value.__context__ is None
    encoded = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    text = all_text(info.value) + repr(scaler) + repr(scaler.config) + caplog.text
    for secret in (TOKEN, PASSWORD, encoded):
        assert secret not in text


# ---------------------------------------------------------------------------------------------
# One session for every scaler of a server


async def test_scalers_of_one_server_share_one_session_and_connection(
    connections: SharedClients, proxy: Proxy
) -> None:
    """Two triggers (different queries, thresholds, namespaces) with the same server and
    credentials: one client, and their requests arrive over one TCP connection. Other
    credentials get their own client. The last aclose() closes it."""
    auth = {"bearerToken": TOKEN}
    first = make(proxy.url, connections, {"query": "vector(1)", "authModes": "bearer"}, auth)
    second = make(
        proxy.url,
        connections,
        {"query": "vector(2)", "authModes": "bearer", "namespace": "b", "threshold": "3"},
        auth,
        index=1,
    )
    assert [(await s.sample()).value for s in (first, second, first, second)] == [1, 2, 1, 2]
    assert len(connections) == 1
    assert connections.leases(first.endpoint) == 2
    assert len({seen.peer for seen in proxy.seen}) == 1  # one connection, kept alive

    other = make(
        proxy.url,
        connections,
        {"query": "vector(3)", "authModes": "bearer"},
        {"bearerToken": "other"},
    )
    assert (await other.sample()).value == 3.0
    assert len(connections) == 2
    await other.aclose()

    await first.aclose()
    assert (await second.sample()).value == 2.0  # still open for the remaining scaler
    await second.aclose()
    assert len(connections) == 0


async def test_many_concurrent_queries_use_at_most_four_connections(
    connections: SharedClients, proxy: Proxy
) -> None:
    """40 triggers, 20 distinct queries, polled at once through one shared client: every value
    exact, at most 4 TCP connections reach the server, and identical queries in flight are
    asked once (so at most 20 requests, however the polls interleave)."""
    scalers = [
        make(proxy.url, connections, {"query": f"vector({i % 20})"}, index=i) for i in range(40)
    ]
    try:
        samples = await asyncio.gather(*(s.sample() for s in scalers))
        assert [s.value for s in samples] == [float(i % 20) for i in range(40)]
        assert len({seen.peer for seen in proxy.seen}) <= 4
        assert len(proxy.seen) <= 20
    finally:
        await asyncio.gather(*(s.aclose() for s in scalers))


# ---------------------------------------------------------------------------------------------
# Unreachable, silent


async def test_unreachable_server_is_unavailable_never_zero(connections: SharedClients) -> None:
    """Nobody listens: ScalerUnavailableError (transient) at once, even with the default
    ignoreNullValues: an outage is not an empty answer. Nothing of requests is chained."""
    port = free_port()
    scaler = make(f"http://{LOOPBACK}:{port}", connections, {"query": "up"})
    started = time.monotonic()
    with pytest.raises(ScalerUnavailableError) as info:
        await sample_once(scaler)
    assert time.monotonic() - started < 1.0
    assert info.value.transient
    assert str(info.value) == (
        f"trigger[0] (prometheus): http://{LOOPBACK}:{port}: unavailable: "
        "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


async def test_silent_server_times_out_without_blocking_the_event_loop(
    connections: SharedClients,
) -> None:
    """A server that accepts but never answers: the trigger's `timeout` (500 ms) bounds the
    poll, and the event loop keeps running meanwhile (the call runs in a worker thread)."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    with socket.create_server((LOOPBACK, 0)) as silent:
        port = silent.getsockname()[1]
        scaler = make(f"http://{LOOPBACK}:{port}", connections, {"query": "up", "timeout": "500"})
        task = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            with pytest.raises(ScalerUnavailableError) as info:
                await sample_once(scaler)
        finally:
            task.cancel()
        elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 2.0
    assert str(info.value).endswith(": no answer within 0.5s")
    assert ticks > 20


# ---------------------------------------------------------------------------------------------
# TLS, with client certificates


@dataclass
class TLSProxy:
    proxy: Proxy
    ca: str
    cert: str
    key: str


@pytest.fixture
async def tls_proxy(prometheus: Prometheus, tmp_path: Path) -> AsyncIterator[TLSProxy]:
    """The recording proxy on https, requiring a client certificate from its own CA."""
    ca = TinyCA("prometheus-proxy-ca")
    ca_file, _ = ca.write(tmp_path, "ca")
    cert_file, key_file = ca.issue(LOOPBACK, hosts=(LOOPBACK,), server=True).write(tmp_path, "srv")
    client = ca.issue("scaler", client=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_REQUIRED
    found, runner = await start_proxy(prometheus.url, context)
    yield TLSProxy(found, ca.cert_pem.decode(), client.cert_pem.decode(), client.key_pem.decode())
    await runner.cleanup()
    assert found.session is not None
    await found.session.close()


async def test_tls_with_ca_and_client_certificate(
    connections: SharedClients, tls_proxy: TLSProxy
) -> None:
    """authModes tls with ca, cert and key: the server is verified, the client is accepted."""
    auth = {"ca": tls_proxy.ca, "cert": tls_proxy.cert, "key": tls_proxy.key}
    scaler = make(
        tls_proxy.proxy.url, connections, {"query": "vector(6)", "authModes": "tls"}, auth
    )
    assert (await sample_once(scaler)).value == 6.0


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
async def test_tls_unsafe_ssl_skips_server_verification(
    connections: SharedClients, tls_proxy: TLSProxy
) -> None:
    """unsafeSsl: no CA needed to trust the server; the client certificate is still sent."""
    scaler = make(
        tls_proxy.proxy.url,
        connections,
        {"query": "vector(6)", "authModes": "tls", "unsafeSsl": "true"},
        {"cert": tls_proxy.cert, "key": tls_proxy.key},
    )
    assert (await sample_once(scaler)).value == 6.0


async def test_tls_failures_are_unavailable(
    connections: SharedClients, tls_proxy: TLSProxy
) -> None:
    """An untrusted server, or no client certificate: ScalerUnavailableError, no hang."""
    untrusted = make(
        tls_proxy.proxy.url,
        connections,
        {"query": "up", "authModes": "tls"},
        {"cert": tls_proxy.cert, "key": tls_proxy.key},
    )
    with pytest.raises(ScalerUnavailableError, match=r"TLS failed: .*CERTIFICATE_VERIFY_FAILED"):
        await sample_once(untrusted)
    # TLS 1.3 lets the server refuse the missing certificate after the handshake: the client
    # sees the alert or, depending on timing, the reset that follows it.
    anonymous = make(tls_proxy.proxy.url, connections, {"query": "up"}, {"ca": tls_proxy.ca})
    with pytest.raises(ScalerUnavailableError, match=r"CERTIFICATE_REQUIRED|reset|aborted"):
        await sample_once(anonymous)
