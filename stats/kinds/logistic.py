"""``logistic``: per fold, one Newton step's sums for a logistic model at the coefficients
the query carries: n, the number of positive outcomes, the log-likelihood, the gradient
X'(y - p) and the information matrix X'WX with W = p(1 - p). With folds, each fold's sums
cover the rows outside it (the training rows).

The researcher chooses beta, hence the weights: a beta under which p(1 - p) vanishes for
every row but one would make X'WX that row's covariates. So besides the cells and
non-zero terms guarded as for :mod:`stats.kinds.crossprod` (the outcome's two classes
included), each weighted sum needs an effective sample size (sum w)^2 / sum w^2 of at least
the threshold over the rows its terms are non-zero on; beta itself is bounded by the
data model's ranges (:func:`stats.kinds.params.check_betas`). With folds, the held-out
rows are guarded too, at the same beta: training sums over complements add up to theirs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stats.kinds.base import Computed, Guard, Kind, Magnitude
from stats.kinds.folds import fold_masks
from stats.kinds.frame import (
    binary,
    cell_columns,
    cell_count,
    design,
    ess,
    gram,
    nonzero_counts,
    smallest_positive,
    weighted_ess,
)
from stats.kinds.params import (
    check_betas,
    folds_of,
    outcome_of,
    param,
    term_bound,
    terms_of,
    triangle,
)
from stats.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


def betas_of(spec: QuerySpec, model: ModelView) -> list[list[float]]:
    terms = terms_of(spec, model)
    folds = folds_of(spec)
    raw = param(spec, "betas") if folds != [None] else [param(spec, "beta")]
    return check_betas(spec, model, terms, raw, folds)


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    outcome_of(spec, model)
    betas_of(spec, model)
    slots = []
    for f in folds_of(spec):
        family = ("fold", f)
        slots += [Slot(("n", f), False, Disclosure.ROWS, family),
                  Slot(("ysum", f), False, Disclosure.ROWS, family),
                  Slot(("loglik", f), True, Disclosure.WEIGHTED, family)]
        slots += [Slot(("grad", f, i), True, Disclosure.WEIGHTED, family)
                  for i in range(len(terms))]
        slots += [Slot(("hess", f, i, j), True, Disclosure.WEIGHTED, family)
                  for i, j in triangle(len(terms))]
    return slots


def newton_parts(matrix: np.ndarray, y: np.ndarray, beta: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fitted probabilities and each row's log-likelihood term y.eta - log(1 + e^eta)."""
    eta = matrix @ beta
    softplus = np.logaddexp(0.0, eta)  # log(1 + e^eta), without overflow
    return np.exp(eta - softplus), y * eta - softplus


def guards(part: np.ndarray, y: np.ndarray, beta: np.ndarray, cells: np.ndarray
           ) -> dict[Guard, float]:
    """The guards of one Newton step's sums over these rows."""
    prob, loglik = newton_parts(part, y, beta)
    support = (part != 0).astype(np.float64)
    hessian = weighted_ess(support, prob * (1 - prob))
    gradient = np.diag(weighted_ess(support, y - prob))
    weights = min(smallest_positive(hessian), smallest_positive(gradient), ess(loglik)) \
        if len(y) else 0.0
    checked = np.column_stack([part, y, 1 - y, cells])
    return {Guard.ROWS: int(len(y)), Guard.NONZERO: smallest_positive(nonzero_counts(checked)),
            Guard.WEIGHTS: weights}


def merge(*parts: dict[Guard, float]) -> dict[Guard, float]:
    """Guards of a family that must hold on several row sets: the smallest positive."""
    return {g: smallest_positive(np.array([p[g] for p in parts])) for g in parts[0]}


def outcome_rows(spec: QuerySpec, rows: pd.DataFrame, model: ModelView
                 ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The design over complete cases (outcome 0/1 present too), the outcome, the rows."""
    variable, level = outcome_of(spec, model)
    y = binary(rows, variable, level)
    rows = rows[~np.isnan(y)]
    matrix, mask = design(spec.parameters["terms"], rows)
    return matrix, y[~np.isnan(y)][mask], rows[mask]


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    terms = spec.parameters["terms"]
    matrix, y, complete = outcome_rows(spec, rows, model)
    cells = cell_columns(terms, complete, model)
    out = Computed(rows=len(y))
    for (fold, inside, outside), beta in zip(fold_masks(spec, complete.index, train=True),
                                             betas_of(spec, model), strict=True):
        b = np.asarray(beta, dtype=np.float64)
        part, yf = (matrix, y) if inside.all() else (matrix[inside], y[inside])
        prob, loglik = newton_parts(part, yf, b)
        out.values[("n", fold)] = int(yf.size)
        out.values[("ysum", fold)] = int(yf.sum())
        out.values[("loglik", fold)] = float(loglik.sum())
        for i, g in enumerate(part.T @ (yf - prob)):
            out.values[("grad", fold, i)] = float(g)
        hess = gram(part, prob * (1.0 - prob))
        for i, j in triangle(len(terms)):
            out.values[("hess", fold, i, j)] = float(hess[i, j])
        found = guards(part, yf, b, cells[inside])
        if outside.any():
            found = merge(found, guards(matrix[outside], y[outside], b, cells[outside]))
        out.guards[("fold", fold)] = found
    return out


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]
    betas = spec.parameters.get("betas") or [spec.parameters["beta"]]
    eta = max(sum(abs(b) * t for b, t in zip(beta, bounds, strict=True)) for beta in betas)

    def bound(key: Key) -> float:
        head = key[0]
        if head == "loglik":
            return eta + math.log(2)  # |y eta - log(1 + e^eta)| <= |eta| + log 2
        if head == "grad":
            return bounds[int(key[2])]  # |y - p| <= 1
        if head == "hess":
            return bounds[int(key[2])] * bounds[int(key[3])] / 4  # p(1 - p) <= 1/4
        return 1.0

    return bound


def _size(spec: QuerySpec, model: ModelView) -> int:
    p = len(terms_of(spec, model))
    return len(folds_of(spec)) * (3 + p + p * (p + 1) // 2)


def _row_cost(spec: QuerySpec, model: ModelView) -> int:
    terms = terms_of(spec, model)
    return 8 * 4 * (len(terms) + cell_count(terms, model) + 4)


KIND = Kind("logistic", _layout, _compute, _row_bound, size=_size, row_cost=_row_cost)
