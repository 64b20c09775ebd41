"""A node's local sufficient statistics for a plan, encoded for the secure sum.

Counts are exact integers. Real slots are this node's float64 sums, encoded as fixed point
with ``REAL_FRAC_BITS`` fractional bits; a sum too large for the planned ring is refused,
never wrapped. Small cohorts are protected here, at the data holder: a node whose filtered
rows are fewer than the policy's ``min_row_count`` contributes zeros (and says so only
inside the secure sum, through the ``nodes_contributing`` slot), and any (dataset, group)
cell with fewer rows than ``small_cell_threshold`` is zeroed and counted in
``cells_suppressed``.
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


class PlanModel:
    """Adapts a :class:`DataModel` to the engine's ``ModelView`` protocol."""

    def __init__(self, model: DataModel) -> None:
        self.model = model

    def datasets(self) -> tuple[str, ...]:
        return self.model.datasets()

    def has_variable(self, code: str) -> bool:
        return code in self.model.variables and code != DATASET

    def is_numeric(self, code: str) -> bool:
        return self.model.variable(code).is_numeric

    def levels(self, code: str) -> tuple[str, ...]:
        return self.model.variable(code).enumerations


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


def _real(value: float, what: str) -> int:
    if not np.isfinite(value) or abs(value) >= 2.0**REAL_INT_BITS:
        raise QueryError(f"a local sum of {what} is too large to encode exactly")
    return encode_scalar(float(value), REAL_FRAC_BITS)


def local_vector(spec: QuerySpec, layout: Layout, data: pd.DataFrame, model: DataModel, *,
                 min_row_count: int, small_cell_threshold: int) -> tuple[RingVector, LocalSummary]:
    rows = select_rows(spec, data, model)
    values = [0] * layout.length
    index = layout.index()
    if len(rows) < min_row_count:
        return RingVector.from_ints(layout.ring_bits, values), LocalSummary(len(rows), False, 0)
    values[index[NODES_CONTRIBUTING]] = 1
    suppressed = 0
    numeric = {v: pd.to_numeric(rows[v], errors="coerce").to_numpy(dtype=np.float64)
               for v in spec.variables if model.variable(v).is_numeric}
    present = {v: rows[v].notna().to_numpy() for v in spec.variables if v not in numeric}
    # integer codes: comparing small ints is far cheaper than comparing strings per cell
    dataset_codes = pd.Categorical(rows[DATASET], categories=list(spec.datasets)).codes
    levels = model.variable(spec.by).enumerations if spec.by else ()
    by_codes = pd.Categorical(rows[spec.by], categories=list(levels)).codes if spec.by else None
    dataset_index = {d: i for i, d in enumerate(spec.datasets)}
    level_index = {g: i for i, g in enumerate(levels)}
    for key, i in index.items():
        if key[0] != "rows":
            continue
        dataset = key[1]
        group = key[2] if len(key) > 2 else None
        selected = dataset_codes == dataset_index[dataset]
        if group is not None and by_codes is not None:
            selected &= by_codes == level_index[group]
        n = int(selected.sum())
        if 0 < n < small_cell_threshold:
            suppressed += 1
            continue
        values[i] = n
        if spec.method == "count" or n == 0:
            continue
        for variable in spec.variables:
            cell = (dataset, group, variable)
            if variable in numeric:
                column = numeric[variable][selected]
                finite = column[~np.isnan(column)]
                values[index[("count", *cell)]] = int(finite.size)
                values[index[("sum", *cell)]] = _real(float(np.sum(finite)), variable)
                values[index[("sumsq", *cell)]] = _real(float(np.dot(finite, finite)), variable)
            else:
                values[index[("count", *cell)]] = int(present[variable][selected].sum())
    values[index[CELLS_SUPPRESSED]] = suppressed
    vector = RingVector.from_ints(layout.ring_bits, np.array(values, dtype=object))
    return vector, LocalSummary(len(rows), True, suppressed)
