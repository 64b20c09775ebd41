"""Row filters: a small whitelisted expression tree, parsed without ``eval``.

A filter arrives from a researcher, so it is untrusted text or JSON. It is parsed by a
hand-written tokenizer and recursive-descent parser (or from the MIP's jQuery QueryBuilder
JSON) into frozen dataclasses that can only name variables, compare them with literals and
combine the results; nothing is ever executed. Inputs are bounded in length, nesting depth
and size. The tree has one canonical plain-JSON form, used on the wire and for hashing.

Evaluation follows SQL's three-valued logic, as the MIP's databases do: a comparison with a
missing value is *unknown*, ``not unknown`` is still unknown, and a row is kept only when
the whole filter is *true*. So missing values never match a comparison, not even ``!=`` or
``not (age > 60)``; only ``is null`` selects them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from protocol.errors import QueryError
from stats.datamodel import DataModel, Variable
from stats.suggest import did_you_mean

__all__ = [
    "And",
    "Comparison",
    "Filter",
    "FilterSyntaxError",
    "IsNull",
    "Membership",
    "Not",
    "Or",
    "from_json",
    "parse_expression",
    "parse_querybuilder",
]

Scalar = int | float | str
CompareOp = Literal["==", "!=", "<", "<=", ">", ">="]
COMPARE_OPS: tuple[CompareOp, ...] = ("==", "!=", "<", "<=", ">", ">=")
ORDERING_OPS = frozenset({"<", "<=", ">", ">="})

MAX_EXPRESSION_CHARS = 4096
MAX_DEPTH = 32
MAX_NODES = 1024
MAX_VALUES = 1024
MAX_STRING_CHARS = 1024
MAX_INT = 2**63


class FilterSyntaxError(QueryError):
    """A filter expression could not be parsed; ``position`` is the 0-based character offset."""

    code = "filter_syntax"

    def __init__(self, message: str, position: int | None = None) -> None:
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"invalid filter{where}: {message}")
        self.position = position


# --- the tree ---------------------------------------------------------------------------


class Filter(ABC):
    """Base of every filter node. Subclasses are frozen dataclasses."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    def children(self) -> tuple[Filter, ...]:
        return ()

    def variables(self) -> frozenset[str]:
        """Every variable the filter names (what a node must check it may reveal)."""
        own = getattr(self, "variable", None)
        names = {own} if isinstance(own, str) else set()
        for child in self.children():
            names |= child.variables()
        return frozenset(names)

    def canonical(self) -> bytes:
        """The canonical JSON bytes: sorted keys, no spaces, UTF-8."""
        text = json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
            allow_nan=False,
        )
        return text.encode("utf-8")

    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`canonical`."""
        return hashlib.sha256(self.canonical()).hexdigest()

    def check(self, model: DataModel) -> None:
        """Raise :class:`QueryError` unless every variable exists and every value fits it.

        Numbers go with numeric variables, codes (text) with categorical ones and must be
        among the variable's enumerations; ordering (``<``, ``between``) applies to numeric
        variables only; free-text variables take text values with ``==``/``!=``/``in``.
        """
        for child in self.children():
            child.check(model)


@dataclass(frozen=True)
class Comparison(Filter):
    variable: str
    op: CompareOp
    value: Scalar

    def __post_init__(self) -> None:
        _check_name(self.variable)
        if self.op not in COMPARE_OPS:
            raise QueryError(f"unknown comparison operator {self.op!r}")
        _check_scalar(self.value)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "var": self.variable, "value": self.value}

    def check(self, model: DataModel) -> None:
        var = model.variable(self.variable)
        if self.op in ORDERING_OPS and not var.is_numeric:
            raise QueryError(
                f"filter compares {self.variable!r} with {self.op}, "
                "but it is not a numeric variable"
            )
        _check_value(var, self.value)


@dataclass(frozen=True)
class Membership(Filter):
    """``variable in values`` (or ``not in`` when ``negated``); values are kept sorted."""

    variable: str
    values: tuple[Scalar, ...]
    negated: bool = False

    def __post_init__(self) -> None:
        _check_name(self.variable)
        if not isinstance(self.values, tuple | list) or not self.values:
            raise QueryError("'in' needs a non-empty list of values")
        if len(self.values) > MAX_VALUES:
            raise QueryError(f"'in' lists more than {MAX_VALUES} values")
        for value in self.values:
            _check_scalar(value)
        if not isinstance(self.negated, bool):
            raise QueryError("'negated' must be true or false")
        # canonical: deduplicated and sorted, numbers before text
        unique = {_sort_key(v): v for v in self.values}
        object.__setattr__(self, "values", tuple(unique[k] for k in sorted(unique)))

    def to_json(self) -> dict[str, Any]:
        return {"op": "not in" if self.negated else "in", "var": self.variable,
                "values": list(self.values)}

    def check(self, model: DataModel) -> None:
        var = model.variable(self.variable)
        for value in self.values:
            _check_value(var, value)


@dataclass(frozen=True)
class IsNull(Filter):
    variable: str
    negated: bool = False

    def __post_init__(self) -> None:
        _check_name(self.variable)
        if not isinstance(self.negated, bool):
            raise QueryError("'negated' must be true or false")

    def to_json(self) -> dict[str, Any]:
        return {"op": "is not null" if self.negated else "is null", "var": self.variable}

    def check(self, model: DataModel) -> None:
        model.variable(self.variable)


@dataclass(frozen=True)
class And(Filter):
    """All items hold (an empty ``And`` always holds)."""

    items: tuple[Filter, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _check_items(self.items))

    def children(self) -> tuple[Filter, ...]:
        return self.items

    def to_json(self) -> dict[str, Any]:
        return {"op": "and", "items": [item.to_json() for item in self.items]}


@dataclass(frozen=True)
class Or(Filter):
    """Some item holds (an empty ``Or`` never holds)."""

    items: tuple[Filter, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _check_items(self.items))

    def children(self) -> tuple[Filter, ...]:
        return self.items

    def to_json(self) -> dict[str, Any]:
        return {"op": "or", "items": [item.to_json() for item in self.items]}


@dataclass(frozen=True)
class Not(Filter):
    item: Filter

    def __post_init__(self) -> None:
        if not isinstance(self.item, Filter):
            raise QueryError("'not' needs a filter")

    def children(self) -> tuple[Filter, ...]:
        return (self.item,)

    def to_json(self) -> dict[str, Any]:
        return {"op": "not", "item": self.item.to_json()}


# --- canonical JSON ---------------------------------------------------------------------


def from_json(obj: Any) -> Filter:
    """The tree from its JSON form (as made by ``to_json``); :class:`QueryError` if invalid."""
    tree = _from_json(obj, 0)
    _check_size(tree)
    return tree


def _from_json(obj: Any, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise QueryError(f"filter is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(obj, Mapping):
        raise QueryError("a filter node must be a JSON object")
    op = obj.get("op")
    expected: set[str]
    node: Filter
    if op in COMPARE_OPS:
        expected = {"op", "var", "value"}
        node = Comparison(_json_name(obj), cast(CompareOp, op), cast(Scalar, obj.get("value")))
    elif op in ("in", "not in"):
        expected = {"op", "var", "values"}
        values = obj.get("values")
        if not isinstance(values, list):
            raise QueryError("'values' of an 'in' filter must be a list")
        node = Membership(_json_name(obj), tuple(values), op == "not in")
    elif op in ("is null", "is not null"):
        expected = {"op", "var"}
        node = IsNull(_json_name(obj), op == "is not null")
    elif op in ("and", "or"):
        expected = {"op", "items"}
        items = obj.get("items")
        if not isinstance(items, list):
            raise QueryError(f"'items' of an '{op}' filter must be a list")
        if len(items) > MAX_NODES:
            raise QueryError(f"filter has more than {MAX_NODES} parts")
        children = tuple(_from_json(item, depth + 1) for item in items)
        node = And(children) if op == "and" else Or(children)
    elif op == "not":
        expected = {"op", "item"}
        node = Not(_from_json(obj.get("item"), depth + 1))
    else:
        raise QueryError(f"unknown filter operator {str(op)[:40]!r}")
    if set(obj) != expected:
        raise QueryError(f"filter node '{op}' must have exactly the keys {sorted(expected)}")
    return node


def _json_name(obj: Mapping[str, Any]) -> str:
    name = obj.get("var")
    if not isinstance(name, str):
        raise QueryError("a filter's 'var' must be a variable name")
    return name


# --- expression text --------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quoted>`[^`\n]{1,256}`)
  | (?P<op>==|!=|<>|<=|>=|<|>|=)
  | (?P<punct>[()\[\],+-])
    """,
    re.VERBOSE | re.ASCII,
)
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "null"})
_OP_ALIASES: dict[str, CompareOp] = {"=": "==", "<>": "!="}


