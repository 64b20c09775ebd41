"""``logistic_eval``: per fold, on that fold's rows, the confusion matrix at probability 0.5
and the log-likelihood of a fitted logistic model (its coefficients come with the query).

Each confusion count is a cell of the fold's rows; the log-likelihood is a weighted sum
whose terms the coefficients set, guarded by their effective sample size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stats.kinds.base import Computed, Guard, Kind, Magnitude
from stats.kinds.folds import fold_masks
from stats.kinds.frame import cell_count, ess
from stats.kinds.logistic import newton_parts, outcome_rows
from stats.kinds.params import check_betas, folds_of, outcome_of, param, term_bound, terms_of
from stats.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec

CELLS = ("tp", "fp", "tn", "fn")


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    outcome_of(spec, model)
    folds = folds_of(spec)
    check_betas(spec, model, terms, param(spec, "betas"), folds)
    slots = []
    for f in folds:
        slots += [Slot((name, f), False, Disclosure.ROWS, (name, f)) for name in CELLS]
        slots.append(Slot(("loglik", f), True, Disclosure.WEIGHTED, ("loglik", f)))
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
    return out


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]
    eta = max(sum(abs(b) * t for b, t in zip(beta, bounds, strict=True))
              for beta in spec.parameters["betas"])
    return lambda key: eta + math.log(2) if key[0] == "loglik" else 1.0


KIND = Kind("logistic_eval", _layout, _compute, _row_bound,
            size=lambda spec, model: 5 * len(folds_of(spec)),
            row_cost=lambda spec, model: 8 * 4 * (len(terms_of(spec, model)) + 4))
