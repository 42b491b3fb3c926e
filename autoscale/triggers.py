"""Builds a trigger's scaler: resolves its authentication, then asks the scaler registry.

This is the loop's ScalerFactory. Parameter warnings (unknown keys, deprecated names, a
password in plain metadata) are logged when a loop first builds its scalers, not again at each
rebuild after a failed poll (every poll of an outage); values are never logged.
"""

from __future__ import annotations

import logging

from autoscale import model
from autoscale.auth import AuthResolver
from autoscale.errors import ConfigError
from autoscale.scalers.base import MetricType, Scaler
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.registry import ScalerRegistry

log = logging.getLogger(__name__)


class TriggerScalers:
    def __init__(
        self, *, registry: ScalerRegistry, connections: SharedClients, auth: AuthResolver
    ) -> None:
        self.registry = registry
        self.connections = connections
        self.auth = auth

    async def auth_digest(self, so: model.ScaledObject, trigger: model.Trigger) -> str:
        """The digest of the trigger's current credentials (from the watch cache, no API call)."""
        return (await self.auth.resolve(so, trigger)).digest

    async def build(
        self, so: model.ScaledObject, trigger: model.Trigger, *, rebuild: bool = False
    ) -> tuple[Scaler, str]:
        """An unconnected scaler for `trigger` and its credentials' digest; ConfigError names
        what is wrong. `rebuild`: the loop built this trigger before and already warned."""
        metric_type = scaler_metric_type(trigger)
        resolved = await self.auth.resolve(so, trigger)
        warnings: list[str] = []
        scaler = self.registry.build_scaler(
            trigger.type,
            trigger_index=trigger.index,
            trigger_name=trigger.name,
            metadata=trigger.metadata,
            auth_params=resolved.auth_params,
            resolved_env=resolved.resolved_env,
            connections=self.connections,
            metric_type=metric_type,
            warnings=warnings,
        )
        for warning in () if rebuild else warnings:
            log.warning("%s/%s: %s", so.metadata.namespace, so.name, warning)
        return scaler, resolved.digest


def scaler_metric_type(trigger: model.Trigger) -> MetricType:
    """The trigger's metric type for a scaler; Utilization is for cpu/memory only."""
    metric_type = trigger.effective_metric_type
    if metric_type is model.MetricTargetType.UTILIZATION:
        raise ConfigError(
            f"spec.triggers[{trigger.index}].metricType: Utilization applies to cpu and "
            f"memory triggers only, not {trigger.type}"
        )
    return MetricType(metric_type.value)
