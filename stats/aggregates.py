"""Statistics as aggregate queries over a node's rows: what each kind computes, declared once.

Every statistic kind is a handful of COUNTs and SUMs over the query's rows, grouped by
datasets, levels, bins, folds or the nearest centre. A kind declares them here, as plain
data (:class:`Aggregation`), and the node runs them where its rows live: evaluated on a
pandas DataFrame (:mod:`stats.kinds.evaluate`) or compiled to one SQL statement per
aggregation (``node/sql``), in DuckDB or the hospital's own database. The two follow the
semantics below operation by operation, so they compute the same integers:

* Row values are IEEE doubles. A variable is *missing* where the row has no value (NULL in
  SQL, NaN in numpy); arithmetic on a missing value is missing. Each operation is one IEEE
  operation in the order the tree gives (no fused multiply-add, no reassociation), so both
  evaluators produce the same double for every row. ``log``, ``exp`` and ``sqrt`` are the
  C library's (SQL engines call it; the pandas evaluator calls it through :mod:`math`), and
  are missing where they are undefined or not finite.
* A condition is true, false or unknown (SQL's three-valued logic): a comparison with a
  missing value is unknown, and only true counts.
* A key gives each row a small integer (a level's index, a bin, a fold, a centre); rows
  are grouped by all keys together and every measure is computed per group.
* :class:`ExactSum` is the exact integer sum of ``round(value * scale)`` over the group's
  rows (half to even, missing values left out): the fixed-point encoding is applied to each
  term, then integers are added, so the result does not depend on the order of summation,
  on how rows are grouped, or on the engine. :class:`FloatSum` is an ordinary float sum,
  used only for the bounds a node plans with and for the effective sample sizes of weighted
  sums (a ratio compared with a threshold, never released).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

#: the largest x whose exp(x) is a finite double (exp of the next double overflows)
EXP_LIMIT = 709.782712893384

# --- row expressions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    """A numeric variable's value (missing where the row has none)."""

    name: str


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Arith:
    op: Literal["+", "-", "*", "/"]
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Func:
    """``log`` (of x > 0), ``exp`` (of x <= EXP_LIMIT), ``sqrt`` (of x >= 0), ``abs``;
    missing elsewhere."""

    name: Literal["log", "exp", "sqrt", "abs"]
    arg: Expr


@dataclass(frozen=True)
class Indicator:
    """1.0 where the condition is true, else 0.0 (never missing)."""

    cond: Cond


@dataclass(frozen=True)
class Binary:
    """A 0/1 variable: a numeric one (values other than 0 and 1 are missing) or a
    categorical one against ``level`` (1.0 on it, 0.0 on another level, missing where the
    variable is)."""

    name: str
    level: str | None


@dataclass(frozen=True)
class IfElse:
    """``then`` where the condition is true, else ``other``."""

    cond: Cond
    then: Expr
    other: Expr


@dataclass(frozen=True)
class Smallest:
    """The smallest of several expressions (none of them missing)."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Ref:
    """A column the aggregation derived (see :attr:`Aggregation.derived`)."""

    name: str


Expr = Var | Const | Arith | Func | Indicator | Binary | IfElse | Smallest | Ref

# --- conditions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Present:
    """The variable (numeric or categorical) has a value."""

    name: str


@dataclass(frozen=True)
class Defined:
    """The expression is not missing."""

    expr: Expr


@dataclass(frozen=True)
class Compare:
    op: Literal["=", "<>", "<", "<=", ">", ">="]
    left: Expr
    right: Expr


@dataclass(frozen=True)
class IsLevel:
    """A categorical variable's code is ``level`` (unknown where it is missing)."""

    name: str
    level: str


@dataclass(frozen=True)
class All:
    items: tuple[Cond, ...]


@dataclass(frozen=True)
class Any_:
    items: tuple[Cond, ...]


Cond = Present | Defined | Compare | IsLevel | All | Any_

# --- group keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelKey:
    """Index of the row's code among ``levels``; -1 where missing or not among them."""

    name: str
    levels: tuple[str, ...]


@dataclass(frozen=True)
class BinKey:
    """numpy.histogram's bin of the value: [e_i, e_i+1) each, the last one closed; -1 where
    missing, -2 outside [e_0, e_n]."""

    expr: Expr
    edges: tuple[float, ...]


@dataclass(frozen=True)
class IntervalKey:
    """How many grid points lie strictly below the value (numpy.searchsorted, side left):
    interval j holds (grid[j-1], grid[j]]. The value is never missing (see ``where``)."""

    expr: Expr
    grid: tuple[float, ...]


@dataclass(frozen=True)
class FoldKey:
    """A fixed fold from the row's position in the node's data: splitmix64(position +
    seed) mod folds."""

    folds: int
    seed: int


