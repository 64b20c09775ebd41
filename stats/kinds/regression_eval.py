"""``regression_eval``: per fold, on that fold's rows, the sums that score a fitted linear
model: n, sum and sum of squares of y, and of the residuals y - x.beta (with the sum of
their absolute values).

The researcher chooses beta, and varying it turns the residual sums into any combination
of the design's column sums and cross-products over the fold: so a fold is guarded as
:mod:`stats.kinds.crossprod` guards its matrix, plus the rows where y and the residual are
non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stats.kinds.base import Computed, Guard, Kind, Magnitude
from stats.kinds.folds import fold_masks
from stats.kinds.frame import (
    cell_columns,
    cell_count,
    design,
    nonzero_counts,
    numeric,
    smallest_positive,
)
from stats.kinds.params import check_betas, folds_of, param, term_bound, terms_of
from stats.plans import Disclosure, Key, ModelView, Slot, check_variable

if TYPE_CHECKING:
    from stats.query import QuerySpec

SUMS = ("sy", "syy", "se", "see", "sae")


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    check_variable(model, param(spec, "y"), numeric=True)
    folds = folds_of(spec)
    check_betas(spec, model, terms, param(spec, "betas"), folds)
    slots = []
    for f in folds:
        family = ("fold", f)
        slots.append(Slot(("n", f), False, Disclosure.ROWS, family))
        slots += [Slot((name, f), True, Disclosure.SUM, family) for name in SUMS]
    return slots


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    terms = spec.parameters["terms"]
    y_name = spec.parameters["y"]
    matrix, mask = design(terms, rows, [y_name])
    complete = rows[mask]
    y = numeric(complete, y_name)
    cells = cell_columns(terms, complete, model)
    out = Computed(rows=int(mask.sum()))
    for (fold, inside, _), beta in zip(fold_masks(spec, complete.index, train=False),
                                       spec.parameters["betas"], strict=True):
        yf, part = y[inside], matrix[inside]
        residual = yf - part @ np.asarray(beta, dtype=np.float64)
        out.values[("n", fold)] = int(yf.size)
        out.values[("sy", fold)] = float(yf.sum())
        out.values[("syy", fold)] = float(yf @ yf)
        out.values[("se", fold)] = float(residual.sum())
        out.values[("see", fold)] = float(residual @ residual)
        out.values[("sae", fold)] = float(np.abs(residual).sum())
        checked = np.column_stack([part, yf, residual, cells[inside]])
        out.guards[("fold", fold)] = {Guard.ROWS: int(yf.size),
                                      Guard.NONZERO: smallest_positive(nonzero_counts(checked))}
    return out


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    y = magnitude(spec.parameters["y"])
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]
    reach = max(sum(abs(b) * t for b, t in zip(beta, bounds, strict=True))
                for beta in spec.parameters["betas"])
    residual = y + reach
    table = {"n": 1.0, "sy": y, "syy": y * y, "se": residual, "see": residual * residual,
             "sae": residual}
    return lambda key: table[str(key[0])]


def _size(spec: QuerySpec, model: ModelView) -> int:
    return len(folds_of(spec)) * (1 + len(SUMS))


def _row_cost(spec: QuerySpec, model: ModelView) -> int:
    terms = terms_of(spec, model)
    return 8 * 3 * (len(terms) + cell_count(terms, model) + 3)


KIND = Kind("regression_eval", _layout, _compute, _row_bound, size=_size, row_cost=_row_cost)
