"""The declarative trigger-parameter parser on its own: types, sources, messages, warnings."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from autoscale.errors import ConfigError
from autoscale.scalers.params import AUTH, ENV, METADATA, Param, Source, param, parse_params

LABEL = 'trigger "s0-test" (test)'


def parse(
    cls: type[Any],
    metadata: dict[str, str] | None = None,
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    warnings: list[str] | None = None,
) -> Any:
    return parse_params(
        cls,
        metadata=metadata or {},
        auth_params=auth or {},
        resolved_env=env or {},
        trigger_label=LABEL,
        warnings=warnings,
    )


def error(
    cls: type[Any],
    metadata: dict[str, str] | None = None,
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> str:
    with pytest.raises(ConfigError) as info:
        parse(cls, metadata, auth, env)
    message = str(info.value)
    assert message.startswith(f"{LABEL}: ")
    return message.removeprefix(f"{LABEL}: ")


def warnings_of(
    cls: type[Any],
    metadata: dict[str, str] | None = None,
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> list[str]:
    out: list[str] = []
    parse(cls, metadata, auth, env, warnings=out)
    assert all(w.startswith(f"{LABEL}: ") for w in out)
    return [w.removeprefix(f"{LABEL}: ") for w in out]


# ---------------------------------------------------------------------------------------------
# Types


class Mode(enum.Enum):
    QUEUE_LENGTH = "QueueLength"
    MESSAGE_RATE = "MessageRate"


@dataclass(frozen=True, slots=True, kw_only=True)
class Typed:
    text: str | None = param("text", default=None)
    number: int | None = param("number", default=None)
    ratio: float | None = param("ratio", default=None)
    flag: bool | None = param("flag", default=None)
    mode: Mode | None = param("mode", default=None)
    wait: timedelta | None = param("wait", default=None)
    timeout: timedelta | None = param("timeout", default=None, unit=timedelta(milliseconds=1))
    hosts: list[str] | None = param("hosts", default=None)
    ports: tuple[int, ...] | None = param("ports", default=None, separator=";")
    policy: str | None = param("policy", default=None, choices=("latest", "earliest"))
    levels: tuple[str, ...] | None = param("levels", default=None, choices=("a", "b"))
    headers: dict[str, str] | None = param("headers", default=None)
    weights: dict[str, float] | None = param("weights", default=None)


@pytest.mark.parametrize(
    ("key", "raw", "attr", "expected"),
    [
        pytest.param("text", "hello world", "text", "hello world", id="str"),
        pytest.param("text", "  padded \n", "text", "padded", id="str-stripped"),
        pytest.param("number", "42", "number", 42, id="int"),
        pytest.param("number", "-3", "number", -3, id="int-negative"),
        pytest.param("number", "+7", "number", 7, id="int-plus"),
        pytest.param("number", " 8 ", "number", 8, id="int-stripped"),
        pytest.param("ratio", "1.5", "ratio", 1.5, id="float"),
        pytest.param("ratio", "2", "ratio", 2.0, id="float-from-int"),
        pytest.param("ratio", ".5", "ratio", 0.5, id="float-leading-dot"),
        pytest.param("ratio", "-1e3", "ratio", -1000.0, id="float-exponent"),
        pytest.param("mode", "MessageRate", "mode", Mode.MESSAGE_RATE, id="enum"),
        pytest.param("wait", "30", "wait", timedelta(seconds=30), id="timedelta-seconds"),
        pytest.param("wait", "1.5", "wait", timedelta(seconds=1.5), id="timedelta-fraction"),
        pytest.param("timeout", "500", "timeout", timedelta(milliseconds=500), id="timedelta-ms"),
        pytest.param("hosts", "a, b ,c", "hosts", ["a", "b", "c"], id="list"),
        pytest.param("hosts", "a,,b,", "hosts", ["a", "b"], id="list-blank-items-dropped"),
        pytest.param("hosts", "one", "hosts", ["one"], id="list-single"),
        pytest.param("ports", "1; 2;3", "ports", (1, 2, 3), id="tuple-separator"),
        pytest.param("policy", "earliest", "policy", "earliest", id="choices"),
        pytest.param("levels", "a,b,a", "levels", ("a", "b", "a"), id="list-choices"),
        pytest.param("headers", "X-Org=1, B = two=2", "headers", {"X-Org": "1", "B": "two=2"}),
        pytest.param("weights", "a=1.5,b=2", "weights", {"a": 1.5, "b": 2.0}, id="dict-float"),
    ],
)
def test_conversion(key: str, raw: str, attr: str, expected: object) -> None:
    """Each type converts from its string form."""
    assert getattr(parse(Typed, {key: raw}), attr) == expected


@pytest.mark.parametrize("raw", ["1", "t", "T", "TRUE", "true", "True"])
def test_bool_true_spellings(raw: str) -> None:
    """Go's strconv.ParseBool spellings of true."""
    assert parse(Typed, {"flag": raw}).flag is True


