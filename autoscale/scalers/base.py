"""What every scaler returns and the protocol it implements; no I/O here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Protocol


class MetricType(enum.Enum):
    """How a metric value turns into replicas (the HPA's external metric target types)."""

    AVERAGE_VALUE = "AverageValue"  # replicas = ceil(value / target)
    VALUE = "Value"  # replicas = ceil(current * value / target)


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricSample:
    """One trigger's reading at one poll."""

    name: str  # "s0-redis-streams-jobs": trigger index prefix, as KEDA names metrics
    value: float
    target: float
    activation_target: float = 0.0  # the trigger is active when value > activation_target
    metric_type: MetricType = MetricType.AVERAGE_VALUE
    # An upper bound from the source itself, e.g. Kafka's partition count when idle consumers
    # are not allowed.
    replica_cap: int | None = None


class Scaler(Protocol):
    """One trigger of one ScaledObject, bound to its event source."""

    type_name: ClassVar[str]

    async def sample(self) -> MetricSample:
        """Poll the source once; raise ScalerError on failure."""
        ...

    async def aclose(self) -> None:
        """Release what the scaler holds; idempotent."""
        ...
