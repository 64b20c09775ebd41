"""Running a kind's aggregations (:mod:`stats.aggregates`) on a pandas DataFrame: the
node's in-memory path, for rows handed over as DataFrames.

It follows the semantics of :mod:`stats.aggregates` operation by operation, so that it
computes the same integers as the SQL the node compiles from the same declaration: every
row value is one IEEE double operation after another in the tree's order; ``log`` and
``exp`` come from the C library (through :mod:`math`, as SQL engines call it, since
numpy's own vectorised versions differ in the last bit on a few values in a hundred); an
exact sum adds the rounded terms as integers, split into 32-bit limbs so that numpy adds
them without loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from stats.aggregates import (
    EXP_LIMIT,
    Aggregation,
    All,
    Any_,
    ArgMinKey,
    Arith,
    Binary,
    BinKey,
    Compare,
    Cond,
    Const,
    CountIf,
    Defined,
    ExactSum,
    Expr,
    FlagKey,
    FloatSum,
    FoldKey,
    Func,
    IfElse,
    Indicator,
    IntervalKey,
    IsLevel,
    Key,
    LevelKey,
    Measure,
    Present,
    Ref,
    Result,
    Rows,
    Smallest,
    Statistic,
    Var,
    key_range,
)
from stats.kinds.frame import fold_numbers

#: (low, high) a variable's values are clipped to before any use (DP mode)
Clipping = Mapping[str, tuple[float, float]]

_TWO32 = float(1 << 32)
_TWO64 = float(1 << 64)
#: a column whose rows' magnitudes add up below this sums exactly in one int64
_ONE_LIMB = float(1 << 62)
#: the most rows two limbs sum exactly (low limbs lie below 2^32)
_TWO_LIMB_ROWS = 1 << 31
_LIBM = {"log": np.frompyfunc(math.log, 1, 1), "exp": np.frompyfunc(math.exp, 1, 1)}
_COMPARE = {"=": np.equal, "<>": np.not_equal, "<": np.less, "<=": np.less_equal,
            ">": np.greater, ">=": np.greater_equal}


def run(statistic: Statistic, rows: pd.DataFrame, clip: Clipping | None = None) -> Any:
    """The statistic's value on these rows (the kind's ``Computed``)."""
    return statistic.assemble([aggregate(a, rows, clip or {}) for a in statistic.aggregations])


def aggregate(aggregation: Aggregation, rows: pd.DataFrame, clip: Clipping) -> Result:
    """One aggregation's groups. Measures are computed and reduced one at a time, so the
    working memory is a few columns of the rows, whatever the number of measures."""
    frame = _Frame(rows, clip)
    with np.errstate(all="ignore"):
        for name, expr in aggregation.derived:
            frame.refs[name] = frame.expr(expr)
        keep = (np.ones(len(rows), dtype=bool) if aggregation.where is None
                else frame.cond(aggregation.where))
        kept = int(keep.sum())
        if kept == 0:
            return {}
        groups, order, starts = _groups(aggregation.keys,
                                         [frame.key(k)[keep] for k in aggregation.keys])
        reduced: list[tuple[bool, list[np.ndarray]]] = []
        for measure in aggregation.measures:
            parts = _measure(frame, measure, keep)
            reduced.append((parts[0].dtype == np.float64,
                            [_reduce(part, order, starts) for part in parts]))
            del parts
    out: Result = {}
    for g, group in enumerate(groups):
        out[group] = tuple(float(sums[0][g]) if is_float else _join([s[g] for s in sums])
                           for is_float, sums in reduced)
    return out


def _groups(keys: Sequence[Key], codes: list[np.ndarray]
            ) -> tuple[list[tuple[int, ...]], np.ndarray | None, np.ndarray]:
    """The groups present (their key values), and how to reduce a column by group: the
    rows' order sorted by group and where each group starts (None: one group, all rows)."""
    if not keys:
        return [()], None, np.zeros(1, dtype=np.int64)
    flat = np.zeros(len(codes[0]), dtype=np.int64)
    sizes = []
    for key, code in zip(keys, codes, strict=True):
        low, high = key_range(key)
        size = high - low + 1
        flat = flat * size + (code.astype(np.int64) - low)
        sizes.append((low, size))
    present, inverse = np.unique(flat, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(len(present)))
    groups = []
    for value in present.tolist():
        group = []
        for low, size in reversed(sizes):
            group.append(value % size + low)
            value //= size
        groups.append(tuple(reversed(group)))
    return groups, order, starts


