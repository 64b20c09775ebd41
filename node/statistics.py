"""A node's local sufficient statistics for a plan, encoded for the secure sum.

Counts are exact integers. Real slots are this node's float64 sums, encoded as fixed point
with ``REAL_FRAC_BITS`` fractional bits; a sum too large for the planned ring is refused,
never wrapped. Small cohorts are protected here, at the data holder: a node whose cohort
for a query (its filtered, complete-case rows) is smaller than the policy's
``min_row_count`` contributes zeros, and says so only inside the secure sum, through the
``nodes_contributing`` slot; cells smaller than ``small_cell_threshold`` are zeroed by the
kind that makes them and counted in ``cells_suppressed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crypto.encoding import RingVector, encode_scalar
from engine.errors import QueryError
from engine.plans import CELLS_SUPPRESSED, NODES_CONTRIBUTING, REAL_FRAC_BITS, REAL_INT_BITS, Layout
from engine.query import QuerySpec
from node import filters
from node.datamodel import DATASET, DataModel
from node.kinds import COMPUTERS, PlanModel

__all__ = ["LocalSummary", "PlanModel", "local_vector", "select_rows"]


@dataclass(frozen=True)
class LocalSummary:
    """What the node's operator log may say about a query (never sent to anyone)."""

    rows: int
    contributed: bool
    cells_suppressed: int


def select_rows(spec: QuerySpec, data: pd.DataFrame, model: DataModel) -> pd.DataFrame:
    """The rows a query is about: its datasets, then its filter."""
    rows = data[data[DATASET].isin(spec.datasets)]
    if spec.filters is not None:
        tree = filters.from_json(spec.filters)
        tree.check(model)
        rows = rows[filters.evaluate(tree, rows).to_numpy(dtype=bool)]
    return rows


def _real(value: float, key: object) -> int:
    if not np.isfinite(value) or abs(value) >= 2.0**REAL_INT_BITS:
        raise QueryError("a local statistic is too large (or not finite) to encode exactly")
    return encode_scalar(float(value), REAL_FRAC_BITS)


def local_vector(spec: QuerySpec, layout: Layout, data: pd.DataFrame, model: DataModel, *,
                 min_row_count: int, small_cell_threshold: int) -> tuple[RingVector, LocalSummary]:
    rows = select_rows(spec, data, model)
    values: list[int] = [0] * layout.length
    index = layout.index()
    computed = COMPUTERS[spec.kind](spec, rows, model, small_cell_threshold)
    if computed.rows < min_row_count:
        vector = RingVector.from_ints(layout.ring_bits, np.array(values, dtype=object))
        return vector, LocalSummary(computed.rows, False, 0)
    for slot, i in zip(layout.slots, range(layout.length), strict=True):
        value = computed.values.get(slot.key)
        if value is not None:
            values[i] = _real(value, slot.key) if slot.real else int(value)
    values[index[NODES_CONTRIBUTING]] = 1
    values[index[CELLS_SUPPRESSED]] = computed.suppressed
    vector = RingVector.from_ints(layout.ring_bits, np.array(values, dtype=object))
    return vector, LocalSummary(computed.rows, True, computed.suppressed)
