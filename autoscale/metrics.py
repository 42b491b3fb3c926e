"""The operator's own Prometheus metrics, in a registry of their own.

Owns every prometheus_client object and every label set, named after KEDA's (`keda_` becomes
`autoscale_`): loops, the controller and the leader elector call `Metrics` methods and never touch
prometheus_client. Label values are names only (namespace, ScaledObject, trigger, metric), never
trigger metadata or secrets; `forget_object()` drops a deleted ScaledObject's series.

A scrape's cost grows with the number of series, so per-trigger and per-object metrics are one
sample each (gauges and counters, no `_created` series); distributions (poll duration, loop
lateness) are histograms whose labels have a bounded set of values (the trigger type), never a
ScaledObject. `health.serve_metrics` renders on a worker thread, which prometheus_client's own
locks make safe against the loop's updates.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Final, Literal, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from autoscale import __version__

PREFIX: Final = "autoscale"

TRIGGER_LABELS: Final = ("namespace", "scaledObject", "trigger", "metric")
OBJECT_LABELS: Final = ("namespace", "scaledObject")
TYPE_LABELS: Final = ("trigger",)
SCALE_LABELS: Final = ("namespace", "scaledObject", "direction")

POLL_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENESS_BUCKETS: Final = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Direction = Literal["up", "down"]

_ObjectKey = tuple[str, str]
_Series = tuple[MetricWrapperBase, tuple[str, ...]]
_M = TypeVar("_M", bound=MetricWrapperBase)


class Metrics:
    """One set of the operator's metrics, registered in `self.registry` (not the global one).

    Per trigger (labels namespace, scaledObject, trigger, metric): `trigger` is the trigger's
    `type` and `metric` its metric name (`s0-kafka-orders`), so the pair is unique per object.
    Per ScaledObject (labels namespace, scaledObject). Per trigger type (label trigger): the
    poll-duration histogram. Call the observer methods from the event loop; `render()` and
    `encode()` may run on another thread (prometheus_client locks each metric's children).

    Creating one turns off prometheus_client's `*_created` series for the whole process (a
    module-wide switch, read at each collection, that covers every registry): they would add
    one sample per counter series, and no query of ours uses them.
    """

    def __init__(self, *, version: str = __version__) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self._series: dict[_ObjectKey, set[_Series]] = {}
        # Each series' child, so a poll's updates skip prometheus_client's label validation
        # and locking: a few dict lookups per poll at 10,000 ScaledObjects.
        self._children: dict[_Series, MetricWrapperBase] = {}
        registry = self.registry

        self.build_info = Gauge(
            f"{PREFIX}_build_info",
            "Always 1; the labels say which autoscale build runs.",
            ("version", "python"),
            registry=registry,
        )
        self.build_info.labels(version=version, python=platform.python_version()).set(1)
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica holds the leader Lease and scales, else 0.",
            registry=registry,
        )

        self.scaler_metrics_value = Gauge(
            f"{PREFIX}_scaler_metrics_value",
            "The value a trigger's last successful poll returned.",
            TRIGGER_LABELS,
            registry=registry,
        )
        self.scaler_metrics_target = Gauge(
            f"{PREFIX}_scaler_metrics_target",
            "The target value of a trigger's metric.",
            TRIGGER_LABELS,
            registry=registry,
        )
        self.scaler_active = Gauge(
            f"{PREFIX}_scaler_active",
            "1 when a trigger's last poll was above its activation threshold, else 0.",
            TRIGGER_LABELS,
            registry=registry,
        )
        self.scaler_errors = Counter(
            f"{PREFIX}_scaler_errors",
            "Failed polls of a trigger.",
            TRIGGER_LABELS,
            registry=registry,
        )
        self.scaler_latency = Gauge(
            f"{PREFIX}_scaler_metrics_latency_seconds",
            "How long the last timed poll of a trigger took.",
            TRIGGER_LABELS,
            registry=registry,
        )
        self.poll_duration = Histogram(
            f"{PREFIX}_poll_duration_seconds",
            "How long polls took, by trigger type; the count is the number of timed polls.",
            TYPE_LABELS,
            buckets=POLL_LATENCY_BUCKETS,
            registry=registry,
        )
        # One child per trigger type, created on first use: a bounded set, never forgotten.
        self._durations: dict[str, Histogram] = {}

        self.current_replicas = Gauge(
            f"{PREFIX}_scaledobject_current_replicas",
            "The scale target's replica count as last read.",
            OBJECT_LABELS,
            registry=registry,
        )
        self.desired_replicas = Gauge(
            f"{PREFIX}_scaledobject_desired_replicas",
            "The replica count the last decision asked for.",
            OBJECT_LABELS,
            registry=registry,
        )
        self.last_poll = Gauge(
            f"{PREFIX}_scaledobject_last_poll_timestamp_seconds",
            "Unix time the ScaledObject's loop last finished a poll, whatever its outcome.",
            OBJECT_LABELS,
            registry=registry,
        )
        self.object_errors = Counter(
            f"{PREFIX}_scaledobject_errors",
            "Failed ticks of a ScaledObject's loop (reading, deciding or applying).",
            OBJECT_LABELS,
            registry=registry,
        )
        self.paused = Gauge(
            f"{PREFIX}_scaledobject_paused",
            "1 while the ScaledObject is paused, else 0.",
            OBJECT_LABELS,
            registry=registry,
        )
        self.scale_operations = Counter(
            f"{PREFIX}_scale_operations",
            "Changes of the scale target's replica count, by direction.",
            SCALE_LABELS,
            registry=registry,
        )

        self.tasks = Gauge(
            f"{PREFIX}_asyncio_tasks",
            "asyncio tasks alive in the operator's event loop, as last sampled (every 5 s).",
            registry=registry,
        )
        self.loop_lateness = Histogram(
            f"{PREFIX}_loop_lateness_seconds",
            "How late a loop tick started after its scheduled time.",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )

    # --- per trigger ---------------------------------------------------------------------

    def observe_trigger(
        self,
        *,
        namespace: str,
        name: str,
        trigger: str,
        metric: str,
        value: float,
        target: float,
        active: bool,
        latency: float,
    ) -> None:
        """Record one successful poll of a trigger."""
        labels = self._labels(namespace, name, trigger, metric)
        self._child(self.scaler_metrics_value, labels).set(value)
        self._child(self.scaler_metrics_target, labels).set(target)
        self._child(self.scaler_active, labels).set(1 if active else 0)
        self._timed(labels, trigger, latency)
        # The error counter exists from the first poll, so rate() sees its first increment.
        self._child(self.scaler_errors, labels)

    def trigger_error(
        self,
        *,
        namespace: str,
        name: str,
        trigger: str,
        metric: str,
        latency: float | None = None,
    ) -> None:
        """Record one failed poll of a trigger (and how long it took to fail, when known)."""
        labels = self._labels(namespace, name, trigger, metric)
        self._child(self.scaler_errors, labels).inc()
        if latency is not None:
            self._timed(labels, trigger, latency)

    # --- per ScaledObject ----------------------------------------------------------------

    def observe_object(
        self, *, namespace: str, name: str, current: int, desired: int, paused: bool
    ) -> None:
        """Record one tick's outcome for a ScaledObject."""
        labels = self._labels(namespace, name)
        self._child(self.current_replicas, labels).set(current)
        self._child(self.desired_replicas, labels).set(desired)
        self._child(self.paused, labels).set(1 if paused else 0)
        self._child(self.object_errors, labels)

    def polled(self, *, namespace: str, name: str, at: float) -> None:
        """Record that a ScaledObject's loop finished a poll at Unix time `at` (any outcome):
        a loop that stopped shows as a timestamp that no longer moves."""
        self._child(self.last_poll, self._labels(namespace, name)).set(at)

    def object_error(self, *, namespace: str, name: str) -> None:
        """Record one failed tick of a ScaledObject's loop."""
        self._child(self.object_errors, self._labels(namespace, name)).inc()

    def scaled(self, *, namespace: str, name: str, direction: Direction) -> None:
        """Record one change of the scale target's replica count."""
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        labels = self._labels(namespace, name, direction)
        self._child(self.scale_operations, labels).inc()

    def forget_object(self, namespace: str, name: str) -> None:
        """Drop every series of a ScaledObject (deleted, or restarted with other triggers)."""
        for metric, labels in self._series.pop((namespace, name), ()):
            self._children.pop((metric, labels), None)
            metric.remove(*labels)

    # --- process-wide ----------------------------------------------------------------------

    def observe_lateness(self, seconds: float) -> None:
        """Record how late a loop tick started (negative values count as 0)."""
        self.loop_lateness.observe(max(seconds, 0.0))

    def set_tasks(self, count: int) -> None:
        """Set the asyncio task gauge (sampled on the event loop, which owns the task set)."""
        self.tasks.set(count)

    def set_leader(self, leading: bool) -> None:
        """Set the leader gauge."""
        self.leader.set(1 if leading else 0)

    def track_leader(self, is_leader: Callable[[], bool]) -> None:
        """Read the leader gauge from `is_leader()` at every scrape instead."""
        self.leader.set_function(lambda: 1.0 if is_leader() else 0.0)

    # --- exposition ------------------------------------------------------------------------

    def render(self) -> bytes:
        """Every metric in the Prometheus text exposition format (callable from any thread)."""
        return generate_latest(self.registry)

    def encode(self, accept: str | None) -> tuple[bytes, str]:
        """Every metric in the format an `Accept` header asks for: (body, content type).

        Its cost grows with the number of series (about 10 MiB and over a second of CPU at
        10,000 ScaledObjects), so the server calls it off the event loop."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # --- internals -------------------------------------------------------------------------

    def _timed(self, labels: tuple[str, ...], trigger: str, latency: float) -> None:
        seconds = max(latency, 0.0)
        self._child(self.scaler_latency, labels).set(seconds)
        histogram = self._durations.get(trigger)
        if histogram is None:
            histogram = self._durations[trigger] = self.poll_duration.labels(trigger)
        histogram.observe(seconds)

    @staticmethod
    def _labels(namespace: str, name: str, *rest: str) -> tuple[str, ...]:
        return (namespace, name, *rest)

    def _child(self, metric: _M, labels: tuple[str, ...]) -> _M:
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
            self._series.setdefault((labels[0], labels[1]), set()).add(key)
        return child  # type: ignore[return-value]
