"""The scalingModifiers formula language: values, errors, limits, and the webhook rules."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscale.errors import ConfigError, ScalerQueryError
from autoscale.formula import (
    MAX_COST,
    MAX_DEPTH,
    MAX_LENGTH,
    Formula,
    ScalingModifiers,
    compile_formula,
    validate_scaling_modifiers,
)
from autoscale.scalers.base import MetricType

NAMES = ("a", "b", "c", "d", "e", "kafka-lag", "trig_one", "trig_two", "trig_three")
VALUES: dict[str, float | None] = {
    "a": 2.0,
    "b": 3.0,
    "c": None,  # a failed trigger
    "d": -1.5,
    # "e" is known but absent: also nil
    "kafka-lag": 7,
    "trig_one": 1.0,
    "trig_two": 5.0,
    "trig_three": 3.0,
}
NIL = "(a trigger without a value is nil; substitute one with ??)"


def value(text: str, values: dict[str, float | None] = VALUES) -> float:
    return compile_formula(text, NAMES).evaluate(values)


def compile_error(text: str, names: tuple[str, ...] = NAMES) -> str:
    with pytest.raises(ConfigError) as info:
        compile_formula(text, names)
    return str(info.value)


def eval_error(text: str, values: dict[str, float | None] = VALUES) -> str:
    formula = compile_formula(text, NAMES)
    with pytest.raises(ScalerQueryError) as info:
        formula.evaluate(values)
    return str(info.value)


# ---------------------------------------------------------------------------------------------
# Values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # arithmetic precedence and associativity
        pytest.param("1 + 2 * 3", 7, id="mul-over-add"),
        pytest.param("(1 + 2) * 3", 9, id="parentheses"),
        pytest.param("10 - 4 - 3", 3, id="sub-left-assoc"),
        pytest.param("100 / 10 / 5", 2, id="div-left-assoc"),
        pytest.param("7 / 2", 3.5, id="float-division"),
        pytest.param("2 * 3 % 4", 2, id="mul-rem-left-assoc"),
        pytest.param("7 % 3", 1, id="rem"),
        pytest.param("-7 % 3", -1, id="rem-sign-of-dividend"),
        pytest.param("7 % -3", 1, id="rem-negative-divisor"),
        pytest.param("7.5 % 2", 1.5, id="rem-of-float"),
        pytest.param("2 ** 3 ** 2", 512, id="pow-right-assoc"),
        pytest.param("2 ^ 3 ^ 2", 512, id="caret-is-pow"),
        pytest.param("(2 ** 3) ** 2", 64, id="pow-parenthesized"),
        pytest.param("2 * 3 ** 2", 18, id="pow-over-mul"),
        pytest.param("-2 ** 2", -4, id="pow-over-unary-minus"),
        pytest.param("(-2) ** 2", 4, id="unary-minus-parenthesized"),
        pytest.param("2 ** -1", 0.5, id="negative-exponent"),
        pytest.param("-a * b", -6, id="unary-minus-over-mul"),
        pytest.param("- -a", 2, id="double-minus"),
        pytest.param("+a", 2, id="unary-plus"),
        pytest.param("a - -b", 5, id="minus-minus"),
        pytest.param("d * 2", -3, id="negative-value"),
        # comparisons, logic, ternary
        pytest.param("1 + 2 > 2 ? 10 : 20", 10, id="compare-under-add"),
        pytest.param("a > 1 && b > 2 ? 1 : 0", 1, id="and"),
        pytest.param("a > 5 || b > 2 ? 1 : 0", 1, id="or"),
        pytest.param("a > 1 and b > 5 ? 1 : 0", 0, id="and-word"),
        pytest.param("a > 5 or b > 5 ? 1 : 0", 0, id="or-word"),
        pytest.param("true || false && false ? 1 : 0", 1, id="and-over-or"),
        pytest.param("(true || false) && false ? 1 : 0", 0, id="or-parenthesized"),
        pytest.param("not true == false ? 1 : 0", 1, id="not-over-equality"),
        pytest.param("!(a > b) ? 1 : 0", 1, id="bang"),
        pytest.param("not (a > 5) ? 1 : 0", 1, id="not-word"),
        pytest.param("!!true ? 1 : 0", 1, id="double-bang"),
        pytest.param("a == 2 ? 1 : 0", 1, id="eq"),
        pytest.param("a != 2 ? 1 : 0", 0, id="ne"),
        pytest.param("a >= 2 ? 1 : 0", 1, id="ge"),
        pytest.param("a <= 1 ? 1 : 0", 0, id="le"),
        pytest.param("1 < 2 < 3 ? 1 : 0", 1, id="chained-compare"),
        pytest.param("3 > 2 > 1 ? 1 : 0", 1, id="chained-compare-not-c-style"),
        pytest.param("1 < 3 < 2 ? 1 : 0", 0, id="chained-compare-false"),
        pytest.param("(1 < 2) == true ? 1 : 0", 1, id="compare-booleans"),
        pytest.param("a > 1 ? b > 2 ? 1 : 2 : 3", 1, id="ternary-in-then"),
        pytest.param("a < 1 ? 1 : b < 1 ? 2 : 3", 3, id="ternary-right-assoc"),
        pytest.param("1 + (a > 1 ? 10 : 20)", 11, id="ternary-in-operand"),
        pytest.param("trig_one > 2 ? trig_one + trig_two : 1", 1, id="keda-doc-ternary"),
        pytest.param("trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0", 5, id="keda-doc-nested"),
        pytest.param("(trig_one + trig_two)/2", 3, id="keda-doc-average"),
        pytest.param(
            "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0", 5, id="keda-doc-count"
        ),
        # nil and ??
        pytest.param("c ?? 5", 5, id="coalesce-nil"),
        pytest.param("e ?? 9", 9, id="coalesce-absent"),
        pytest.param("a ?? 5", 2, id="coalesce-value"),
        pytest.param("c ?? e ?? 7", 7, id="coalesce-chain"),
        pytest.param("c ?? b ?? 1", 3, id="coalesce-chain-stops"),
        pytest.param("nil ?? 3", 3, id="coalesce-nil-literal"),
        pytest.param("a + c ?? 10", 12, id="coalesce-binds-tighter-than-add"),
        pytest.param("a * c ?? 3", 6, id="coalesce-binds-tighter-than-mul"),
        pytest.param("2 ** c ?? 3", 8, id="coalesce-binds-tighter-than-pow"),
        pytest.param("-c ?? 4", -4, id="coalesce-under-unary"),
        pytest.param("a * c ?? 3 + 1", 7, id="coalesce-in-operand-then-looser-operator"),
        pytest.param("(c ?? 1) + 1", 2, id="coalesce-parenthesized"),
        pytest.param("c == nil ? 0 : c", 0, id="eq-nil"),
        pytest.param("a != nil ? a : 0", 2, id="ne-nil"),
        pytest.param("nil == nil ? 1 : 0", 1, id="nil-eq-nil"),
        pytest.param("a > 1 ? a : nil", 2, id="nil-branch-not-taken"),
        pytest.param("a ?? (1 / 0)", 2, id="coalesce-is-lazy"),
        pytest.param("a > 1 || c > 1 ? 1 : 0", 1, id="or-short-circuits"),
        pytest.param("a < 1 && c > 1 ? 1 : 0", 0, id="and-short-circuits"),
        pytest.param("a < 1 ? 1 / 0 : 2", 2, id="ternary-is-lazy"),
        pytest.param("1 > 2 > 1 / 0 ? 1 : 0", 0, id="chained-compare-short-circuits"),
        # functions
        pytest.param("abs(-3)", 3, id="abs"),
        pytest.param("abs(d)", 1.5, id="abs-value"),
        pytest.param("ceil(1.2)", 2, id="ceil"),
        pytest.param("ceil(-1.2)", -1, id="ceil-negative"),
        pytest.param("floor(-1.2)", -2, id="floor"),
        pytest.param("round(2.5)", 3, id="round-half-up"),
        pytest.param("round(-2.5)", -3, id="round-half-away-from-zero"),
        pytest.param("round(2.4)", 2, id="round-down"),
        pytest.param("round(0.49999999999999994)", 0, id="round-just-below-half"),
        pytest.param("int(2.9)", 2, id="int-truncates"),
        pytest.param("int(-2.9)", -2, id="int-truncates-toward-zero"),
        pytest.param("float(a)", 2, id="float"),
        pytest.param("float(a) + b", 5, id="float-prefix-like-keda"),
        pytest.param("min(a, b)", 2, id="min"),
        pytest.param("max(a, b, 10)", 10, id="max-variadic"),
        pytest.param("min([a, b])", 2, id="min-list"),
        pytest.param("max([1, 5], [7], 2)", 7, id="max-mixed"),
        pytest.param("mean([1, 2, 3, 4])", 2.5, id="mean"),
        pytest.param("mean(1, 2)", 1.5, id="mean-variadic"),
        pytest.param("median([3, 1, 2])", 2, id="median-odd"),
        pytest.param("median([4, 1, 3, 2])", 2.5, id="median-even"),
        pytest.param("sum([1, 2, 3])", 6, id="sum"),
        pytest.param("sum([])", 0, id="sum-empty"),
        pytest.param("sum([1, 2, 3], {# * 2})", 12, id="sum-predicate"),
        pytest.param("sum([1, 2], # + 1)", 5, id="predicate-without-braces"),
        pytest.param("len([a, b, c])", 3, id="len-counts-nil"),
        pytest.param("count([1, 5, 7], {# > 2})", 2, id="count"),
        pytest.param("all([1, 2], {# > 0}) ? 1 : 0", 1, id="all"),
        pytest.param("any([1, 2], {# > 1}) ? 1 : 0", 1, id="any"),
        pytest.param("none([1, 2], {# > 5}) ? 1 : 0", 1, id="none"),
        pytest.param("one([1, 2], {# > 1}) ? 1 : 0", 1, id="one"),
        pytest.param("len(filter([1, 5, 7], {# > 2}))", 2, id="filter"),
        pytest.param("sum(map([1, 2], {# * 10}))", 30, id="map"),
        pytest.param("max(map([a, b], {# ** 2}))", 9, id="map-max"),
        pytest.param("sum(filter([a, b, c ?? 0], # > 0))", 5, id="coalesce-in-list"),
        pytest.param("count([a, b], {count([1, 2], {# > 1}) > 0})", 2, id="nested-predicates"),
        pytest.param("count([a, b], {count([#], {# > 2}) > 0})", 1, id="hash-is-innermost"),
        pytest.param("max(a, b,)", 3, id="trailing-comma"),
        pytest.param("sum([1, 2,])", 3, id="trailing-comma-list"),
        # literals, names, layout
        pytest.param("1_000", 1000, id="underscores"),
        pytest.param("0x1F", 31, id="hex"),
        pytest.param("0o17", 15, id="octal"),
        pytest.param("0b101", 5, id="binary"),
        pytest.param(".5", 0.5, id="leading-dot"),
        pytest.param("1.", 1, id="trailing-dot"),
        pytest.param("1e3", 1000, id="exponent"),
        pytest.param("2.5E-1", 0.25, id="negative-exponent-literal"),
        pytest.param('$env["kafka-lag"] * 2', 14, id="env-index"),
        pytest.param("$env['kafka-lag']", 7, id="env-single-quotes"),
        pytest.param("$env.a + 1", 3, id="env-member"),
        pytest.param("a /* two */ + b // three", 5, id="comments"),
        pytest.param("a\n\t+ b\n", 5, id="newlines"),
    ],
)
def test_value(text: str, expected: float) -> None:
    """Each formula evaluates to the value expr-lang gives it."""
    result = value(text)
    assert isinstance(result, float)
    assert result == expected


def test_names_are_the_referenced_triggers() -> None:
    """Formula.names lists trigger names only, however they were written."""
    formula = compile_formula("a + $env['kafka-lag'] + (c ?? 1) + max([1], [true ? 2 : 3])", NAMES)
    assert formula.names == frozenset({"a", "kafka-lag", "c"})
    assert isinstance(formula, Formula)
    assert formula.text.startswith("a + ")


def test_values_may_be_ints_and_missing() -> None:
    """Integers count as numbers; a name absent from the mapping is nil."""
    formula = compile_formula("x ?? y", ["x", "y"])
    assert formula.evaluate({"y": 4}) == 4.0
    assert formula.evaluate({"x": 1, "y": 4}) == 1.0


# ---------------------------------------------------------------------------------------------
# Compile errors

KNOWN = '(known: "a", "b", "c", "d", "e", "kafka-lag", "trig_one", "trig_three", "trig_two")'
ENV_HINT = '; write $env["kafka-lag"] for a name that is not an identifier'
FUNCS = "abs, all, any, ceil, count, filter, float, floor, int, len, map, max, mean, median, min"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # syntax
        pytest.param("", "formula is empty at column 1", id="empty"),
        pytest.param("  \n ", "formula is empty at column 1", id="blank"),
        pytest.param("(a", "unexpected end of formula at column 3", id="unclosed"),
        pytest.param("a)", "unexpected token ')' at column 2", id="extra-close"),
        pytest.param("(a + b))", "unexpected token ')' at column 8", id="extra-close-later"),
        pytest.param("1 +", "unexpected end of formula at column 4", id="dangling-operator"),
        pytest.param("a b", "unexpected token 'b' at column 3", id="juxtaposition"),
        pytest.param("* a", "unexpected token '*' at column 1", id="leading-operator"),
        pytest.param("a = 1", "unexpected character '=' at column 3", id="assignment"),
        pytest.param("a @ b", "unexpected character '@' at column 3", id="bad-character"),
        pytest.param("a +\n  @", "unexpected character '@' at line 2, column 3", id="line"),
        pytest.param("a & b", "unexpected character '&' at column 3", id="single-ampersand"),
        pytest.param("1abc", "invalid number '1abc' at column 1", id="number-then-letters"),
        pytest.param("0x", "invalid number '0x' at column 1", id="bare-hex-prefix"),
        pytest.param("1e", "invalid number '1e' at column 1", id="bare-exponent"),
        pytest.param("1e999", "number '1e999' is out of range at column 1", id="huge"),
        pytest.param('"oops', "unterminated string at column 1", id="unterminated-string"),
        pytest.param("a /* x", "unterminated comment at column 3", id="unterminated-comment"),
        pytest.param("'s' + 1", 'unexpected token "s" at column 1', id="string-value"),
        pytest.param("a ?: b", "unexpected token ':' at column 4", id="elvis"),
        pytest.param("a > 1 ? 1", "unexpected end of formula at column 10", id="ternary-no-else"),
        pytest.param("a.b", "unexpected token '.' at column 2", id="member-access"),
        pytest.param("a in [1]", "unexpected token 'in' at column 3", id="in-operator"),
        pytest.param("$env", "unexpected end of formula at column 5", id="bare-env"),
        pytest.param("$env[a]", "unexpected token 'a' at column 6", id="env-unquoted"),
        pytest.param("#", "'#' can only be used inside a predicate such as {# > 1} at column 1"),
        pytest.param(
            "count([#], {# > 1})",
            "'#' can only be used inside a predicate such as {# > 1} at column 8",
            id="hash-in-list-argument",
        ),
        pytest.param(
            "a ?? 0 + 1",
            "operator '+' cannot follow '??' without parentheses at column 8",
            id="coalesce-then-add",
        ),
        pytest.param(
            "a ?? 0 ** 2",
            "operator '**' cannot follow '??' without parentheses at column 8",
            id="coalesce-then-pow",
        ),
        pytest.param(
            "a + c ?? 3 * 2",
            "operator '*' cannot follow '??' without parentheses at column 12",
            id="coalesce-then-tighter",
        ),
        pytest.param(
            "2 ** c ?? 3 ** 2",
            "operator '**' cannot follow '??' without parentheses at column 13",
            id="coalesce-in-exponent-then-pow",
        ),
        pytest.param(
            "c ?? a > 1 ? 1 : 0",
            "operator '>' cannot follow '??' without parentheses at column 8",
            id="coalesce-then-compare",
        ),
        # names and functions
        pytest.param("foo", f'unknown trigger name "foo" at column 1 {KNOWN}{ENV_HINT}'),
        pytest.param(
            "kafka-lag",
            f'unknown trigger name "kafka" at column 1 {KNOWN}{ENV_HINT}',
            id="dash-in-bare-name",
        ),
        pytest.param('$env["nope"]', f'unknown trigger name "nope" at column 1 {KNOWN}{ENV_HINT}'),
        pytest.param(
            "foo(1)",
            f'unknown function "foo" at column 1 (known: {FUNCS}, none, one, round, sum)',
        ),
        pytest.param("min()", "min() takes at least 1 argument, got 0 at column 1"),
        pytest.param("abs(1, 2)", "abs() takes 1 argument, got 2 at column 1"),
        pytest.param("sum()", "sum() takes 1 or 2 arguments, got 0 at column 1"),
        pytest.param("count([1])", "count() takes 2 arguments, got 1 at column 1"),
        pytest.param("count([1], {# > 0}, 1)", "count() takes 2 arguments, got 3 at column 1"),
        # types
        pytest.param("true + 1", "operator '+' needs numbers, got a boolean at column 6"),
        pytest.param("1 + true", "operator '+' needs numbers, got a boolean at column 3"),
        pytest.param("nil + 1", "operator '+' needs numbers, got nil at column 5"),
        pytest.param("a ** true", "operator '**' needs numbers, got a boolean at column 3"),
        pytest.param("-true", "operator '-' needs numbers, got a boolean at column 1"),
        pytest.param("a && b", "operator '&&' needs booleans, got a number at column 3"),
        pytest.param("a > 1 and b", "operator 'and' needs booleans, got a number at column 7"),
        pytest.param("!a", "operator '!' needs booleans, got a number at column 1"),
        pytest.param(
            "not a > 1 ? 1 : 0",
            "operator 'not' needs booleans, got a number at column 1",
            id="not-binds-tighter-than-compare",
        ),
        pytest.param("a < true", "operator '<' needs numbers, got a boolean at column 3"),
        pytest.param(
            "a == true ? 1 : 0",
            "operator '==' cannot compare a number with a boolean at column 3",
        ),
        pytest.param(
            "1 < 2 == true ? 1 : 0",
            "operator '==' cannot compare a number with a boolean at column 7",
            id="chained-compare-compares-neighbours",
        ),
        pytest.param(
            "[1] == [1] ? 1 : 0", "operator '==' cannot compare a list with a list at column 5"
        ),
        pytest.param(
            "a ? 1 : 2", "the condition of '?:' must be a boolean, got a number at column 3"
        ),
        pytest.param(
            "a > 1 ? 1 : true",
            "the branches of '?:' must have the same type, got a number and a boolean at column 7",
        ),
        pytest.param(
            "a ?? true",
            "the operands of '??' must have the same type, got a number and a boolean at column 3",
        ),
        pytest.param("a > 1", "the formula must produce a number, not a boolean at column 1"),
        pytest.param("nil", "the formula must produce a number, not nil at column 1"),
        pytest.param("[a]", "the formula must produce a number, not a list at column 1"),
        pytest.param("[true]", "a list element must be a number, got a boolean at column 1"),
        pytest.param("[[1]]", "a list element must be a number, got a list at column 1"),
        pytest.param("abs(true)", "abs() needs a number, got a boolean at column 1"),
        pytest.param("len(1)", "len() needs a list, got a number at column 1"),
        pytest.param("min(true)", "min() needs a number or a list, got a boolean at column 1"),
        pytest.param(
            "count(1, {# > 0})",
            "the first argument of count() must be a list, got a number at column 1",
        ),
        pytest.param(
            "count([1], {#})",
            "the predicate of count() must be a boolean, got a number at column 12",
        ),
        pytest.param(
            "sum([1], {# > 0})",
            "the predicate of sum() must be a number, got a boolean at column 10",
        ),
    ],
)
def test_compile_error(text: str, message: str) -> None:
    """Each bad formula is a ConfigError with this exact message."""
    assert compile_error(text) == f"formula: {message}"


def test_compile_error_without_named_triggers() -> None:
    """With no named trigger the message says so instead of listing nothing."""
    assert (
        compile_error("x", ())
        == 'formula: unknown trigger name "x" at column 1 (no trigger has a name)'
    )


def test_compile_error_names_the_field() -> None:
    """The caller chooses the field the message starts with."""
    with pytest.raises(ConfigError, match=r"^spec\.x: unexpected end of formula at column 2$"):
        compile_formula("(", [], field="spec.x")


# ---------------------------------------------------------------------------------------------
# Evaluation errors


@pytest.mark.parametrize(
    ("text", "values", "message"),
    [
        pytest.param("a / 0", VALUES, "division by zero at column 3"),
        pytest.param("a / (b - 3)", VALUES, "division by zero at column 3", id="computed-zero"),
        pytest.param("a % 0", VALUES, "remainder by zero at column 3"),
        pytest.param("a\n/ 0", VALUES, "division by zero at line 2, column 1", id="line"),
        pytest.param("c + 1", VALUES, f"operator '+' got nil {NIL} at column 3"),
        pytest.param("-c", VALUES, f"operator '-' got nil {NIL} at column 1"),
        pytest.param("c > 1 ? 1 : 0", VALUES, f"operator '>' got nil {NIL} at column 3"),
        pytest.param("c", VALUES, f"the formula produced nil {NIL} at column 1"),
        pytest.param("a > 1 ? c : 0", VALUES, f"the formula produced nil {NIL} at column 1"),
        pytest.param("abs(c)", VALUES, f"abs() got nil {NIL} at column 1"),
        pytest.param("max([a, c])", VALUES, f"max() got nil {NIL} at column 1"),
        pytest.param(
            "!(a > 1 ? nil : true) ? 1 : 0", VALUES, f"operator '!' got nil {NIL} at column 1"
        ),
        pytest.param(
            "(a > 1 ? nil : true) ? 1 : 0",
            VALUES,
            f"the condition of '?:' got nil {NIL} at column 22",
        ),
        pytest.param("10 ** 400", VALUES, "the result of '**' is too large at column 4"),
        pytest.param("1e308 * 10", VALUES, "the result of '*' is not a finite number at column 7"),
        pytest.param("(-8) ** 0.5", VALUES, "'**' is undefined for -8 and 0.5 at column 6"),
        pytest.param("0 ** -1", VALUES, "'**' is undefined for 0 and -1 at column 3"),
        pytest.param("min(filter([1], {# > 5}))", VALUES, "min() of an empty list at column 1"),
        pytest.param("sum([1e308, 1e308])", VALUES, "the result of sum() is too large at column 1"),
        pytest.param(
            "mean([1e308, 1e308])", VALUES, "the result of mean() is too large at column 1"
        ),
        pytest.param(
            "median([1e308, 1.7e308])",
            VALUES,
            "the result of median() is not a finite number at column 1",
        ),
        pytest.param(
            "a + 1", {"a": math.nan}, 'the value of trigger "a" is not finite (nan) at column 1'
        ),
        pytest.param(
            "a + 1", {"a": math.inf}, 'the value of trigger "a" is not finite (inf) at column 1'
        ),
    ],
)
def test_evaluation_error(text: str, values: dict[str, float | None], message: str) -> None:
    """Inputs that make a valid formula fail raise ScalerQueryError with this exact message."""
    assert eval_error(text, values) == f"formula: {message}"


def test_evaluation_error_names_the_field() -> None:
    """The runtime message starts with the field the formula was compiled for."""
    formula = compile_formula("a / 0", ["a"], field="spec.advanced.scalingModifiers.formula")
    with pytest.raises(ScalerQueryError, match=r"^spec\.advanced\.scalingModifiers\.formula: "):
        formula.evaluate({"a": 1.0})


# ---------------------------------------------------------------------------------------------
# Limits


def test_length_limit() -> None:
    """A formula up to MAX_LENGTH characters compiles; one character more does not."""
    assert value("1" + " " * (MAX_LENGTH - 1)) == 1
    message = compile_error("1" + " " * MAX_LENGTH)
    assert message == f"formula: formula is longer than {MAX_LENGTH} characters at column 4097"


DEEP_SHAPES = {
    "parentheses": lambda n: "(" * n + "1" + ")" * n,
    "unary-minus": lambda n: "-" * n + "1",
    "not": lambda n: "!" * n + "true ? 1 : 0",
    "power": lambda n: "1 ** " * n + "1",
    "calls": lambda n: "abs(" * n + "1" + ")" * n,
    "lists": lambda n: "max(" + "[" * n + "1" + "]" * n + ")",
    "ternary": lambda n: "a > 1 ? " * n + "1" + " : 2" * n,
    "predicates": lambda n: "count([1], {" * n + "true" + "})" * n + " > 0 ? 1 : 0",
    "alternating": lambda n: "1 + (2 * " * n + "1" + ")" * n,
}


@pytest.mark.parametrize("shape", DEEP_SHAPES)
def test_deep_nesting_is_rejected(shape: str) -> None:
    """Nesting beyond MAX_DEPTH is a clean ConfigError, never a RecursionError."""
    for n in (MAX_DEPTH + 1, 1500):
        text = DEEP_SHAPES[shape](n)
        assert len(text) <= MAX_LENGTH or n == 1500
        with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep"):
            compile_formula(text[:MAX_LENGTH] if n == 1500 else text, NAMES)


@pytest.mark.parametrize("shape", [s for s in DEEP_SHAPES if s not in ("lists", "predicates")])
def test_moderate_nesting_evaluates(shape: str) -> None:
    """Nesting well within MAX_DEPTH compiles and evaluates."""
    assert math.isfinite(value(DEEP_SHAPES[shape](MAX_DEPTH // 3)))


def test_parenthesis_depth_boundary() -> None:
    """Exactly MAX_DEPTH - 1 parentheses fit (the top level counts as one)."""
    assert value(DEEP_SHAPES["parentheses"](MAX_DEPTH - 1)) == 1
    with pytest.raises(ConfigError, match="nested more than"):
        compile_formula(DEEP_SHAPES["parentheses"](MAX_DEPTH), NAMES)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(" + ".join(["1"] * 1000), id="sum"),
        pytest.param(" * ".join(["1"] * 1000), id="product"),
        pytest.param(" ?? ".join(["c"] * 800) + " ?? 1", id="coalesce"),
        pytest.param(" && ".join(["true"] * 500) + " ? 1 : 0", id="and"),
        pytest.param(" < ".join(["1"] * 1000) + " ? 1 : 0", id="compare"),
        pytest.param("sum([" + ", ".join(["1"] * 1300) + "])", id="list"),
    ],
)
def test_long_flat_chains_are_fine(text: str) -> None:
    """Long chains at one precedence level are flat, so they are not 'deep'."""
    assert len(text) <= MAX_LENGTH
    assert math.isfinite(value(text))


def test_cost_limit() -> None:
    """Nested predicates multiply; a formula that could take too many steps is rejected."""
    items = "[" + ", ".join(["1"] * 60) + "]"
    inner = f"count({items}, {{# > 0}}) > 0"
    two = f"count({items}, {{{inner}}})"
    assert value(two) == 60  # 60 * 60 steps: fine
    three = f"count({items}, {{count({items}, {{{inner}}}) > 0}})"
    message = compile_error(three)
    assert message.startswith("formula: formula would take up to ")
    assert message.endswith(f" steps to evaluate (limit {MAX_COST}) at column 1")


def test_power_towers_do_not_burn_cpu() -> None:
    """Floats overflow instead of growing: a tower of powers fails fast at evaluation."""
    tower = " ** ".join(["9"] * (MAX_DEPTH - 2))
    assert "too large" in eval_error(tower)


# ---------------------------------------------------------------------------------------------
# Property tests


@dataclass(frozen=True)
class Leaf:
    text: str
    number: float


@dataclass(frozen=True)
class Neg:
    operand: Tree


@dataclass(frozen=True)
class Bin:
    op: str
    left: Tree
    right: Tree


@dataclass(frozen=True)
class Pow:
    base: Tree
    exponent: int


Tree = Leaf | Neg | Bin | Pow
LEAF_VALUES = {"a": 2.0, "b": 3.0, "d": -1.5}
PRECEDENCE = {"+": 30, "-": 30, "*": 60, "/": 60, "%": 60}


class UndefinedError(Exception):
    """The reference says the expression has no finite value."""


def precedence(tree: Tree) -> int:
    match tree:
        case Leaf():
            return 1000
        case Neg():
            return 90
        case Bin(op=op):
            return PRECEDENCE[op]
        case Pow():
            return 100


def render(tree: Tree) -> str:
    """The expression with only the parentheses expr-lang's precedence rules need."""

    def wrap(sub: Tree, needed: bool) -> str:
        return f"({render(sub)})" if needed else render(sub)

    match tree:
        case Leaf(text=text):
            return text
        case Neg(operand=operand):
            return "-" + wrap(operand, precedence(operand) < 90)
        case Bin(op=op, left=left, right=right):
            own = PRECEDENCE[op]
            return (
                f"{wrap(left, precedence(left) < own)} {op} {wrap(right, precedence(right) <= own)}"
            )
        case Pow(base=base, exponent=exponent):
            return f"{wrap(base, precedence(base) <= 100)} ** {exponent}"


