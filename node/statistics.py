"""A node's contribution to a plan: select its rows, compute the kind's statistic, apply the
disclosure rules the kind declares (exact mode) or clip and add a noise share (DP mode),
and encode it for the secure sum.

Counts are exact integers. Real slots are this node's float64 sums, encoded as fixed point
with ``REAL_FRAC_BITS`` fractional bits; the node checked at planning, from its bounds on
its values, that they cannot leave the encodable range. Small cohorts and cells are
protected here, at the data holder: a node whose cohort for a query (its filtered,
complete-case rows) is smaller than the policy's ``min_row_count`` contributes zeros, and
says so only inside the secure sum, through the ``nodes_contributing`` slot; families below
``small_cell_threshold`` are withheld by :func:`engine.kinds.base.release` and counted in
``cells_below_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

from crypto.encoding import RingVector, encode_scalar
from engine.errors import InternalError
from engine.kinds import KINDS
from engine.kinds.base import Clipping, Computed, Scale, release
from engine.plans import (
    CELLS_BELOW_THRESHOLD,
    DATASET,
    NODES_CONTRIBUTING,
    REAL_FRAC_BITS,
    REAL_INT_BITS,
    Layout,
)
from engine.query import QuerySpec
from node import filters
from node.datamodel import DataModel, PlanModel
from privacy.noise import discrete_gaussian_shares

__all__ = ["LocalSummary", "local_vector", "select_rows"]


@dataclass(frozen=True)
class LocalSummary:
    """What the node's operator log may say about a query (never sent to anyone)."""

    rows: int
    contributed: bool
    cells_below_threshold: int
    cells_withheld: int = 0


def select_rows(spec: QuerySpec, data: pd.DataFrame, model: DataModel) -> pd.DataFrame:
    """The rows a query is about: its datasets, then its filter (checked at planning). In
    DP mode on a model with several rows per patient, each patient keeps at most its
    declared number of rows (the first ones), so that the sensitivity holds."""
    selected = data[DATASET].isin(spec.datasets).to_numpy()
    rows = data if selected.all() else data[selected]  # no copy when every row is asked for
    if spec.filters is not None:
        rows = rows[filters.evaluate(filters.from_json(spec.filters), rows).to_numpy(dtype=bool)]
    limit, patient = model.max_rows_per_patient, model.patient_id
    if spec.privacy.get("mode") == "dp" and limit is not None and patient is not None:
        # rows without a patient identifier each count as a patient of their own
        keep = rows.groupby(rows[patient], dropna=True, sort=False).cumcount() < limit
        rows = rows[keep.reindex(rows.index, fill_value=True).to_numpy(dtype=bool)]
    return rows


def _real(value: float | Fraction) -> int:
    # planning bounded every real sum; reaching here means a bug, not a row's value
    if isinstance(value, Fraction):
        # an exact sum of terms rounded at 2^REAL_FRAC_BITS: its integer, exactly
        if abs(value) >= 2**REAL_INT_BITS:
            raise InternalError()
        return round(value * (1 << REAL_FRAC_BITS))
    if not np.isfinite(value) or abs(value) >= 2.0**REAL_INT_BITS:
        raise InternalError()
    return encode_scalar(float(value), REAL_FRAC_BITS)


def local_vector(spec: QuerySpec, layout: Layout, data: pd.DataFrame, model: DataModel, *,
                 min_row_count: int, small_cell_threshold: int) -> tuple[RingVector, LocalSummary]:
    rows = select_rows(spec, data, model)
    if layout.noise is not None:
        return _dp_vector(spec, layout, rows, model)
    computed = KINDS[spec.kind].compute(spec, rows, PlanModel(model))
    return exact_vector(layout, computed, min_row_count=min_row_count,
                        small_cell_threshold=small_cell_threshold)


