"""A trigger's authentication parameters and environment, resolved as KEDA resolves them.

- `resolved_env`: the scale target's container environment (the container named by
  `envSourceContainerName`, else the first), literal values and Secret/ConfigMap references,
  for the `<param>FromEnv` metadata form;
- `auth_params`: from the trigger's TriggerAuthentication or ClusterTriggerAuthentication:
  `env` entries (from that environment), then `configMapTargetRef`, then `secretTargetRef`,
  later sources overriding earlier ones as in KEDA. A ClusterTriggerAuthentication reads its
  Secrets and ConfigMaps from the operator's own namespace.

Values are handed to the scaler only: never logged, never put into errors or status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoscale import model
from autoscale.errors import ConfigError, KubeError
from autoscale.kube import Kube, Secrets, TargetResource


@dataclass(frozen=True, slots=True)
class ResolvedAuth:
    auth_params: Mapping[str, str]
    resolved_env: Mapping[str, str]

    def __repr__(self) -> str:  # never show values
        return (
            f"ResolvedAuth(auth_params={sorted(self.auth_params)}, "
            f"resolved_env={sorted(self.resolved_env)})"
        )


class AuthResolver:
    def __init__(self, kube: Kube, *, operator_namespace: str) -> None:
        self.kube = kube
        self.secrets = Secrets(kube)
        self.operator_namespace = operator_namespace

    async def resolve(self, so: model.ScaledObject, trigger: model.Trigger) -> ResolvedAuth:
        """Raises ConfigError (naming the reference, never a value) when a reference is bad."""
        namespace = so.metadata.namespace or ""
        env = await self._container_env(so, namespace)
        params: dict[str, str] = {}
        ref = trigger.authentication_ref
        if ref is not None:
            cluster = ref.kind is model.AuthenticationKind.CLUSTER_TRIGGER_AUTHENTICATION
            field = f"spec.triggers[{trigger.index}].authenticationRef"
            try:
                raw = await self.secrets.trigger_authentication(
                    namespace, ref.name, cluster=cluster
                )
                auth = model.parse_trigger_authentication(raw)
            except KubeError as exc:
                raise ConfigError(f"{field}: {exc}") from None
            source_namespace = self.operator_namespace if cluster else namespace
            spec = auth.spec
            try:
                for entry in spec.env:
                    if entry.name in env:
                        params[entry.parameter] = env[entry.name]
                for cm in spec.config_map_target_refs:
                    params[cm.parameter] = await self.secrets.config_map_value(
                        source_namespace, cm.name, cm.key
                    )
                for secret in spec.secret_target_refs:
                    params[secret.parameter] = await self.secrets.secret_value(
                        source_namespace, secret.name, secret.key
                    )
            except KubeError as exc:
                raise ConfigError(f"{field} ({ref.kind} {ref.name}): {exc}") from None
        return ResolvedAuth(auth_params=params, resolved_env=env)

    async def _container_env(self, so: model.ScaledObject, namespace: str) -> dict[str, str]:
        """The chosen container's env; empty when the target or its pod template is absent."""
        ref = so.spec.scale_target_ref
        try:
            target: TargetResource = await self.kube.resolve_target(ref.api_version, ref.kind)
            workload = await self.kube.get_object(target, namespace, ref.name)
        except KubeError:
            return {}
        containers = (
            workload.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []
        )
        if not containers:
            return {}
        wanted = ref.env_source_container_name
        container: Mapping[str, Any] = (
            next((c for c in containers if c.get("name") == wanted), containers[0])
            if wanted
            else containers[0]
        )
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            name = item.get("name")
            if not name:
                continue
            if "value" in item:
                env[name] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            try:
                if "secretKeyRef" in source:
                    key_ref = source["secretKeyRef"]
                    env[name] = await self.secrets.secret_value(
                        namespace, key_ref["name"], key_ref["key"]
                    )
                elif "configMapKeyRef" in source:
                    key_ref = source["configMapKeyRef"]
                    env[name] = await self.secrets.config_map_value(
                        namespace, key_ref["name"], key_ref["key"]
                    )
            except (KubeError, KeyError):
                continue  # an optional or missing reference: the variable is unset
        return env
