"""``moments``: per dataset, group and variable, the values' count, sum and sum of squares,
and the count of missing values.

Cells: (dataset, group) partition the rows (the groups are the levels of ``by`` and the
rows whose ``by`` is missing); inside a cell, each variable's present and missing values
are two cells of their own. The sums go with the count of the values they add, so a cohort
of many rows of which one holds the variable releases nothing about it.

With ``"centring": {variable: [c, h]}`` (public values, :mod:`engine.kinds.centring`) the
sums are of ``(x - c) / h``: the same statistic, exact to the last digits wherever the data
lie. The non-zero guard still counts the plain values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.errors import QueryError
from engine.kinds import centring
from engine.kinds.base import Computed, DPProfile, Guard, Kind, Magnitude
from engine.kinds.frame import level_codes, numeric
from engine.plans import DATASET, MISSING, Disclosure, Key, ModelView, Slot, groups

if TYPE_CHECKING:
    from engine.query import QuerySpec


def _numeric(spec: QuerySpec, model: ModelView) -> list[str]:
    return [v for v in spec.variables if model.is_numeric(v)]


def _centring(spec: QuerySpec, model: ModelView) -> centring.Centring:
    return centring.centring_of(spec, model, _numeric(spec, model))


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    if not spec.variables:
        raise QueryError(f"{spec.method} needs at least one variable")
    _centring(spec, model)
    slots = []
    for d in spec.datasets:
        for g in groups(spec, model):
            for v in spec.variables:
                present = ("count", d, g, v)
                slots.append(Slot(present, False, Disclosure.VALUES, present))
                if model.is_numeric(v):
                    slots.append(Slot(("sum", d, g, v), True, Disclosure.SUM, present))
                    slots.append(Slot(("sumsq", d, g, v), True, Disclosure.SUM, present))
                missing = ("missing", d, g, v)
                slots.append(Slot(missing, False, Disclosure.ROWS, missing))
    return slots


def _size(spec: QuerySpec, model: ModelView) -> int:
    per_cell = sum(4 if model.is_numeric(v) else 2 for v in spec.variables)
    return len(spec.datasets) * len(groups(spec, model)) * per_cell


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    out = Computed(rows=len(rows))
    values = {v: numeric(rows, v) for v in _numeric(spec, model)}
    shifts = _centring(spec, model)
    has = {v: rows[v].notna().to_numpy() for v in spec.variables if v not in values}
    dataset_codes = level_codes(rows, DATASET, spec.datasets)
    levels = model.levels(spec.by) if spec.by else ()
    by_codes = level_codes(rows, spec.by, levels) if spec.by else None
    for d_index, dataset in enumerate(spec.datasets):
        in_dataset = dataset_codes == d_index
        for group in groups(spec, model):
            selected = in_dataset
            if by_codes is not None:
                code = -1 if group is MISSING else levels.index(str(group))
                selected = selected & (by_codes == code)
            rows_in_cell = int(selected.sum())
            for variable in spec.variables:
                present: Key = ("count", dataset, group, variable)
                if variable in values:
                    column = values[variable][selected]
                    finite = column[~np.isnan(column)]
                    n = int(finite.size)
                    # the guard counts the plain values: the centred sums determine theirs
                    out.guards[present] = {Guard.VALUES: n,
                                           Guard.NONZERO: int(np.count_nonzero(finite))}
                    sums = ("sum", dataset, group, variable), ("sumsq", dataset, group, variable)
                    if variable in shifts:
                        finite = centring.centred(finite, *shifts[variable])
                        nothing = centring.zeros(n, *shifts[variable])
                        out.zeros.update(zip(sums, _sums(nothing), strict=True))
                    out.values.update(zip(sums, _sums(finite), strict=True))
                else:
                    n = int(has[variable][selected].sum())
                    out.guards[present] = {Guard.VALUES: n}
                out.values[present] = n
                missing = ("missing", dataset, group, variable)
                out.values[missing] = rows_in_cell - n
                out.guards[missing] = {Guard.ROWS: rows_in_cell - n}
    return out


def _sums(values: np.ndarray) -> tuple[float, float]:
    return float(np.sum(values)), float(np.dot(values, values))


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    shifts = _centring(spec, model)
    reach = {v: centring.row_reach(spec, model, v, shifts) for v in shifts}

    def bound(key: Key) -> float:
        if key[0] in ("sum", "sumsq"):
            variable = str(key[3])
            one = reach[variable] if variable in reach else magnitude(variable)
            return one if key[0] == "sum" else one ** 2
        return 1.0

    return bound


def _abs_sums(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> dict[Key, float]:
    """Per dataset, sum |x| and sum x^2 over all its rows: bounds of every group's sums.
    Centred variables are left out: their public row bounds must do, so that no choice of
    scale makes a refusal depend on the rows."""
    out: dict[Key, float] = {}
    dataset_codes = level_codes(rows, DATASET, spec.datasets)
    shifts = _centring(spec, model)
    for variable in _numeric(spec, model):
        if variable in shifts:
            continue
        values = np.nan_to_num(np.abs(numeric(rows, variable)))
        for d_index, dataset in enumerate(spec.datasets):
            part = values[dataset_codes == d_index]
            for group in groups(spec, model):
                out[("sum", dataset, group, variable)] = float(part.sum())
                out[("sumsq", dataset, group, variable)] = float(part @ part)
    return out


def _uncentre(spec: QuerySpec, model: ModelView) -> centring.Uncentre:
    return centring.moments_uncentre(spec, _centring(spec, model))


def _describe(spec: QuerySpec, model: ModelView, key: Key) -> str:
    what = {"sum": "the sum", "sumsq": "the sum of squares"}.get(str(key[0]), "the count")
    return f"{what} of {key[-1]!r}"


KIND = Kind("moments", _layout, _compute, _row_bound, size=_size, abs_sums=_abs_sums,
            uncentre=_uncentre, describe=_describe,
            row_cost=lambda spec, model: 8 * (len(spec.variables) + 4),
            summed=_numeric,
            # a row is in one cell; per variable it adds to count, sum and sum of squares,
            # or to the missing count
            dp=DPProfile(rows_touch=lambda spec, model: sum(
                3 if model.is_numeric(v) else 1 for v in spec.variables)))
