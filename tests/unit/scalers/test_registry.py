"""The scaler registry: built-ins, KEDA metric names, and plugins from real installed metadata.

Plugins are real distributions: a `*.dist-info` directory with an `entry_points.txt`, and their
modules, written to a temporary directory put on sys.path; importlib.metadata finds them as it
would a pip-installed package. Nothing of importlib is mocked.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from autoscale.errors import ConfigError, UnknownScalerTypeError
from autoscale.scalers import registry
from autoscale.scalers.base import MetricType
from autoscale.scalers.connections import SharedClients
from autoscale.scalers.redis_streams import RedisStreamsScaler
from autoscale.scalers.registry import (
    BUILTIN_SCALERS,
    BrokenScalerError,
    ScalerRegistry,
    metric_name,
    trigger_label,
)

REDIS_METADATA = {"address": "redis:6379", "stream": "jobs"}


def build(reg: ScalerRegistry, trigger_type: str, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "trigger_index": 0,
        "metadata": REDIS_METADATA,
        "connections": SharedClients(),
    }
    kwargs.update(overrides)
    return reg.build_scaler(trigger_type, **kwargs)


# ---------------------------------------------------------------------------------------------
# Built-ins


def test_builtins_are_known_without_plugins() -> None:
    """Every built-in line is a known type, sorted."""
    reg = ScalerRegistry(entry_point_group=None)
    assert reg.known_types() == sorted(BUILTIN_SCALERS)
    assert "redis-streams" in reg.known_types()
    assert reg.problems() == []


@pytest.mark.parametrize("trigger_type", sorted(BUILTIN_SCALERS))
def test_every_builtin_line_loads_its_class(trigger_type: str) -> None:
    """Each "module:Class" line imports, and the class declares that very type."""
    cls = ScalerRegistry(entry_point_group=None).scaler_class(trigger_type)
    assert cls.type_name == trigger_type


def test_default_registry_builds_redis_streams_without_io() -> None:
    """The module-level build_scaler uses the default registry; building opens nothing."""
    connections = SharedClients()
    scaler = registry.build_scaler(
        "redis-streams",
        trigger_index=2,
        trigger_name="jobs",
        metadata=REDIS_METADATA,
        connections=connections,
        metric_type=MetricType.VALUE,
    )
    assert isinstance(scaler, RedisStreamsScaler)
    assert scaler.metric_name == "s2-redis-streams-jobs"
    assert scaler.metric_type is MetricType.VALUE
    assert len(connections) == 0
    assert "redis-streams" in registry.known_types()


def test_unknown_type_lists_known_types() -> None:
    """The error is a ConfigError that names the type, a close match and every known type."""
    reg = ScalerRegistry(entry_point_group=None)
    with pytest.raises(UnknownScalerTypeError) as info:
        build(reg, "redis-stream")
    assert str(info.value) == (
        'unknown trigger type "redis-stream" (did you mean "redis-streams"?); '
        'known types: "aws-sqs-queue", "kafka", "prometheus", "rabbitmq", "redis-streams"'
    )
    assert isinstance(info.value, ConfigError)


def test_unknown_type_without_a_close_match() -> None:
    """No hint when nothing is close."""
    reg = ScalerRegistry({"a-type": BUILTIN_SCALERS["redis-streams"]}, entry_point_group=None)
    with pytest.raises(UnknownScalerTypeError, match=r'^unknown trigger type "kafka"; known'):
        build(reg, "kafka")


def test_config_errors_of_the_scaler_pass_through() -> None:
    """A scaler's ConfigError reaches the caller unchanged, naming the trigger."""
    reg = ScalerRegistry(entry_point_group=None)
    with pytest.raises(ConfigError) as info:
        build(reg, "redis-streams", trigger_index=1, metadata={"address": "redis:6379"})
    assert not isinstance(info.value, BrokenScalerError)
    assert str(info.value).startswith("trigger[1] (redis-streams): ")


def test_warnings_are_collected() -> None:
    """Parameter warnings come back through the warnings list."""
    out: list[str] = []
    build(
        ScalerRegistry(entry_point_group=None),
        "redis-streams",
        warnings=out,
        metadata={**REDIS_METADATA, "strem": "x"},
    )
    assert out == ['trigger[0] (redis-streams): unknown parameter "strem" (did you mean "stream"?)']


