"""ScaledObject and (Cluster)TriggerAuthentication specs as frozen dataclasses, and their parsers.

`parse_scaled_object` and `parse_trigger_authentication` turn a custom resource (a mapping, of
`autoscale.dev/v1alpha1` or KEDA's `keda.sh/v1alpha1`) into hashable values with KEDA's defaults
applied, and run again every check of our CRD schema and CEL rules, since objects of KEDA's CRD and
test fixtures never went through them. Every problem is collected and raised as one ConfigError.
Pure: no I/O, no logging, no clock. Formula compilation and HPA behavior maths live elsewhere.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar, overload

from autoscale.errors import ConfigError

__all__ = [
    "ACCEPTED_API_VERSIONS",
    "API_VERSION",
    "DEFAULT_COOLDOWN_PERIOD",
    "DEFAULT_INITIAL_COOLDOWN_PERIOD",
    "DEFAULT_MAX_REPLICA_COUNT",
    "DEFAULT_MIN_REPLICA_COUNT",
    "DEFAULT_POLLING_INTERVAL",
    "GROUP",
    "KEDA_API_VERSION",
    "VERSION",
    "Advanced",
    "AuthenticationKind",
    "AuthenticationRef",
    "BoundServiceAccountToken",
    "ConfigMapTargetRef",
    "EnvTargetRef",
    "Fallback",
    "FallbackBehavior",
    "FrozenMap",
    "HorizontalPodAutoscalerConfig",
    "IdentityOwner",
    "InvalidSpecError",
    "MetricTargetType",
    "ObjectMeta",
    "PodIdentity",
    "PodIdentityProvider",
    "ScaleTargetRef",
    "ScaledObject",
    "ScaledObjectSpec",
    "SecretTargetRef",
    "Trigger",
    "TriggerAuthentication",
    "TriggerAuthenticationSpec",
    "freeze",
    "parse_scaled_object",
    "parse_trigger_authentication",
]

GROUP: Final = "autoscale.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KEDA_API_VERSION: Final = "keda.sh/v1alpha1"
ACCEPTED_API_VERSIONS: Final = frozenset({API_VERSION, KEDA_API_VERSION})

# KEDA's defaults (scaledobject_types.go and the ScaledObject reference).
DEFAULT_POLLING_INTERVAL: Final = 30
DEFAULT_COOLDOWN_PERIOD: Final = 300
DEFAULT_INITIAL_COOLDOWN_PERIOD: Final = 0
DEFAULT_MIN_REPLICA_COUNT: Final = 0
DEFAULT_MAX_REPLICA_COUNT: Final = 100
DEFAULT_SCALE_TARGET_API_VERSION: Final = "apps/v1"
DEFAULT_SCALE_TARGET_KIND: Final = "Deployment"

# Bounds mirrored from the CRD (crds/scaledobjects.autoscale.dev.yaml).
INT32_MAX: Final = 2**31 - 1
MAX_TRIGGERS: Final = 100
MAX_NAME_LENGTH: Final = 253
MAX_SCALED_OBJECT_NAME_LENGTH: Final = 63  # KEDA puts the name in a label value
MAX_STABILIZATION_WINDOW_SECONDS: Final = 3600
MAX_POLICY_PERIOD_SECONDS: Final = 1800

RESOURCE_TRIGGER_TYPES: Final = frozenset({"cpu", "memory"})
"""Triggers read from the metrics API: they cannot wake a target that runs no pod."""
NO_CACHED_METRICS_TRIGGER_TYPES: Final = frozenset({"cpu", "memory", "cron"})

# A plain decimal number, as the CEL rules accept it (no inf, nan, hex or underscores).
_POSITIVE_NUMBER = re.compile(r"[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?")
_NUMBER = re.compile(r"[-+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?")
# A Kubernetes resource.Quantity, the pattern of int-or-string quantity fields.
_QUANTITY = re.compile(
    r"(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?"
)


# --------------------------------------------------------------------------------------------
# Immutable mapping
# --------------------------------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only, hashable mapping: how the model stores every map of a spec.

    Chosen over `types.MappingProxyType` (not hashable) and tuples of pairs (no lookup by key):
    it reads like a dict, keeps insertion order, and lets frozen dataclasses that hold it hash.
    Hashing needs hashable values; `freeze()` makes nested data so.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __reduce__(self) -> tuple[type[FrozenMap[K, V]], tuple[dict[K, V]]]:
        # Rebuild from the items: the cached hash of str keys differs between processes.
        return (type(self), (self._data,))

    def to_dict(self) -> dict[K, V]:
        """A shallow, mutable copy."""
        return dict(self._data)


EMPTY_MAP: Final[FrozenMap[Any, Any]] = FrozenMap()


def freeze(value: Any) -> Any:
    """Deep-copy JSON-like data into hashable form: mappings become FrozenMap, lists tuples."""
    if isinstance(value, Mapping):
        return FrozenMap((key, freeze(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


# --------------------------------------------------------------------------------------------
# Enums
# --------------------------------------------------------------------------------------------


class MetricTargetType(enum.StrEnum):
    """How a trigger's reading maps to replicas (the HPA's metric target types)."""

    AVERAGE_VALUE = "AverageValue"
    VALUE = "Value"
    UTILIZATION = "Utilization"  # cpu and memory only


class FallbackBehavior(enum.StrEnum):
    """How the replica count is chosen while fallback applies."""

    STATIC = "static"
    CURRENT_REPLICAS = "currentReplicas"
    CURRENT_REPLICAS_IF_HIGHER = "currentReplicasIfHigher"
    CURRENT_REPLICAS_IF_LOWER = "currentReplicasIfLower"
    SCALING_MODIFIERS = "scalingModifiers"


class AuthenticationKind(enum.StrEnum):
    """Kinds a trigger's authenticationRef may point to."""

    TRIGGER_AUTHENTICATION = "TriggerAuthentication"
    CLUSTER_TRIGGER_AUTHENTICATION = "ClusterTriggerAuthentication"


