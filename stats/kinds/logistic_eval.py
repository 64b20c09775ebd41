"""``logistic_eval``: per fold, on that fold's rows, the confusion matrix at probability 0.5
and the log-likelihood of a fitted logistic model (its coefficients come with the query).

Each confusion count is a cell of the fold's rows; the log-likelihood is a weighted sum
whose terms the coefficients set, guarded by their effective sample size.

With ``"shifts": [s_1, ...]`` (an ROC curve) it also gives, per fold and shift ``j``, the
true and false positives ``("tp", fold, j)`` and ``("fp", fold, j)`` with the intercept
lowered by ``s_j`` (``p >= t`` exactly when ``eta - logit(t) >= 0``). That is what one
``logistic_eval`` query per shift would release, cell for cell, guarded alike; each shifted
coefficient vector is held to the same bound as the fit's, so no shift reaches further
into the declared ranges than a coefficient vector of its own could.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from protocol.errors import QueryError
from stats.design import Term
from stats.kinds.base import Computed, Guard, Kind, Magnitude
from stats.kinds.folds import fold_masks
from stats.kinds.frame import binary, cell_count, design, ess
from stats.kinds.params import (
    check_betas,
    folds_of,
    number_list,
    outcome_of,
    param,
    term_bound,
    terms_of,
)
from stats.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec

CELLS = ("tp", "fp", "tn", "fn")
#: the cells given at every shift (the ROC curve needs no more)
SHIFTED_CELLS = ("tp", "fp")
#: at most this many shifts in one query (an ROC curve takes 198 by default)
MAX_SHIFTS = 1000


def shifts_of(spec: QuerySpec, model: ModelView, terms: list[Term],
              betas: list[list[float]]) -> list[float]:
    """The intercept shifts asked for (none by default), each shifted coefficient vector
    checked as the fit's own are."""
    value = spec.parameters.get("shifts")
    if value is None:
        return []
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SHIFTS:
        raise QueryError(f"shifts must be a list of 1 to {MAX_SHIFTS} numbers")
    shifts = number_list(value, "shifts")
    if not terms or set(terms[0]) != {"const"}:
        raise QueryError("shifts lower the intercept: the first term must be {\"const\": 1}")
    shifted = [[beta[0] - s, *beta[1:]] for s in shifts for beta in betas]
    check_betas(spec, model, terms, shifted, [None] * len(shifted))
    return shifts


def newton_parts(matrix: np.ndarray, y: np.ndarray, beta: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Fitted probabilities and each row's log-likelihood term y.eta - log(1 + e^eta)."""
    eta = matrix @ beta
    softplus = np.logaddexp(0.0, eta)  # log(1 + e^eta), without overflow
    return np.exp(eta - softplus), y * eta - softplus


def outcome_rows(spec: QuerySpec, rows: pd.DataFrame, model: ModelView
                 ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The design over complete cases (outcome 0/1 present too), the outcome, the rows."""
    variable, level = outcome_of(spec, model)
    y = binary(rows, variable, level)
    rows = rows[~np.isnan(y)]
    matrix, mask = design(spec.parameters["terms"], rows)
    return matrix, y[~np.isnan(y)][mask], rows[mask]


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    outcome_of(spec, model)
    folds = folds_of(spec)
    betas = check_betas(spec, model, terms, param(spec, "betas"), folds)
    shifts = shifts_of(spec, model, terms, betas)
    slots = []
    for f in folds:
        slots += [Slot((name, f), False, Disclosure.ROWS, (name, f)) for name in CELLS]
        slots.append(Slot(("loglik", f), True, Disclosure.WEIGHTED, ("loglik", f)))
        slots += [Slot((name, f, j), False, Disclosure.ROWS, (name, f, j))
                  for j in range(len(shifts)) for name in SHIFTED_CELLS]
    return slots


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    matrix, y, complete = outcome_rows(spec, rows, model)
    out = Computed(rows=len(y))
    for (fold, inside, _), beta in zip(fold_masks(spec, complete.index, train=False),
                                       spec.parameters["betas"], strict=True):
        part, yf = matrix[inside], y[inside]
        prob, loglik = newton_parts(part, yf, np.asarray(beta, dtype=np.float64))
        predicted, actual = prob >= 0.5, yf == 1
        cells = {"tp": predicted & actual, "fp": predicted & ~actual,
                 "tn": ~predicted & ~actual, "fn": ~predicted & actual}
        for name, hit in cells.items():
            count = int(np.sum(hit))
            out.values[(name, fold)] = count
            out.guards[(name, fold)] = {Guard.ROWS: count}
        out.values[("loglik", fold)] = float(loglik.sum())
        out.guards[("loglik", fold)] = {Guard.ROWS: int(yf.size), Guard.WEIGHTS: ess(loglik)}
        for j, shift in enumerate(spec.parameters.get("shifts") or ()):
            # the intercept lowered as the client would, so each cell is what a query
            # with these coefficients would count
            lowered = np.asarray(beta, dtype=np.float64).copy()
            lowered[0] = lowered[0] - float(shift)
            called = newton_parts(part, yf, lowered)[0] >= 0.5
            for name, hit in (("tp", called & actual), ("fp", called & ~actual)):
                count = int(np.sum(hit))
                out.values[(name, fold, j)] = count
                out.guards[(name, fold, j)] = {Guard.ROWS: count}
    return out


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]
    eta = max(sum(abs(b) * t for b, t in zip(beta, bounds, strict=True))
              for beta in spec.parameters["betas"])
    return lambda key: eta + math.log(2) if key[0] == "loglik" else 1.0


KIND = Kind("logistic_eval", _layout, _compute, _row_bound,
            size=lambda spec, model: len(folds_of(spec)) * (
                5 + len(SHIFTED_CELLS) * len(spec.parameters.get("shifts") or ())),
            row_cost=lambda spec, model: 8 * 4 * (len(terms_of(spec, model)) + 4))
