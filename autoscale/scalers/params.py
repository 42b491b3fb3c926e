"""Typed trigger parameters: a scaler's config dataclass declares, per field, where its value comes
from and how it is checked, and parse_params() fills it in. Pure: no I/O, no logging.

KEDA's typed config (struct tags) written as dataclass field metadata:

    @dataclass(frozen=True, slots=True, kw_only=True)
    class RedisStreamsConfig:
        address: str = param("address", sources=(AUTH, METADATA))
        stream: str = param("stream")
        pending_entries_count: int = param("pendingEntriesCount", default=5)
        password: str | None = param("password", sources=(AUTH, ENV), default=None, secret=True)

        def validate(self) -> None: ...  # optional: cross-field rules, raise ConfigError

Lookup, as KEDA does it: each field tries its `sources` in order and the first non-blank value
wins. METADATA is the trigger's `metadata`, AUTH the resolved TriggerAuthentication parameters,
and ENV the container env of the scale target, reached through the metadata key
`<name>FromEnv: VAR`. Within a source the name is tried before its `aliases`. Values are stripped
and a blank value counts as absent, so the default applies (or a required field is missing).

Conversion by the field's type: str, int, float, bool (Go's strconv.ParseBool spellings),
Enum (by value), timedelta (a number of `unit`s), `X | None`, list[X] / tuple[X, ...]
(split on `separator`, default ",", blank items dropped) and dict[str, X] ("k=v,k2=v2").
`choices` restricts str values (each item of a list); `converter` replaces the conversion.

Every field error is collected into one ConfigError, prefixed by the caller's trigger label.
A value is quoted in a message only if it came from metadata and the field is not secret: auth
parameters and env vars may hold credentials. Unknown metadata keys, deprecated names and
unset env vars are warnings, never errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from datetime import timedelta
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from autoscale.errors import ConfigError

__all__ = ["AUTH", "ENV", "METADATA", "Param", "Source", "param", "parse_params"]

T = TypeVar("T")

_KEY = "autoscale.param"
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class Source(enum.Enum):
    """Where a parameter may come from (KEDA's `order=`)."""

    METADATA = "metadata"
    AUTH = "auth params"
    ENV = "env"


METADATA = Source.METADATA
AUTH = Source.AUTH
ENV = Source.ENV


@dataclass(frozen=True, slots=True)
class Param:
    """How one config field is found and checked; stored in the field's metadata by param()."""

    name: str
    sources: tuple[Source, ...] = (METADATA,)
    choices: tuple[str, ...] | None = None
    separator: str | None = None
    deprecated: str | None = None  # a warning when the parameter is set: "use X instead"
    secret: bool = False
    aliases: tuple[str, ...] = ()  # older names: still read, with a deprecation warning
    unit: timedelta = timedelta(seconds=1)
    converter: Callable[[str], Any] | None = None  # raises ValueError on a bad value


def param(
    name: str,
    *,
    sources: tuple[Source, ...] = (METADATA,),
    default: Any = MISSING,
    choices: tuple[str, ...] | None = None,
    separator: str | None = None,
    deprecated: str | None = None,
    secret: bool = False,
    aliases: tuple[str, ...] = (),
    unit: timedelta = timedelta(seconds=1),
    converter: Callable[[str], Any] | None = None,
) -> Any:
    """A dataclass field read from the trigger parameter `name`; required unless `default` is given.

    `secret=True` keeps the value out of repr() and of every message.
    """
    if not name or not sources or len(set(sources)) != len(sources):
        raise TypeError(f"param({name!r}): needs a name and distinct, non-empty sources")
    spec = Param(
        name=name,
        sources=tuple(sources),
        choices=choices,
        separator=separator,
        deprecated=deprecated,
        secret=secret,
        aliases=aliases,
        unit=unit,
        converter=converter,
    )
    options: dict[str, Any] = {"metadata": {_KEY: spec}, "repr": not secret}
    if default is MISSING:
        return dataclasses.field(**options)
    if isinstance(default, list | dict | set):
        return dataclasses.field(
            default_factory=functools.partial(type(default), default), **options
        )
    return dataclasses.field(default=default, **options)


def parse_params(
    cls: type[T],
    *,
    metadata: Mapping[str, str],
    auth_params: Mapping[str, str],
    resolved_env: Mapping[str, str],
    trigger_label: str,
    warnings: list[str] | None = None,
) -> T:
    """Build `cls` from a trigger's parameters, then run its validate() hook if it has one.

    Raises one ConfigError, `"<trigger_label>: <problem>; <problem>..."`, listing every field
    error, or the validate() error when the fields themselves are fine. Warnings (unknown
    metadata keys, deprecated names, env vars that are not set) go to `warnings`, each prefixed
    by the label, whether or not parsing succeeds.
    """
    fields = _fields_of(cls)
    errors: list[str] = []
    notes: list[str] = []
    values: dict[str, Any] = {}
    for f in fields:
        found = _lookup(f.spec, metadata, auth_params, resolved_env, notes)
        if found is None:
            if f.required:
                errors.append(
                    f'missing required parameter "{f.spec.name}" (looked in {_places(f.spec)})'
                )
            continue
        try:
            values[f.attr] = f.convert(found.value)
        except _InvalidError as exc:
            errors.append(exc.describe(found, shown=found.source is METADATA and not f.spec.secret))
    notes.extend(_unknown_keys(fields, metadata))
    if warnings is not None:
        warnings.extend(f"{trigger_label}: {note}" for note in notes)
    if errors:
        raise ConfigError(f"{trigger_label}: {'; '.join(errors)}")
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(f"{trigger_label}: {exc}") from None
    return config


# ---------------------------------------------------------------------------------------------
# Lookup


@dataclass(frozen=True, slots=True)
class _Found:
    value: str  # stripped, non-empty
    source: Source
    key: str  # the name or alias it was found under


def _lookup(
    spec: Param,
    metadata: Mapping[str, str],
    auth_params: Mapping[str, str],
    resolved_env: Mapping[str, str],
    notes: list[str],
) -> _Found | None:
    for source in spec.sources:
        for key in (spec.name, *spec.aliases):
            if source is ENV:
                variable = metadata.get(f"{key}FromEnv", "").strip()
                if not variable:
                    continue
                raw = resolved_env.get(variable, "")
                if not raw.strip():
                    notes.append(f'env var "{variable}" named by "{key}FromEnv" is not set')
                    continue
            else:
                raw = (metadata if source is METADATA else auth_params).get(key, "")
            if not raw.strip():
                continue
            if key != spec.name:
                notes.append(f'parameter "{key}" is deprecated; use "{spec.name}"')
            if spec.deprecated:
                notes.append(f'parameter "{spec.name}" is deprecated: {spec.deprecated}')
            return _Found(raw.strip(), source, key)
    return None


def _places(spec: Param) -> str:
    return ", ".join(
        f'env via "{spec.name}FromEnv"' if source is ENV else source.value
        for source in spec.sources
    )


def _unknown_keys(fields: tuple[_Field, ...], metadata: Mapping[str, str]) -> list[str]:
    """Warnings for metadata keys no field reads from metadata (values are never shown)."""
    by_key: dict[str, Param] = {}
    for f in fields:
        for key in (f.spec.name, *f.spec.aliases):
            by_key[key] = f.spec
    notes = []
    for key in metadata:
        spec = by_key.get(key)
        if spec is not None:
            if METADATA not in spec.sources:
                notes.append(
                    f'parameter "{key}" is ignored in metadata; it is read from {_places(spec)}'
                )
            continue
        base = key.removesuffix("FromEnv")
        spec = by_key.get(base) if base != key else None
        if spec is not None:
            if ENV not in spec.sources:
                notes.append(f'parameter "{base}" cannot come from an env var; "{key}" is ignored')
            continue
        guess = difflib.get_close_matches(key, by_key, n=1, cutoff=0.75)
        hint = f' (did you mean "{guess[0]}"?)' if guess else ""
        notes.append(f'unknown parameter "{key}"{hint}')
    return notes


# ---------------------------------------------------------------------------------------------
# Conversion


class _InvalidError(Exception):
    """A value that does not convert; `bad` is the offending text (an item, for lists)."""

    def __init__(self, reason: str, bad: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.bad = bad
        self.detail = detail  # may repeat the value: only shown with it

    def describe(self, found: _Found, *, shown: bool) -> str:
        if shown:
            return f'parameter "{found.key}" value "{self.bad}" {self.reason}{self.detail}'
        return f'parameter "{found.key}" {self.reason} (value not shown)'


@dataclass(frozen=True, slots=True)
class _Field:
    attr: str
    spec: Param
    convert: Callable[[str], Any]
    required: bool


_FIELDS: dict[type, tuple[_Field, ...]] = {}


def _fields_of(cls: type) -> tuple[_Field, ...]:
    """The param() fields of `cls` with their converters (cached per class)."""
    if cls not in _FIELDS:
        _FIELDS[cls] = _inspect(cls)
    return _FIELDS[cls]


def _inspect(cls: type) -> tuple[_Field, ...]:
    """Read the declaration once; TypeError when it cannot work."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} is not a dataclass")
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_KEY)
        if not isinstance(spec, Param):
            continue
        where = f"{cls.__name__}.{f.name}"
        required = f.default is MISSING and f.default_factory is MISSING
        out.append(_Field(f.name, spec, _converter(hints[f.name], spec, where), required))
    return tuple(out)


def _converter(hint: Any, spec: Param, where: str) -> Callable[[str], Any]:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{where}: unsupported type {hint!r}")
        return _converter(rest[0], spec, where)
    if spec.converter is not None:
        return _custom(spec.converter)
    separator = spec.separator or ","
    if origin in (list, tuple):
        if origin is tuple and (len(args) != 2 or args[1] is not Ellipsis):
            raise TypeError(f"{where}: use tuple[X, ...] for a list parameter")
        item = _scalar(args[0], spec, where)
        collect = list if origin is list else tuple
        return lambda raw: collect(item(p.strip()) for p in raw.split(separator) if p.strip())
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"{where}: dict parameters need str keys")
        item = _scalar(args[1], spec, where)
        return lambda raw: dict(_pair(p, item) for p in raw.split(separator) if p.strip())
    if spec.separator is not None:
        raise TypeError(f"{where}: separator needs a list, tuple or dict type")
    return _scalar(hint, spec, where)


def _scalar(hint: Any, spec: Param, where: str) -> Callable[[str], Any]:
    if spec.choices is not None and hint is not str:
        raise TypeError(f"{where}: choices need a str type (use an Enum otherwise)")
    if hint is str:
        return functools.partial(_str, choices=spec.choices)
    if hint is bool:
        return _bool
    if hint is int:
        return _int
    if hint is float:
        return _float
    if hint is timedelta:
        return functools.partial(_duration, unit=spec.unit)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return functools.partial(_enum, members={str(m.value): m for m in hint})
    raise TypeError(f"{where}: unsupported type {hint!r}")


def _str(raw: str, *, choices: tuple[str, ...] | None) -> str:
    if choices is not None and raw not in choices:
        raise _InvalidError(f"must be one of {_listed(choices)}", raw)
    return raw


def _bool(raw: str) -> bool:
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise _InvalidError("is not a boolean (true or false)", raw)


def _int(raw: str) -> int:
    if not _INT.fullmatch(raw):
        raise _InvalidError("is not an integer", raw)
    return int(raw)


def _float(raw: str) -> float:
    if not _FLOAT.fullmatch(raw):
        raise _InvalidError("is not a number", raw)
    value = float(raw)
    if value in (float("inf"), float("-inf")):
        raise _InvalidError("is out of range", raw)
    return value


def _duration(raw: str, *, unit: timedelta) -> timedelta:
    name = {timedelta(seconds=1): "seconds", timedelta(milliseconds=1): "milliseconds"}
    units = name.get(unit, f"units of {unit}")
    if not _FLOAT.fullmatch(raw) or raw.startswith("-"):
        raise _InvalidError(f"is not a duration (a number of {units})", raw)
    try:
        return unit * float(raw)
    except OverflowError:
        raise _InvalidError("is out of range", raw) from None


def _enum(raw: str, *, members: dict[str, enum.Enum]) -> enum.Enum:
    if raw not in members:
        raise _InvalidError(f"must be one of {_listed(members)}", raw)
    return members[raw]


def _pair(raw: str, item: Callable[[str], Any]) -> tuple[str, Any]:
    key, equals, value = raw.partition("=")
    if not equals or not key.strip():
        raise _InvalidError("is not key=value", raw.strip())
    return key.strip(), item(value.strip())


def _custom(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def run(raw: str) -> Any:
        try:
            return convert(raw)
        except ValueError as exc:
            raise _InvalidError("is invalid", raw, f": {exc}" if str(exc) else "") from None

    return run


def _listed(choices: Mapping[str, Any] | tuple[str, ...]) -> str:
    return ", ".join(f'"{c}"' for c in choices)