def exact_vector(layout: Layout, computed: Computed, *, min_row_count: int,
                 small_cell_threshold: int) -> tuple[RingVector, LocalSummary]:
    """An exact-mode contribution from a kind's computed values, whatever computed them:
    the cohort rule, then the disclosure rules of :func:`engine.kinds.base.release`."""
    values: list[int] = [0] * layout.length
    if computed.rows < min_row_count:
        return _vector(layout, values), LocalSummary(computed.rows, False, 0)
    released = release(layout.slots, computed, small_cell_threshold)
    for i, slot in enumerate(layout.slots):
        value = released.values.get(slot.key)
        if value is not None:
            values[i] = _real(value) if slot.real else int(value)
    index = layout.index()
    values[index[NODES_CONTRIBUTING]] = 1
    values[index[CELLS_BELOW_THRESHOLD]] = released.zeroed
    return _vector(layout, values), LocalSummary(computed.rows, True, released.zeroed,
                                                 released.withheld)


def _vector(layout: Layout, values: list[int]) -> RingVector:
    return RingVector.from_ints(layout.ring_bits, np.array(values, dtype=object))


def clipped(layout: Layout, rows: pd.DataFrame) -> pd.DataFrame:
    """Every variable the query sums, clipped to the bounds its plan recorded (the DP
    sensitivity). Kinds that only count rows clip nothing."""
    assert layout.noise is not None
    if not layout.noise.clipping:
        return rows
    rows = rows.copy()
    for name, low, high in layout.noise.clipping:
        rows[name] = pd.to_numeric(rows[name], errors="coerce").clip(low, high)
    return rows


def clipping(layout: Layout) -> Clipping:
    assert layout.noise is not None
    return {name: (float(low), float(high)) for name, low, high in layout.noise.clipping}


def dp_scale(layout: Layout) -> Scale:
    """Each slot's DP scale: 2^frac_bits units per row bound (the sensitivity)."""
    unit = 1 << layout.frac_bits
    bounds = {slot.key: slot.bound for slot in layout.slots}
    return lambda key: unit / bounds[key]


def dp_encode(layout: Layout, computed: Computed) -> list[int]:
    """The computed values in units of their row bound / 2^frac_bits: exact sums (Fractions
    of the DP scale) exactly, counts and frame-computed floats rounded."""
    unit = 1 << layout.frac_bits
    scale = dp_scale(layout)
    values: list[int] = [0] * layout.length
    for i, slot in enumerate(layout.slots):
        value = computed.values.get(slot.key, 0)
        if isinstance(value, Fraction):
            values[i] = round(value * Fraction(scale(slot.key)))
        else:
            values[i] = round(float(value) * unit / slot.bound)
    return values


def _dp_vector(spec: QuerySpec, layout: Layout, rows: pd.DataFrame, model: DataModel
               ) -> tuple[RingVector, LocalSummary]:
    """Clip, compute, encode each slot in units of its row bound / 2^frac_bits, add this
    node's discrete Gaussian share. No cohort or cell suppression here: it would let one
    row switch a whole contribution on or off, breaking the sensitivity the noise is
    calibrated to; the noise is the protection."""
    assert layout.noise is not None
    kind = KINDS[spec.kind]
    if kind.statistic is not None:
        computed = kind.compute(spec, rows, PlanModel(model), dp_scale(layout),
                                clipping(layout))
    else:
        computed = kind.compute(spec, clipped(layout, rows), PlanModel(model))
    return dp_vector(layout, computed)


def dp_vector(layout: Layout, computed: Computed) -> tuple[RingVector, LocalSummary]:
    """A DP contribution from a kind's computed values: encoded, plus a noise share."""
    assert layout.noise is not None
    values = dp_encode(layout, computed)
    noisy = [i for i, slot in enumerate(layout.slots) if layout.noisy(slot)]
    shares = discrete_gaussian_shares(layout.noise.sigma_share, len(noisy))
    for i, share in zip(noisy, shares, strict=True):
        values[i] += int(share)
    values[layout.index()[NODES_CONTRIBUTING]] = 1
    return _vector(layout, values), LocalSummary(computed.rows, True, 0)