class PodIdentityProvider(enum.StrEnum):
    """Workload identity providers of a TriggerAuthentication's podIdentity."""

    NONE = "none"
    AZURE_WORKLOAD = "azure-workload"
    GCP = "gcp"
    AWS = "aws"
    AWS_EKS = "aws-eks"  # deprecated by KEDA; behaves as aws


class IdentityOwner(enum.StrEnum):
    """Whose AWS identity podIdentity uses."""

    KEDA = "keda"
    WORKLOAD = "workload"


# --------------------------------------------------------------------------------------------
# Dataclasses
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectMeta:
    """The parts of an object's metadata the controller uses."""

    name: str
    namespace: str | None  # None for cluster-scoped objects
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None  # timezone-aware (UTC)
    deletion_timestamp: datetime | None = None
    annotations: FrozenMap[str, str] = EMPTY_MAP
    labels: FrozenMap[str, str] = EMPTY_MAP
    finalizers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleTargetRef:
    """The workload to scale, in the ScaledObject's namespace."""

    name: str
    api_version: str = DEFAULT_SCALE_TARGET_API_VERSION
    kind: str = DEFAULT_SCALE_TARGET_KIND
    env_source_container_name: str | None = None  # None: the first container

    @property
    def group(self) -> str:
        """API group of the target; "" for the core group."""
        group, _, _ = self.api_version.rpartition("/")
        return group

    @property
    def version(self) -> str:
        """API version of the target, without the group."""
        return self.api_version.rpartition("/")[2]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticationRef:
    """A trigger's reference to a TriggerAuthentication or ClusterTriggerAuthentication."""

    name: str
    kind: AuthenticationKind = AuthenticationKind.TRIGGER_AUTHENTICATION


@dataclass(frozen=True, slots=True, kw_only=True)
class Trigger:
    """One entry of spec.triggers.

    Scalers build the metric name from `index` as KEDA does (`s{index}-{type}-{suffix}`);
    `name` is the optional user-given name that scalingModifiers formulas refer to.
    """

    index: int
    type: str
    metadata: FrozenMap[str, str]
    name: str | None = None
    authentication_ref: AuthenticationRef | None = None
    metric_type: MetricTargetType | None = None  # None: as written, unset
    use_cached_metrics: bool = False

    @property
    def is_resource_metric(self) -> bool:
        """True for cpu and memory triggers."""
        return self.type in RESOURCE_TRIGGER_TYPES

    @property
    def reads_workload_env(self) -> bool:
        """True when a `<param>FromEnv` parameter takes its value from the workload's env."""
        return any(key.endswith("FromEnv") for key in self.metadata)

    @property
    def effective_metric_type(self) -> MetricTargetType:
        """The metric type in force: AverageValue unless set (cpu/memory: their metadata type)."""
        if self.metric_type is not None:
            return self.metric_type
        if self.is_resource_metric:
            legacy = self.metadata.get("type", "").lower()
            for member in MetricTargetType:
                if member.value.lower() == legacy:
                    return member
        return MetricTargetType.AVERAGE_VALUE


@dataclass(frozen=True, slots=True, kw_only=True)
class Fallback:
    """Replica count to hold while triggers keep failing."""

    failure_threshold: int
    replicas: int
    behavior: FallbackBehavior = FallbackBehavior.STATIC


