"""A trigger's authentication parameters and environment, resolved as KEDA resolves them.

- `resolved_env`: the scale target's container environment (the container named by
  `envSourceContainerName`, else the first), literal values and Secret/ConfigMap references,
  for the `<param>FromEnv` metadata form;
- `auth_params`: from the trigger's TriggerAuthentication or ClusterTriggerAuthentication:
  `env` entries (from the named container's environment), then `configMapTargetRef`, then
  `secretTargetRef`, a later source overriding an earlier one for the same parameter, as in
  KEDA. A ClusterTriggerAuthentication reads its Secrets and ConfigMaps from the operator's
  own namespace.

Every object is read through the ObjectCache's watches (one per kind and namespace), so
resolving on every poll costs no API call and a rotated Secret is seen within moments; the
scale target is read only when `*FromEnv` or a TriggerAuthentication's `env` needs it. The
loop compares `ResolvedAuth.digest` and rebuilds a trigger's scaler when it changes. Values go
to the scaler only: never logged, never put into errors or status (errors name the reference
and the key, not the value).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscale import model
from autoscale.errors import ConfigError, KubeError
from autoscale.kube import Kube, ObjectCache, ObjectKey

_DIGEST_KEY = os.urandom(32)  # per process: digests cannot be compared across processes


@dataclass(frozen=True, slots=True)
class ResolvedAuth:
    auth_params: Mapping[str, str] = field(repr=False)
    resolved_env: Mapping[str, str] = field(repr=False)

    @property
    def digest(self) -> str:
        """A keyed hash of everything resolved: equal digests, equal credentials."""
        mac = hmac.new(_DIGEST_KEY, digestmod=hashlib.sha256)
        for source in (self.auth_params, self.resolved_env):
            for key in sorted(source):
                mac.update(key.encode() + b"\0" + source[key].encode() + b"\0")
            mac.update(b"\1")
        return mac.hexdigest()

    def __repr__(self) -> str:  # names only, never values
        return (
            f"ResolvedAuth(auth_params={sorted(self.auth_params)}, "
            f"resolved_env={sorted(self.resolved_env)})"
        )


class AuthResolver:
    def __init__(self, kube: Kube, cache: ObjectCache, *, operator_namespace: str) -> None:
        self.kube = kube
        self.cache = cache
        self.operator_namespace = operator_namespace

    async def resolve(self, so: model.ScaledObject, trigger: model.Trigger) -> ResolvedAuth:
        """Raises ConfigError naming the reference (never a value) when one is unusable."""
        namespace = so.metadata.namespace or ""
        params: dict[str, str] = {}
        ref = trigger.authentication_ref
        # The workload is read only when something needs its environment: most triggers do
        # not, and then resolving costs no watch of the workload's kind at all.
        from_env = trigger.reads_workload_env
        containers = await self._containers(so, namespace) if from_env else []
        wanted = so.spec.scale_target_ref.env_source_container_name
        env = await self._container_env(containers, wanted, namespace)
        if ref is None:
            return ResolvedAuth(auth_params=params, resolved_env=env)
        cluster = ref.kind is model.AuthenticationKind.CLUSTER_TRIGGER_AUTHENTICATION
        where = f"spec.triggers[{trigger.index}].authenticationRef ({ref.kind} {ref.name})"
        key = (
            ObjectKey.cluster_trigger_authentication(ref.name)
            if cluster
            else ObjectKey.trigger_authentication(namespace, ref.name)
        )
        try:
            raw = await self.cache.get(key)
        except KubeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if raw is None:
            raise ConfigError(f"{where}: not found")
        auth = model.parse_trigger_authentication(raw)
        source_namespace = self.operator_namespace if cluster else namespace
        spec = auth.spec
        if spec.env and not from_env:
            containers = await self._containers(so, namespace)
            env = await self._container_env(containers, wanted, namespace)
        for entry in spec.env:
            container_env = (
                await self._container_env(containers, entry.container_name, namespace)
                if entry.container_name
                else env
            )
            if entry.name not in container_env:
                raise ConfigError(
                    f"{where}: env {entry.name!r} for parameter {entry.parameter!r} is not set "
                    "in the scale target's container"
                )
            params[entry.parameter] = container_env[entry.name]
        for cm in spec.config_map_target_refs:
            params[cm.parameter] = await self._value(
                ObjectKey.config_map(source_namespace, cm.name),
                "ConfigMap",
                cm.key,
                where=f"{where}: configMapTargetRef for {cm.parameter!r}",
            )
        for secret in spec.secret_target_refs:
            params[secret.parameter] = await self._value(
                ObjectKey.secret(source_namespace, secret.name),
                "Secret",
                secret.key,
                where=f"{where}: secretTargetRef for {secret.parameter!r}",
            )
        params.update(await self._pod_identity(spec.pod_identity, so, namespace, where))
        if spec.unresolved_sources:
            raise ConfigError(
                f"{where}: {', '.join(sorted(spec.unresolved_sources))} is not supported yet; "
                "use secretTargetRef, configMapTargetRef or env"
            )
        return ResolvedAuth(auth_params=params, resolved_env=env)

    async def _pod_identity(
        self,
        identity: model.PodIdentity | None,
        so: model.ScaledObject,
        namespace: str,
        where: str,
    ) -> dict[str, str]:
        """AWS pod identity as KEDA's resolver passes it on: the role to assume (given, or the
        workload's service account's `eks.amazonaws.com/role-arn`) and its external id. Other
        providers need no parameters here, or are not supported yet."""
        if identity is None or identity.provider not in (
            model.PodIdentityProvider.AWS,
            model.PodIdentityProvider.AWS_EKS,
        ):
            return {}
        params: dict[str, str] = {}
        if identity.role_arn:
            params["awsRoleArn"] = identity.role_arn
        elif identity.identity_owner is model.IdentityOwner.WORKLOAD:
            account = await self._workload_service_account(so, namespace)
            role = (
                (account or {})
                .get("metadata", {})
                .get("annotations", {})
                .get("eks.amazonaws.com/role-arn")
            )
            if not role:
                raise ConfigError(
                    f"{where}: podIdentity identityOwner workload needs the workload's "
                    "service account to carry the eks.amazonaws.com/role-arn annotation"
                )
            params["awsRoleArn"] = str(role)
        if identity.external_id:
            params["awsExternalId"] = identity.external_id
        return params

    async def _workload_service_account(
        self, so: model.ScaledObject, namespace: str
    ) -> dict[str, Any] | None:
        ref = so.spec.scale_target_ref
        try:
            target = await self.kube.resolve_target(ref.api_version, ref.kind)
            workload = await self.cache.get(ObjectKey.workload(target, namespace, ref.name))
            name = (workload or {}).get("spec", {}).get("template", {}).get("spec", {}).get(
                "serviceAccountName"
            ) or "default"
            return await self.cache.get(ObjectKey.service_account(namespace, name))
        except KubeError:
            return None

    async def _value(self, key: ObjectKey, kind: str, item: str, *, where: str) -> str:
        """One key of a Secret or ConfigMap; errors name the object and key only."""
        try:
            obj = await self.cache.get(key)
        except KubeError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        label = f"{kind} {key.name}"
        if obj is None:
            raise ConfigError(f"{where}: {label} not found")
        value = _item(obj, item, secret=kind == "Secret")
        if value is None:
            raise ConfigError(f"{where}: {label} has no key {item!r}")
        return value

    async def _containers(self, so: model.ScaledObject, namespace: str) -> list[dict[str, Any]]:
        """The scale target's pod template containers; empty when there are none to read."""
        ref = so.spec.scale_target_ref
        try:
            target = await self.kube.resolve_target(ref.api_version, ref.kind)
            workload = await self.cache.get(ObjectKey.workload(target, namespace, ref.name))
        except KubeError:
            return []
        if workload is None:
            return []
        spec = workload.get("spec", {}).get("template", {}).get("spec", {})
        return [c for c in spec.get("containers") or [] if isinstance(c, dict)]

    async def _container_env(
        self, containers: list[dict[str, Any]], wanted: str | None, namespace: str
    ) -> dict[str, str]:
        if not containers:
            return {}
        container = next((c for c in containers if c.get("name") == wanted), None)
        if container is None:
            container = containers[0]
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            name = item.get("name")
            if not name:
                continue
            if "value" in item:
                env[name] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            for ref_key, kind, make in (
                ("secretKeyRef", "Secret", ObjectKey.secret),
                ("configMapKeyRef", "ConfigMap", ObjectKey.config_map),
            ):
                ref = source.get(ref_key)
                if not ref or not ref.get("name") or not ref.get("key"):
                    continue
                try:
                    obj = await self.cache.get(make(namespace, ref["name"]))
                except KubeError:
                    obj = None  # unreadable: the variable counts as unset
                value = _item(obj, ref["key"], secret=kind == "Secret") if obj else None
                if value is not None:
                    env[name] = value
        return env


def _item(obj: Mapping[str, Any], key: str, *, secret: bool) -> str | None:
    """A Secret's (base64) or ConfigMap's value for `key`, or None."""
    if secret:
        encoded = (obj.get("data") or {}).get(key)
        if encoded is None:
            plain = (obj.get("stringData") or {}).get(key)
            return None if plain is None else str(plain)
        try:
            return base64.b64decode(encoded).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    value = (obj.get("data") or {}).get(key)
    return None if value is None else str(value)
