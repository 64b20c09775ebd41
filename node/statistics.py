"""A node's contribution to a plan: select its rows, compute the kind's statistic, apply the
disclosure rules the kind declares (exact mode) or clip and add a noise share (DP mode),
and encode it for the secure sum.

Counts are exact integers. Real slots are this node's float64 sums, encoded as fixed point
with ``REAL_FRAC_BITS`` fractional bits; the node checked at planning, from its bounds on
its values, that they cannot leave the encodable range. Small cohorts and cells are
protected here, at the data holder: a node whose cohort for a query (its filtered,
complete-case rows) is smaller than the policy's ``min_row_count`` contributes zeros, and
says so only inside the secure sum, through the ``nodes_contributing`` slot; families below
``small_cell_threshold`` are withheld by :func:`stats.kinds.base.release` and counted in
``cells_below_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

from crypto.encoding import RingVector, encode_scalar
from node.rowstore import FrameRows, RowStore, select_rows
from privacy.noise import discrete_gaussian_shares
from protocol.errors import InternalError
from stats.datamodel import DataModel
from stats.kinds.base import Clipping, Computed, Scale, exact_scale, release
from stats.plans import (
    CELLS_BELOW_THRESHOLD,
    NODES_CONTRIBUTING,
    REAL_FRAC_BITS,
    REAL_INT_BITS,
    Layout,
)
from stats.query import QuerySpec

__all__ = ["LocalSummary", "exact_vector", "dp_vector", "local_vector", "select_rows"]


@dataclass(frozen=True)
class LocalSummary:
    """What the node's operator log may say about a query (never sent to anyone)."""

    rows: int
    contributed: bool
    cells_below_threshold: int
    cells_withheld: int = 0


def _real(value: float | Fraction) -> int:
    # planning bounded every real sum; reaching here means a bug, not a row's value
    if isinstance(value, Fraction):
        # an exact sum of terms rounded at 2^REAL_FRAC_BITS: its integer, exactly
        if abs(value) >= 2**REAL_INT_BITS:
            raise InternalError()
        units, remainder = divmod(1 << REAL_FRAC_BITS, value.denominator)
        if remainder == 0:  # a whole number of units (every exact sum): no rounding
            return value.numerator * units
        return round(value * (1 << REAL_FRAC_BITS))
    if not np.isfinite(value) or abs(value) >= 2.0**REAL_INT_BITS:
        raise InternalError()
    return encode_scalar(float(value), REAL_FRAC_BITS)


def local_vector(spec: QuerySpec, layout: Layout, data: pd.DataFrame | RowStore,
                 model: DataModel, *, min_row_count: int, small_cell_threshold: int
                 ) -> tuple[RingVector, LocalSummary]:
    """This node's vector for a query: computed where its rows are kept (a DataFrame, or a
    store such as DuckDB), then the same rules and encoding whatever computed it."""
    store = FrameRows(data, model) if isinstance(data, pd.DataFrame) else data
    if layout.noise is not None:
        return dp_vector(layout, store.computed(spec, dp_scale(layout), clipping(layout)))
    computed = store.computed(spec, exact_scale, None)
    return exact_vector(layout, computed, min_row_count=min_row_count,
                        small_cell_threshold=small_cell_threshold)


def exact_vector(layout: Layout, computed: Computed, *, min_row_count: int,
                 small_cell_threshold: int) -> tuple[RingVector, LocalSummary]:
    """An exact-mode contribution from a kind's computed values, whatever computed them:
    the cohort rule, then the disclosure rules of :func:`stats.kinds.base.release`."""
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
