"""Column helpers the kinds compute with, and the guards they share.

Rows arrive as a pandas DataFrame typed by the node's validation (numbers as float64 or
nullable Int64, categories as text). Nothing here raises on a row's value: a value a
transformation cannot take becomes missing, so the outcome a researcher sees never depends
on one row through an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from protocol.errors import QueryError
from stats.design import Term, design_variables
from stats.plans import ModelView

#: float rounding must not push an effective sample size of exactly k below k
_ESS_SLACK = 1e-9


def numeric(rows: pd.DataFrame, variable: str) -> np.ndarray:
    return pd.to_numeric(rows[variable], errors="coerce").to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)


def level_codes(rows: pd.DataFrame, variable: str, levels: Sequence[str]) -> np.ndarray:
    """Index of each row's level in the model's levels; -1 for missing or unknown."""
    return pd.Categorical(rows[variable].astype("string"), categories=list(levels)).codes


def present(rows: pd.DataFrame, variables: Sequence[str]) -> np.ndarray:
    mask = np.ones(len(rows), dtype=bool)
    for variable in variables:
        mask &= rows[variable].notna().to_numpy()
    return mask


def binary(rows: pd.DataFrame, variable: str, level: str | None) -> np.ndarray:
    """1.0 / 0.0 per row for a binary variable (a 0/1 numeric one, or a categorical one
    against ``level``), NaN where missing or (numeric) neither 0 nor 1."""
    if level is None:
        values = numeric(rows, variable)
        values[(values != 0) & (values != 1)] = np.nan
        return values
    text = rows[variable].astype("string")
    out = (text == level).to_numpy(dtype=np.float64, na_value=np.nan)
    out[text.isna().to_numpy()] = np.nan
    return out


TRANSFORMS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt}


def _column(term: Term, rows: pd.DataFrame) -> np.ndarray:
    if "const" in term:
        return np.ones(len(rows))
    if "product" in term:
        out = np.ones(len(rows))
        for factor in term["product"]:
            out = out * _column(factor, rows)
        return out
    if "level" in term:
        return (rows[term["var"]].astype("string") == term["level"]).to_numpy(
            dtype=np.float64, na_value=0.0)
    values = numeric(rows, term["var"])
    transform = term.get("transform")
    if transform is not None:
        with np.errstate(all="ignore"):
            values = TRANSFORMS[transform](values)
        values[~np.isfinite(values)] = np.nan  # log(0), sqrt(-1), exp(1000): missing
    return values


def design(terms: Sequence[Term], rows: pd.DataFrame, extra: Sequence[str] = ()
           ) -> tuple[np.ndarray, np.ndarray]:
    """The model matrix over complete cases (every variable of the design and ``extra``
    present, every transformed value defined), and the complete-case mask over ``rows``.
    Column-major, so that the Gram products read each column contiguously."""
    mask = present(rows, design_variables(terms) + list(extra))
    complete = rows if mask.all() else rows[mask]
    matrix = np.empty((len(complete), len(terms)), dtype=np.float64, order="F")
    for i, term in enumerate(terms):
        matrix[:, i] = _column(term, complete)
    defined = ~np.isnan(matrix).any(axis=1)
    if not defined.all():
        matrix = np.asfortranarray(matrix[defined])
        mask[np.flatnonzero(mask)[~defined]] = False
    return matrix, mask


def categorical_of(term: Term, model: ModelView) -> list[str]:
    """The categorical variables an indicator-bearing term reads (none for numeric terms)."""
    if "level" in term:
        return [term["var"]]
    if "product" in term:
        return [v for f in term["product"] for v in categorical_of(f, model)]
    return []


#: the most cell indicator columns a design may need for its disclosure check
MAX_CELL_COLUMNS = 1024


def _cell_sets(terms: Sequence[Term], model: ModelView) -> list[tuple[str, ...]]:
    sets: list[tuple[str, ...]] = []
    for term in terms:
        variables = tuple(dict.fromkeys(categorical_of(term, model)))
        if variables and variables not in sets:
            sets.append(variables)
    return sets


def cell_count(terms: Sequence[Term], model: ModelView) -> int:
    """How many cell columns :func:`cell_columns` builds: checked at planning, before rows."""
    total = 0
    for variables in _cell_sets(terms, model):
        size = 1
        for variable in variables:
            size *= len(model.levels(variable))
        total += size
    if total > MAX_CELL_COLUMNS:
        raise QueryError(f"the design's categorical terms define {total} cells; at most "
                         f"{MAX_CELL_COLUMNS} can be checked for small cells")
    return total


def cell_columns(terms: Sequence[Term], rows: pd.DataFrame, model: ModelView,
                 extra: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Indicator columns of every cell a design's indicator terms determine: for each set of
    categorical variables a term multiplies, one column per combination of *all* their
    levels, reference levels included (the intercept row of a Gram matrix minus the other
    levels' rows is the reference level's cell). ``extra`` adds columns as they are (the
    outcome's two classes in a logistic model)."""
    columns: list[np.ndarray] = list(extra)
    for variables in _cell_sets(terms, model):
        flat = np.zeros(len(rows), dtype=np.int64)
        size = 1
        for variable in variables:
            levels = model.levels(variable)
            codes = level_codes(rows, variable, levels).astype(np.int64)
            flat = np.where(codes < 0, -1, np.where(flat < 0, -1, flat * len(levels) + codes))
            size *= len(levels)
        for cell in range(size):
            columns.append((flat == cell).astype(np.float64))
    if not columns:
        return np.zeros((len(rows), 0))
    return np.column_stack(columns)


