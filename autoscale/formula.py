"""`advanced.scalingModifiers`: the formula language and the webhook rules around it; no I/O.

KEDA evaluates `scalingModifiers.formula` with expr-lang. This module implements the numeric part
of that language that formulas use, with its own tokenizer, a precedence-climbing parser, a static
type check and a tree-walking evaluator. It never calls eval/exec/compile.

Language (expr-lang's precedence and associativity, loosest first):

    ==== ============================= ==========================================================
    prec operators                      notes
    ==== ============================= ==========================================================
       - `c ? a : b`                    right-assoc; a whole expression (top level, parentheses,
                                        arguments, branches), never an operand of a binary operator
      10 `||` `or`                      left, short-circuit
      15 `&&` `and`                     left, short-circuit
      20 `==` `!=` `<` `<=` `>` `>=`    chained: `a < b <= c` means `a < b && b <= c`
      30 `+` `-`                        left
      50 prefix `!` `not`               operand binds `* / % ** ??`: `!a == b` is `(!a) == b`
      60 `*` `/` `%`                    left
      90 prefix `-` `+`                 operand binds `** ??`: `-2 ** 2` is `-(2 ** 2)` = -4
     100 `**` `^`                       right: `2 ** 3 ** 2` = 2 ** 9
     500 `??`                           left; `a + b ?? 0` is `a + (b ?? 0)`, and, as in expr,
                                        `a ?? 0 + b` is an error: parenthesize `(a ?? 0) + b`
    ==== ============================= ==========================================================

Operands: numbers (`12`, `1.5`, `.5`, `1e3`, `1_000`, `0x1f`, `0o17`, `0b101`), `true`, `false`,
`nil`, trigger names (identifiers of letters, digits, `_`, `$`; a name that is not an identifier,
such as `kafka-lag`, is written `$env["kafka-lag"]`), list literals `[a, b, 1]`, `#` (the element
inside a predicate), comments `// ...` and `/* ... */`. Functions: abs ceil floor round (half away
from zero) int (truncates) float; min max mean median over numbers and lists; sum(list[, pred]),
len(list); count all any none one filter map (list, pred), where pred is `{# > 1}` or `# > 1`.

Decisions, where expr leaves room or where we differ on purpose:

- All numbers are float64 (trigger values are); `7 / 2` is 3.5 and `%` is the truncated remainder
  (sign of the dividend, like Go) on any numbers, where expr only allows it on integers.
- Types are checked when compiling, as expr does: booleans are never numbers (`true + 1`,
  `a && b` on numbers, a numeric ternary condition, and a formula producing a boolean are all
  ConfigErrors). Both sides of `??`/`?:` must agree, except that `nil` fits anywhere.
- A trigger with no value (missing from the mapping, or None: it failed, and fallback behavior is
  `scalingModifiers`) is `nil`. `nil ?? x` is x, `nil == nil` is true, `nil == 1` is false; any
  other operation on nil fails the evaluation. So does a non-finite input value.
- Division and remainder by zero, overflow and other non-finite results (`(-8) ** 0.5`) fail the
  evaluation, where expr would produce ±Inf/NaN that the HPA then clamps: a formula dividing by a
  value that can be zero should say what it means (`b == 0 ? 0 : a / b`).
- Evaluation errors raise ScalerQueryError (the source answered, the formula cannot scale on it);
  compile errors raise ConfigError naming the column. Unlike KEDA's webhook, we do not dry-run the
  formula with dummy values: a formula valid for some inputs is accepted.
- Bounded resources: at most MAX_LENGTH characters, MAX_DEPTH levels of nesting and MAX_COST node
  evaluations (predicates multiply their body by the list length), all checked when compiling,
  so no formula can exhaust the stack or the CPU. Floats make `2 ** 2 ** ...` overflow, not grow.
- Not supported: strings (outside `$env[...]`), maps, member access, ranges, `in`/`matches`,
  `let`, the pipe `|`, `?.`, `?:` shorthand, and the date and string functions.
"""

from __future__ import annotations

import enum
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from autoscale.errors import ConfigError, ScalerQueryError
from autoscale.scalers.base import MetricType

__all__ = [
    "MAX_COST",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Formula",
    "ScalingModifiers",
    "compile_formula",
    "validate_scaling_modifiers",
]