@dataclass(frozen=True, slots=True, kw_only=True)
class HorizontalPodAutoscalerConfig:
    """advanced.horizontalPodAutoscalerConfig; `behavior` is the raw, frozen, validated mapping."""

    name: str | None = None
    behavior: FrozenMap[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Advanced:
    """spec.advanced.

    `scaling_modifiers` is the raw, frozen mapping as written (formula.py parses it), or None when
    no scalingModifiers field is set, which is how KEDA decides whether modifiers are in use.
    """

    restore_to_original_replica_count: bool = False
    horizontal_pod_autoscaler_config: HorizontalPodAutoscalerConfig | None = None
    scaling_modifiers: FrozenMap[str, Any] | None = None

    @property
    def behavior(self) -> FrozenMap[str, Any] | None:
        """The HPA behavior mapping (scaleUp / scaleDown), or None."""
        config = self.horizontal_pod_autoscaler_config
        return None if config is None else config.behavior


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaledObjectSpec:
    """spec of a ScaledObject, KEDA's defaults applied."""

    scale_target_ref: ScaleTargetRef
    triggers: tuple[Trigger, ...]
    polling_interval: int = DEFAULT_POLLING_INTERVAL
    cooldown_period: int = DEFAULT_COOLDOWN_PERIOD
    initial_cooldown_period: int = DEFAULT_INITIAL_COOLDOWN_PERIOD
    idle_replica_count: int | None = None
    min_replica_count: int = DEFAULT_MIN_REPLICA_COUNT
    max_replica_count: int = DEFAULT_MAX_REPLICA_COUNT
    fallback: Fallback | None = None
    advanced: Advanced = Advanced()

    @property
    def uses_scaling_modifiers(self) -> bool:
        """True when the triggers are combined by a scalingModifiers formula."""
        return self.advanced.scaling_modifiers is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaledObject:
    """A parsed ScaledObject. `status` is the raw, frozen status as read (engine state included)."""

    api_version: str
    metadata: ObjectMeta
    spec: ScaledObjectSpec
    status: FrozenMap[str, Any] = EMPTY_MAP

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""

    @property
    def key(self) -> str:
        """The "namespace/name" string, for logs and dictionaries."""
        return f"{self.namespace}/{self.name}"

    @property
    def is_keda(self) -> bool:
        """True for an object of KEDA's own API group."""
        return self.api_version == KEDA_API_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class PodIdentity:
    """spec.podIdentity of a (Cluster)TriggerAuthentication."""

    provider: PodIdentityProvider
    identity_id: str | None = None
    identity_tenant_id: str | None = None
    identity_authority_host: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    identity_owner: IdentityOwner | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretTargetRef:
    """Parameter `parameter` := key `key` of Secret `name`."""

    parameter: str
    name: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigMapTargetRef:
    """Parameter `parameter` := key `key` of ConfigMap `name`."""

    parameter: str
    name: str
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvTargetRef:
    """Parameter `parameter` := environment variable `name` of the scale target's container."""

    parameter: str
    name: str
    container_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundServiceAccountToken:
    """Parameter `parameter` := a short-lived token of `service_account_name` (not resolved yet)."""

    parameter: str
    service_account_name: str


UNRESOLVED_AUTH_SOURCES: Final = (
    "hashiCorpVault",
    "azureKeyVault",
    "gcpSecretManager",
    "awsSecretManager",
    "oauth2",
)
"""KEDA authentication sources the CRD accepts and autoscale does not resolve yet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerAuthenticationSpec:
    """spec of a (Cluster)TriggerAuthentication.

    `unresolved_sources` holds, raw and frozen, the KEDA sources listed in UNRESOLVED_AUTH_SOURCES
    that the object sets; resolving them (or reporting them) is auth.py's decision.
    """

    pod_identity: PodIdentity | None = None
    secret_target_refs: tuple[SecretTargetRef, ...] = ()
    config_map_target_refs: tuple[ConfigMapTargetRef, ...] = ()
    env: tuple[EnvTargetRef, ...] = ()
    file_path: str | None = None
    bound_service_account_tokens: tuple[BoundServiceAccountToken, ...] = ()
    unresolved_sources: FrozenMap[str, Any] = EMPTY_MAP


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerAuthentication:
    """A parsed TriggerAuthentication or ClusterTriggerAuthentication."""

    api_version: str
    kind: AuthenticationKind
    metadata: ObjectMeta
    spec: TriggerAuthenticationSpec

    @property
    def is_cluster_scoped(self) -> bool:
        return self.kind is AuthenticationKind.CLUSTER_TRIGGER_AUTHENTICATION


class InvalidSpecError(ConfigError):
    """A spec with one or more problems; `problems` lists each as "field.path: what is wrong"."""

    def __init__(self, subject: str, problems: Sequence[str]) -> None:
        self.subject = subject
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{subject} is invalid ({count} {noun}): " + "; ".join(self.problems))


# --------------------------------------------------------------------------------------------
# Reading: each reader reports a problem instead of raising, so that every problem is collected
# --------------------------------------------------------------------------------------------

_E = TypeVar("_E", bound=enum.StrEnum)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


class _Node:
    """One object of the manifest, at `path`; its readers append to the shared `problems`.

    Readers return the default (or None) when a field is unset or wrong, so parsing goes on and
    reports everything. An empty string counts as unset, as Go's omitempty does in KEDA.
    """

    __slots__ = ("path", "problems", "raw")

    def __init__(self, problems: list[str], raw: Mapping[str, Any], path: str = "") -> None:
        self.problems = problems
        self.raw = raw
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def add(self, key: str | None, message: str) -> None:
        """Report a problem of field `key` (of this object itself when None)."""
        self.problems.append(f"{self.path if key is None else self.at(key)}: {message}")

    def _present(self, key: str, *, required: bool) -> Any:
        value = self.raw.get(key)
        if (value is None or value == "") and required:
            self.add(key, "required")
        return None if value == "" else value

    def child(self, key: str, *, required: bool = False) -> _Node | None:
        value = self._present(key, required=required)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self.add(key, f"must be an object, not {_type_name(value)}")
            return None
        return _Node(self.problems, value, self.at(key))

    def sequence(self, key: str, *, required: bool = False) -> Sequence[Any] | None:
        value = self._present(key, required=required)
        if value is None:
            return None
        if not isinstance(value, list | tuple):
            self.add(key, f"must be a list, not {_type_name(value)}")
            return None
        return value

    def children(self, key: str, items: Sequence[Any] | None = None) -> list[_Node]:
        """The objects of list `key` (or of `items`, read from it already)."""
        nodes = []
        if items is None:
            items = self.sequence(key) or ()
        for index, item in enumerate(items):
            if isinstance(item, Mapping):
                nodes.append(_Node(self.problems, item, f"{self.at(key)}[{index}]"))
            else:
                self.add(f"{key}[{index}]", f"must be an object, not {_type_name(item)}")
        return nodes

    @overload
    def string(self, key: str, *, default: str, max_length: int | None = ...) -> str: ...
    @overload
    def string(
        self, key: str, *, default: None = ..., required: bool = ..., max_length: int | None = ...
    ) -> str | None: ...
    def string(
        self,
        key: str,
        *,
        default: str | None = None,
        required: bool = False,
        max_length: int | None = None,
    ) -> str | None:
        value = self._present(key, required=required)
        if value is None:
            return default
        if not isinstance(value, str):
            self.add(key, f"must be a string, not {_type_name(value)}")
            return default
        if max_length is not None and len(value) > max_length:
            self.add(key, f"must be at most {max_length} characters, not {len(value)}")
        return value

    def choice(self, key: str, enum_type: type[_E], *, required: bool = False) -> _E | None:
        value = self.string(key, required=required)
        if value is None:
            return None
        try:
            return enum_type(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum_type)
            self.add(key, f'"{value}" is not one of {allowed}')
            return None

    @overload
    def integer(
        self, key: str, *, default: int, minimum: int | None = ..., maximum: int = ...
    ) -> int: ...
    @overload
    def integer(
        self,
        key: str,
        *,
        default: None = ...,
        required: bool = ...,
        minimum: int | None = ...,
        maximum: int = ...,
    ) -> int | None: ...
    def integer(
        self,
        key: str,
        *,
        default: int | None = None,
        required: bool = False,
        minimum: int | None = None,
        maximum: int = INT32_MAX,
    ) -> int | None:
        """An int32 field; a wrong value is reported and replaced by the default."""
        value = self._present(key, required=required)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(key, f"must be an integer, not {_type_name(value)}")
            return default
        if minimum is not None and value < minimum:
            self.add(key, f"must be at least {minimum}, not {value}")
            return default
        if value > maximum:
            self.add(key, f"must be at most {maximum}, not {value}")
            return default
        return value

    def boolean(self, key: str, *, default: bool = False) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(key, f"must be a boolean, not {_type_name(value)}")
            return default
        return value

    def string_map(self, key: str, *, required: bool = False) -> FrozenMap[str, str]:
        node = self.child(key, required=required)
        if node is None:
            return EMPTY_MAP
        items: list[tuple[str, str]] = []
        for name, value in node.raw.items():
            if isinstance(value, str):
                items.append((str(name), value))
            else:
                node.add(
                    str(name),
                    f"must be a string, not {_type_name(value)} "
                    "(quote numbers and booleans in YAML)",
                )
        return FrozenMap(items)

    def timestamp(self, key: str) -> datetime | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if isinstance(value, datetime):  # PyYAML turns unquoted timestamps into datetimes
            moment = value
        elif isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                self.add(key, f'"{value}" is not an RFC 3339 timestamp')
                return None
        else:
            self.add(key, f"must be a timestamp string, not {_type_name(value)}")
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Shared parts
# --------------------------------------------------------------------------------------------


def _check_api_version(root: _Node) -> str:
    api_version = root.raw.get("apiVersion")
    if api_version not in ACCEPTED_API_VERSIONS:
        accepted = " or ".join(sorted(ACCEPTED_API_VERSIONS))
        root.add("apiVersion", f"{api_version!r} is not {accepted}")
        return API_VERSION
    return str(api_version)


def _subject(kind: str, obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return kind
    name = metadata.get("name") or "<unnamed>"
    namespace = metadata.get("namespace")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _parse_metadata(root: _Node, *, namespaced: bool, max_name_length: int) -> ObjectMeta:
    meta = root.child("metadata", required=True) or _Node(root.problems, {}, "metadata")
    name = meta.string("name", required=True)
    if name is not None and len(name) > max_name_length:
        meta.add("name", f"must be at most {max_name_length} characters")
    namespace = meta.string("namespace", required=namespaced)
    generation = meta.raw.get("generation")
    return ObjectMeta(
        name=name or "",
        namespace=namespace if namespaced else None,
        uid=meta.string("uid"),
        generation=generation if isinstance(generation, int) else None,
        resource_version=meta.string("resourceVersion"),
        creation_timestamp=meta.timestamp("creationTimestamp"),
        deletion_timestamp=meta.timestamp("deletionTimestamp"),
        annotations=meta.string_map("annotations"),
        labels=meta.string_map("labels"),
        finalizers=tuple(str(item) for item in meta.sequence("finalizers") or ()),
    )


# --------------------------------------------------------------------------------------------
# ScaledObject
# --------------------------------------------------------------------------------------------


def parse_scaled_object(obj: Mapping[str, Any]) -> ScaledObject:
    """Parse, default and validate a ScaledObject of autoscale.dev or keda.sh.

    Raises InvalidSpecError (a ConfigError) listing every problem as "field.path: message".
    """
    problems: list[str] = []
    root = _Node(problems, obj)
    api_version = _check_api_version(root)
    if obj.get("kind") != "ScaledObject":
        root.add("kind", f"{obj.get('kind')!r} is not ScaledObject")
    metadata = _parse_metadata(root, namespaced=True, max_name_length=MAX_SCALED_OBJECT_NAME_LENGTH)
    spec_node = root.child("spec", required=True)
    spec = _parse_spec(spec_node) if spec_node is not None else None
    if problems or spec is None:
        raise InvalidSpecError(_subject("ScaledObject", obj), problems)
    status = obj.get("status")
    return ScaledObject(
        api_version=api_version,
        metadata=metadata,
        spec=spec,
        status=freeze(status) if isinstance(status, Mapping) else EMPTY_MAP,
    )


def _parse_spec(spec: _Node) -> ScaledObjectSpec:
    polling = spec.integer("pollingInterval", default=DEFAULT_POLLING_INTERVAL, minimum=1)
    cooldown = spec.integer("cooldownPeriod", default=DEFAULT_COOLDOWN_PERIOD, minimum=0)
    initial_cooldown = spec.integer(
        "initialCooldownPeriod", default=DEFAULT_INITIAL_COOLDOWN_PERIOD, minimum=0
    )
    idle = spec.integer("idleReplicaCount", minimum=0)
    min_count = spec.integer("minReplicaCount", default=DEFAULT_MIN_REPLICA_COUNT, minimum=0)
    max_count = spec.integer("maxReplicaCount", default=DEFAULT_MAX_REPLICA_COUNT, minimum=1)
    target = _parse_scale_target_ref(spec)
    triggers = _parse_triggers(spec)
    fallback = _parse_fallback(spec)
    advanced = _parse_advanced(spec)

    # Rules across fields: the CEL rules of the CRD, in the same order.
    if min_count > max_count:
        spec.add(
            "minReplicaCount",
            f"minReplicaCount ({min_count}) must be less than or equal to "
            f"maxReplicaCount ({max_count})",
        )
    if idle is not None and idle >= min_count:
        spec.add(
            "idleReplicaCount",
            f"idleReplicaCount ({idle}) must be less than minReplicaCount ({min_count}): "
            "raise minReplicaCount above it or remove idleReplicaCount",
        )
    if triggers and all(t.is_resource_metric for t in triggers) and min_count < 1:
        spec.add(
            "minReplicaCount",
            "minReplicaCount must be at least 1 when every trigger is cpu or memory: "
            "those triggers cannot wake a workload that runs no pod",
        )
    if fallback is not None:
        eligible = any(
            not t.is_resource_metric and t.metric_type is not MetricTargetType.UTILIZATION
            for t in triggers
        )
        if triggers and not eligible:
            spec.add(
                "fallback",
                "fallback needs at least one trigger that is neither cpu nor memory "
                "and whose metricType is AverageValue or Value",
            )
        if fallback.behavior is FallbackBehavior.SCALING_MODIFIERS and not _formula(advanced):
            spec.add(
                "fallback.behavior",
                "fallback.behavior scalingModifiers needs advanced.scalingModifiers.formula",
            )
    if _formula(advanced) and not any(t.name and not t.is_resource_metric for t in triggers):
        spec.add(
            "advanced.scalingModifiers.formula",
            "advanced.scalingModifiers.formula refers to triggers by name, but no trigger "
            "other than cpu or memory has a name: set triggers[].name",
        )
    return ScaledObjectSpec(
        scale_target_ref=target,
        triggers=triggers,
        polling_interval=polling,
        cooldown_period=cooldown,
        initial_cooldown_period=initial_cooldown,
        idle_replica_count=idle,
        min_replica_count=min_count,
        max_replica_count=max_count,
        fallback=fallback,
        advanced=advanced,
    )


def _formula(advanced: Advanced) -> str | None:
    modifiers = advanced.scaling_modifiers
    formula = modifiers.get("formula") if modifiers is not None else None
    return formula if isinstance(formula, str) and formula else None


def _parse_scale_target_ref(spec: _Node) -> ScaleTargetRef:
    ref = spec.child("scaleTargetRef", required=True)
    if ref is None:
        return ScaleTargetRef(name="")
    return ScaleTargetRef(
        name=ref.string("name", required=True, max_length=MAX_NAME_LENGTH) or "",
        api_version=ref.string(
            "apiVersion", default=DEFAULT_SCALE_TARGET_API_VERSION, max_length=MAX_NAME_LENGTH
        ),
        kind=ref.string("kind", default=DEFAULT_SCALE_TARGET_KIND, max_length=MAX_NAME_LENGTH),
        env_source_container_name=ref.string("envSourceContainerName", max_length=MAX_NAME_LENGTH),
    )


def _parse_triggers(spec: _Node) -> tuple[Trigger, ...]:
    items = spec.sequence("triggers", required=True)
    if items is None:
        return ()
    if not items:
        spec.add("triggers", "at least one trigger is required")
    elif len(items) > MAX_TRIGGERS:
        spec.add("triggers", f"at most {MAX_TRIGGERS} triggers are allowed, not {len(items)}")
    triggers: list[Trigger] = []
    first_use: dict[str, str] = {}
    for node in spec.children("triggers", items):
        trigger = _parse_trigger(node, index=len(triggers))
        triggers.append(trigger)
        if not trigger.name:
            continue
        if trigger.name in first_use:
            node.add(
                "name",
                f'trigger name "{trigger.name}" is also used by {first_use[trigger.name]}; '
                "trigger names must be unique",
            )
        else:
            first_use[trigger.name] = node.path
    return tuple(triggers)


def _parse_trigger(node: _Node, *, index: int) -> Trigger:
    trigger = Trigger(
        index=index,
        type=node.string("type", required=True, max_length=MAX_NAME_LENGTH) or "",
        name=node.string("name", max_length=MAX_NAME_LENGTH),
        metadata=node.string_map("metadata", required=True),
        authentication_ref=_parse_authentication_ref(node),
        metric_type=node.choice("metricType", MetricTargetType),
        use_cached_metrics=node.boolean("useCachedMetrics"),
    )
    if trigger.metric_type is MetricTargetType.UTILIZATION and not trigger.is_resource_metric:
        node.add("metricType", "metricType Utilization is only valid for cpu and memory triggers")
    if trigger.use_cached_metrics and trigger.type in NO_CACHED_METRICS_TRIGGER_TYPES:
        node.add(
            "useCachedMetrics",
            "useCachedMetrics is not supported for cpu, memory and cron triggers",
        )
    return trigger


def _parse_authentication_ref(trigger: _Node) -> AuthenticationRef | None:
    ref = trigger.child("authenticationRef")
    if ref is None:
        return None
    return AuthenticationRef(
        name=ref.string("name", required=True, max_length=MAX_NAME_LENGTH) or "",
        kind=ref.choice("kind", AuthenticationKind) or AuthenticationKind.TRIGGER_AUTHENTICATION,
    )


def _parse_fallback(spec: _Node) -> Fallback | None:
    fallback = spec.child("fallback")
    if fallback is None:
        return None
    return Fallback(
        failure_threshold=fallback.integer("failureThreshold", required=True, minimum=0) or 0,
        replicas=fallback.integer("replicas", required=True, minimum=0) or 0,
        behavior=fallback.choice("behavior", FallbackBehavior) or FallbackBehavior.STATIC,
    )


def _parse_advanced(spec: _Node) -> Advanced:
    advanced = spec.child("advanced")
    if advanced is None:
        return Advanced()
    hpa = advanced.child("horizontalPodAutoscalerConfig")
    hpa_config = None
    if hpa is not None:
        behavior = hpa.child("behavior")
        if behavior is not None:
            _check_behavior(behavior)
        hpa_config = HorizontalPodAutoscalerConfig(
            name=hpa.string("name", max_length=63),
            behavior=freeze(behavior.raw) if behavior is not None else None,
        )
    modifiers = advanced.child("scalingModifiers")
    in_use = modifiers is not None and any(
        modifiers.raw.get(key) not in (None, "")
        for key in ("formula", "target", "activationTarget", "metricType")
    )
    if modifiers is not None and in_use:
        _check_scaling_modifiers(modifiers)
    return Advanced(
        restore_to_original_replica_count=advanced.boolean("restoreToOriginalReplicaCount"),
        horizontal_pod_autoscaler_config=hpa_config,
        scaling_modifiers=freeze(modifiers.raw) if modifiers is not None and in_use else None,
    )


class _ModifierMetricType(enum.StrEnum):
    AVERAGE_VALUE = "AverageValue"
    VALUE = "Value"


def _check_scaling_modifiers(modifiers: _Node) -> None:
    """What KEDA's webhook checks of scalingModifiers, bar compiling the formula (formula.py)."""
    formula = modifiers.string("formula", max_length=4096)
    target = modifiers.string("target", max_length=64)
    activation = modifiers.string("activationTarget", max_length=64)
    modifiers.choice("metricType", _ModifierMetricType)
    if formula is None:
        modifiers.add(
            "formula",
            "scalingModifiers.formula is required when any other scalingModifiers field is set",
        )
    elif target is None:
        modifiers.add("target", "scalingModifiers.target is required when formula is set")
    if target is not None and not (_POSITIVE_NUMBER.fullmatch(target) and float(target) > 0):
        modifiers.add("target", "scalingModifiers.target must be a number greater than 0")
    if activation is not None and not _NUMBER.fullmatch(activation):
        modifiers.add("activationTarget", "scalingModifiers.activationTarget must be a number")


class _SelectPolicy(enum.StrEnum):
    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class _PolicyType(enum.StrEnum):
    PODS = "Pods"
    PERCENT = "Percent"


def _check_behavior(behavior: _Node) -> None:
    """The autoscaling/v2 HorizontalPodAutoscalerBehavior rules; behavior.py does the maths."""
    for direction in ("scaleUp", "scaleDown"):
        rules = behavior.child(direction)
        if rules is None:
            continue
        rules.integer(
            "stabilizationWindowSeconds", minimum=0, maximum=MAX_STABILIZATION_WINDOW_SECONDS
        )
        rules.choice("selectPolicy", _SelectPolicy)
        policies = rules.sequence("policies")
        if policies is not None and not policies:
            rules.add("policies", "must hold at least one policy when set")
        for policy in rules.children("policies", policies or ()):
            policy.choice("type", _PolicyType, required=True)
            policy.integer("value", required=True, minimum=1)
            policy.integer(
                "periodSeconds", required=True, minimum=1, maximum=MAX_POLICY_PERIOD_SECONDS
            )
        tolerance = rules.raw.get("tolerance")
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | str | None):
            rules.add("tolerance", f"must be a quantity, not {_type_name(tolerance)}")
        elif isinstance(tolerance, str) and not _QUANTITY.fullmatch(tolerance):
            rules.add("tolerance", f'"{tolerance}" is not a quantity such as 0.05 or 50m')
        elif tolerance is not None and str(tolerance).startswith("-"):
            rules.add("tolerance", "must not be negative")