def gram(matrix: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """X'X (or X'WX) through BLAS's symmetric rank-k update: half the work of X.T @ X."""
    from scipy.linalg.blas import dsyrk

    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        return np.zeros((matrix.shape[1], matrix.shape[1]))
    scaled = matrix if weights is None else matrix * np.sqrt(weights)[:, None]
    upper = dsyrk(1.0, np.asfortranarray(scaled), trans=1)
    return np.triu(upper) + np.triu(upper, 1).T


def smallest_positive(values: np.ndarray) -> float:
    """The smallest positive entry (0 when there is none): a guard is checked only where a
    sum has terms at all."""
    positive = values[values > 0]
    return float(positive.min()) if positive.size else 0.0


def nonzero_counts(matrix: np.ndarray) -> np.ndarray:
    """For every pair of columns, the rows where both are non-zero (the diagonal: where one
    is): the number of terms that really enter each entry of X'X."""
    return gram((matrix != 0).astype(np.float64))


def weighted_ess(support: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per pair of columns of ``support`` (0/1: where a term is non-zero), the effective
    sample size (sum w)^2 / sum w^2 of ``weights`` over the rows where both are non-zero.
    It equals the number of those rows when the weights are equal, and falls towards 1 as
    one row's weight dominates."""
    w = np.abs(weights)
    first = gram(support, w)
    second = gram(support, w * w)
    with np.errstate(divide="ignore", invalid="ignore"):
        ess = np.where(second > 0, first * first / second, 0.0)
    return ess * (1 + _ESS_SLACK)


def ess(weights: np.ndarray) -> float:
    """(sum |w|)^2 / sum w^2: how many rows the weights are effectively spread over."""
    w = np.abs(weights)
    second = float(w @ w)
    return float(w.sum()) ** 2 / second * (1 + _ESS_SLACK) if second > 0 else 0.0


def fold_numbers(rows: pd.DataFrame | pd.Index, folds: int, seed: int) -> np.ndarray:
    """A fixed fold for each row from its position in the node's data (splitmix64)."""
    index = rows.index if isinstance(rows, pd.DataFrame) else rows
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) + np.uint64(seed & (2**64 - 1))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(folds)).astype(np.int64)
