"""``moments``: per dataset, group and variable, the values' count, sum and sum of squares,
and the count of missing values.

Cells: (dataset, group) partition the rows (the groups are the levels of ``by`` and the
rows whose ``by`` is missing); inside a cell, each variable's present and missing values
are two cells of their own. The sums go with the count of the values they add, so a cohort
of many rows of which one holds the variable releases nothing about it.

With ``"centring": {variable: [c, h]}`` (public values, :mod:`stats.kinds.centring`) the
sums are of ``(x - c) / h``: the same statistic, exact to the last digits wherever the data
lie. The non-zero guard still counts the plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from protocol.errors import QueryError
from stats.aggregates import (
    Aggregation,
    CountIf,
    ExactSum,
    FloatSum,
    Func,
    LevelKey,
    Measure,
    Present,
    Result,
    Rows,
    Statistic,
    Var,
    mul,
    nonzero,
    variables_of,
)
from stats.kinds import centring
from stats.kinds.base import Computed, DPProfile, Guard, Kind, Magnitude, Scale
from stats.kinds.columns import exact
from stats.plans import DATASET, MISSING, Disclosure, Key, ModelView, Slot, groups

if TYPE_CHECKING:
    from stats.query import QuerySpec


def _numeric(spec: QuerySpec, model: ModelView) -> list[str]:
    return [v for v in spec.variables if model.is_numeric(v)]


def _centring(spec: QuerySpec, model: ModelView) -> centring.Centring:
    return centring.centring_of(spec, model, _numeric(spec, model))


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    if not spec.variables:
        raise QueryError(f"{spec.method} needs at least one variable")
    _centring(spec, model)
    numeric = {v: model.is_numeric(v) for v in spec.variables}
    cells = groups(spec, model)
    slots = []
    for d in spec.datasets:
        for g in cells:
            for v in spec.variables:
                present = ("count", d, g, v)
                slots.append(Slot(present, False, Disclosure.VALUES, present))
                if numeric[v]:
                    slots.append(Slot(("sum", d, g, v), True, Disclosure.SUM, present))
                    slots.append(Slot(("sumsq", d, g, v), True, Disclosure.SUM, present))
                missing = ("missing", d, g, v)
                slots.append(Slot(missing, False, Disclosure.ROWS, missing))
    return slots


def _size(spec: QuerySpec, model: ModelView) -> int:
    per_cell = sum(4 if model.is_numeric(v) else 2 for v in spec.variables)
    return len(spec.datasets) * len(groups(spec, model)) * per_cell


def _group_keys(spec: QuerySpec, model: ModelView) -> tuple[LevelKey, ...]:
    keys = [LevelKey(DATASET, tuple(spec.datasets))]
    if spec.by:
        keys.append(LevelKey(spec.by, tuple(model.levels(spec.by))))
    return tuple(keys)


def _cells(spec: QuerySpec, model: ModelView) -> list[tuple[str, object, tuple[int, int]]]:
    """(dataset, group, its key values) per cell: a ``by`` level's index, -1 for MISSING."""
    levels = model.levels(spec.by) if spec.by else ()
    out = []
    for d_index, dataset in enumerate(spec.datasets):
        for group in groups(spec, model):
            code = -1 if group is MISSING else levels.index(str(group)) if spec.by else None
            out.append((dataset, group, (d_index,) if code is None else (d_index, code)))
    return out


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    numbers = _numeric(spec, model)
    shifts = _centring(spec, model)
    first_group = groups(spec, model)[0]
    measures: list[Measure] = [Rows()]
    for v in spec.variables:
        measures.append(CountIf(Present(v)))
        if v in numbers:
            # a variable's scale is the same in every cell (its row bound is); the guard
            # counts the plain values, the sums are of the centred ones
            x = Var(v)
            z = centring.centred_expr(x, *shifts[v]) if v in shifts else x
            measures += [ExactSum(z, scale(("sum", spec.datasets[0], first_group, v))),
                         ExactSum(mul(z, z), scale(("sumsq", spec.datasets[0], first_group, v))),
                         CountIf(nonzero(x))]

    def assemble(results: Sequence[Result]) -> Computed:
        out = Computed()
        empty = (0,) * len(measures)
        for dataset, group, key in _cells(spec, model):
            values = results[0].get(key, empty)
            rows_in_cell = int(values[0])
            out.rows += rows_in_cell
            position = 1
            for variable in spec.variables:
                present: Key = ("count", dataset, group, variable)
                n = int(values[position])
                if variable in numbers:
                    s, ss, nz = values[position + 1:position + 4]
                    sum_key, sumsq_key = (("sum", dataset, group, variable),
                                          ("sumsq", dataset, group, variable))
                    out.values[sum_key] = exact(int(s), scale(sum_key))
                    out.values[sumsq_key] = exact(int(ss), scale(sumsq_key))
                    if variable in shifts:  # what the sums read were the values all 0
                        for power, slot in enumerate((sum_key, sumsq_key), start=1):
                            units = centring.zero_units(*shifts[variable], power, scale(slot))
                            out.zeros[slot] = exact(n * units, scale(slot))
                    out.guards[present] = {Guard.VALUES: n, Guard.NONZERO: int(nz)}
                    position += 4
                else:
                    out.guards[present] = {Guard.VALUES: n}
                    position += 1
                out.values[present] = n
                missing = ("missing", dataset, group, variable)
                out.values[missing] = rows_in_cell - n
                out.guards[missing] = {Guard.ROWS: rows_in_cell - n}
        return out

    aggregation = Aggregation(tuple(measures), _group_keys(spec, model))
    return Statistic((aggregation,), assemble, frozenset(variables_of(aggregation)))


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


