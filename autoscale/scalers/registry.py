"""Which scaler class handles a trigger `type`, and building a scaler from a trigger.

A new scaler is a module and one line in BUILTIN_SCALERS, nothing else. Lines name the class
as "module:Class" and it is imported on first use, so an operator that never sees a Kafka
trigger never imports aiokafka, and a scaler whose dependency is missing breaks that type only.

Third-party scalers are distributions declaring an entry point in the `autoscale.scalers`
group, the trigger type as its name: `my-source = "my_pkg.scaler:MySourceScaler"`. Discovery
reads installed metadata only; a plugin is imported when a trigger of its type is first built.
The rules, chosen so a plugin can never crash the operator nor silently change a trigger:

- A built-in type cannot be replaced. An entry point named like a built-in is ignored and
  reported, unless it names the built-in's own class (the project registering itself).
- Two distributions claiming one type: neither is used, both are named in the error.
- A plugin that fails to import, is not a scaler class, declares another `type_name`, or
  raises something other than ConfigError while building, gives BrokenScalerError (a
  ConfigError: the trigger is Ready=False until the object changes) and a report in
  `problems()`; every other type keeps working.

A scaler class provides `type_name: ClassVar[str]` (the trigger `type`), optionally
`aliases: ClassVar[tuple[str, ...]]` (each needs its own line or entry point too), and the
factory classmethod of the ScalerClass protocol: synchronous, no I/O (it parses the trigger
and raises ConfigError naming fields); connections open on the first `sample()`.

Also here, shared by every scaler: `trigger_label()` and KEDA's `metric_name()`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from autoscale.errors import AutoscaleError, ConfigError, UnknownScalerTypeError
from autoscale.scalers.base import MetricType, Scaler

if TYPE_CHECKING:
    from autoscale.scalers.connections import SharedClients

__all__ = [
    "BUILTIN_SCALERS",
    "ENTRY_POINT_GROUP",
    "BrokenScalerError",
    "ScalerClass",
    "ScalerRegistry",
    "build_scaler",
    "default_registry",
    "known_types",
    "metric_name",
    "trigger_label",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "autoscale.scalers"

# One line per built-in scaler, sorted by type: "trigger type": "module:Class".
BUILTIN_SCALERS: Final[Mapping[str, str]] = {
    "aws-sqs-queue": "autoscale.scalers.aws_sqs_queue:AwsSqsQueueScaler",
    "kafka": "autoscale.scalers.kafka:KafkaScaler",
    "prometheus": "autoscale.scalers.prometheus:PrometheusScaler",
    "rabbitmq": "autoscale.scalers.rabbitmq:RabbitMQScaler",
    "redis-streams": "autoscale.scalers.redis_streams:RedisStreamsScaler",
}


class ScalerClass(Protocol):
    """What the registry needs of a scaler class: the class object itself satisfies this."""

    @property
    def type_name(self) -> str: ...

    def from_trigger(
        self,
        *,
        trigger_index: int,
        trigger_name: str | None,
        metadata: Mapping[str, str],
        auth_params: Mapping[str, str],
        resolved_env: Mapping[str, str],
        connections: SharedClients,
        metric_type: MetricType,
        warnings: list[str] | None,
    ) -> Scaler:
        """Parse the trigger (no I/O) and return an unconnected scaler; raise ConfigError."""
        ...


class BrokenScalerError(ConfigError):
    """The scaler class for a type cannot be loaded, or crashed while building a scaler."""


def trigger_label(*, index: int, name: str | None, type_name: str) -> str:
    """How messages name a trigger: `trigger[0] (redis-streams)`, `trigger[1] "jobs" (kafka)`."""
    named = f' "{name}"' if name else ""
    return f"trigger[{index}]{named} ({type_name})"


def metric_name(index: int, name: str) -> str:
    """KEDA's metric name: `s{index}-{name}` with "/", ".", ":" and "%" in `name` made "-".

    `metric_name(0, "redis-streams-orders.v1")` is "s0-redis-streams-orders-v1", as KEDA
    (GenerateMetricNameWithIndex of NormalizeString) writes it in status.externalMetricNames.
    """
    for character in "/.:%":
        name = name.replace(character, "-")
    return f"s{index}-{name}"


@dataclass(frozen=True, slots=True)
class _Provider:
    """Where one trigger type comes from."""

    target: str  # "module:attr"
    origin: str  # "built-in" or "plugin <distribution> <version>"
    entry_point: importlib.metadata.EntryPoint | None = None


class ScalerRegistry:
    """Trigger types to scaler classes: built-ins plus the plugins of an entry-point group.

    Discovery runs once, on first use; classes load on first use of their type, and both the
    class and a load failure are remembered (fixing a plugin needs a restart anyway).
    """

    def __init__(
        self,
        builtins: Mapping[str, str] = BUILTIN_SCALERS,
        *,
        entry_point_group: str | None = ENTRY_POINT_GROUP,
    ) -> None:
        self._builtins = {name: _Provider(target, "built-in") for name, target in builtins.items()}
        self._group = entry_point_group
        self._providers: dict[str, _Provider] | None = None
        self._conflicts: dict[str, str] = {}  # type -> why nobody provides it
        self._problems: list[str] = []
        self._loaded: dict[str, ScalerClass] = {}
        self._failed: dict[str, str] = {}

    # -- discovery ---------------------------------------------------------------------------

    def _discover(self) -> dict[str, _Provider]:
        if self._providers is not None:
            return self._providers
        providers = dict(self._builtins)
        claims: dict[str, list[_Provider]] = {}
        for entry_point in self._entry_points():
            dist = entry_point.dist
            origin = (
                f"plugin {dist.name} {dist.version}" if dist is not None else "plugin (unknown)"
            )
            provider = _Provider(entry_point.value.strip(), origin, entry_point)
            builtin = self._builtins.get(entry_point.name)
            if builtin is not None:
                if provider.target != builtin.target:
                    self._report(
                        f'{origin} registers trigger type "{entry_point.name}" '
                        f"({provider.target}), which is built in; the plugin entry is ignored"
                    )
                continue
            same = claims.setdefault(entry_point.name, [])
            if all(p.target != provider.target or p.origin != origin for p in same):
                same.append(provider)
        for name, claimants in claims.items():
            if len(claimants) == 1:
                providers[name] = claimants[0]
                continue
            listed = ", ".join(f"{p.origin} ({p.target})" for p in claimants)
            why = f"is claimed by more than one plugin: {listed}; uninstall all but one"
            self._conflicts[name] = why
            self._report(f'trigger type "{name}" {why}')
        self._providers = providers
        return providers

    def _entry_points(self) -> list[importlib.metadata.EntryPoint]:
        if self._group is None:
            return []
        try:
            found = importlib.metadata.entry_points(group=self._group)
        except Exception as exc:  # broken metadata on sys.path must not stop the operator
            self._report(f'reading entry points of group "{self._group}" failed: {exc!r}')
            return []
        return sorted(found, key=lambda ep: (ep.name, ep.value))

    def _report(self, problem: str) -> None:
        if problem not in self._problems:
            self._problems.append(problem)
            log.warning("scaler registry: %s", problem)

    # -- queries -----------------------------------------------------------------------------

    def known_types(self) -> list[str]:
        """Every trigger type that can be asked for, sorted; broken plugins are excluded once
        they have failed to load."""
        return sorted(name for name in self._discover() if name not in self._failed)

    def problems(self) -> list[str]:
        """Every plugin problem found so far, one sentence each (also logged as warnings)."""
        self._discover()
        return list(self._problems)

    def load_all(self) -> list[str]:
        """Import every known type now (e.g. at startup) and return `problems()`."""
        for name in list(self._discover()):
            with contextlib.suppress(ConfigError):
                self.scaler_class(name)
        return self.problems()

    def scaler_class(self, trigger_type: str) -> ScalerClass:
        """The class for `trigger_type`; UnknownScalerTypeError or BrokenScalerError."""
        loaded = self._loaded.get(trigger_type)
        if loaded is not None:
            return loaded
        providers = self._discover()
        if trigger_type in self._failed:
            raise BrokenScalerError(self._failed[trigger_type])
        if trigger_type in self._conflicts:
            raise BrokenScalerError(
                f'trigger type "{trigger_type}" {self._conflicts[trigger_type]}'
            )
        provider = providers.get(trigger_type)
        if provider is None:
            raise UnknownScalerTypeError(self._unknown(trigger_type))
        try:
            cls = self._load(trigger_type, provider)
        except BrokenScalerError as exc:
            self._failed[trigger_type] = str(exc)
            self._report(str(exc))
            raise
        self._loaded[trigger_type] = cls
        return cls

    def _unknown(self, trigger_type: str) -> str:
        known = self.known_types()
        guess = difflib.get_close_matches(trigger_type, known, n=1, cutoff=0.6)
        hint = f' (did you mean "{guess[0]}"?)' if guess else ""
        listed = ", ".join(f'"{name}"' for name in known) or "none"
        return f'unknown trigger type "{trigger_type}"{hint}; known types: {listed}'

    @staticmethod
    def _load(trigger_type: str, provider: _Provider) -> ScalerClass:
        where = f'trigger type "{trigger_type}" ({provider.origin}, {provider.target})'
        try:
            if provider.entry_point is not None:
                obj: object = provider.entry_point.load()
            else:
                module_name, _, attr = provider.target.partition(":")
                obj = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
        except (Exception, SystemExit) as exc:  # a plugin's import may do anything
            raise BrokenScalerError(
                f"{where} failed to load: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(obj, type):
            raise BrokenScalerError(f"{where} is not a class")
        declared = getattr(obj, "type_name", None)
        aliases = getattr(obj, "aliases", ())
        if not isinstance(declared, str) or not callable(getattr(obj, "from_trigger", None)):
            raise BrokenScalerError(
                f"{where} is not a scaler class (it needs type_name and from_trigger)"
            )
        if trigger_type != declared and trigger_type not in tuple(aliases):
            raise BrokenScalerError(f'{where} declares type_name "{declared}"')
        scaler_class: ScalerClass = obj  # type: ignore[assignment]  # checked just above
        return scaler_class

    # -- building ----------------------------------------------------------------------------

    def build_scaler(
        self,
        trigger_type: str,
        *,
        trigger_index: int,
        trigger_name: str | None = None,
        metadata: Mapping[str, str],
        auth_params: Mapping[str, str] | None = None,
        resolved_env: Mapping[str, str] | None = None,
        connections: SharedClients,
        metric_type: MetricType = MetricType.AVERAGE_VALUE,
        warnings: list[str] | None = None,
    ) -> Scaler:
        """A scaler for one trigger, not yet connected (no I/O happens here).

        Raises ConfigError naming the trigger and its fields, UnknownScalerTypeError (a
        ConfigError listing the known types), or BrokenScalerError. Parameter warnings
        (unknown keys, ignored parameters) are appended to `warnings`.
        """
        cls = self.scaler_class(trigger_type)
        try:
            return cls.from_trigger(
                trigger_index=trigger_index,
                trigger_name=trigger_name,
                metadata=metadata,
                auth_params=auth_params or {},
                resolved_env=resolved_env or {},
                connections=connections,
                metric_type=metric_type,
                warnings=warnings,
            )
        except AutoscaleError:
            raise
        except Exception as exc:  # a bug in a scaler must not take the operator down
            label = trigger_label(index=trigger_index, name=trigger_name, type_name=trigger_type)
            raise BrokenScalerError(
                f"{label}: the scaler crashed while reading its parameters: {type(exc).__name__}"
            ) from exc


_default: ScalerRegistry | None = None


def default_registry() -> ScalerRegistry:
    """The process-wide registry: BUILTIN_SCALERS plus installed `autoscale.scalers` plugins."""
    global _default
    if _default is None:
        _default = ScalerRegistry()
    return _default


def known_types() -> list[str]:
    """Every trigger type the default registry can build, sorted."""
    return default_registry().known_types()


def build_scaler(
    trigger_type: str,
    *,
    trigger_index: int,
    trigger_name: str | None = None,
    metadata: Mapping[str, str],
    auth_params: Mapping[str, str] | None = None,
    resolved_env: Mapping[str, str] | None = None,
    connections: SharedClients,
    metric_type: MetricType = MetricType.AVERAGE_VALUE,
    warnings: list[str] | None = None,
) -> Scaler:
    """`ScalerRegistry.build_scaler` on the default registry."""
    return default_registry().build_scaler(
        trigger_type,
        trigger_index=trigger_index,
        trigger_name=trigger_name,
        metadata=metadata,
        auth_params=auth_params,
        resolved_env=resolved_env,
        connections=connections,
        metric_type=metric_type,
        warnings=warnings,
    )
