"""The operator's own metrics: names, label sets, values, forgetting an object, the text format."""

from __future__ import annotations

import platform

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from autoscale.metrics import Metrics

TRIGGER = {"namespace": "shop", "scaledObject": "orders", "trigger": "kafka", "metric": "s0-kafka"}
OBJECT = {"namespace": "shop", "scaledObject": "orders"}
KAFKA = {"trigger": "kafka"}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="1.2.3")


def _poll(metrics: Metrics, *, name: str = "orders", value: float = 420.0) -> None:
    metrics.observe_trigger(
        namespace="shop",
        name=name,
        trigger="kafka",
        metric="s0-kafka",
        value=value,
        target=10.0,
        active=True,
        latency=0.02,
    )


def _value(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def _families(metrics: Metrics) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    """Parse render() with prometheus_client's own parser: {family: (type, samples)}."""
    return {
        family.name: (family.type, [(s.name, s.labels, s.value) for s in family.samples])
        for family in text_string_to_metric_families(metrics.render().decode())
    }


def test_each_instance_has_its_own_registry() -> None:
    """Two Metrics coexist (no duplicate registration) and the global registry stays clean."""
    first, second = Metrics(), Metrics()
    _poll(first)
    assert _value(first, "autoscale_scaler_metrics_value", TRIGGER) == 420.0
    assert _value(second, "autoscale_scaler_metrics_value", TRIGGER) is None
    assert REGISTRY.get_sample_value("autoscale_leader") is None


def test_build_info(metrics: Metrics) -> None:
    """autoscale_build_info is 1, labelled with our version and Python's."""
    labels = {"version": "1.2.3", "python": platform.python_version()}
    assert _value(metrics, "autoscale_build_info", labels) == 1.0


def test_observe_trigger(metrics: Metrics) -> None:
    """One poll sets value, target, active and last latency, a zero error count, and one
    observation in the poll-duration histogram of its trigger type."""
    _poll(metrics)
    assert _value(metrics, "autoscale_scaler_metrics_value", TRIGGER) == 420.0
    assert _value(metrics, "autoscale_scaler_metrics_target", TRIGGER) == 10.0
    assert _value(metrics, "autoscale_scaler_active", TRIGGER) == 1.0
    assert _value(metrics, "autoscale_scaler_metrics_latency_seconds", TRIGGER) == 0.02
    assert _value(metrics, "autoscale_scaler_errors_total", TRIGGER) == 0.0
    assert _value(metrics, "autoscale_poll_duration_seconds_count", KAFKA) == 1.0
    assert _value(metrics, "autoscale_poll_duration_seconds_sum", KAFKA) == 0.02
    bucket = {**KAFKA, "le": "0.025"}
    assert _value(metrics, "autoscale_poll_duration_seconds_bucket", bucket) == 1.0
    assert _value(metrics, "autoscale_poll_duration_seconds_bucket", {**KAFKA, "le": "0.01"}) == 0


def test_latency_gauge_is_the_last_poll_and_the_histogram_counts_polls_by_type(
    metrics: Metrics,
) -> None:
    """The per-trigger latency is the last poll's; the histogram sums every object's polls
    of a type, with only the trigger type as label."""
    _poll(metrics)
    metrics.observe_trigger(
        namespace="shop",
        name="orders",
        trigger="kafka",
        metric="s0-kafka",
        value=1.0,
        target=10.0,
        active=False,
        latency=0.3,
    )
    _poll(metrics, name="payments")
    metrics.observe_trigger(
        namespace="shop",
        name="orders",
        trigger="redis-streams",
        metric="s1-redis-streams",
        value=1.0,
        target=10.0,
        active=False,
        latency=0.004,
    )
    assert _value(metrics, "autoscale_scaler_metrics_latency_seconds", TRIGGER) == 0.3
    assert _value(metrics, "autoscale_poll_duration_seconds_count", KAFKA) == 3.0
    redis = {"trigger": "redis-streams"}
    assert _value(metrics, "autoscale_poll_duration_seconds_count", redis) == 1.0
    assert _value(metrics, "autoscale_poll_duration_seconds_bucket", {**redis, "le": "0.005"}) == 1


def test_inactive_trigger_is_zero(metrics: Metrics) -> None:
    """autoscale_scaler_active is 0 when the poll was not above the activation threshold."""
    metrics.observe_trigger(
        namespace="shop",
        name="orders",
        trigger="kafka",
        metric="s0-kafka",
        value=0.0,
        target=10.0,
        active=False,
        latency=0.01,
    )
    assert _value(metrics, "autoscale_scaler_active", TRIGGER) == 0.0


def test_trigger_error(metrics: Metrics) -> None:
    """A failed poll counts an error, and its latency when given; the value stays as it was."""
    _poll(metrics)
    metrics.trigger_error(namespace="shop", name="orders", trigger="kafka", metric="s0-kafka")
    metrics.trigger_error(
        namespace="shop", name="orders", trigger="kafka", metric="s0-kafka", latency=5.0
    )
    assert _value(metrics, "autoscale_scaler_errors_total", TRIGGER) == 2.0
    assert _value(metrics, "autoscale_scaler_metrics_latency_seconds", TRIGGER) == 5.0
    assert _value(metrics, "autoscale_poll_duration_seconds_count", KAFKA) == 2.0
    assert _value(metrics, "autoscale_scaler_metrics_value", TRIGGER) == 420.0


def test_observe_object(metrics: Metrics) -> None:
    """Current and desired replicas, paused as 0/1, and a zero error count."""
    metrics.observe_object(namespace="shop", name="orders", current=1, desired=3, paused=False)
    assert _value(metrics, "autoscale_scaledobject_current_replicas", OBJECT) == 1.0
    assert _value(metrics, "autoscale_scaledobject_desired_replicas", OBJECT) == 3.0
    assert _value(metrics, "autoscale_scaledobject_paused", OBJECT) == 0.0
    assert _value(metrics, "autoscale_scaledobject_errors_total", OBJECT) == 0.0
    metrics.observe_object(namespace="shop", name="orders", current=3, desired=3, paused=True)
    assert _value(metrics, "autoscale_scaledobject_current_replicas", OBJECT) == 3.0
    assert _value(metrics, "autoscale_scaledobject_paused", OBJECT) == 1.0


def test_object_error(metrics: Metrics) -> None:
    """Each failed tick counts once."""
    metrics.object_error(namespace="shop", name="orders")
    metrics.object_error(namespace="shop", name="orders")
    assert _value(metrics, "autoscale_scaledobject_errors_total", OBJECT) == 2.0


def test_last_poll_timestamp_moves_with_each_poll(metrics: Metrics) -> None:
    """The last poll's Unix time per object: a stopped loop is a timestamp that stays put."""
    name = "autoscale_scaledobject_last_poll_timestamp_seconds"
    assert _value(metrics, name, OBJECT) is None
    metrics.polled(namespace="shop", name="orders", at=1_800_000_000.5)
    assert _value(metrics, name, OBJECT) == 1_800_000_000.5
    metrics.polled(namespace="shop", name="orders", at=1_800_000_030.5)
    assert _value(metrics, name, OBJECT) == 1_800_000_030.5
    metrics.forget_object("shop", "orders")
    assert _value(metrics, name, OBJECT) is None


def test_asyncio_task_gauge(metrics: Metrics) -> None:
    """The task count is a plain process-wide gauge, 0 until first sampled."""
    assert _value(metrics, "autoscale_asyncio_tasks") == 0.0
    metrics.set_tasks(1042)
    assert _value(metrics, "autoscale_asyncio_tasks") == 1042.0


def test_scale_operations_by_direction(metrics: Metrics) -> None:
    """Scale operations count per direction."""
    metrics.scaled(namespace="shop", name="orders", direction="up")
    metrics.scaled(namespace="shop", name="orders", direction="up")
    metrics.scaled(namespace="shop", name="orders", direction="down")
    up = {**OBJECT, "direction": "up"}
    down = {**OBJECT, "direction": "down"}
    assert _value(metrics, "autoscale_scale_operations_total", up) == 2.0
    assert _value(metrics, "autoscale_scale_operations_total", down) == 1.0


def test_scale_direction_is_checked(metrics: Metrics) -> None:
    """Only up and down are directions: the label set cannot grow from a typo."""
    with pytest.raises(ValueError, match="direction must be 'up' or 'down'"):
        metrics.scaled(namespace="shop", name="orders", direction="sideways")  # type: ignore[arg-type]


def test_loop_lateness(metrics: Metrics) -> None:
    """Lateness is one unlabelled histogram; early ticks count as 0."""
    metrics.observe_lateness(0.003)
    metrics.observe_lateness(-0.5)
    assert _value(metrics, "autoscale_loop_lateness_seconds_count") == 2.0
    assert _value(metrics, "autoscale_loop_lateness_seconds_sum") == 0.003
    assert _value(metrics, "autoscale_loop_lateness_seconds_bucket", {"le": "0.001"}) == 1.0


def test_leader_gauge(metrics: Metrics) -> None:
    """autoscale_leader is 0 at start, set directly or read from a probe at each scrape."""
    assert _value(metrics, "autoscale_leader") == 0.0
    metrics.set_leader(True)
    assert _value(metrics, "autoscale_leader") == 1.0
    leading = [False]
    metrics.track_leader(lambda: leading[0])
    assert _value(metrics, "autoscale_leader") == 0.0
    leading[0] = True
    assert _value(metrics, "autoscale_leader") == 1.0


def test_forget_object_removes_every_series_of_that_object_only(metrics: Metrics) -> None:
    """After forget_object no series carries the object's labels; other objects keep theirs."""
    for name in ("orders", "payments"):
        _poll(metrics, name=name)
        metrics.trigger_error(
            namespace="shop", name=name, trigger="kafka", metric="s0-kafka", latency=1.0
        )
        metrics.observe_object(namespace="shop", name=name, current=1, desired=2, paused=False)
        metrics.object_error(namespace="shop", name=name)
        metrics.polled(namespace="shop", name=name, at=1_800_000_000.0)
        metrics.scaled(namespace="shop", name=name, direction="up")
    metrics.observe_lateness(0.1)

    metrics.forget_object("shop", "orders")

    samples = [
        (sample_name, labels)
        for _, family_samples in _families(metrics).values()
        for sample_name, labels, _ in family_samples
    ]
    assert not [s for s in samples if s[1].get("scaledObject") == "orders"]
    payments = {s[0] for s in samples if s[1].get("scaledObject") == "payments"}
    assert {
        "autoscale_scaler_metrics_value",
        "autoscale_scaler_metrics_target",
        "autoscale_scaler_active",
        "autoscale_scaler_errors_total",
        "autoscale_scaler_metrics_latency_seconds",
        "autoscale_scaledobject_current_replicas",
        "autoscale_scaledobject_desired_replicas",
        "autoscale_scaledobject_paused",
        "autoscale_scaledobject_errors_total",
        "autoscale_scaledobject_last_poll_timestamp_seconds",
        "autoscale_scale_operations_total",
    } <= payments
    assert _value(metrics, "autoscale_loop_lateness_seconds_count") == 1.0
    # The process-wide histogram keeps every poll: it has no per-object series to drop.
    assert _value(metrics, "autoscale_poll_duration_seconds_count", KAFKA) == 4.0


def test_forget_is_idempotent_and_the_object_can_come_back(metrics: Metrics) -> None:
    """Forgetting twice (or an unknown object) is harmless; new samples start fresh series."""
    metrics.scaled(namespace="shop", name="orders", direction="up")
    metrics.forget_object("shop", "orders")
    metrics.forget_object("shop", "orders")
    metrics.forget_object("elsewhere", "nothing")
    metrics.scaled(namespace="shop", name="orders", direction="up")
    up = {**OBJECT, "direction": "up"}
    assert _value(metrics, "autoscale_scale_operations_total", up) == 1.0


def test_render_is_valid_text_format_with_the_expected_families(metrics: Metrics) -> None:
    """render() parses with prometheus_client's parser; each family has its type and labels."""
    _poll(metrics)
    metrics.observe_object(namespace="shop", name="orders", current=1, desired=3, paused=False)
    metrics.polled(namespace="shop", name="orders", at=1_800_000_000.0)
    metrics.scaled(namespace="shop", name="orders", direction="up")
    metrics.observe_lateness(0.2)
    families = _families(metrics)
    expected = {
        "autoscale_build_info": ("gauge", {"version", "python"}),
        "autoscale_leader": ("gauge", set()),
        "autoscale_scaler_metrics_value": ("gauge", set(TRIGGER)),
        "autoscale_scaler_metrics_target": ("gauge", set(TRIGGER)),
        "autoscale_scaler_active": ("gauge", set(TRIGGER)),
        "autoscale_scaler_errors": ("counter", set(TRIGGER)),
        "autoscale_scaler_metrics_latency_seconds": ("gauge", set(TRIGGER)),
        "autoscale_poll_duration_seconds": ("histogram", {"trigger", "le"}),
        "autoscale_scaledobject_current_replicas": ("gauge", set(OBJECT)),
        "autoscale_scaledobject_desired_replicas": ("gauge", set(OBJECT)),
        "autoscale_scaledobject_errors": ("counter", set(OBJECT)),
        "autoscale_scaledobject_paused": ("gauge", set(OBJECT)),
        "autoscale_scaledobject_last_poll_timestamp_seconds": ("gauge", set(OBJECT)),
        "autoscale_scale_operations": ("counter", {*OBJECT, "direction"}),
        "autoscale_loop_lateness_seconds": ("histogram", {"le"}),
        "autoscale_asyncio_tasks": ("gauge", set()),
    }
    for name, (kind, label_names) in expected.items():
        assert name in families, name
        family_type, samples = families[name]
        assert family_type == kind, name
        assert samples, name
        for sample_name, labels, _ in samples:
            if sample_name.endswith(("_sum", "_count")):
                assert set(labels) == label_names - {"le"}, sample_name
            else:
                assert set(labels) == label_names, sample_name
    assert all(name.startswith("autoscale_") for name in families)


def test_one_sample_per_trigger_and_object_series_and_no_created_series(metrics: Metrics) -> None:
    """What a ScaledObject costs a scrape: five samples per trigger, five per object, plus one
    per scale direction used; no `_created` samples, whatever the format."""
    _poll(metrics)
    metrics.observe_object(namespace="shop", name="orders", current=1, desired=3, paused=False)
    metrics.polled(namespace="shop", name="orders", at=1_800_000_000.0)
    per_object = [
        sample_name
        for _, samples in _families(metrics).values()
        for sample_name, labels, _ in samples
        if labels.get("scaledObject") == "orders"
    ]
    assert len(per_object) == 10, per_object
    metrics.scaled(namespace="shop", name="orders", direction="up")
    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        body, _ = metrics.encode(accept)
        assert b"_created" not in body


def test_encode_negotiates_openmetrics(metrics: Metrics) -> None:
    """encode() answers OpenMetrics to a scraper that asks for it, the text format otherwise."""
    body, content_type = metrics.encode("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    body, content_type = metrics.encode(None)
    assert content_type.startswith("text/plain")
    assert b"autoscale_build_info" in body