def test_a_builtin_line_that_does_not_import_breaks_only_its_type() -> None:
    """A built-in whose module is missing is BrokenScalerError; the others still build."""
    reg = ScalerRegistry(
        {**BUILTIN_SCALERS, "ghost": "autoscale.scalers.no_such_module:Ghost"},
        entry_point_group=None,
    )
    with pytest.raises(BrokenScalerError, match="ModuleNotFoundError"):
        build(reg, "ghost")
    assert isinstance(build(reg, "redis-streams"), RedisStreamsScaler)
    assert reg.known_types() == sorted(BUILTIN_SCALERS)  # the broken type is not offered


# ---------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("index", "name", "expected"),
    [
        pytest.param(0, "redis-streams-jobs", "s0-redis-streams-jobs", id="plain"),
        pytest.param(3, "redis-streams-a.b/c:d%e", "s3-redis-streams-a-b-c-d-e", id="normalised"),
        pytest.param(1, "redis-streams-UPPER_case", "s1-redis-streams-UPPER_case", id="kept"),
    ],
)
def test_metric_name_as_keda_writes_it(index: int, name: str, expected: str) -> None:
    """KEDA's `s{index}-` prefix and NormalizeString ("/", ".", ":", "%" become "-")."""
    assert metric_name(index, name) == expected


def test_trigger_label() -> None:
    """Messages name the trigger by index, by name when it has one, and by type."""
    assert trigger_label(index=0, name=None, type_name="kafka") == "trigger[0] (kafka)"
    assert trigger_label(index=2, name="jobs", type_name="kafka") == 'trigger[2] "jobs" (kafka)'


# ---------------------------------------------------------------------------------------------
# Plugins, as real installed distributions

PLUGIN_MODULE = '''
"""A third-party scaler package, as a plugin author would write it."""

class EchoScaler:
    type_name = "echo"
    aliases = ("echo-alias",)

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    @classmethod
    def from_trigger(cls, **kwargs):
        return cls(**kwargs)

    async def sample(self):
        raise NotImplementedError

    async def aclose(self):
        pass


class WrongName(EchoScaler):
    type_name = "something-else"


class Crashy(EchoScaler):
    type_name = "crashy"

    @classmethod
    def from_trigger(cls, **kwargs):
        return {}["missing"]


class NoFactory:
    type_name = "no-factory"


def not_a_class():
    pass
'''


def write_distribution(
    site: Path,
    name: str,
    version: str,
    entry_points: Mapping[str, str],
    modules: Mapping[str, str] | None = None,
) -> None:
    """A minimal installed distribution: METADATA, entry_points.txt, and its modules."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{lines}")
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path (for this test only) for its distributions and modules."""
    directory = tmp_path / "site-packages"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


def test_plugin_is_discovered_and_built(site: Path) -> None:
    """An entry point in the group makes its type known; building passes every argument."""
    write_distribution(
        site,
        "acme-scalers",
        "1.0",
        {"echo": "acme_scalers:EchoScaler", "echo-alias": "acme_scalers:EchoScaler"},
        {"acme_scalers": PLUGIN_MODULE},
    )
    reg = ScalerRegistry()
    assert {"echo", "echo-alias", "redis-streams"} <= set(reg.known_types())
    connections = SharedClients()
    scaler = build(
        reg,
        "echo",
        trigger_index=4,
        trigger_name="t",
        metadata={"k": "v"},
        connections=connections,
    )
    assert type(scaler).__module__ == "acme_scalers"
    assert scaler.kwargs == {
        "trigger_index": 4,
        "trigger_name": "t",
        "metadata": {"k": "v"},
        "auth_params": {},
        "resolved_env": {},
        "connections": connections,
        "metric_type": MetricType.AVERAGE_VALUE,
        "warnings": None,
    }
    assert type(build(reg, "echo-alias")).__name__ == "EchoScaler"
    assert reg.problems() == []


def test_plugin_module_is_imported_only_when_its_type_is_built(site: Path) -> None:
    """Discovery reads metadata only: a plugin that would fail on import breaks nothing until
    a trigger of its type is built, and then only that type."""
    write_distribution(
        site,
        "acme-broken",
        "0.1",
        {"broken": "acme_broken:Scaler"},
        {"acme_broken": "raise RuntimeError('boom at import')\n"},
    )
    reg = ScalerRegistry()
    assert "broken" in reg.known_types()
    assert reg.problems() == []
    with pytest.raises(BrokenScalerError) as info:
        build(reg, "broken")
    expected = (
        'trigger type "broken" (plugin acme-broken 0.1, acme_broken:Scaler) failed to load: '
        "RuntimeError: boom at import"
    )
    assert str(info.value) == expected
    assert isinstance(info.value, ConfigError)
    assert reg.problems() == [expected]
    assert "broken" not in reg.known_types()
    assert isinstance(build(reg, "redis-streams"), RedisStreamsScaler)
    with pytest.raises(BrokenScalerError, match="boom at import"):  # remembered, not retried
        build(reg, "broken")