def _reduce(column: np.ndarray, order: np.ndarray | None, starts: np.ndarray) -> np.ndarray:
    """Per group, the column's sum (exact for int64 columns: limbs and counts)."""
    if order is None:
        return np.array([column.sum()], dtype=column.dtype)
    return np.add.reduceat(column[order], starts)


class _Frame:
    """Row values of one DataFrame, computed once each."""

    def __init__(self, rows: pd.DataFrame, clip: Clipping) -> None:
        self.rows = rows
        self.clip = clip
        self.refs: dict[str, np.ndarray] = {}
        self._values: dict[str, np.ndarray] = {}
        self._text: dict[str, pd.Series] = {}

    @property
    def size(self) -> int:
        return len(self.rows)

    def value(self, name: str) -> np.ndarray:
        if name not in self._values:
            if name in self.rows.columns:
                values = pd.to_numeric(self.rows[name], errors="coerce").to_numpy(
                    dtype=np.float64, na_value=np.nan)
            else:
                values = np.full(self.size, np.nan)
            if name in self.clip:
                low, high = self.clip[name]
                values = np.minimum(np.maximum(values, low), high)  # NaN stays NaN
            self._values[name] = values
        return self._values[name]

    def text(self, name: str) -> pd.Series:
        if name not in self._text:
            column = self.rows[name] if name in self.rows.columns else pd.Series(
                pd.NA, index=self.rows.index, dtype="string")
            self._text[name] = column.astype("string")
        return self._text[name]

    def present(self, name: str) -> np.ndarray:
        if name not in self.rows.columns:
            return np.zeros(self.size, dtype=bool)
        return self.rows[name].notna().to_numpy(dtype=bool)

    def expr(self, node: Expr) -> np.ndarray:
        if isinstance(node, Var):
            return self.value(node.name)
        if isinstance(node, Const):
            return np.full(self.size, float(node.value))
        if isinstance(node, Ref):
            return self.refs[node.name]
        if isinstance(node, Arith):
            left, right = self.expr(node.left), self.expr(node.right)
            if node.op == "+":
                return left + right
            if node.op == "-":
                return left - right
            if node.op == "*":
                return left * right
            return left / right
        if isinstance(node, Func):
            return _func(node.name, self.expr(node.arg))
        if isinstance(node, Indicator):
            return self.cond(node.cond).astype(np.float64)
        if isinstance(node, Binary):
            return self.binary(node.name, node.level)
        if isinstance(node, IfElse):
            return np.where(self.cond(node.cond), self.expr(node.then), self.expr(node.other))
        if isinstance(node, Smallest):
            return np.minimum.reduce([self.expr(item) for item in node.items])
        raise TypeError(f"unknown expression {type(node).__name__}")

    def binary(self, name: str, level: str | None) -> np.ndarray:
        if level is None:
            values = self.value(name).copy()
            values[(values != 0) & (values != 1)] = np.nan
            return values
        text = self.text(name)
        out = (text == level).to_numpy(dtype=np.float64, na_value=np.nan)
        out[text.isna().to_numpy()] = np.nan
        return out

    def cond(self, node: Cond) -> np.ndarray:
        """Where the condition is true (unknown and false alike are not)."""
        if isinstance(node, Present):
            return self.present(node.name)
        if isinstance(node, Defined):
            return ~np.isnan(self.expr(node.expr))
        if isinstance(node, Compare):
            left, right = self.expr(node.left), self.expr(node.right)
            known = ~np.isnan(left) & ~np.isnan(right)
            return known & _COMPARE[node.op](left, right)
        if isinstance(node, IsLevel):
            return (self.text(node.name) == node.level).to_numpy(dtype=bool, na_value=False)
        if isinstance(node, All):
            out = np.ones(self.size, dtype=bool)
            for item in node.items:
                out &= self.cond(item)
            return out
        if isinstance(node, Any_):
            out = np.zeros(self.size, dtype=bool)
            for item in node.items:
                out |= self.cond(item)
            return out
        raise TypeError(f"unknown condition {type(node).__name__}")

    def key(self, node: Key) -> np.ndarray:
        if isinstance(node, LevelKey):
            return pd.Categorical(self.text(node.name), categories=list(node.levels)
                                  ).codes.astype(np.int64)
        if isinstance(node, BinKey):
            values = self.expr(node.expr)
            edges = np.asarray(node.edges, dtype=np.float64)
            codes = np.searchsorted(edges, values, side="right").astype(np.int64) - 1
            codes[values == edges[-1]] = len(edges) - 2
            codes[(values < edges[0]) | (values > edges[-1])] = -2
            codes[np.isnan(values)] = -1
            return codes
        if isinstance(node, IntervalKey):
            grid = np.asarray(node.grid, dtype=np.float64)
            return np.searchsorted(grid, self.expr(node.expr), side="left").astype(np.int64)
        if isinstance(node, FoldKey):
            return fold_numbers(self.rows.index, node.folds, node.seed)
        if isinstance(node, FlagKey):
            return self.cond(node.cond).astype(np.int64)
        if isinstance(node, ArgMinKey):
            return np.argmin(np.column_stack([self.expr(i) for i in node.items]), axis=1)
        raise TypeError(f"unknown key {type(node).__name__}")