MAX_LENGTH = 4096  # characters
MAX_DEPTH = 64  # parser nesting levels (parentheses, operands, branches, arguments)
MAX_COST = 100_000  # upper bound on node evaluations per evaluate()

_FIELD = "spec.advanced.scalingModifiers"

# ---------------------------------------------------------------------------------------------
# Tokens

_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+"
    r"|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?"
)
_NAME = re.compile(r"(?:[^\W\d]|\$)[\w$]*")
_WORD = re.compile(r"[\w$.]*")
_OPERATORS = ("**", "==", "!=", "<=", ">=", "&&", "||", "??", *"+-*/%^<>!?:()[]{},.#")
_KEYWORDS = frozenset({"and", "or", "not"})


class _Kind(enum.Enum):
    NUMBER = enum.auto()
    NAME = enum.auto()
    STRING = enum.auto()
    OP = enum.auto()
    END = enum.auto()


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str  # as written; the unescaped value for STRING
    pos: int
    number: float = 0.0


class _Error(Exception):
    """A compile or evaluation error at an offset; the public functions add field and column."""

    def __init__(self, message: str, pos: int, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos
        self.detail = detail  # goes after the location: " (known: ...)"

    def render(self, field: str, text: str) -> str:
        return f"{field}: {self.message} at {_location(text, self.pos)}{self.detail}"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise _Error("unterminated comment", i)
            i = end + 2
        elif "0" <= ch <= "9" or (ch == "." and "0" <= text[i + 1 : i + 2] <= "9"):
            number = _NUMBER.match(text, i)
            end = number.end() if number else i
            if end == i or (end < n and (text[end].isalnum() or text[end] in "_$")):
                bad = _WORD.match(text, i)
                shown = bad.group() if bad and bad.group() else ch
                raise _Error(f"invalid number {shown[:40]!r}", i)
            tokens.append(_Token(_Kind.NUMBER, text[i:end], i, _parse_number(text[i:end], i)))
            i = end
        elif ch in "\"'":
            value, end = _string(text, i)
            tokens.append(_Token(_Kind.STRING, value, i))
            i = end
        elif name := _NAME.match(text, i):
            kind = _Kind.OP if name.group() in _KEYWORDS else _Kind.NAME
            tokens.append(_Token(kind, name.group(), i))
            i = name.end()
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                raise _Error(f"unexpected character {ch!r}", i)
            tokens.append(_Token(_Kind.OP, op, i))
            i += len(op)
    tokens.append(_Token(_Kind.END, "", n))
    return tokens


def _parse_number(word: str, pos: int) -> float:
    digits = word.replace("_", "")
    try:
        prefixed = digits[:2].lower() in ("0x", "0o", "0b")
        value = float(int(digits, 0)) if prefixed else float(digits)
    except (ValueError, OverflowError):
        raise _Error(f"invalid number {word[:40]!r}", pos) from None
    if not math.isfinite(value):
        raise _Error(f"number {word[:40]!r} is out of range", pos)
    return value


def _string(text: str, start: int) -> tuple[str, int]:
    """A quoted string: a backslash escapes the next character."""
    quote, chars, i = text[start], list[str](), start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            return "".join(chars), i + 1
        if ch == "\\" and i + 1 < len(text):
            i += 1
            ch = text[i]
        chars.append(ch)
        i += 1
    raise _Error("unterminated string", start)


# ---------------------------------------------------------------------------------------------
# Syntax tree: positions are offsets into the formula, for messages.


@dataclass(frozen=True, slots=True)
class _Const:
    value: float | bool | None


@dataclass(frozen=True, slots=True)
class _Name:
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class _Elem:
    """`#`: the current element inside a predicate."""


@dataclass(frozen=True, slots=True)
class _Unary:
    op: str
    operand: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _Power:
    op: str
    base: _Node
    exponent: _Node
    pos: int


class _Level(enum.Enum):
    OR = 10
    AND = 15
    COMPARE = 20
    ADD = 30
    MULTIPLY = 60
    COALESCE = 500


@dataclass(frozen=True, slots=True)
class _Chain:
    """`first op x op y ...` at one precedence level: flat, so long sums stay shallow."""

    level: _Level
    first: _Node
    rest: tuple[tuple[str, int, _Node], ...]  # (operator, position, operand)


@dataclass(frozen=True, slots=True)
class _Cond:
    cond: _Node
    then: _Node
    other: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _List:
    items: tuple[_Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class _Pred:
    body: _Node
    pos: int


@dataclass(frozen=True, slots=True)
class _Call:
    func: str
    args: tuple[_Node, ...]
    pos: int


_Node: TypeAlias = _Const | _Name | _Elem | _Unary | _Power | _Chain | _Cond | _List | _Pred | _Call

_BINARY = {
    "||": _Level.OR,
    "or": _Level.OR,
    "&&": _Level.AND,
    "and": _Level.AND,
    **dict.fromkeys(("==", "!=", "<", "<=", ">", ">="), _Level.COMPARE),
    "+": _Level.ADD,
    "-": _Level.ADD,
    "*": _Level.MULTIPLY,
    "/": _Level.MULTIPLY,
    "%": _Level.MULTIPLY,
    "??": _Level.COALESCE,
}
_POWER = 100
_UNARY = {"!": 50, "not": 50, "-": 90, "+": 90}
_CONSTANTS: dict[str, float | bool | None] = {"true": True, "false": False, "nil": None}

# name -> (minimum arguments, maximum arguments or None, index of the predicate argument or None)
_FUNCTIONS: dict[str, tuple[int, int | None, int | None]] = {
    **dict.fromkeys(("abs", "ceil", "floor", "round", "int", "float", "len"), (1, 1, None)),
    **dict.fromkeys(("min", "max", "mean", "median"), (1, None, None)),
    "sum": (1, 2, 1),
    **dict.fromkeys(("count", "all", "any", "none", "one", "filter", "map"), (2, 2, 1)),
}


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0
        self.predicates = 0  # how many predicates enclose the current token

    def parse(self) -> _Node:
        node = self.expression()
        self.expect_end()
        return node

    # helpers

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def at(self, op: str) -> bool:
        token = self.peek()
        return token.kind is _Kind.OP and token.text == op

    def expect(self, op: str) -> None:
        if not self.at(op):
            raise self.unexpected()
        self.advance()

    def expect_end(self) -> None:
        if self.peek().kind is not _Kind.END:
            raise self.unexpected()

    def unexpected(self) -> _Error:
        token = self.peek()
        if token.kind is _Kind.END:
            return _Error("unexpected end of formula", token.pos)
        shown = f'"{token.text[:40]}"' if token.kind is _Kind.STRING else repr(token.text[:40])
        return _Error(f"unexpected token {shown}", token.pos)

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Error(f"formula is nested more than {MAX_DEPTH} levels deep", self.peek().pos)

    def binary_level(self) -> _Level | None:
        token = self.peek()
        return _BINARY.get(token.text) if token.kind is _Kind.OP else None

    # grammar

    def expression(self) -> _Node:
        """A binary expression, optionally followed by `? then : else`."""
        node = self.binary(0)
        if self.at("?"):
            token = self.advance()
            self.enter()
            then = self.expression()
            self.expect(":")
            other = self.expression()
            self.depth -= 1
            node = _Cond(node, then, other, token.pos)
        return node

    def binary(self, min_prec: int) -> _Node:
        """Operators binding at least as tightly as `min_prec` (precedence climbing)."""
        self.enter()
        left = self.unary()
        while True:
            if self.power_follows(min_prec):  # right-associative
                token = self.advance()
                left = _Power(token.text, left, self.binary(_POWER), token.pos)
                continue
            level = self.binary_level()
            if level is None or level.value < min_prec:
                break
            rest = []
            while self.binary_level() is level:  # left-associative: one flat chain
                op = self.advance()
                rest.append((op.text, op.pos, self.binary(level.value + 1)))
            left = _Chain(level, left, tuple(rest))
            mixed = self.binary_level()
            if level is _Level.COALESCE and (
                self.power_follows(min_prec) or (mixed is not None and mixed.value >= min_prec)
            ):  # as expr does: `a ?? b + c` is refused, not guessed
                after = self.peek()
                message = f"operator {after.text!r} cannot follow '??' without parentheses"
                raise _Error(message, after.pos)
        self.depth -= 1
        return left

    def power_follows(self, min_prec: int) -> bool:
        token = self.peek()
        return token.kind is _Kind.OP and token.text in ("**", "^") and min_prec <= _POWER

    def unary(self) -> _Node:
        token = self.peek()
        if token.kind is _Kind.OP and token.text in _UNARY:
            self.advance()
            return _Unary(token.text, self.binary(_UNARY[token.text]), token.pos)
        return self.primary()

    def primary(self) -> _Node:
        token = self.peek()
        if token.kind is _Kind.NUMBER:
            self.advance()
            return _Const(token.number)
        if token.kind is _Kind.NAME:
            self.advance()
            if token.text in _CONSTANTS:
                return _Const(_CONSTANTS[token.text])
            if token.text == "$env":
                return self.env(token)
            if self.at("("):
                return self.call(token)
            return _Name(token.text, token.pos)
        if self.at("("):
            self.advance()
            node = self.expression()
            self.expect(")")
            return node
        if self.at("["):
            self.advance()
            return _List(self.arguments("]"), token.pos)
        if self.at("#"):
            if not self.predicates:
                raise _Error("'#' can only be used inside a predicate such as {# > 1}", token.pos)
            self.advance()
            return _Elem()
        raise self.unexpected()

    def env(self, token: _Token) -> _Node:
        """`$env["name"]` or `$env.name`: how expr reaches names that are not identifiers."""
        if self.at("."):
            self.advance()
            name = self.peek()
            if name.kind not in (_Kind.NAME, _Kind.OP) or not _NAME.fullmatch(name.text):
                raise self.unexpected()
            self.advance()
            return _Name(name.text, token.pos)
        self.expect("[")
        name = self.peek()
        if name.kind is not _Kind.STRING:
            raise self.unexpected()
        self.advance()
        self.expect("]")
        return _Name(name.text, token.pos)

    def call(self, token: _Token) -> _Node:
        if token.text not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise _Error(f'unknown function "{token.text[:40]}"', token.pos, f" (known: {known})")
        self.expect("(")
        predicate_at = _FUNCTIONS[token.text][2]
        return _Call(token.text, self.arguments(")", predicate_at), token.pos)

    def arguments(self, close: str, predicate_at: int | None = None) -> tuple[_Node, ...]:
        """Comma-separated expressions up to `close` (a trailing comma is allowed)."""
        args: list[_Node] = []
        while not self.at(close):
            if args:
                self.expect(",")
                if self.at(close):
                    break
            if len(args) == predicate_at:
                args.append(self.predicate())
            else:
                args.append(self.expression())
        self.advance()
        return tuple(args)

    def predicate(self) -> _Node:
        token = self.peek()
        self.predicates += 1
        if self.at("{"):
            self.advance()
            body = self.expression()
            self.expect("}")
        else:
            body = self.expression()
        self.predicates -= 1
        return _Pred(body, token.pos)


# ---------------------------------------------------------------------------------------------
# Static check: types, names, cost.


class _Type(enum.Enum):
    NUMBER = "a number"
    BOOL = "a boolean"
    NIL = "nil"
    LIST = "a list"


@dataclass(frozen=True, slots=True)
class _Info:
    type: _Type
    cost: int  # upper bound on node evaluations
    length: int = 0  # upper bound on the length, for lists


_NEEDS = {_Type.NUMBER: "numbers", _Type.BOOL: "booleans"}


class _Checker:
    def __init__(self, known: frozenset[str]) -> None:
        self.known = known
        self.names: set[str] = set()

    def check(self, node: _Node) -> _Info:
        match node:
            case _Const(value=value):
                if value is None:
                    return _Info(_Type.NIL, 1)
                return _Info(_Type.BOOL if isinstance(value, bool) else _Type.NUMBER, 1)
            case _Name(name=name, pos=pos):
                if name not in self.known:
                    raise _Error(f'unknown trigger name "{name[:40]}"', pos, _known(self.known))
                self.names.add(name)
                return _Info(_Type.NUMBER, 1)
            case _Elem():
                return _Info(_Type.NUMBER, 1)
            case _Unary(op=op, operand=operand, pos=pos):
                wanted = _Type.NUMBER if op in ("-", "+") else _Type.BOOL
                info = self.operand(operand, wanted, f"operator {op!r}", pos)
                return _Info(wanted, info.cost + 1)
            case _Power(op=op, base=base, exponent=exponent, pos=pos):
                cost = self.operand(base, _Type.NUMBER, f"operator {op!r}", pos).cost
                cost += self.operand(exponent, _Type.NUMBER, f"operator {op!r}", pos).cost
                return _Info(_Type.NUMBER, cost + 1)
            case _Chain():
                return self.chain(node)
            case _Cond(cond=cond, then=then, other=other, pos=pos):
                cost = self.operand(cond, _Type.BOOL, "the condition of '?:'", pos).cost
                left, right = self.check(then), self.check(other)
                kind = _unify(left.type, right.type, "the branches of '?:'", pos)
                cost += left.cost + right.cost + 1
                return _Info(kind, cost, max(left.length, right.length))
            case _List(items=items, pos=pos):
                infos = [self.operand(item, _Type.NUMBER, "a list element", pos) for item in items]
                return _Info(_Type.LIST, 1 + sum(i.cost for i in infos), len(items))
            case _Pred(body=body):  # only reached through call(), which checks the body itself
                return self.check(body)
            case _Call():
                return self.call(node)

    def operand(self, node: _Node, wanted: _Type, what: str, pos: int) -> _Info:
        """Check `node` and require its type to be `wanted` (nil is not a number statically)."""
        info = self.check(node)
        if info.type is not wanted:
            if what.startswith("operator"):
                raise _Error(f"{what} needs {_NEEDS[wanted]}, got {info.type.value}", pos)
            raise _Error(f"{what} must be {wanted.value}, got {info.type.value}", pos)
        return info

    def chain(self, node: _Chain) -> _Info:
        level = node.level
        info = self.check(node.first)
        kind, cost = info.type, info.cost + 1
        for op, pos, operand in node.rest:
            if level is _Level.COALESCE:
                right = self.check(operand)
                kind = _unify(kind, right.type, "the operands of '??'", pos)
                cost += right.cost
                continue
            if level is _Level.COMPARE and op in ("==", "!="):
                right = self.check(operand)
                if _Type.LIST in (kind, right.type) or (
                    _Type.NIL not in (kind, right.type) and kind is not right.type
                ):
                    raise _Error(
                        f"operator {op!r} cannot compare {kind.value} with {right.type.value}", pos
                    )
                kind, cost = right.type, cost + right.cost
                continue
            wanted = _Type.BOOL if level in (_Level.AND, _Level.OR) else _Type.NUMBER
            if kind is not wanted:
                raise _Error(f"operator {op!r} needs {_NEEDS[wanted]}, got {kind.value}", pos)
            cost += self.operand(operand, wanted, f"operator {op!r}", pos).cost
            kind = wanted
        if level is _Level.COMPARE:
            kind = _Type.BOOL
        return _Info(kind, cost)

    def call(self, node: _Call) -> _Info:
        func, args, pos = node.func, node.args, node.pos
        lowest, highest, predicate_at = _FUNCTIONS[func]
        if len(args) < lowest or (highest is not None and len(args) > highest):
            if highest is None:
                takes = f"at least {lowest} argument"
            elif lowest == highest:
                takes = f"{lowest} argument{'' if lowest == 1 else 's'}"
            else:
                takes = f"{lowest} or {highest} arguments"
            raise _Error(f"{func}() takes {takes}, got {len(args)}", pos)
        if predicate_at is None:
            allowed: tuple[_Type, ...] = (_Type.LIST,) if func == "len" else (_Type.NUMBER,)
            if highest is None:  # min, max, mean, median flatten lists
                allowed = (_Type.NUMBER, _Type.LIST)
            cost = 1
            for arg in args:
                info = self.check(arg)
                if info.type not in allowed:
                    needs = " or ".join(t.value for t in allowed)
                    raise _Error(f"{func}() needs {needs}, got {info.type.value}", pos)
                cost += info.cost
            return _Info(_Type.NUMBER, cost)
        items = self.operand(args[0], _Type.LIST, f"the first argument of {func}()", pos)
        if len(args) == 1:  # sum(list)
            return _Info(_Type.NUMBER, 1 + items.cost)
        predicate = args[1]
        assert isinstance(predicate, _Pred)
        wanted = _Type.NUMBER if func in ("sum", "map") else _Type.BOOL
        body = self.operand(predicate.body, wanted, f"the predicate of {func}()", predicate.pos)
        cost = 1 + items.cost + items.length * body.cost
        if func in ("filter", "map"):
            return _Info(_Type.LIST, cost, items.length)
        return _Info(_Type.NUMBER if func in ("sum", "count") else _Type.BOOL, cost)


def _unify(left: _Type, right: _Type, what: str, pos: int) -> _Type:
    if left is _Type.NIL:
        return right
    if right is _Type.NIL or left is right:
        return left
    raise _Error(f"{what} must have the same type, got {left.value} and {right.value}", pos)


def _known(known: frozenset[str]) -> str:
    if not known:
        return " (no trigger has a name)"
    listed = ", ".join(f'"{n}"' for n in sorted(known))
    odd = sorted(n for n in known if not _NAME.fullmatch(n))
    hint = f'; write $env["{odd[0]}"] for a name that is not an identifier' if odd else ""
    return f" (known: {listed}){hint}"


# ---------------------------------------------------------------------------------------------
# Evaluation

_Value: TypeAlias = "float | bool | tuple[_Value, ...] | None"
_Values: TypeAlias = Mapping[str, float | None]
_NIL_HINT = "(a trigger without a value is nil; substitute one with ??)"
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _evaluate(node: _Node, values: _Values, elem: _Value) -> _Value:
    match node:
        case _Const(value=value):
            return value
        case _Name(name=name, pos=pos):
            raw = values.get(name)
            if raw is None:
                return None
            value = float(raw)
            if not math.isfinite(value):
                raise _Error(f'the value of trigger "{name}" is not finite ({value})', pos)
            return value
        case _Elem():
            return elem
        case _Unary(op=op, operand=operand, pos=pos):
            inner = _evaluate(operand, values, elem)
            if op in ("!", "not"):
                return not _boolean(inner, f"operator {op!r}", pos)
            number = _number(inner, f"operator {op!r}", pos)
            return -number if op == "-" else number
        case _Power(op=op, base=base, exponent=exponent, pos=pos):
            left = _number(_evaluate(base, values, elem), f"operator {op!r}", pos)
            right = _number(_evaluate(exponent, values, elem), f"operator {op!r}", pos)
            return _arithmetic(op, left, right, pos)
        case _Chain():
            return _chain(node, values, elem)
        case _Cond(cond=cond, then=then, other=other, pos=pos):
            if _boolean(_evaluate(cond, values, elem), "the condition of '?:'", pos):
                return _evaluate(then, values, elem)
            return _evaluate(other, values, elem)
        case _List(items=items):
            return tuple(_evaluate(item, values, elem) for item in items)
        case _Pred(body=body):
            return _evaluate(body, values, elem)
        case _Call():
            return _call(node, values, elem)


def _chain(node: _Chain, values: _Values, elem: _Value) -> _Value:
    """Left to right; `??`, `&&` and `||` skip what they do not need, comparisons stop early."""
    level, acc = node.level, _evaluate(node.first, values, elem)
    for op, pos, operand in node.rest:
        what = f"operator {op!r}"
        if level is _Level.COALESCE:
            if acc is not None:
                return acc
            acc = _evaluate(operand, values, elem)
        elif level is _Level.AND or level is _Level.OR:
            if _boolean(acc, what, pos) is (level is _Level.OR):
                return acc
            acc = _boolean(_evaluate(operand, values, elem), what, pos)
        elif level is _Level.COMPARE:
            right = _evaluate(operand, values, elem)
            if op in ("==", "!="):
                holds = (acc == right) is (op == "==")
            else:
                holds = _ORDER[op](_number(acc, what, pos), _number(right, what, pos))
            if not holds:
                return False
            acc = right
        else:
            left = _number(acc, what, pos)
            right = _number(_evaluate(operand, values, elem), what, pos)
            acc = _arithmetic(op, left, right, pos)
    return True if level is _Level.COMPARE else acc


def _arithmetic(op: str, a: float, b: float, pos: int) -> float:
    try:
        if op == "+":
            result = a + b
        elif op == "-":
            result = a - b
        elif op == "*":
            result = a * b
        elif op in ("/", "%"):
            if b == 0:
                raise _Error("division by zero" if op == "/" else "remainder by zero", pos)
            result = a / b if op == "/" else math.fmod(a, b)
        else:
            result = math.pow(a, b)
    except OverflowError:
        raise _Error(f"the result of {op!r} is too large", pos) from None
    except ValueError:
        raise _Error(f"{op!r} is undefined for {a:g} and {b:g}", pos) from None
    return _finite(result, f"{op!r}", pos)


def _call(node: _Call, values: _Values, elem: _Value) -> _Value:
    func, pos, what = node.func, node.pos, f"{node.func}()"
    if _FUNCTIONS[func][2] is not None:  # a list, then a predicate
        items = _evaluate(node.args[0], values, elem)
        assert isinstance(items, tuple)  # guaranteed by the type check
        if len(node.args) == 1:  # sum(list)
            return _sum(_numbers(items, what, pos), what, pos)
        body = node.args[1]
        if func in ("sum", "map"):
            mapped = tuple(_evaluate(body, values, item) for item in items)
            return mapped if func == "map" else _sum(_numbers(mapped, what, pos), what, pos)
        kept = tuple(i for i in items if _boolean(_evaluate(body, values, i), what, pos))
        results: dict[str, _Value] = {
            "count": float(len(kept)),
            "all": len(kept) == len(items),
            "any": bool(kept),
            "none": not kept,
            "one": len(kept) == 1,
            "filter": kept,
        }
        return results[func]
    args = [_evaluate(arg, values, elem) for arg in node.args]
    if func == "len":
        assert isinstance(args[0], tuple)  # guaranteed by the type check
        return float(len(args[0]))
    numbers = _numbers(args, what, pos)
    if func in ("min", "max", "mean", "median"):
        if not numbers:
            raise _Error(f"{what} of an empty list", pos)
        if func == "min":
            return min(numbers)
        if func == "max":
            return max(numbers)
        if func == "mean":
            return _finite(_sum(numbers, what, pos) / len(numbers), what, pos)
        ordered, middle = sorted(numbers), len(numbers) // 2
        if len(ordered) % 2:
            return ordered[middle]
        return _finite((ordered[middle - 1] + ordered[middle]) / 2, what, pos)
    (x,) = numbers
    if func == "round":  # half away from zero, as Go's math.Round
        whole = float(math.trunc(x))
        return whole + math.copysign(1.0, x) if abs(x - whole) >= 0.5 else whole
    if func in ("ceil", "floor", "int"):
        return float({"ceil": math.ceil, "floor": math.floor}.get(func, math.trunc)(x))
    return abs(x) if func == "abs" else x  # abs(), float()


def _numbers(args: Iterable[_Value], what: str, pos: int) -> list[float]:
    """The numbers among `args`, with lists flattened (as expr's min/max/mean/median do)."""
    out: list[float] = []
    for arg in args:
        if isinstance(arg, tuple):
            out.extend(_numbers(arg, what, pos))
        else:
            out.append(_number(arg, what, pos))
    return out


def _sum(numbers: list[float], what: str, pos: int) -> float:
    try:
        return _finite(math.fsum(numbers), what, pos)
    except OverflowError:
        raise _Error(f"the result of {what} is too large", pos) from None


def _finite(value: float, what: str, pos: int) -> float:
    if not math.isfinite(value):
        raise _Error(f"the result of {what} is not a finite number", pos)
    return value


def _number(value: _Value, what: str, pos: int) -> float:
    if value is None:
        raise _Error(f"{what} got nil {_NIL_HINT}", pos)
    assert isinstance(value, float), value  # guaranteed by the type check
    return value


def _boolean(value: _Value, what: str, pos: int) -> bool:
    if value is None:
        raise _Error(f"{what} got nil {_NIL_HINT}", pos)
    assert isinstance(value, bool), value  # guaranteed by the type check
    return value


# ---------------------------------------------------------------------------------------------
# Public API


def _location(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return f"column {column}" if line == 1 else f"line {line}, column {column}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Formula:
    """A compiled formula; build it with compile_formula()."""

    text: str
    names: frozenset[str]  # the trigger names the formula references
    _root: _Node = field(repr=False, compare=False)
    _field: str = field(default="formula", repr=False, compare=False)

    def evaluate(self, values: Mapping[str, float | None]) -> float:
        """The formula's value; a name missing from `values`, or None, is nil.

        Raises ScalerQueryError when the inputs make the formula fail (nil where a number is
        needed, division by zero, a non-finite input or result).
        """
        try:
            result = _evaluate(self._root, values, None)
            if result is None:
                raise _Error(f"the formula produced nil {_NIL_HINT}", 0)
            assert isinstance(result, float), result  # guaranteed by the type check
            return result
        except _Error as exc:
            raise ScalerQueryError(exc.render(self._field, self.text)) from None


def compile_formula(text: str, known_names: Iterable[str], *, field: str = "formula") -> Formula:
    """Parse and type-check `text` once; every identifier must be one of `known_names`.

    Raises ConfigError whose message starts with `field` and names the column.
    """
    known = frozenset(known_names)
    try:
        if len(text) > MAX_LENGTH:
            raise _Error(f"formula is longer than {MAX_LENGTH} characters", MAX_LENGTH)
        if not text.strip():
            raise _Error("formula is empty", 0)
        root = _Parser(_tokenize(text)).parse()
        checker = _Checker(known)
        info = checker.check(root)
        if info.type is not _Type.NUMBER:
            raise _Error(f"the formula must produce a number, not {info.type.value}", 0)
        if info.cost > MAX_COST:
            raise _Error(
                f"formula would take up to {info.cost} steps to evaluate (limit {MAX_COST})", 0
            )
    except _Error as exc:
        raise ConfigError(exc.render(field, text)) from None
    return Formula(text=text, names=frozenset(checker.names), _root=root, _field=field)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingModifiers:
    """A validated `spec.advanced.scalingModifiers`."""

    formula: Formula
    target: float  # > 0
    activation_target: float = 0.0  # active when the formula's value > activation_target
    metric_type: MetricType = MetricType.AVERAGE_VALUE


def validate_scaling_modifiers(
    raw: Mapping[str, object], trigger_names: Sequence[str | None]
) -> ScalingModifiers:
    """Apply KEDA's webhook rules to a non-empty `scalingModifiers` mapping.

    `trigger_names` holds `spec.triggers[i].name` in order ("" or None when unnamed). The formula
    is required and may only reference named triggers; names must be unique; target is required
    and > 0; activationTarget defaults to 0; metricType is AverageValue (default) or Value. Every
    problem is collected into one ConfigError naming its field. KEDA ignores an empty
    `scalingModifiers: {}`; callers skip it too.
    """
    errors: list[str] = []
    seen: dict[str, int] = {}
    for index, name in enumerate(trigger_names):
        if not name:
            continue
        if name in seen:
            errors.append(
                f'spec.triggers[{index}].name: duplicate trigger name "{name}" '
                f"(also spec.triggers[{seen[name]}].name)"
            )
        else:
            seen[name] = index

    formula: Formula | None = None
    text = raw.get("formula")
    if text is None or text == "":
        errors.append(f"{_FIELD}.formula: required")
    elif not isinstance(text, str):
        errors.append(f"{_FIELD}.formula: must be a string")
    else:
        try:
            formula = compile_formula(text, seen, field=f"{_FIELD}.formula")
        except ConfigError as exc:
            errors.append(str(exc))

    target = _decimal(raw.get("target"), "target", errors, required=True)
    if target is not None and target <= 0:
        errors.append(f"{_FIELD}.target: must be greater than 0, got {_shown(raw['target'])}")
    activation = _decimal(raw.get("activationTarget"), "activationTarget", errors)

    metric_type = MetricType.AVERAGE_VALUE
    kind = raw.get("metricType")
    if kind not in (None, ""):
        if kind == "Utilization":
            errors.append(
                f"{_FIELD}.metricType: Utilization is only for cpu and memory triggers; "
                "use AverageValue or Value"
            )
        elif kind in ("AverageValue", "Value"):
            metric_type = MetricType(kind)
        else:
            errors.append(f"{_FIELD}.metricType: must be AverageValue or Value, got {_shown(kind)}")

    if errors:
        raise ConfigError("; ".join(errors))
    assert formula is not None
    assert target is not None
    return ScalingModifiers(
        formula=formula,
        target=target,
        activation_target=activation or 0.0,
        metric_type=metric_type,
    )


def _decimal(raw: object, key: str, errors: list[str], *, required: bool = False) -> float | None:
    """A quantity written as a string ("2.5", as in the CRD) or as a YAML number."""
    if raw is None or raw == "":
        if required:
            errors.append(f"{_FIELD}.{key}: required when formula is set")
        return None
    value: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value):
        errors.append(f"{_FIELD}.{key}: must be a number, got {_shown(raw)}")
        return None
    return value


def _shown(raw: object) -> str:
    return f'"{raw}"' if isinstance(raw, str) else repr(raw)
