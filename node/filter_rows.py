"""Evaluating a researcher's filter (:mod:`stats.filters`) on a node's rows in pandas, with
SQL's three-valued logic (the DuckDB store compiles the same tree to SQL:
:mod:`node.sql.compile`)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from node.validation import as_codes, as_numbers, missing_mask
from protocol.errors import QueryError
from stats.filters import (
    And,
    CompareOp,
    Comparison,
    Filter,
    IsNull,
    Membership,
    Not,
    Or,
    Scalar,
)


def evaluate(tree: Filter, df: pd.DataFrame) -> pd.Series:
    """The rows the filter keeps, as a boolean Series on ``df``'s index (vectorised).

    A variable the frame lacks counts as missing in every row. Works on raw (text) and on
    :func:`node.validation.coerce`-d frames: numbers are compared numerically, text as
    category codes.
    """
    true, _ = _truth(tree, df)
    return pd.Series(true, index=df.index, dtype=bool)


def _truth(tree: Filter, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(rows where the filter is true, rows where it is false); the rest are unknown."""
    n = len(df)
    if isinstance(tree, And | Or):
        parts = [_truth(item, df) for item in tree.items]
        trues = [p[0] for p in parts]
        falses = [p[1] for p in parts]
        if isinstance(tree, And):
            return _all(trues, n, True), _any(falses, n)
        return _any(trues, n), _all(falses, n, True)
    if isinstance(tree, Not):
        true, false = _truth(tree.item, df)
        return false, true
    if isinstance(tree, IsNull):
        present = _present(df, tree.variable)
        return (present, ~present) if tree.negated else (~present, present)
    if isinstance(tree, Comparison):
        present, hit = _compare(df, tree.variable, tree.op, tree.value)
        return present & hit, present & ~hit
    if isinstance(tree, Membership):
        present, hit = _member(df, tree.variable, tree.values)
        if tree.negated:
            hit = ~hit
        return present & hit, present & ~hit
    raise QueryError(f"unknown filter node {type(tree).__name__}")


def _all(masks: Sequence[np.ndarray], n: int, empty: bool) -> np.ndarray:
    return np.logical_and.reduce(masks) if masks else np.full(n, empty)


def _any(masks: Sequence[np.ndarray], n: int) -> np.ndarray:
    return np.logical_or.reduce(masks) if masks else np.zeros(n, dtype=bool)


def _column(df: pd.DataFrame, variable: str) -> pd.Series | None:
    if variable not in df.columns:
        return None
    column = df[variable]
    if isinstance(column, pd.DataFrame):
        raise QueryError(f"the data has more than one column {variable!r}")
    return column


def _present(df: pd.DataFrame, variable: str) -> np.ndarray:
    column = _column(df, variable)
    if column is None:
        return np.zeros(len(df), dtype=bool)
    return ~missing_mask(column)


_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def _compare(
    df: pd.DataFrame, variable: str, op: CompareOp, value: Scalar
) -> tuple[np.ndarray, np.ndarray]:
    """(rows where the comparison is known, rows where it holds)."""
    column = _column(df, variable)
    if column is None:
        return np.zeros(len(df), dtype=bool), np.zeros(len(df), dtype=bool)
    if isinstance(value, str):
        present = ~missing_mask(column)
        # missing codes become "" rather than astype(str), which pandas 2 turns into 'nan';
        # they are not present, so their result is never used
        codes = as_codes(column).to_numpy(dtype=object, na_value="")
        hit = _OPS[op](codes, value)  # ordering on text is lexicographic (check() refuses it)
        return present, np.asarray(hit, dtype=bool)
    numbers = as_numbers(column)
    with np.errstate(invalid="ignore"):
        hit = _OPS[op](numbers, float(value))
    return ~np.isnan(numbers), np.asarray(hit, dtype=bool)


def _member(
    df: pd.DataFrame, variable: str, values: tuple[Scalar, ...]
) -> tuple[np.ndarray, np.ndarray]:
    column = _column(df, variable)
    n = len(df)
    present = np.zeros(n, dtype=bool)
    hit = np.zeros(n, dtype=bool)
    if column is None:
        return present, hit
    texts = [v for v in values if isinstance(v, str)]
    numbers = [float(v) for v in values if not isinstance(v, str)]
    if texts:
        present |= ~missing_mask(column)
        hit |= as_codes(column).isin(texts).to_numpy(dtype=bool, na_value=False)
    if numbers:
        parsed = as_numbers(column)
        present |= ~np.isnan(parsed)
        hit |= np.isin(parsed, numbers)
    return present, hit