# --------------------------------------------------------------------------------------------
# (Cluster)TriggerAuthentication
# --------------------------------------------------------------------------------------------


def parse_trigger_authentication(obj: Mapping[str, Any]) -> TriggerAuthentication:
    """Parse and validate a TriggerAuthentication or ClusterTriggerAuthentication.

    Raises InvalidSpecError (a ConfigError) listing every problem as "field.path: message".
    """
    problems: list[str] = []
    root = _Node(problems, obj)
    api_version = _check_api_version(root)
    raw_kind = obj.get("kind")
    try:
        kind = AuthenticationKind(str(raw_kind))
    except ValueError:
        root.add(
            "kind", f"{raw_kind!r} is not TriggerAuthentication or ClusterTriggerAuthentication"
        )
        kind = AuthenticationKind.TRIGGER_AUTHENTICATION
    cluster = kind is AuthenticationKind.CLUSTER_TRIGGER_AUTHENTICATION
    metadata = _parse_metadata(root, namespaced=not cluster, max_name_length=MAX_NAME_LENGTH)
    spec = root.child("spec", required=True) or _Node(problems, {}, "spec")
    parsed = _parse_auth_spec(spec, cluster=cluster)
    if problems:
        raise InvalidSpecError(_subject(kind.value, obj), problems)
    return TriggerAuthentication(api_version=api_version, kind=kind, metadata=metadata, spec=parsed)


