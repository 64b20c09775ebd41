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
from engine.design import design_variables
from engine.errors import QueryError
from engine.plans import CELLS_SUPPRESSED, NODES_CONTRIBUTING, REAL_FRAC_BITS, REAL_INT_BITS, Layout
from engine.query import QuerySpec
from node import filters
from node.datamodel import DATASET, DataModel
from node.kinds import COMPUTERS, PlanModel
from privacy.noise import discrete_gaussian_shares

__all__ = ["LocalSummary", "PlanModel", "local_vector", "select_rows"]

#: statistic kinds whose slots count rows: one row moves one slot by one, whatever its values
COUNTING_KINDS = frozenset({"count", "counts", "survival"})


@dataclass(frozen=True)
class LocalSummary:
    """What the node's operator log may say about a query (never sent to anyone)."""

    rows: int
    contributed: bool
    cells_suppressed: int


def select_rows(spec: QuerySpec, data: pd.DataFrame, model: DataModel) -> pd.DataFrame:
    """The rows a query is about: its datasets, then its filter."""
    selected = data[DATASET].isin(spec.datasets).to_numpy()
    rows = data if selected.all() else data[selected]  # no copy when every row is asked for
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
    if layout.noise is not None:
        return _dp_vector(spec, layout, rows, model)
    values: list[int] = [0] * layout.length
    index = layout.index()
    computed = COMPUTERS[spec.kind](spec, rows, model, small_cell_threshold)
    if computed.rows < min_row_count:
        vector = RingVector.from_ints(layout.ring_bits, np.array(values, dtype=object))
        return vector, LocalSummary(computed.rows, False, 0)
    for i, slot in enumerate(layout.slots):
        value = computed.values.get(slot.key)
        if value is not None:
            values[i] = _real(value, slot.key) if slot.real else int(value)
    values[index[NODES_CONTRIBUTING]] = 1
    values[index[CELLS_SUPPRESSED]] = computed.suppressed
    vector = RingVector.from_ints(layout.ring_bits, np.array(values, dtype=object))
    return vector, LocalSummary(computed.rows, True, computed.suppressed)


def clipped(spec: QuerySpec, rows: pd.DataFrame, model: DataModel) -> pd.DataFrame:
    """Every numeric variable the query sums, clipped to its bounds (the DP sensitivity).
    Kinds that only count rows (tables, binned histograms, survival intervals) need none."""
    if spec.kind in COUNTING_KINDS:
        return rows
    view = PlanModel(model)
    names = set(spec.variables) | set(design_variables(spec.parameters.get("terms") or []))
    rows = rows.copy()
    for name in sorted(names):
        if not view.has_variable(name) or not view.is_numeric(name):
            continue
        low_high = spec.privacy.get("bounds", {}).get(name) or view.bounds(name)
        if low_high is None:
            raise QueryError(f"no bounds for {name!r}")
        values = pd.to_numeric(rows[name], errors="coerce")
        rows[name] = values.clip(float(low_high[0]), float(low_high[1]))
    return rows


def _dp_vector(spec: QuerySpec, layout: Layout, rows: pd.DataFrame, model: DataModel
               ) -> tuple[RingVector, LocalSummary]:
    """Clip, compute, encode each slot in units of its row bound / 2^frac_bits, add this
    node's discrete Gaussian share. No cohort or cell suppression here: it would let one
    row switch a whole contribution on or off, breaking the sensitivity the noise is
    calibrated to; the noise is the protection."""
    assert layout.noise is not None
    computed = COMPUTERS[spec.kind](spec, clipped(spec, rows, model), model, 1)
    unit = 1 << layout.frac_bits
    noisy = [i for i, slot in enumerate(layout.slots) if layout.noisy(slot)]
    shares = discrete_gaussian_shares(layout.noise.sigma_share, len(noisy))
    values: list[int] = [0] * layout.length
    for i, slot in enumerate(layout.slots):
        value = computed.values.get(slot.key, 0)
        values[i] = round(float(value) * unit / slot.bound)
    for i, share in zip(noisy, shares, strict=True):
        values[i] += int(share)
    values[layout.index()[NODES_CONTRIBUTING]] = 1
    vector = RingVector.from_ints(layout.ring_bits, np.array(values, dtype=object))
    return vector, LocalSummary(computed.rows, True, 0)
