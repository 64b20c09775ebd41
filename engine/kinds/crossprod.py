"""``crossprod``: per fold, the number of complete cases and the cross-products X'X of a
design (its last column is the outcome where a model needs one).

One family per fold. X'X holds, besides sums over all rows, sums over each level of a
categorical term and over products of levels; the intercept row minus the other levels'
rows is the reference level. So the guard counts, for every pair of columns and every
cell of every categorical term (reference levels included), the rows where the product is
non-zero: a level held by one patient, or a numeric column non-zero for one patient only,
withholds the matrix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.design import design_variables
from engine.errors import QueryError
from engine.kinds.base import Computed, DPProfile, Guard, Kind, Magnitude
from engine.kinds.folds import fold_masks
from engine.kinds.frame import (
    cell_columns,
    cell_count,
    design,
    gram,
    nonzero_counts,
    smallest_positive,
)
from engine.kinds.params import folds_of, term_bound, terms_of, triangle
from engine.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from engine.query import QuerySpec


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    slots = []
    for f in folds_of(spec):
        family = ("fold", f)
        slots.append(Slot(("n", f), False, Disclosure.ROWS, family))
        slots += [Slot(("xx", f, i, j), True, Disclosure.SUM, family)
                  for i, j in triangle(len(terms))]
    return slots


def _size(spec: QuerySpec, model: ModelView) -> int:
    p = len(terms_of(spec, model))
    return len(folds_of(spec)) * (1 + p * (p + 1) // 2)


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    terms = spec.parameters["terms"]
    matrix, mask = design(terms, rows)
    complete = rows[mask]
    cells = cell_columns(terms, complete, model)
    out = Computed(rows=int(mask.sum()))
    for fold, inside, _ in fold_masks(spec, complete.index, train=False):
        part = matrix if inside.all() else matrix[inside]
        n = int(part.shape[0])
        out.values[("n", fold)] = n
        upper = gram(part)
        for i, j in triangle(len(terms)):
            out.values[("xx", fold, i, j)] = float(upper[i, j])
        terms_nonzero = nonzero_counts(np.hstack([part, cells[inside]]))
        out.guards[("fold", fold)] = {Guard.ROWS: n,
                                      Guard.NONZERO: smallest_positive(terms_nonzero)}
    return out


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]

    def bound(key: Key) -> float:
        if key[0] == "xx":
            return bounds[int(key[2])] * bounds[int(key[3])]
        return 1.0

    return bound


def _summed(spec: QuerySpec, model: ModelView) -> list[str]:
    return [v for v in design_variables(spec.parameters["terms"]) if model.is_numeric(v)]


def _row_cost(spec: QuerySpec, model: ModelView) -> int:
    terms = terms_of(spec, model)
    return 8 * 3 * (len(terms) + cell_count(terms, model))


def _dp_check(spec: QuerySpec, model: ModelView) -> None:
    if folds_of(spec) != [None]:
        raise QueryError("cross-validation does not offer differential privacy yet")
    if any("transform" in t or any("transform" in f for f in t.get("product", []))
           for t in spec.parameters["terms"]):
        raise QueryError("transformed terms have no declared bounds; DP needs raw variables")


def _rows_touch(spec: QuerySpec, model: ModelView) -> int:
    p = len(spec.parameters["terms"])
    return 1 + p * (p + 1) // 2


def _abs_sums(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> dict[Key, float]:
    """|X|'|X| over the complete cases of the given rows: bounds every fold's X'X."""
    terms = spec.parameters["terms"]
    matrix, _ = design(terms, rows)
    upper = gram(np.abs(matrix))
    return {("xx", f, i, j): float(upper[i, j])
            for f in folds_of(spec) for i, j in triangle(len(terms))}


KIND = Kind("crossprod", _layout, _compute, _row_bound, size=_size, row_cost=_row_cost,
            abs_sums=_abs_sums,
            summed=_summed, dp=DPProfile(rows_touch=_rows_touch, check=_dp_check))