def _parse_auth_spec(spec: _Node, *, cluster: bool) -> TriggerAuthenticationSpec:
    file_path = spec.string("filePath")
    if file_path is not None and not cluster:
        spec.add("filePath", "only a ClusterTriggerAuthentication may read parameters from a file")

    def need(node: _Node, key: str) -> str:
        return node.string(key, required=True) or ""

    unresolved = []
    for key in UNRESOLVED_AUTH_SOURCES:
        source = spec.child(key)
        if source is not None:
            unresolved.append((key, freeze(source.raw)))
    return TriggerAuthenticationSpec(
        pod_identity=_parse_pod_identity(spec),
        secret_target_refs=tuple(
            SecretTargetRef(
                parameter=need(n, "parameter"), name=need(n, "name"), key=need(n, "key")
            )
            for n in spec.children("secretTargetRef")
        ),
        config_map_target_refs=tuple(
            ConfigMapTargetRef(
                parameter=need(n, "parameter"), name=need(n, "name"), key=need(n, "key")
            )
            for n in spec.children("configMapTargetRef")
        ),
        env=tuple(
            EnvTargetRef(
                parameter=need(n, "parameter"),
                name=need(n, "name"),
                container_name=n.string("containerName"),
            )
            for n in spec.children("env")
        ),
        file_path=file_path,
        bound_service_account_tokens=tuple(
            BoundServiceAccountToken(
                parameter=need(n, "parameter"), service_account_name=need(n, "serviceAccountName")
            )
            for n in spec.children("boundServiceAccountToken")
        ),
        unresolved_sources=FrozenMap(unresolved),
    )