@pytest.mark.parametrize("raw", ["0", "f", "F", "FALSE", "false", "False"])
def test_bool_false_spellings(raw: str) -> None:
    """Go's strconv.ParseBool spellings of false."""
    assert parse(Typed, {"flag": raw}).flag is False


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        pytest.param("number", "five", 'value "five" is not an integer', id="int-word"),
        pytest.param("number", "5.0", 'value "5.0" is not an integer', id="int-float"),
        pytest.param("number", "1_000", 'value "1_000" is not an integer', id="int-underscore"),
        pytest.param("number", "٣", 'value "٣" is not an integer', id="int-non-ascii-digit"),
        pytest.param("ratio", "abc", 'value "abc" is not a number', id="float-word"),
        pytest.param("ratio", "nan", 'value "nan" is not a number', id="float-nan"),
        pytest.param("ratio", "inf", 'value "inf" is not a number', id="float-inf"),
        pytest.param("ratio", "1e999", 'value "1e999" is out of range', id="float-huge"),
        pytest.param("flag", "yes", 'value "yes" is not a boolean (true or false)', id="bool"),
        pytest.param("flag", "TrUe", 'value "TrUe" is not a boolean (true or false)'),
        pytest.param(
            "mode",
            "queuelength",
            'value "queuelength" must be one of "QueueLength", "MessageRate"',
            id="enum-is-case-sensitive",
        ),
        pytest.param(
            "wait", "-1", 'value "-1" is not a duration (a number of seconds)', id="negative"
        ),
        pytest.param("wait", "1m", 'value "1m" is not a duration (a number of seconds)'),
        pytest.param("wait", "1e20", 'value "1e20" is out of range', id="duration-huge"),
        pytest.param(
            "timeout", "3s", 'value "3s" is not a duration (a number of milliseconds)', id="ms"
        ),
        pytest.param("ports", "1;x;3", 'value "x" is not an integer', id="list-item"),
        pytest.param(
            "policy", "newest", 'value "newest" must be one of "latest", "earliest"', id="choices"
        ),
        pytest.param("levels", "a,c", 'value "c" must be one of "a", "b"', id="list-item-choices"),
        pytest.param("headers", "a=1,oops", 'value "oops" is not key=value', id="dict-item"),
        pytest.param("headers", "=1", 'value "=1" is not key=value', id="dict-empty-key"),
        pytest.param("weights", "a=x", 'value "x" is not a number', id="dict-value"),
    ],
)
def test_conversion_error(key: str, raw: str, message: str) -> None:
    """A value that does not convert is named with the problem."""
    assert error(Typed, {key: raw}) == f'parameter "{key}" {message}'


@dataclass(frozen=True, slots=True, kw_only=True)
class Custom:
    partitions: tuple[int, ...] = param(
        "partitionLimitation",
        default=(),
        converter=lambda raw: tuple(n for part in raw.split(",") for n in _range(part.strip())),
    )
    token: str | None = param("token", default=None, secret=True, converter=str.upper)
    pin: int | None = param("pin", default=None, secret=True, converter=int)


def _range(part: str) -> range:
    low, dash, high = part.partition("-")
    if not dash:
        return range(int(part), int(part) + 1)
    if int(high) < int(low):
        raise ValueError(f"range {part} is backwards")
    return range(int(low), int(high) + 1)


def test_custom_converter() -> None:
    """`converter` replaces the type's conversion, e.g. for Kafka's partition ranges."""
    assert parse(Custom, {"partitionLimitation": "1,3-5"}).partitions == (1, 3, 4, 5)
    assert parse(Custom, {"token": "abc"}).token == "ABC"


