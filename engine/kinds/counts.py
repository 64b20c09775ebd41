"""``counts``: the cells of a table (1 to 4 axes: categorical levels or numeric bins), the
rows missing an axis variable, and the rows outside the bins.

Every row is in exactly one of these cells, each a family of its own: a small cell, the
missing rows and the rows out of range alike are withheld below the threshold (a count of
rows out of range is how bisecting a range finds the largest value).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from engine.kinds.base import Computed, DPProfile, Guard, Kind, unit_bound
from engine.kinds.frame import level_codes, numeric
from engine.kinds.params import axes_of, cells_of
from engine.plans import Disclosure, ModelView, Slot

if TYPE_CHECKING:
    from engine.query import QuerySpec

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


def bin_codes(spec: QuerySpec, rows: pd.DataFrame, model: ModelView
              ) -> tuple[np.ndarray, list[int]]:
    """Flat cell index of each row; -1 when an axis value is missing, -2 when a numeric
    value lies outside its bins."""
    sizes = [n for _, n in axes_of(spec, model)]
    flat = np.zeros(len(rows), dtype=np.int64)
    missing = np.zeros(len(rows), dtype=bool)
    outside = np.zeros(len(rows), dtype=bool)
    for axis, size in zip(spec.parameters["axes"], sizes, strict=True):
        if "edges" in axis:
            edges = np.asarray(axis["edges"], dtype=np.float64)
            values = numeric(rows, axis["var"])
            # numpy.histogram's bins: [a, b) each, the last one [a, b] closed
            codes = np.searchsorted(edges, values, side="right") - 1
            codes[values == edges[-1]] = size - 1
            absent = np.isnan(values)
            outside |= ~absent & ((values < edges[0]) | (values > edges[-1]))
        else:
            codes = level_codes(rows, axis["var"], model.levels(axis["var"])).astype(np.int64)
            absent = codes < 0
        missing |= absent
        flat = flat * size + np.clip(codes, 0, size - 1)
    return np.where(missing, -1, np.where(outside, -2, flat)), sizes


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    flat, sizes = bin_codes(spec, rows, model)
    counts = np.bincount(flat[flat >= 0], minlength=math.prod(sizes))
    out = Computed(rows=int((flat >= 0).sum()))
    for index, cell in enumerate(cells_of(sizes)):
        key = ("cell", *cell)
        out.values[key] = int(counts[index])
        out.guards[key] = {Guard.ROWS: int(counts[index])}
    for key, code in zip(_outside(spec), (-1, -2), strict=False):
        n = int((flat == code).sum())
        out.values[key] = n
        out.guards[key] = {Guard.ROWS: n}
    return out


def _size(spec: QuerySpec, model: ModelView) -> int:
    return math.prod(n for _, n in axes_of(spec, model)) + len(_outside(spec))


KIND = Kind("counts", _layout, _compute, unit_bound, size=_size,
            row_cost=lambda spec, model: 8 * 6,
            # a row falls in exactly one cell, or is missing, or out of range
            dp=DPProfile(rows_touch=lambda spec, model: 1))
