"""``counts``: the cells of a table (1 to 4 axes: categorical levels or numeric bins), the
rows missing an axis variable, and the rows outside the bins.

Every row is in exactly one of these cells, each a family of its own: a small cell, the
missing rows and the rows out of range alike are withheld below the threshold (a count of
rows out of range is how bisecting a range finds the largest value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stats.aggregates import (
    Aggregation,
    BinKey,
    Key,
    LevelKey,
    Result,
    Rows,
    Statistic,
    Var,
    variables_of,
)
from stats.kinds.base import Computed, DPProfile, Guard, Kind, Scale, unit_bound
from stats.kinds.params import axes_of, cells_of
from stats.plans import Disclosure, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec

#: the rows no cell counts: missing an axis variable, or outside every bin
OUTSIDE = (("missing",), ("out_of_range",))


def _outside(spec: QuerySpec) -> tuple[tuple[str], ...]:
    """Missing rows always; rows out of range only where an axis has bins."""
    binned = any("edges" in axis for axis in spec.parameters["axes"])
    return OUTSIDE if binned else OUTSIDE[:1]


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    sizes = [n for _, n in axes_of(spec, model)]
    keys = [("cell", *cell) for cell in cells_of(sizes)] + list(_outside(spec))
    return [Slot(key, False, Disclosure.ROWS, key) for key in keys]


def _axis_keys(spec: QuerySpec, model: ModelView) -> tuple[Key, ...]:
    keys: list[Key] = []
    for axis in spec.parameters["axes"]:
        if "edges" in axis:
            keys.append(BinKey(Var(axis["var"]), tuple(float(e) for e in axis["edges"])))
        else:
            keys.append(LevelKey(axis["var"], tuple(model.levels(axis["var"]))))
    return tuple(keys)


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    sizes = [n for _, n in axes_of(spec, model)]
    aggregation = Aggregation((Rows(),), _axis_keys(spec, model))

    def assemble(results: Sequence[Result]) -> Computed:
        counts = np.zeros(math.prod(sizes), dtype=np.int64)
        outside = {-1: 0, -2: 0}
        for codes, (n, *_) in results[0].items():
            if any(c == -1 for c in codes):  # missing an axis variable
                outside[-1] += int(n)
            elif any(c == -2 for c in codes):  # outside the bins
                outside[-2] += int(n)
            else:
                flat = 0
                for code, size in zip(codes, sizes, strict=True):
                    flat = flat * size + code
                counts[flat] += int(n)
        out = Computed(rows=int(counts.sum()))
        for index, cell in enumerate(cells_of(sizes)):
            key = ("cell", *cell)
            out.values[key] = int(counts[index])
            out.guards[key] = {Guard.ROWS: int(counts[index])}
        for key, code in zip(_outside(spec), (-1, -2), strict=False):
            out.values[key] = outside[code]
            out.guards[key] = {Guard.ROWS: outside[code]}
        return out

    return Statistic((aggregation,), assemble, frozenset(variables_of(aggregation)))


def _size(spec: QuerySpec, model: ModelView) -> int:
    return math.prod(n for _, n in axes_of(spec, model)) + len(_outside(spec))


KIND = Kind("counts", _layout, None, unit_bound, size=_size, statistic=_statistic,
            row_cost=lambda spec, model: 8 * 6,
            # a row falls in exactly one cell, or is missing, or out of range
            dp=DPProfile(rows_touch=lambda spec, model: 1))