def reference(tree: Tree) -> float:
    """The value, computed from the tree with Python floats."""
    match tree:
        case Leaf(number=number):
            result = number
        case Neg(operand=operand):
            result = -reference(operand)
        case Bin(op=op, left=left, right=right):
            x, y = reference(left), reference(right)
            if op in "/%" and y == 0:
                raise UndefinedError
            result = {
                "+": lambda: x + y,
                "-": lambda: x - y,
                "*": lambda: x * y,
                "/": lambda: x / y,
                "%": lambda: math.fmod(x, y),
            }[op]()
        case Pow(base=base, exponent=exponent):
            try:
                result = math.pow(reference(base), exponent)
            except OverflowError:
                raise UndefinedError from None
    if not math.isfinite(result):
        raise UndefinedError
    return result


leaves = st.one_of(
    st.integers(min_value=0, max_value=9).map(lambda i: Leaf(str(i), float(i))),
    st.sampled_from(sorted(LEAF_VALUES)).map(lambda n: Leaf(n, LEAF_VALUES[n])),
)
trees = st.recursive(
    leaves,
    lambda sub: st.one_of(
        sub.map(Neg),
        st.builds(Bin, st.sampled_from(sorted(PRECEDENCE)), sub, sub),
        st.builds(Pow, sub, st.integers(min_value=0, max_value=3)),
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(trees)
def test_arithmetic_matches_reference(tree: Tree) -> None:
    """Random expressions, printed with minimal parentheses, evaluate as their tree says."""
    text = render(tree)
    formula = compile_formula(text, NAMES)
    try:
        expected = reference(tree)
    except UndefinedError:
        with pytest.raises(ScalerQueryError):
            formula.evaluate(VALUES)
        return
    assert formula.evaluate(VALUES) == expected, text


def only_config_errors(text: str) -> None:
    """Compiling raises ConfigError or nothing; evaluating raises ScalerQueryError or nothing."""
    try:
        formula = compile_formula(text, NAMES)
    except ConfigError:
        return
    for values in (VALUES, {}, dict.fromkeys(NAMES, 0.0)):
        with contextlib.suppress(ScalerQueryError):
            assert isinstance(formula.evaluate(values), float)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_only_raises_config_error(text: str) -> None:
    """Any text at all compiles or is a ConfigError."""
    only_config_errors(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="abcde0129.xXeE_()[]{}#$?:!=<>&|+-*/%^ \"'\\\n", max_size=120))
def test_formula_like_text_only_raises_config_error(text: str) -> None:
    """Text made of the language's own characters compiles or is a ConfigError."""
    only_config_errors(text)


TOKENS = [
    *"abcde",
    *"0129",
    "2.5",
    "1e308",
    *"()[]{},#?:!+-*/%^<>",
    "**",
    "??",
    "==",
    "!=",
    "<=",
    "&&",
    "||",
    "not",
    "and",
    "or",
    "true",
    "false",
    "nil",
    "$env",
    '["a"]',
    "min(",
    "max(",
    "abs(",
    "round(",
    "count(",
    "sum(",
    "map(",
    "filter(",
    "len(",
    "median(",
]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_token_soup_only_raises_config_error(text: str) -> None:
    """Random token sequences compile or are a ConfigError; evaluation only ScalerQueryError."""
    only_config_errors(text)


@settings(deadline=None)
@given(st.sampled_from(sorted(DEEP_SHAPES)), st.integers(min_value=MAX_DEPTH, max_value=2000))
def test_deep_nesting_property(shape: str, depth: int) -> None:
    """At any depth past the limit, every nesting shape is a clean ConfigError."""
    with pytest.raises(ConfigError):
        compile_formula(DEEP_SHAPES[shape](depth)[:MAX_LENGTH], NAMES)


# ---------------------------------------------------------------------------------------------
# validate_scaling_modifiers

SM = "spec.advanced.scalingModifiers"


def test_scaling_modifiers_defaults() -> None:
    """formula and target are enough; activationTarget is 0 and metricType AverageValue."""
    sm = validate_scaling_modifiers({"formula": "(a + b) / 2", "target": "2"}, ["a", "b"])
    assert isinstance(sm, ScalingModifiers)
    assert sm.target == 2.0
    assert sm.activation_target == 0.0
    assert sm.metric_type is MetricType.AVERAGE_VALUE
    assert sm.formula.names == {"a", "b"}
    assert sm.formula.evaluate({"a": 1.0, "b": 2.0}) == 1.5


def test_scaling_modifiers_all_fields() -> None:
    """Every field is read; unnamed triggers are allowed but cannot be referenced."""
    raw = {"formula": "a", "target": 5, "activationTarget": "1.5", "metricType": "Value"}
    sm = validate_scaling_modifiers(raw, ["a", None, ""])
    assert (sm.target, sm.activation_target, sm.metric_type) == (5.0, 1.5, MetricType.VALUE)


def test_scaling_modifiers_negative_activation_target() -> None:
    """activationTarget may be negative (metrics such as Prometheus values can be)."""
    sm = validate_scaling_modifiers(
        {"formula": "a", "target": "0.5", "activationTarget": -3}, ["a"]
    )
    assert sm.activation_target == -3.0


@pytest.mark.parametrize(
    ("raw", "names", "message"),
    [
        pytest.param(
            {},
            ["a"],
            f"{SM}.formula: required; {SM}.target: required when formula is set",
            id="empty",
        ),
        pytest.param({"formula": "a"}, ["a"], f"{SM}.target: required when formula is set"),
        pytest.param(
            {"formula": "a", "target": ""}, ["a"], f"{SM}.target: required when formula is set"
        ),
        pytest.param({"target": "2"}, ["a"], f"{SM}.formula: required"),
        pytest.param({"formula": 5, "target": "1"}, ["a"], f"{SM}.formula: must be a string"),
        pytest.param(
            {"formula": "a", "target": "0"}, ["a"], f'{SM}.target: must be greater than 0, got "0"'
        ),
        pytest.param(
            {"formula": "a", "target": -1}, ["a"], f"{SM}.target: must be greater than 0, got -1"
        ),
        pytest.param(
            {"formula": "a", "target": "abc"}, ["a"], f'{SM}.target: must be a number, got "abc"'
        ),
        pytest.param(
            {"formula": "a", "target": "nan"}, ["a"], f'{SM}.target: must be a number, got "nan"'
        ),
        pytest.param(
            {"formula": "a", "target": True}, ["a"], f"{SM}.target: must be a number, got True"
        ),
        pytest.param(
            {"formula": "a", "target": "1", "activationTarget": "x"},
            ["a"],
            f'{SM}.activationTarget: must be a number, got "x"',
        ),
        pytest.param(
            {"formula": "a", "target": "1", "metricType": "Utilization"},
            ["a"],
            f"{SM}.metricType: Utilization is only for cpu and memory triggers; "
            "use AverageValue or Value",
        ),
        pytest.param(
            {"formula": "a", "target": "1", "metricType": "Bogus"},
            ["a"],
            f'{SM}.metricType: must be AverageValue or Value, got "Bogus"',
        ),
        pytest.param(
            {"formula": "a + c", "target": "1"},
            ["a", "b"],
            f'{SM}.formula: unknown trigger name "c" at column 5 (known: "a", "b")',
            id="unknown-name",
        ),
        pytest.param(
            {"formula": "a + b", "target": "1"},
            ["a", None],
            f'{SM}.formula: unknown trigger name "b" at column 5 (known: "a")',
            id="unnamed-trigger",
        ),
        pytest.param(
            {"formula": "a", "target": "1"},
            ["a", "b", "a"],
            'spec.triggers[2].name: duplicate trigger name "a" (also spec.triggers[0].name)',
            id="duplicate-names",
        ),
        pytest.param(
            {"formula": "a +", "target": "0", "metricType": "Bogus"},
            ["a"],
            f"{SM}.formula: unexpected end of formula at column 4; "
            f'{SM}.target: must be greater than 0, got "0"; '
            f'{SM}.metricType: must be AverageValue or Value, got "Bogus"',
            id="all-errors-collected",
        ),
    ],
)
def test_scaling_modifiers_errors(
    raw: dict[str, object], names: list[str | None], message: str
) -> None:
    """Every webhook rule fails with a message naming its field; all of them are collected."""
    with pytest.raises(ConfigError) as info:
        validate_scaling_modifiers(raw, names)
    assert str(info.value) == message
