"""``crossprod``: per fold, the number of complete cases and the cross-products X'X of a
design (its last column is the outcome where a model needs one).

One family per fold. X'X holds, besides sums over all rows, sums over each level of a
categorical term and over products of levels; the intercept row minus the other levels'
rows is the reference level. So the guard counts, for every pair of columns and every
cell of every categorical term (reference levels included), the rows where the product is
non-zero: a level held by one patient, or a numeric column non-zero for one patient only,
withholds the matrix.

With ``"centring": {variable: [c, h]}`` (public values, :mod:`engine.kinds.centring`) every
plain term of a centred variable enters the matrix as ``(x - c) / h``; the design must hold
the intercept, through which the client recovers the plain X'X exactly. The guards count
the plain design's non-zero terms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.design import Term, design_variables, term_name
from engine.errors import QueryError
from engine.kinds import centring
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


def _plain(terms: list[Term], model: ModelView) -> list[str]:
    """The numeric variables some term holds as they are (no transform, no product)."""
    return list(dict.fromkeys(t["var"] for t in terms
                              if set(t) == {"var"} and model.is_numeric(t["var"])))


def _intercept(terms: list[Term]) -> int | None:
    return next((i for i, t in enumerate(terms) if "const" in t), None)


def _centring(spec: QuerySpec, model: ModelView) -> centring.Centring:
    terms = terms_of(spec, model)
    shifts = centring.centring_of(spec, model, _plain(terms, model))
    if shifts and _intercept(terms) is None:
        raise QueryError("centring needs the intercept term {\"const\": 1} in the design")
    return shifts


def _centred_columns(terms: list[Term], shifts: centring.Centring
                     ) -> dict[int, tuple[float, float]]:
    return {i: shifts[t["var"]] for i, t in enumerate(terms)
            if set(t) == {"var"} and t["var"] in shifts}


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    _centring(spec, model)
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
    shifted = _centred_columns(terms, _centring(spec, model))
    matrix, mask = design(terms, rows)
    complete = rows[mask]
    cells = cell_columns(terms, complete, model)
    out = Computed(rows=int(mask.sum()))
    for fold, inside, _ in fold_masks(spec, complete.index, train=False):
        part = matrix if inside.all() else matrix[inside]
        n = int(part.shape[0])
        out.values[("n", fold)] = n
        # the guard counts the plain design's terms: the centred matrix determines them
        terms_nonzero = nonzero_counts(np.hstack([part, cells[inside]]))
        if shifted:
            if part is matrix and len(folds_of(spec)) > 1:
                part = part.copy(order="F")  # the other folds read the plain matrix
            for i, (c, h) in shifted.items():
                part[:, i] = centring.centred(part[:, i], c, h)
        upper = gram(part)
        for i, j in triangle(len(terms)):
            out.values[("xx", fold, i, j)] = float(upper[i, j])
        out.guards[("fold", fold)] = {Guard.ROWS: n,
                                      Guard.NONZERO: smallest_positive(terms_nonzero)}
    return out


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    terms = spec.parameters["terms"]
    shifts = _centring(spec, model)
    reach = {v: centring.row_reach(spec, model, v, shifts) for v in shifts}
    columns = _centred_columns(terms, shifts)
    bounds = [reach[t["var"]] if i in columns else term_bound(t, magnitude)
              for i, t in enumerate(terms)]

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
    """|X|'|X| over the complete cases of the given rows: bounds every fold's X'X. Entries
    of centred columns are left out: their public row bounds must do, so that no choice of
    scale makes a refusal depend on the rows."""
    terms = spec.parameters["terms"]
    columns = _centred_columns(terms, _centring(spec, model))
    matrix, _ = design(terms, rows)
    upper = gram(np.abs(matrix))
    return {("xx", f, i, j): float(upper[i, j])
            for f in folds_of(spec) for i, j in triangle(len(terms))
            if i not in columns and j not in columns}


def _uncentre(spec: QuerySpec, model: ModelView) -> centring.Uncentre:
    terms = spec.parameters["terms"]
    shifts = _centring(spec, model)
    return centring.crossprod_uncentre(terms, shifts, _intercept(terms) or 0)


def _describe(spec: QuerySpec, model: ModelView, key: Key) -> str:
    if key[0] != "xx":
        return "the count"
    terms = spec.parameters["terms"]
    first, second = term_name(terms[int(key[2])]), term_name(terms[int(key[3])])
    return (f"the sum of squares of {first!r}" if first == second
            else f"the cross-product of {first!r} and {second!r}")


KIND = Kind("crossprod", _layout, _compute, _row_bound, size=_size, row_cost=_row_cost,
            abs_sums=_abs_sums, uncentre=_uncentre, describe=_describe,
            summed=_summed, dp=DPProfile(rows_touch=_rows_touch, check=_dp_check))