def test_broken_plugin_reported_at_startup_without_raising(site: Path) -> None:
    """load_all() imports everything and returns the problems; it never raises."""
    write_distribution(
        site,
        "acme-scalers",
        "1.0",
        {
            "echo": "acme_scalers:EchoScaler",
            "exits": "acme_exit:Scaler",
            "wrong-name": "acme_scalers:WrongName",
            "no-factory": "acme_scalers:NoFactory",
            "function": "acme_scalers:not_a_class",
            "missing-attr": "acme_scalers:Nope",
        },
        {"acme_scalers": PLUGIN_MODULE, "acme_exit": "import sys\nsys.exit(3)\n"},
    )
    reg = ScalerRegistry()
    problems = reg.load_all()
    where = 'trigger type "{}" (plugin acme-scalers 1.0, {})'
    assert problems == [
        where.format("exits", "acme_exit:Scaler") + " failed to load: SystemExit: 3",
        where.format("function", "acme_scalers:not_a_class") + " is not a class",
        where.format("missing-attr", "acme_scalers:Nope")
        + " failed to load: AttributeError: module 'acme_scalers' has no attribute 'Nope'",
        where.format("no-factory", "acme_scalers:NoFactory")
        + " is not a scaler class (it needs type_name and from_trigger)",
        where.format("wrong-name", "acme_scalers:WrongName")
        + ' declares type_name "something-else"',
    ]
    assert reg.known_types() == [
        "aws-sqs-queue",
        "echo",
        "kafka",
        "prometheus",
        "rabbitmq",
        "redis-streams",
    ]


def test_plugin_crash_while_building_is_contained(site: Path) -> None:
    """A plugin raising anything but ConfigError while reading parameters gives
    BrokenScalerError naming the trigger; the cause is kept for the log."""
    write_distribution(
        site,
        "acme-scalers",
        "1.0",
        {"crashy": "acme_scalers:Crashy"},
        {"acme_scalers": PLUGIN_MODULE},
    )
    with pytest.raises(BrokenScalerError) as info:
        build(ScalerRegistry(), "crashy", trigger_index=1, trigger_name="x")
    assert str(info.value) == (
        'trigger[1] "x" (crashy): the scaler crashed while reading its parameters: KeyError'
    )
    assert isinstance(info.value.__cause__, KeyError)


def test_plugin_cannot_replace_a_builtin(site: Path) -> None:
    """An entry point named like a built-in is ignored and reported; the built-in is used."""
    write_distribution(
        site,
        "evil-scalers",
        "6.6",
        {"redis-streams": "acme_scalers:EchoScaler"},
        {"acme_scalers": PLUGIN_MODULE},
    )
    reg = ScalerRegistry()
    assert isinstance(build(reg, "redis-streams"), RedisStreamsScaler)
    assert reg.problems() == [
        'plugin evil-scalers 6.6 registers trigger type "redis-streams" '
        "(acme_scalers:EchoScaler), which is built in; the plugin entry is ignored"
    ]


def test_the_project_may_register_its_own_builtins(site: Path) -> None:
    """An entry point naming the built-in's own class (pyproject's line) is no conflict."""
    write_distribution(
        site, "autoscale-copy", "0.1", {"redis-streams": BUILTIN_SCALERS["redis-streams"]}
    )
    reg = ScalerRegistry()
    assert isinstance(build(reg, "redis-streams"), RedisStreamsScaler)
    assert reg.problems() == []


def test_two_plugins_claiming_one_type_are_both_refused(site: Path) -> None:
    """No silent choice between two distributions: the type fails, naming both."""
    write_distribution(site, "one", "1", {"dup": "acme_scalers:EchoScaler"})
    write_distribution(site, "two", "2", {"dup": "other:EchoScaler"})
    (site / "acme_scalers.py").write_text(PLUGIN_MODULE)
    reg = ScalerRegistry()
    why = (
        'trigger type "dup" is claimed by more than one plugin: '
        "plugin one 1 (acme_scalers:EchoScaler), plugin two 2 (other:EchoScaler); "
        "uninstall all but one"
    )
    assert reg.problems() == [why]
    assert "dup" not in reg.known_types()
    with pytest.raises(BrokenScalerError) as info:
        build(reg, "dup")
    assert str(info.value) == why
