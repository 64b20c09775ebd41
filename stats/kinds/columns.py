"""Design columns as row expressions (stats/aggregates.py), and the guards kinds compute
from grouped counts: what :mod:`stats.kinds.frame` does on a DataFrame, declared so that
any backend can run it.

The smallest count of non-zero terms of a matrix's entries (the ``NONZERO`` guard) is
computed from groups: the rows are grouped by every categorical variable the design's cells
read (and by any 0/1 column, such as a logistic model's outcome), so that each cell
indicator is constant inside a group, and per group the aggregation counts the rows where
each pair of varying columns is non-zero. Adding groups up gives every pair's count:
varying with varying, varying with a cell, a cell with a cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from stats.aggregates import (
    All,
    Arith,
    Cond,
    Const,
    CountIf,
    Defined,
    Expr,
    FoldKey,
    Func,
    Indicator,
    IsLevel,
    Key,
    LevelKey,
    Present,
    Ref,
    Result,
    Var,
    mul,
    nonzero,
)
from stats.design import Term, design_variables
from stats.kinds.frame import _ESS_SLACK, _cell_sets, smallest_positive
from stats.kinds.params import folds_of
from stats.plans import ModelView

if TYPE_CHECKING:
    from stats.query import QuerySpec


def term_expr(term: Term) -> Expr:
    """A design term's value on a row (as :func:`stats.kinds.frame.design` builds it)."""
    if "const" in term:
        return Const(1.0)
    if "product" in term:
        return mul(*(term_expr(f) for f in term["product"]))
    if "level" in term:
        return Indicator(IsLevel(term["var"], str(term["level"])))
    value: Expr = Var(term["var"])
    transform = term.get("transform")
    return Func(transform, value) if transform is not None else value


def term_columns(terms: Sequence[Term], prefix: str = "t") -> tuple[tuple[str, Expr], ...]:
    """The derived columns of a design: (name, expression) per term."""
    return tuple((f"{prefix}{i}", term_expr(t)) for i, t in enumerate(terms))


def refs(columns: Sequence[tuple[str, Expr]]) -> list[Expr]:
    return [Ref(name) for name, _ in columns]


def complete(terms: Sequence[Term], columns: Sequence[Expr], extra: Sequence[str] = ()
             ) -> list[Cond]:
    """Complete cases: every variable of the design (and ``extra``) present, every term's
    value defined (a transform can leave a present value undefined)."""
    return ([Present(v) for v in design_variables(terms) + list(extra)]
            + [Defined(c) for c in columns])


def product(left: Expr, right: Expr) -> Expr:
    return Arith("*", left, right)


@dataclass(frozen=True)
class Cells:
    """The cells of a design's categorical terms, as group keys: one key per categorical
    variable; a group's key values tell which cell of each set it is in."""

    keys: tuple[LevelKey, ...]
    #: per cell set, the positions (in ``keys``) of its variables
    sets: tuple[tuple[int, ...], ...]

    @property
    def count(self) -> int:
        return sum(int(np.prod([len(self.keys[i].levels) for i in s])) for s in self.sets)

    def indicators(self, group: tuple[int, ...], offset: int) -> np.ndarray:
        """The cell columns (0/1) of a group whose cell keys start at ``offset``."""
        out = np.zeros(self.count, dtype=np.float64)
        start = 0
        for variables in self.sets:
            size, flat = 1, 0
            for position in variables:
                code = group[offset + position]
                levels = len(self.keys[position].levels)
                flat = -1 if code < 0 or flat < 0 else flat * levels + code
                size *= levels
            if flat >= 0:
                out[start + flat] = 1.0
            start += size
        return out


def cells_of(terms: Sequence[Term], model: ModelView) -> Cells:
    sets = _cell_sets(terms, model)
    names = list(dict.fromkeys(v for s in sets for v in s))
    keys = tuple(LevelKey(v, tuple(model.levels(v))) for v in names)
    return Cells(keys, tuple(tuple(names.index(v) for v in s) for s in sets))


def group_keys(spec: QuerySpec, terms: Sequence[Term], model: ModelView
               ) -> tuple[Cells, list[Key]]:
    """A design's cells and the keys its rows are grouped by: the fold first (if the query
    has folds), then the cells' variables."""
    cells = cells_of(terms, model)
    keys: list[Key] = list(cells.keys)
    folds = folds_of(spec)
    if folds != [None]:
        keys.insert(0, FoldKey(len(folds), int(spec.parameters.get("fold_seed", 0))))
    return cells, keys


def pair_counts(columns: Sequence[Expr]) -> list[CountIf]:
    """Per pair i <= j of varying columns, the rows where both are non-zero."""
    n = len(columns)
    return [CountIf(nonzero(columns[i]) if i == j
                    else All((nonzero(columns[i]), nonzero(columns[j]))))
            for i in range(n) for j in range(i, n)]


def smallest_nonzero(groups: Result, rows: int, pairs: int, varying: int,
                     constant: Callable[[tuple[int, ...]], np.ndarray]) -> float:
    """The smallest positive count of rows where a pair of columns is non-zero, over every
    pair of the varying columns (their pair counts start at measure ``pairs``) and of the
    columns constant in each group (``constant(group)``: their 0/1 values); 0 if none."""
    if not groups:
        return 0.0
    index = [(i, j) for i in range(varying) for j in range(i, varying)]
    both = np.zeros((varying, varying))
    consts = np.array([constant(g) for g in groups], dtype=np.float64)
    sizes = np.array([v[rows] for v in groups.values()], dtype=np.float64)
    diag = np.zeros((len(groups), varying))
    for g, values in enumerate(groups.values()):
        for m, (i, j) in enumerate(index):
            both[i, j] += values[pairs + m]
            if i == j:
                diag[g, i] = values[pairs + m]
    parts = [both[np.triu_indices(varying)]]
    if consts.size and consts.shape[1]:
        parts.append((consts.T @ diag).ravel())
        parts.append(((consts * sizes[:, None]).T @ consts).ravel())
    return smallest_positive(np.concatenate(parts))


def exact(units: int, scale: float) -> Fraction:
    """An exact sum's value: its integer in units of 1/scale."""
    if float(scale).is_integer():  # exact mode's 2^48: one gcd instead of a float's conversion
        return Fraction(units, int(scale))
    return Fraction(units) / Fraction(scale)


def ess(first: float, second: float) -> float:
    """The effective sample size (sum |w|)^2 / sum w^2 from its two float sums (0 where no
    weight is non-zero): how many rows the weights are effectively spread over. It equals
    the number of rows when the weights are equal, and falls towards 1 as one row's weight
    dominates."""
    return first * first / second * (1 + _ESS_SLACK) if second > 0 else 0.0


def fold_split(results: Result, fold: int | None) -> tuple[Result, Result]:
    """The groups of one fold's rows (the fold is the first key) and of the other rows;
    without folds (``fold`` None) every group, and none."""
    if fold is None:
        return results, {}
    inside = {key: values for key, values in results.items() if key[0] == fold}
    return inside, {key: values for key, values in results.items() if key[0] != fold}