def _func(name: str, x: np.ndarray) -> np.ndarray:
    if name == "abs":
        return np.abs(x)
    if name == "sqrt":
        return np.where(x >= 0, np.sqrt(x), np.nan)
    ok = (x > 0) if name == "log" else (x <= EXP_LIMIT)
    out = np.full(len(x), np.nan)
    if ok.any():
        out[ok] = _LIBM[name](x[ok]).astype(np.float64)
    return out


def _measure(frame: _Frame, measure: Measure, keep: np.ndarray) -> list[np.ndarray]:
    """A measure's per-row columns over the kept rows (several for an exact sum: limbs)."""
    if isinstance(measure, Rows):
        return [np.ones(int(keep.sum()), dtype=np.int64)]
    if isinstance(measure, CountIf):
        return [frame.cond(measure.cond)[keep].astype(np.int64)]
    if isinstance(measure, FloatSum):
        values = frame.expr(measure.expr)[keep]
        return [np.where(np.isnan(values), 0.0, values)]
    if isinstance(measure, ExactSum):
        return limbs(frame.expr(measure.expr)[keep] * measure.scale)
    raise TypeError(f"unknown measure {type(measure).__name__}")


def limbs(scaled: np.ndarray) -> list[np.ndarray]:
    """round(scaled), half to even, as int64 limbs (limb k weighs 2^(32 k)) whose column
    sums are exact: one limb where no sum of the column's magnitudes can reach 2^62 (the
    rounded doubles are integers below it, converted exactly); two where every value lies
    below 2^62 (and rows below 2^31); else three (lo + mid 2^32 + hi 2^64). There the
    magnitude is split (each part is the high or low bits of a double,
    so every split is exact in binary floating point; splitting a negative value directly
    would not be: -2 + 2^64 is not a double) and the sign applied to each limb, which lies
    in (-2^32, 2^32). Missing terms (NaN) count 0. Non-finite terms cannot be summed."""
    rounded = np.rint(np.where(np.isnan(scaled), 0.0, scaled))
    if not np.isfinite(rounded).all():
        raise ArithmeticError("an exact sum met a value that is not finite")
    magnitude = np.abs(rounded)
    top = float(magnitude.max()) if len(magnitude) else 0.0
    if top * len(magnitude) < _ONE_LIMB:
        return [rounded.astype(np.int64)]
    if top < _ONE_LIMB and len(magnitude) < _TWO_LIMB_ROWS:
        # rounded = high 2^32 + low, 0 <= low < 2^32: every step exact (a power of two
        # scales, floor of an integer-valued double, a difference that is an integer below
        # 2^32); each limb's column sum stays below 2^63
        high = np.floor(rounded / _TWO32)
        return [(rounded - high * _TWO32).astype(np.int64), high.astype(np.int64)]
    sign = np.where(rounded < 0, -1, 1).astype(np.int64)
    high = np.floor(magnitude / _TWO64)
    rest = magnitude - high * _TWO64
    middle = np.floor(rest / _TWO32)
    low = rest - middle * _TWO32
    return [sign * low.astype(np.int64), sign * middle.astype(np.int64),
            sign * high.astype(np.int64)]


def _join(parts: Sequence[Any]) -> int:
    return sum(int(part) << (32 * k) for k, part in enumerate(parts))