def _abs_statistic(spec: QuerySpec, model: ModelView) -> Statistic:
    """Per dataset, sum |x| and sum x^2 over all its rows: bounds of every group's sums.
    Centred variables are left out: their public row bounds must do, so that no choice of
    scale makes a refusal depend on the rows."""
    shifts = _centring(spec, model)
    numbers = [v for v in _numeric(spec, model) if v not in shifts]
    measures: list[Measure] = []
    for v in numbers:
        measures += [FloatSum(Func("abs", Var(v))), FloatSum(mul(Var(v), Var(v)))]

    def assemble(results: Sequence[Result]) -> dict[Key, float]:
        out: dict[Key, float] = {}
        for d_index, dataset in enumerate(spec.datasets):
            values = results[0].get((d_index,), (0.0,) * len(measures))
            for i, variable in enumerate(numbers):
                for group in groups(spec, model):
                    out[("sum", dataset, group, variable)] = float(values[2 * i])
                    out[("sumsq", dataset, group, variable)] = float(values[2 * i + 1])
        return out

    aggregation = Aggregation(tuple(measures), (LevelKey(DATASET, tuple(spec.datasets)),))
    return Statistic((aggregation,), assemble, frozenset(variables_of(aggregation)))


def _uncentre(spec: QuerySpec, model: ModelView) -> centring.Uncentre:
    return centring.moments_uncentre(spec, _centring(spec, model))


def _describe(spec: QuerySpec, model: ModelView, key: Key) -> str:
    what = {"sum": "the sum", "sumsq": "the sum of squares"}.get(str(key[0]), "the count")
    return f"{what} of {key[-1]!r}"


KIND = Kind("moments", _layout, None, _row_bound, size=_size, statistic=_statistic,
            abs_statistic=_abs_statistic, uncentre=_uncentre, describe=_describe,
            row_cost=lambda spec, model: 8 * (len(spec.variables) + 4),
            summed=_numeric,
            # a row is in one cell; per variable it adds to count, sum and sum of squares,
            # or to the missing count
            dp=DPProfile(rows_touch=lambda spec, model: sum(
                3 if model.is_numeric(v) else 1 for v in spec.variables)))
