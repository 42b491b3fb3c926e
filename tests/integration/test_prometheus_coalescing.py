"""prometheus: identical queries in flight at once share one HTTP request, against the bench's
real Prometheus. Requests are counted by Prometheus itself, in its own
`prometheus_http_requests_total{handler="/api/v1/query"}`; the queries are constant PromQL
(`vector(7)`), so every value is exact without a scrape.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import pytest

from autoscale.errors import ScalerQueryError
from autoscale.scalers.base import MetricSample
from autoscale.scalers.connections import SharedClients, coalescing_counters
from autoscale.scalers.prometheus import PrometheusScaler
from tests.testbed.services import Prometheus

pytestmark = pytest.mark.testbed


@pytest.fixture
async def connections() -> AsyncIterator[SharedClients]:
    pool = SharedClients()
    yield pool
    await pool.aclose()


def query_requests(prometheus: Prometheus) -> float:
    """How many instant queries Prometheus has answered (its own counter, all status codes)."""
    url = f"{prometheus.url}/metrics"
    with urllib.request.urlopen(url, timeout=5, context=prometheus.client_context) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("prometheus_http_requests_total{") and (
            'handler="/api/v1/query"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


def make(prometheus: Prometheus, connections: SharedClients, query: str) -> PrometheusScaler:
    return PrometheusScaler.from_trigger(
        trigger_index=0,
        trigger_name=None,
        metadata={"serverAddress": prometheus.url, "threshold": "10", "query": query},
        auth_params={},
        resolved_env={},
        connections=connections,
    )


async def test_identical_queries_in_flight_share_one_request(
    prometheus: Prometheus, connections: SharedClients
) -> None:
    """12 scalers, three distinct queries (one of them invalid), polled at once: three
    requests reach Prometheus, every scaler gets its own value or its own error."""
    cases: list[tuple[str, float | None]] = (
        [("vector(7)", 7.0)] * 6 + [("vector(3) * 2", 6.0)] * 4 + [("sum(", None)] * 2
    )
    scalers = [make(prometheus, connections, query) for query, _ in cases]
    try:
        await asyncio.gather(*(s.sample() for s in scalers), return_exceptions=True)  # lease
        before = query_requests(prometheus)
        counters = coalescing_counters("prometheus")
        reads, sent = counters.reads, counters.round_trips

        results = await asyncio.gather(*(s.sample() for s in scalers), return_exceptions=True)

        assert query_requests(prometheus) - before == 3
        assert counters.reads - reads == len(scalers)
        assert counters.round_trips - sent == 3
        for result, (_, want) in zip(results, cases, strict=True):
            if want is None:
                assert isinstance(result, ScalerQueryError), result
                assert "bad_data" in str(result)
            else:
                assert isinstance(result, MetricSample), result
                assert result.value == want
    finally:
        await asyncio.gather(*(s.aclose() for s in scalers))


async def test_a_finished_query_is_not_reused(
    prometheus: Prometheus, connections: SharedClients
) -> None:
    """Sharing lasts as long as the request: polls one after another each ask Prometheus."""
    scaler = make(prometheus, connections, "vector(5)")
    try:
        assert (await scaler.sample()).value == 5.0
        before = query_requests(prometheus)
        assert (await scaler.sample()).value == 5.0
        assert (await scaler.sample()).value == 5.0
        assert query_requests(prometheus) - before == 2
    finally:
        await scaler.aclose()