@dataclass(frozen=True)
class FlagKey:
    """1 where the condition is true, else 0."""

    cond: Cond


@dataclass(frozen=True)
class ArgMinKey:
    """Index of the smallest expression (the first on ties); none is missing."""

    items: tuple[Expr, ...]


Key = LevelKey | BinKey | IntervalKey | FoldKey | FlagKey | ArgMinKey


def key_range(key: Key) -> tuple[int, int]:
    """The smallest and largest value a key takes."""
    if isinstance(key, LevelKey):
        return -1, len(key.levels) - 1
    if isinstance(key, BinKey):
        return -2, len(key.edges) - 2
    if isinstance(key, IntervalKey):
        return 0, len(key.grid)
    if isinstance(key, FoldKey):
        return 0, key.folds - 1
    if isinstance(key, FlagKey):
        return 0, 1
    return 0, len(key.items) - 1


# --- measures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """The group's rows."""


@dataclass(frozen=True)
class CountIf:
    """The group's rows where the condition is true."""

    cond: Cond


@dataclass(frozen=True)
class ExactSum:
    """sum of round(expr * scale), half to even, as an exact integer; missing terms are
    left out. ``scale`` is a power of two in exact mode (the fixed point), and in units of
    a slot's row bound in DP mode."""

    expr: Expr
    scale: float


@dataclass(frozen=True)
class FloatSum:
    """A float sum (bounds and effective sample sizes only); missing terms are left out."""

    expr: Expr


Measure = Rows | CountIf | ExactSum | FloatSum


@dataclass(frozen=True)
class Aggregation:
    """Measures per group of the query's selected rows that satisfy ``where``.

    ``derived`` names expressions computed once per row (in SQL, an inner SELECT), which
    the keys, measures and ``where`` may read through :class:`Ref`; later ones may read
    earlier ones.
    """

    measures: tuple[Measure, ...]
    keys: tuple[Key, ...] = ()
    where: Cond | None = None
    derived: tuple[tuple[str, Expr], ...] = ()


#: per group (its key values), the measures in order: ints for counts and exact sums,
#: floats for float sums. Only groups with rows appear.
Result = dict[tuple[int, ...], tuple[int | float, ...]]


@dataclass(frozen=True)
class Statistic:
    """What a kind computes: aggregations over the query's rows, and how their results
    become the kind's values and guards (:class:`stats.kinds.base.Computed`)."""

    aggregations: tuple[Aggregation, ...]
    assemble: Callable[[Sequence[Result]], object]
    #: variables the aggregations read (the node checks it has them)
    variables: frozenset[str] = field(default_factory=frozenset)


# --- helpers kinds build with -------------------------------------------------------------


def add(*items: Expr) -> Expr:
    """items[0] + items[1] + ..., left to right."""
    out = items[0]
    for item in items[1:]:
        out = Arith("+", out, item)
    return out


def mul(*items: Expr) -> Expr:
    """items[0] * items[1] * ..., left to right."""
    out = items[0]
    for item in items[1:]:
        out = Arith("*", out, item)
    return out


def dot(columns: Sequence[Expr], coefficients: Sequence[float]) -> Expr:
    """sum_i columns[i] * coefficients[i], left to right (the linear predictor)."""
    return add(*(Arith("*", c, Const(float(b))) for c, b in zip(columns, coefficients,
                                                                   strict=True)))


def nonzero(expr: Expr) -> Cond:
    return Compare("<>", expr, Const(0.0))


def parts_of(node: object) -> Iterator[object]:
    """The node and every node within it."""
    stack: list[object] = [node]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, tuple):
            stack.extend(item)
        elif hasattr(item, "__dataclass_fields__"):
            stack.extend(getattr(item, name) for name in item.__dataclass_fields__)


def variables_of(node: object) -> set[str]:
    """Every variable an expression, condition, key or measure reads."""
    return {item.name for item in parts_of(node)
            if isinstance(item, Var | Present | IsLevel | LevelKey | Binary)}


def refs_of(node: object) -> set[str]:
    """Every derived column an expression, condition, key or measure reads."""
    return {item.name for item in parts_of(node) if isinstance(item, Ref)}


def group_sum(results: Result, measure: int,
              where: Callable[[tuple[int, ...]], bool] | None = None) -> int | float:
    """One measure summed over the groups whose key values satisfy ``where`` (all by
    default): exact for counts and exact sums."""
    total: int | float = 0
    for key, values in results.items():
        if where is None or where(key):
            total += values[measure]
    return total


def split(results: Result, position: int) -> Mapping[int, Result]:
    """The groups by the value of one key."""
    out: dict[int, Result] = {}
    for key, values in results.items():
        out.setdefault(key[position], {})[key] = values
    return out