def test_custom_converter_errors() -> None:
    """A converter's ValueError is the message, unless the value is secret."""
    assert error(Custom, {"partitionLimitation": "5-3"}) == (
        'parameter "partitionLimitation" value "5-3" is invalid: range 5-3 is backwards'
    )
    assert error(Custom, {"pin": "12x4"}) == 'parameter "pin" is invalid (value not shown)'


def test_optional_absent_is_none() -> None:
    """An optional parameter that is absent takes its default."""
    assert parse(Typed) == Typed()


def test_blank_value_counts_as_absent() -> None:
    """As KEDA does, a blank value is no value: the default applies."""
    assert parse(Typed, {"number": "", "text": "   "}) == Typed()


# ---------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True, slots=True, kw_only=True)
class Sourced:
    address: str = param("address", sources=(AUTH, METADATA))
    host: str = param("host", sources=(METADATA, AUTH), default="meta-first")
    user: str = param("username", sources=(METADATA, ENV), default="nobody")
    password: str | None = param("password", sources=(AUTH, ENV), default=None, secret=True)
    region: str = param("awsRegion", sources=(ENV, METADATA, AUTH), default="none")


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "expected"),
    [
        pytest.param({"address": "m"}, {"address": "a"}, {}, {"address": "a"}, id="auth-first"),
        pytest.param({"address": "m"}, {}, {}, {"address": "m"}, id="falls-back-to-metadata"),
        pytest.param({"address": "m"}, {"address": " "}, {}, {"address": "m"}, id="blank-auth"),
        pytest.param(
            {"address": "x", "host": "m"}, {"host": "a"}, {}, {"host": "m"}, id="metadata-first"
        ),
        pytest.param(
            {"address": "x"}, {"host": "a"}, {}, {"host": "a"}, id="metadata-first-falls-back"
        ),
        pytest.param(
            {"address": "x", "usernameFromEnv": "USER"},
            {},
            {"USER": "alice"},
            {"user": "alice"},
            id="from-env",
        ),
        pytest.param(
            {"address": "x", "username": "bob", "usernameFromEnv": "USER"},
            {},
            {"USER": "alice"},
            {"user": "bob"},
            id="metadata-before-env",
        ),
        pytest.param(
            {"address": "x", "passwordFromEnv": "PW"},
            {"password": "from-auth"},
            {"PW": "from-env"},
            {"password": "from-auth"},
            id="auth-before-env",
        ),
        pytest.param(
            {"address": "x", "passwordFromEnv": "PW"},
            {},
            {"PW": "from-env"},
            {"password": "from-env"},
            id="env-after-auth",
        ),
        pytest.param(
            {"address": "x", "awsRegion": "m", "awsRegionFromEnv": "REGION"},
            {"awsRegion": "a"},
            {"REGION": "e"},
            {"region": "e"},
            id="env-first",
        ),
        pytest.param(
            {"address": "x", "awsRegion": "m", "awsRegionFromEnv": "REGION"},
            {"awsRegion": "a"},
            {},
            {"region": "m"},
            id="unset-env-falls-through",
        ),
        pytest.param(
            {"address": "x", "password": "in-metadata"},
            {},
            {},
            {"password": None},
            id="source-not-listed-is-not-read",
        ),
        pytest.param(
            {"address": "x"},
            {},
            {"username": "alice"},
            {"user": "nobody"},
            id="env-only-through-from-env",
        ),
    ],
)
def test_source_order(
    metadata: dict[str, str], auth: dict[str, str], env: dict[str, str], expected: dict[str, str]
) -> None:
    """Each field tries its sources in its own order; the first non-blank value wins."""
    config = parse(Sourced, metadata, auth, env)
    assert {attr: getattr(config, attr) for attr in expected} == expected


def test_missing_names_every_place_looked() -> None:
    """The missing-parameter message lists the sources in lookup order."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Needs:
        address: str = param("address", sources=(AUTH, METADATA))
        password: str = param("password", sources=(METADATA, ENV, AUTH))

    assert error(Needs) == (
        'missing required parameter "address" (looked in auth params, metadata); '
        'missing required parameter "password" '
        '(looked in metadata, env via "passwordFromEnv", auth params)'
    )


def test_unset_env_var_is_a_warning_and_a_missing_parameter() -> None:
    """`xFromEnv` naming an unset variable warns, and a required x is then missing."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Needs:
        password: str = param("password", sources=(ENV,))

    metadata = {"passwordFromEnv": "PW"}
    out: list[str] = []
    with pytest.raises(ConfigError) as info:
        parse(Needs, metadata, env={"PW": "  "}, warnings=out)
    assert str(info.value) == (
        f'{LABEL}: missing required parameter "password" (looked in env via "passwordFromEnv")'
    )
    assert out == [f'{LABEL}: env var "PW" named by "passwordFromEnv" is not set']


