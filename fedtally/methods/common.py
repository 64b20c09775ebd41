"""Pieces every analysis shares: privacy argument, model terms, exact linear algebra."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.design import Term, dummies, term_name
from stats.suggest import unknown

INTERCEPT: Term = {"const": 1}


def check_privacy(privacy: Any, method: str) -> dict[str, Any]:
    """For a method that gives exact answers only (for now): refuse a DP request by name."""
    if privacy is None or privacy == "exact" or privacy == {"mode": "exact"}:
        return {"mode": "exact"}
    raise QueryError(f"{method} gives exact answers only for now (privacy=None or 'exact'); "
                     "it refuses differential privacy")


def predictor_terms(x: Sequence[str], view: PlanModel, *, intercept: bool = True) -> list[Term]:
    """Intercept, then each numeric predictor as is and each categorical one as indicators
    of its levels but the first (levels from the data model, as statsmodels' treatment
    coding)."""
    terms: list[Term] = [INTERCEPT] if intercept else []
    for variable in x:
        if not view.has_variable(variable):
            raise QueryError(unknown("variable", variable, view.variable_names()))
        if view.is_numeric(variable):
            terms.append({"var": variable})
        else:
            terms.extend(dummies(variable, view))
    return terms


def names(terms: Sequence[Term]) -> list[str]:
    return [term_name(t) for t in terms]


def triangle(stat: Statistic, head: tuple[Any, ...], p: int) -> list[list[Fraction]]:
    """A symmetric p x p matrix of exact totals from the upper triangle ``(*head, i, j)``."""
    matrix = [[Fraction(0)] * p for _ in range(p)]
    for i in range(p):
        for j in range(i, p):
            matrix[i][j] = matrix[j][i] = stat.exact((*head, i, j))
    return matrix


def to_float(matrix: Sequence[Sequence[Fraction]]) -> np.ndarray:
    return np.array([[float(v) for v in row] for row in matrix], dtype=np.float64)


def exact_inverse(matrix: Sequence[Sequence[Fraction]], what: str = "the design") -> list[list[Fraction]]:
    """The exact inverse: the totals are exact, so is this. A singular matrix (collinear or
    constant columns) raises DegenerateInput.

    Fraction-free Gauss-Jordan elimination (Bareiss 1968) on the matrix scaled to integers
    by its common denominator: every intermediate entry is a minor of ``[A | I]``, so each
    division is exact and no step needs a gcd; at the end the left block is ``d I`` and the
    right block ``d A^-1``. (Gauss-Jordan over Fractions reduces every entry at every step,
    and took seconds for the Hessians of a logistic regression.)"""
    n = len(matrix)
    scale = math.lcm(*(Fraction(v).denominator for row in matrix for v in row))
    work = [[int(Fraction(v) * scale) for v in row] + [int(i == j) for j in range(n)]
            for i, row in enumerate(matrix)]
    previous = 1
    for col in range(n):
        pivot = next((r for r in range(col, n) if work[r][col] != 0), None)
        if pivot is None:
            raise DegenerateInput(f"{what} is singular: a column is constant or collinear")
        work[col], work[pivot] = work[pivot], work[col]
        top = work[col]
        lead = top[col]
        for r in range(n):
            if r == col:
                continue
            row = work[r]
            factor = row[col]
            work[r] = [(lead * a - factor * b) // previous for a, b in zip(row, top, strict=True)]
        previous = lead
    # every diagonal entry now equals the last pivot d; the right block is d A_scaled^-1,
    # and A^-1 = scale A_scaled^-1
    return [[Fraction(v * scale, previous) for v in row[n:]] for row in work]


def exact_solve(matrix: Sequence[Sequence[Fraction]], rhs: Sequence[Fraction],
                what: str = "the design") -> list[Fraction]:
    inverse = exact_inverse(matrix, what)
    return [sum((a * b for a, b in zip(row, rhs, strict=True)), Fraction(0)) for row in inverse]


def series(values: Sequence[float], index: Sequence[str], name: str | None = None) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=np.float64), index=list(index), name=name)
