"""The bench's Prometheus is real: it scrapes an exporter this test starts and answers the
PromQL instant query the prometheus scaler will send."""

from __future__ import annotations

import time

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.testbed.procs import LOOPBACK, free_port
from tests.testbed.services import Prometheus

pytestmark = pytest.mark.testbed


def test_scrape_and_instant_query(prometheus: Prometheus, unique_name: str) -> None:
    registry = CollectorRegistry()
    backlog = Gauge("smoke_backlog", "Jobs waiting", ["queue"], registry=registry)
    backlog.labels(queue=unique_name).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr=LOOPBACK, registry=registry)
    try:
        prometheus.add_target(unique_name, f"{LOOPBACK}:{port}")
        client = PrometheusConnect(url=prometheus.url, disable_ssl=True)
        query = f'smoke_backlog{{job="{unique_name}", queue="{unique_name}"}}'
        result: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not result:
            result = client.custom_query(query)
            time.sleep(0.25)
        assert len(result) == 1, f"no sample for {query} within 30s"
        value = result[0]["value"]
        assert isinstance(value, list)
        assert float(value[1]) == 42.0
    finally:
        prometheus.remove_target(unique_name)
        server.shutdown()
        thread.join()