# ---------------------------------------------------------------------------------------------
# Defaults, aliases, deprecation


@dataclass(frozen=True, slots=True, kw_only=True)
class Defaults:
    stream: str = param("stream")
    count: int = param("pendingEntriesCount", default=5)
    tags: list[str] = param("tags", default=["x"])
    mode: Mode = param("mode", default=Mode.QUEUE_LENGTH)
    value: float = param("value", aliases=("queueLength",), default=20.0)
    legacy: str | None = param("metricName", default=None, deprecated="it is generated now")


def test_defaults() -> None:
    """Absent parameters take their defaults; mutable defaults are not shared."""
    first, second = parse(Defaults, {"stream": "s"}), parse(Defaults, {"stream": "t"})
    assert (first.count, first.tags, first.mode, first.value) == (5, ["x"], Mode.QUEUE_LENGTH, 20)
    assert first.tags is not second.tags


def test_required_without_default() -> None:
    """A param() without a default is required."""
    assert error(Defaults) == 'missing required parameter "stream" (looked in metadata)'


def test_alias_is_read_with_a_warning() -> None:
    """An older name still works and says which name to use."""
    out: list[str] = []
    config = parse(Defaults, {"stream": "s", "queueLength": "7"}, warnings=out)
    assert config.value == 7.0
    assert out == [f'{LABEL}: parameter "queueLength" is deprecated; use "value"']


def test_name_wins_over_alias() -> None:
    """With both spellings set, the current name wins and the alias still warns nothing."""
    out: list[str] = []
    assert (
        parse(Defaults, {"stream": "s", "value": "1", "queueLength": "7"}, warnings=out).value == 1
    )
    assert out == []


def test_alias_errors_name_the_alias() -> None:
    """A bad value under an alias is reported under the key the user wrote."""
    assert error(Defaults, {"stream": "s", "queueLength": "x"}) == (
        'parameter "queueLength" value "x" is not a number'
    )


def test_deprecated_parameter_warns() -> None:
    """A deprecated parameter is still read, with its deprecation message."""
    out: list[str] = []
    assert parse(Defaults, {"stream": "s", "metricName": "m"}, warnings=out).legacy == "m"
    assert out == [f'{LABEL}: parameter "metricName" is deprecated: it is generated now']


# ---------------------------------------------------------------------------------------------
# Collected errors


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisStreamsLike:
    address: str = param("address", sources=(AUTH, METADATA))
    stream: str = param("stream")
    consumer_group: str | None = param("consumerGroup", default=None)
    pending_entries_count: int = param("pendingEntriesCount", default=5)
    lag_count: int | None = param("lagCount", default=None)
    enable_tls: bool = param("enableTLS", default=False)
    password: str | None = param("password", sources=(AUTH, ENV), default=None, secret=True)

    def validate(self) -> None:
        if self.lag_count is not None and self.consumer_group is None:
            raise ConfigError('parameter "lagCount" needs "consumerGroup"')


def test_every_error_is_collected_in_one_message() -> None:
    """All field errors come back together, in declaration order, with a fixed wording."""
    metadata = {"pendingEntriesCount": "five", "lagCount": "1.5", "enableTLS": "maybe"}
    assert error(RedisStreamsLike, metadata) == (
        'missing required parameter "address" (looked in auth params, metadata); '
        'missing required parameter "stream" (looked in metadata); '
        'parameter "pendingEntriesCount" value "five" is not an integer; '
        'parameter "lagCount" value "1.5" is not an integer; '
        'parameter "enableTLS" value "maybe" is not a boolean (true or false)'
    )


def test_full_message_format() -> None:
    """The whole message: label, then problems separated by semicolons."""
    with pytest.raises(ConfigError) as info:
        parse_params(
            RedisStreamsLike,
            metadata={"address": "redis:6379", "pendingEntriesCount": "five"},
            auth_params={},
            resolved_env={},
            trigger_label='trigger "s0-redis-streams" (redis-streams)',
        )
    assert str(info.value) == (
        'trigger "s0-redis-streams" (redis-streams): missing required parameter "stream" '
        '(looked in metadata); parameter "pendingEntriesCount" value "five" is not an integer'
    )


