"""Pause annotations of a ScaledObject, parsed into a frozen `Pause`; no I/O.

KEDA's keys (`autoscaling.keda.sh/paused`, `paused-replicas`, `paused-scale-in`,
`paused-scale-out`, `force-activation`) work unchanged, and so do the same keys under
`autoscale.dev/`. When both prefixes carry a key, ours wins: it names this controller, so it is
the more specific instruction. Every recognised annotation must hold a valid value, even one that
is overridden; an invalid one raises ConfigError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from autoscale.errors import ConfigError

KEDA_PREFIX = "autoscaling.keda.sh/"
PREFIX = "autoscale.dev/"
PAUSED = "paused"
PAUSED_REPLICAS = "paused-replicas"
PAUSED_SCALE_IN = "paused-scale-in"
PAUSED_SCALE_OUT = "paused-scale-out"
FORCE_ACTIVATION = "force-activation"

# Exactly what Go's strconv.ParseBool accepts, as KEDA parses these annotations with it.
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
_REPLICAS = re.compile(r"\+?[0-9]+")
_MAX_REPLICAS = 2**31 - 1  # replicas are int32 in the /scale subresource
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause:
    """What the annotations ask of the engine (keda-parity.md 1.5).

    - `paused`: hold the current count; the triggers are not consulted.
    - `replicas` (paused-replicas): hold this count instead; setting it implies `paused`.
    - `scale_in` / `scale_out` (paused-scale-in / -out): never decrease / never increase.
    - `force_activation`: act as if a trigger were active.
    """

    paused: bool = False
    replicas: int | None = None
    scale_in: bool = False
    scale_out: bool = False
    force_activation: bool = False


def parse_pause(annotations: Mapping[str, str] | None) -> Pause:
    """Read the pause annotations (both prefixes); unrelated annotations are ignored."""
    annotations = annotations or {}
    replicas = _read(annotations, PAUSED_REPLICAS, _replicas)
    return Pause(
        paused=replicas is not None or bool(_read(annotations, PAUSED, _boolean)),
        replicas=replicas,
        scale_in=bool(_read(annotations, PAUSED_SCALE_IN, _boolean)),
        scale_out=bool(_read(annotations, PAUSED_SCALE_OUT, _boolean)),
        force_activation=bool(_read(annotations, FORCE_ACTIVATION, _boolean)),
    )


def _read(annotations: Mapping[str, str], key: str, parse: Callable[[str, str], _T]) -> _T | None:
    value: _T | None = None
    for name in (KEDA_PREFIX + key, PREFIX + key):  # ours last, so it wins
        if name in annotations:
            value = parse(annotations[name], name)
    return value


def _boolean(raw: str, name: str) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f'annotation {name}: "{raw}" is not a boolean (use "true" or "false")')


def _replicas(raw: str, name: str) -> int:
    if not _REPLICAS.fullmatch(raw) or int(raw) > _MAX_REPLICAS:
        raise ConfigError(f'annotation {name}: "{raw}" is not a replica count (an integer >= 0)')
    return int(raw)