def _parse_pod_identity(spec: _Node) -> PodIdentity | None:
    identity = spec.child("podIdentity")
    if identity is None:
        return None
    provider = identity.choice("provider", PodIdentityProvider, required=True)
    azure = provider is PodIdentityProvider.AZURE_WORKLOAD
    # KEDA's webhook tells an empty identityId / identityTenantId apart from an unset one.
    for key in ("identityId", "identityTenantId"):
        if azure and identity.raw.get(key) == "":
            identity.add(key, f"podIdentity.{key} must not be empty when set")
    tenant = identity.string("identityTenantId")
    authority = identity.string("identityAuthorityHost")
    role_arn = identity.string("roleArn")
    external_id = identity.string("externalID")
    owner = identity.choice("identityOwner", IdentityOwner)
    if azure and authority and not tenant:
        identity.add(
            "identityTenantId",
            "podIdentity.identityAuthorityHost needs podIdentity.identityTenantId",
        )
    if role_arn and owner is IdentityOwner.WORKLOAD:
        identity.add(
            "roleArn", "podIdentity.roleArn cannot be combined with identityOwner workload"
        )
    if external_id and not role_arn:
        identity.add("externalID", "podIdentity.externalID needs podIdentity.roleArn")
    return PodIdentity(
        provider=provider or PodIdentityProvider.NONE,
        identity_id=identity.string("identityId"),
        identity_tenant_id=tenant,
        identity_authority_host=authority,
        role_arn=role_arn,
        external_id=external_id,
        identity_owner=owner,
    )