@dataclass(frozen=True)
class _Token:
    kind: str  # name, keyword, number, string, op, punct, end
    text: str
    value: Any
    position: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char in "'\"":
            value, end = _read_string(text, pos)
            tokens.append(_Token("string", text[pos:end], value, pos))
            pos = end
            continue
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FilterSyntaxError(f"unexpected character {char!r}", pos)
        kind = cast(str, match.lastgroup)
        lexeme = match.group()
        if kind == "number":
            tokens.append(_Token("number", lexeme, _number(lexeme, pos), pos))
        elif kind == "name":
            lower = lexeme.lower()
            if lower in _KEYWORDS:
                tokens.append(_Token("keyword", lexeme, lower, pos))
            else:
                tokens.append(_Token("name", lexeme, lexeme, pos))
        elif kind == "quoted":
            tokens.append(_Token("name", lexeme, lexeme[1:-1], pos))
        elif kind == "op":
            tokens.append(_Token("op", lexeme, _OP_ALIASES.get(lexeme, lexeme), pos))
        elif kind == "punct":
            tokens.append(_Token("punct", lexeme, lexeme, pos))
        pos = match.end()
    tokens.append(_Token("end", "", None, len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            if pos + 1 >= len(text):
                break
            out.append(text[pos + 1])
            pos += 2
            continue
        if char == quote:
            if len(out) > MAX_STRING_CHARS:
                raise FilterSyntaxError(f"text longer than {MAX_STRING_CHARS} characters", start)
            return "".join(out), pos + 1
        out.append(char)
        pos += 1
    raise FilterSyntaxError("text is not closed by a quote", start)


def _number(lexeme: str, position: int) -> int | float:
    if re.fullmatch(r"[0-9]+", lexeme):
        if len(lexeme) > 19 or int(lexeme) > MAX_INT:
            raise FilterSyntaxError("number out of range", position)
        return int(lexeme)
    value = float(lexeme)
    if not math.isfinite(value):
        raise FilterSyntaxError("number out of range", position)
    return value


class _Parser:
    """Recursive descent over::

        expr      := conj ("or" conj)*
        conj      := neg ("and" neg)*
        neg       := "not" neg | "(" expr ")" | predicate
        predicate := NAME ( OP value | ["not"] "in" list | "is" ["not"] "null" )
        list      := ("[" | "(") value ("," value)* [","] ("]" | ")")
        value     := ["-" | "+"] NUMBER | STRING
    """

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.nodes = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def accept(self, kind: str, value: Any = None) -> _Token | None:
        token = self.current
        if token.kind == kind and (value is None or token.value == value):
            return self.advance()
        return None

    def expect(self, kind: str, value: Any, what: str) -> _Token:
        token = self.accept(kind, value)
        if token is None:
            raise self.error(f"expected {what}")
        return token

    def error(self, message: str) -> FilterSyntaxError:
        token = self.current
        found = "the end" if token.kind == "end" else repr(token.text[:40])
        return FilterSyntaxError(f"{message}, found {found}", token.position)

    def count(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.error(f"filter has more than {MAX_NODES} parts")

    def parse(self) -> Filter:
        tree = self.expr(0)
        if self.current.kind != "end":
            raise self.error("expected 'and', 'or' or the end")
        return tree

    def expr(self, depth: int) -> Filter:
        items = [self.conj(depth)]
        while self.accept("keyword", "or"):
            items.append(self.conj(depth))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conj(self, depth: int) -> Filter:
        items = [self.neg(depth)]
        while self.accept("keyword", "and"):
            items.append(self.neg(depth))
        return items[0] if len(items) == 1 else And(tuple(items))

    def neg(self, depth: int) -> Filter:
        if depth >= MAX_DEPTH:
            raise self.error(f"filter is nested more than {MAX_DEPTH} levels deep")
        self.count()
        if self.accept("keyword", "not"):
            return Not(self.neg(depth + 1))
        if self.accept("punct", "("):
            inner = self.expr(depth + 1)
            self.expect("punct", ")", "')'")
            return inner
        return self.predicate()

    def predicate(self) -> Filter:
        name = self.accept("name")
        if name is None:
            raise self.error("expected a variable name, 'not' or '('")
        variable = cast(str, name.value)
        if (op := self.accept("op")) is not None:
            return Comparison(variable, cast(CompareOp, op.value), self.value())
        if self.accept("keyword", "is"):
            negated = self.accept("keyword", "not") is not None
            self.expect("keyword", "null", "'null'")
            return IsNull(variable, negated)
        negated = self.accept("keyword", "not") is not None
        if self.accept("keyword", "in"):
            return Membership(variable, self.values(), negated)
        raise self.error(f"expected a comparison, 'in' or 'is' after {variable!r}")

    def values(self) -> tuple[Scalar, ...]:
        opener = self.current
        if not (self.accept("punct", "[") or self.accept("punct", "(")):
            raise self.error("expected '[' after 'in'")
        closer = "]" if opener.value == "[" else ")"
        values = [self.value()]
        while self.accept("punct", ","):
            if self.current.kind == "punct" and self.current.value == closer:
                break
            if len(values) >= MAX_VALUES:
                raise self.error(f"'in' lists more than {MAX_VALUES} values")
            values.append(self.value())
        self.expect("punct", closer, f"{closer!r}")
        return tuple(values)

    def value(self) -> Scalar:
        if (token := self.accept("string")) is not None:
            return cast(str, token.value)
        sign = 1
        if self.accept("punct", "-"):
            sign = -1
        elif self.accept("punct", "+"):
            sign = 1
        if (token := self.accept("number")) is not None:
            return sign * cast(int | float, token.value)
        raise self.error("expected a number or a quoted text")


def parse_expression(text: str) -> Filter:
    """Parse e.g. ``"age > 60 and sex == 'F'"``; :class:`FilterSyntaxError` with a position.

    Grammar: variable names (``[A-Za-z_][A-Za-z0-9_]*``, or any name in backticks),
    numbers, single- or double-quoted text (backslash escapes the next character),
    ``== != < <= > >=`` (also ``=`` and ``<>``), ``in [..]`` / ``not in [..]``,
    ``is null`` / ``is not null``, ``and``, ``or``, ``not`` and parentheses. Keywords are
    case-insensitive; ``and`` binds tighter than ``or``. At most 4096 characters and 32
    levels of nesting.
    """
    if not isinstance(text, str):
        raise FilterSyntaxError("a filter expression must be text")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise FilterSyntaxError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    if not text.strip():
        raise FilterSyntaxError("the expression is empty", 0)
    return _Parser(_tokenize(text)).parse()


# --- jQuery QueryBuilder (the MIP's format) -----------------------------------------------

_QB_COMPARE: dict[str, CompareOp] = {
    "equal": "==",
    "not_equal": "!=",
    "less": "<",
    "less_or_equal": "<=",
    "greater": ">",
    "greater_or_equal": ">=",
}
_QB_NUMERIC_TYPES = frozenset({"integer", "double", "number"})


def parse_querybuilder(obj: Any) -> Filter:
    """Parse the MIP's jQuery QueryBuilder JSON (``{"condition", "rules"}``, nested).

    Rules name their variable by ``id`` (the MIP) or ``field``; operators are equal,
    not_equal, less, less_or_equal, greater, greater_or_equal, between, not_between, in,
    not_in, is_null, is_not_null. ``between`` is inclusive, as in SQL. A numeric-looking
    text value of a rule whose ``type`` is integer/double is read as a number. An empty
    top-level group means no filtering (an empty ``And``).
    """
    tree = _qb_group(obj, 0)
    _check_size(tree)
    return tree


def _qb_group(obj: Any, depth: int) -> Filter:
    if depth > MAX_DEPTH:
        raise QueryError(f"filter is nested more than {MAX_DEPTH} levels deep")
    if not isinstance(obj, Mapping):
        raise QueryError("a QueryBuilder group must be a JSON object")
    condition = obj.get("condition", "AND")
    if not isinstance(condition, str) or condition.upper() not in ("AND", "OR"):
        raise QueryError("a QueryBuilder condition must be AND or OR")
    rules = obj.get("rules")
    if not isinstance(rules, list):
        raise QueryError("a QueryBuilder group needs a list of 'rules'")
    if len(rules) > MAX_NODES:
        raise QueryError(f"filter has more than {MAX_NODES} parts")
    items: list[Filter] = []
    for rule in rules:
        if isinstance(rule, Mapping) and "rules" in rule:
            items.append(_qb_group(rule, depth + 1))
        else:
            items.append(_qb_rule(rule))
    group: Filter = And(tuple(items)) if condition.upper() == "AND" else Or(tuple(items))
    return Not(group) if obj.get("not") is True else group


def _qb_rule(rule: Any) -> Filter:
    if not isinstance(rule, Mapping):
        raise QueryError("a QueryBuilder rule must be a JSON object")
    variable = rule.get("id", rule.get("field"))
    if "field" in rule and "id" in rule and rule["field"] != rule["id"]:
        raise QueryError("a QueryBuilder rule names two different variables (id and field)")
    if not isinstance(variable, str):
        raise QueryError("a QueryBuilder rule needs the variable name in 'id'")
    operator = rule.get("operator")
    numeric = rule.get("type") in _QB_NUMERIC_TYPES
    value = rule.get("value")
    if operator in _QB_COMPARE:
        return Comparison(variable, _QB_COMPARE[operator], _qb_value(value, numeric))
    if operator in ("between", "not_between"):
        if not isinstance(value, list) or len(value) != 2:
            raise QueryError(f"'{operator}' on {variable!r} needs a list of two values")
        low, high = (_qb_value(v, numeric) for v in value)
        inside = And((Comparison(variable, ">=", low), Comparison(variable, "<=", high)))
        return inside if operator == "between" else Not(inside)
    if operator in ("in", "not_in"):
        values = value if isinstance(value, list) else [value]
        return Membership(variable, tuple(_qb_value(v, numeric) for v in values),
                          operator == "not_in")
    if operator in ("is_null", "is_not_null"):
        return IsNull(variable, operator == "is_not_null")
    raise QueryError(f"unknown QueryBuilder operator {str(operator)[:40]!r}")


def _qb_value(value: Any, numeric: bool) -> Scalar:
    if numeric and isinstance(value, str):
        try:
            text = value.strip()
            number = _number(text, 0) if re.fullmatch(r"[0-9]+", text) else float(text)
        except (ValueError, QueryError) as exc:
            raise QueryError(f"{value[:40]!r} is not a number") from exc
        return number
    _check_scalar(value)
    return cast(Scalar, value)


# --- checks -----------------------------------------------------------------------------

_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise QueryError("a filter names a variable with an invalid name")


def _check_scalar(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise QueryError("filter values must be numbers or text")
    if isinstance(value, float) and not math.isfinite(value):
        raise QueryError("filter numbers must be finite")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise QueryError("filter number out of range")
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        raise QueryError(f"filter text longer than {MAX_STRING_CHARS} characters")


def _check_items(items: Any) -> tuple[Filter, ...]:
    if not isinstance(items, tuple | list):
        raise QueryError("'and'/'or' need a list of filters")
    if len(items) > MAX_NODES:
        raise QueryError(f"filter has more than {MAX_NODES} parts")
    for item in items:
        if not isinstance(item, Filter):
            raise QueryError("'and'/'or' items must be filters")
    return tuple(items)


def _check_size(tree: Filter) -> None:
    count = 0
    stack = [tree]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise QueryError(f"filter has more than {MAX_NODES} parts")
        stack.extend(node.children())


def _check_value(var: Variable, value: Scalar) -> None:
    if var.is_categorical:
        code = value if isinstance(value, str) else _number_code(value)
        if isinstance(value, str) or var.sql_type != "text":
            if code in var.enumerations:
                return
        shown = ", ".join(repr(c) for c in var.enumerations[:8])
        more = ", ..." if len(var.enumerations) > 8 else ""
        raise QueryError(
            f"filter value {str(value)[:40]!r} is not a code of {var.code!r} ({shown}{more})"
            + did_you_mean(value, var.enumerations)
        )
    if var.is_numeric:
        if isinstance(value, str):
            raise QueryError(f"filter compares numeric variable {var.code!r} with text")
        return
    if not isinstance(value, str):
        raise QueryError(f"filter compares text variable {var.code!r} with a number")


def _number_code(value: int | float) -> str:
    if isinstance(value, int) or (value.is_integer() and abs(value) < 2**53):
        return str(int(value))
    return repr(float(value))


def _sort_key(value: Scalar) -> tuple[int, float, str]:
    if isinstance(value, str):
        return (1, 0.0, value)
    return (0, float(value), "")