def test_validate_hook_runs_after_parsing() -> None:
    """validate() sees the parsed config; its ConfigError gets the same label."""
    assert error(RedisStreamsLike, {"address": "r", "stream": "s", "lagCount": "3"}) == (
        'parameter "lagCount" needs "consumerGroup"'
    )
    config = parse(
        RedisStreamsLike, {"address": "r", "stream": "s", "lagCount": "3", "consumerGroup": "g"}
    )
    assert config.lag_count == 3


def test_validate_hook_not_run_when_fields_fail() -> None:
    """Field errors are reported alone: the config cannot be built to validate it."""
    assert error(RedisStreamsLike, {"stream": "s", "lagCount": "3"}) == (
        'missing required parameter "address" (looked in auth params, metadata)'
    )


def test_validate_hook_other_exceptions_propagate() -> None:
    """Only ConfigError is a user error; a bug in validate() is not disguised as one."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Buggy:
        x: int = param("x", default=1)

        def validate(self) -> None:
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        parse(Buggy)


# ---------------------------------------------------------------------------------------------
# Secrets

SECRET = "hunter2-S3CR3T"


@dataclass(frozen=True, slots=True, kw_only=True)
class Secrets:
    password: str = param("password", sources=(AUTH, ENV), secret=True)
    pin: int | None = param("pin", sources=(AUTH, METADATA), default=None, secret=True)
    port: int | None = param("port", sources=(AUTH, ENV, METADATA), default=None)
    mode: Mode | None = param("mode", sources=(AUTH,), default=None)


def test_secret_is_not_in_repr() -> None:
    """secret=True fields are left out of repr() (and so of str() and logs)."""
    config = parse(Secrets, {"pin": "1234"}, auth={"password": SECRET})
    assert config.password == SECRET
    assert SECRET not in repr(config)
    assert "1234" not in repr(config)
    assert "password" not in repr(config)
    assert SECRET not in str(config)


@pytest.mark.parametrize(
    ("metadata", "auth", "env", "message"),
    [
        pytest.param(
            {"pin": SECRET},
            {"password": "x"},
            {},
            'parameter "pin" is not an integer (value not shown)',
            id="secret-from-metadata",
        ),
        pytest.param(
            {},
            {"password": "x", "pin": SECRET},
            {},
            'parameter "pin" is not an integer (value not shown)',
            id="secret-from-auth",
        ),
        pytest.param(
            {},
            {"password": "x", "port": SECRET},
            {},
            'parameter "port" is not an integer (value not shown)',
            id="plain-from-auth",
        ),
        pytest.param(
            {"portFromEnv": "PORT"},
            {"password": "x"},
            {"PORT": SECRET},
            'parameter "port" is not an integer (value not shown)',
            id="plain-from-env",
        ),
        pytest.param(
            {},
            {"password": "x", "mode": SECRET},
            {},
            'parameter "mode" must be one of "QueueLength", "MessageRate" (value not shown)',
            id="enum-from-auth",
        ),
    ],
)
def test_values_from_secrets_are_never_shown(
    metadata: dict[str, str], auth: dict[str, str], env: dict[str, str], message: str
) -> None:
    """Secret fields, and any value from auth params or env, never appear in a message."""
    text = error(Secrets, metadata, auth, env)
    assert text == message
    assert SECRET not in text


def test_secret_not_in_warnings() -> None:
    """Warnings name keys, never values, even for a secret put in the wrong place."""
    out = warnings_of(Secrets, {"password": SECRET}, auth={"password": "x"})
    assert out == [
        'parameter "password" is ignored in metadata; it is read from auth params, '
        'env via "passwordFromEnv"'
    ]
    assert not any(SECRET in w for w in out)


# ---------------------------------------------------------------------------------------------
# Unknown keys


@dataclass(frozen=True, slots=True, kw_only=True)
class Known:
    stream: str = param("stream")
    group: str | None = param("consumerGroup", sources=(METADATA, ENV), default=None)
    value: float = param("value", aliases=("queueLength",), default=1.0)
    region: str | None = param("awsRegion", default=None)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param({"stream": "s"}, [], id="none"),
        pytest.param({"stream": "s", "colour": "red"}, ['unknown parameter "colour"']),
        pytest.param(
            {"stream": "s", "consumergroup": "g"},
            ['unknown parameter "consumergroup" (did you mean "consumerGroup"?)'],
            id="did-you-mean",
        ),
        pytest.param(
            {"stream": "s", "consumerGroupFromEnv": "G"},
            ['env var "G" named by "consumerGroupFromEnv" is not set'],
            id="from-env-is-known",
        ),
        pytest.param(
            {"stream": "s", "awsRegionFromEnv": "R"},
            ['parameter "awsRegion" cannot come from an env var; "awsRegionFromEnv" is ignored'],
            id="from-env-not-allowed",
        ),
        pytest.param(
            {"stream": "s", "nopeFromEnv": "X"}, ['unknown parameter "nopeFromEnv"'], id="fromenv"
        ),
        pytest.param(
            {"stream": "s", "queueLength": "3"},
            ['parameter "queueLength" is deprecated; use "value"'],
            id="alias-is-known",
        ),
    ],
)
def test_unknown_metadata_keys_warn(metadata: dict[str, str], expected: list[str]) -> None:
    """Keys no field reads are warnings, not errors; FromEnv keys and aliases are known."""
    assert warnings_of(Known, metadata, env={}) == expected


def test_warnings_survive_errors() -> None:
    """Warnings are delivered even when parsing fails, so the controller can show both."""
    out: list[str] = []
    with pytest.raises(ConfigError):
        parse(Known, {"colour": "red"}, warnings=out)
    assert out == [f'{LABEL}: unknown parameter "colour"']


def test_auth_params_are_not_checked_for_unknown_keys() -> None:
    """A TriggerAuthentication may serve many triggers: its extra keys are normal."""
    assert warnings_of(Known, {"stream": "s"}, auth={"tls": "enable", "ca": "..."}) == []


# ---------------------------------------------------------------------------------------------
# Declarations


def test_param_records_its_spec() -> None:
    """param() stores a Param in the field metadata, for introspection."""
    spec = next(f for f in dataclasses.fields(Sourced) if f.name == "password").metadata[
        "autoscale.param"
    ]
    assert spec == Param(name="password", sources=(Source.AUTH, Source.ENV), secret=True)


def test_plain_fields_are_left_alone() -> None:
    """Fields without param() keep their dataclass defaults."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Mixed:
        stream: str = param("stream")
        computed: int = 7

    assert parse(Mixed, {"stream": "s"}) == Mixed(stream="s", computed=7)


@dataclass
class NotFrozen:
    count: int = param("count", default=1)


def test_plain_dataclass_works_too() -> None:
    """frozen/slots/kw_only are recommended, not required."""
    assert parse(NotFrozen, {"count": "2"}).count == 2


@pytest.mark.parametrize(
    ("annotation", "options", "message"),
    [
        pytest.param(bytes, {}, "unsupported type", id="unsupported"),
        pytest.param(int | str, {}, "unsupported type", id="two-types"),
        pytest.param(int, {"choices": ("1",)}, "choices need a str type", id="choices-int"),
        pytest.param(str, {"separator": ";"}, "separator needs a list", id="separator-str"),
        pytest.param(tuple[int, int], {}, "use tuple\\[X, ...\\]", id="fixed-tuple"),
        pytest.param(dict[int, str], {}, "need str keys", id="dict-int-keys"),
        pytest.param(list[list[str]], {}, "unsupported type", id="nested-list"),
    ],
)
def test_bad_declarations_are_type_errors(
    annotation: Any, options: dict[str, Any], message: str
) -> None:
    """A declaration the parser cannot honour fails loudly on first use (a programmer error)."""
    cls = dataclasses.make_dataclass(
        "Bad", [("x", annotation, param("x", default=None, **options))]
    )
    with pytest.raises(TypeError, match=message):
        parse(cls, {"x": "1"})


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"name": "", "sources": (METADATA,)}, id="no-name"),
        pytest.param({"name": "x", "sources": ()}, id="no-sources"),
        pytest.param({"name": "x", "sources": (AUTH, AUTH)}, id="duplicate-sources"),
    ],
)
def test_param_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    """param() itself refuses arguments that cannot describe a lookup."""
    with pytest.raises(TypeError, match="needs a name and distinct, non-empty sources"):
        param(**kwargs)


def test_not_a_dataclass() -> None:
    """parse_params() needs a dataclass."""

    class Plain:
        pass

    with pytest.raises(TypeError, match="is not a dataclass"):
        parse(Plain)
