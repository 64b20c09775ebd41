"""The planner: the vector a query needs (:class:`stats.plans.Layout`), from the query,
the data model and the kind registry alone, never from data. It sits above
:mod:`stats.kinds` (which declares each kind's slots) and :mod:`stats.plans` (the slot
and layout types every kind uses), so neither imports the other's registry."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from crypto.encoding import plan_ring
from protocol.errors import QueryError
from stats.kinds import KINDS
from stats.plans import (
    BLINDING,
    CELLS_BELOW_THRESHOLD,
    DP_FRAC_BITS,
    MAX_PARTICIPANTS,
    MAX_SLOTS,
    NODES_CONTRIBUTING,
    Disclosure,
    Layout,
    ModelView,
    NoisePlan,
    Slot,
    check_common,
    clipping_bounds,
    ring_bits_for,
)

if TYPE_CHECKING:
    from stats.query import QuerySpec


def layout(spec: QuerySpec, model: ModelView, max_rows_per_node: int, *,
           honest_nodes: int = 1, max_slots: int = MAX_SLOTS,
           verifiable: bool = False) -> Layout:
    """The vector a query needs, from the query and the data model alone. ``max_slots``
    (a node's policy) is checked before the layout is built; ``verifiable`` (mask mode)
    adds the slots that carry the commitments' blinding through the secure sum."""
    kind = KINDS[spec.kind]
    check_common(spec, model)
    size = kind.size(spec, model)
    extra = 2 + (len(BLINDING) if verifiable else 0)
    limit = min(max_slots, MAX_SLOTS)
    if size + extra > limit:
        raise QueryError(f"the query needs {size} values; at most {limit - extra} are "
                         "allowed")
    slots = kind.layout(spec, model)
    bookkeeping = [Slot(key, False, Disclosure.TALLY, key)
                   for key in (NODES_CONTRIBUTING, CELLS_BELOW_THRESHOLD,
                               *(BLINDING if verifiable else ()))]
    if spec.privacy.get("mode") != "dp":
        slots += bookkeeping
        return Layout(tuple(slots), ring_bits_for(slots, max_rows_per_node))
    if kind.dp is None:
        raise QueryError(f"{spec.method} does not offer differential privacy yet")
    kind.dp.check(spec, model)
    rows_per_unit = model.dp_rows_per_unit()
    clipping = clipping_bounds(spec, model, kind.summed(spec, model))
    row_bound = kind.row_bound(spec, model, lambda code: max(map(abs, clipping[code])))
    scaled = []
    for slot in slots:
        bound = float(row_bound(slot.key))
        # the slot's scale, 2^frac_bits units per row bound, must be a finite double too
        if not (math.isfinite(bound) and bound > 0
                and math.isfinite((1 << DP_FRAC_BITS) / bound)):
            raise QueryError("the clipping bounds give a slot no usable scale")
        scaled.append(replace(slot, bound=bound))
    noise = _noise_plan(spec, len(scaled), kind.dp.rows_touch(spec, model), rows_per_unit,
                        honest_nodes, clipping)
    return Layout(tuple(scaled + bookkeeping),
                  _dp_ring_bits(noise, max_rows_per_node), DP_FRAC_BITS, noise)


def _noise_plan(spec: QuerySpec, dimension: int, rows_touch: int, rows_per_unit: int,
                honest_nodes: int, clipping: dict[str, tuple[float, float]]) -> NoisePlan:
    from privacy.calibration import discrete_gaussian_variance, share_sigma

    rho = float(spec.privacy["rho"])
    unit = 1 << DP_FRAC_BITS
    # one privacy unit (a patient: up to rows_per_unit rows) moves every slot it touches by
    # at most rows_per_unit * unit before rounding; a node's value is its rounded sum, and
    # rounding can move by one more unit (as OpenDP counts float sums' rounding)
    sensitivity = (rows_per_unit * unit + 1) * math.sqrt(rows_touch)
    sigma = share_sigma(rho, sensitivity, honest_nodes, dim=dimension)
    share_std = math.sqrt(discrete_gaussian_variance(sigma))
    return NoisePlan(rho, honest_nodes, rows_touch, sensitivity, sigma, share_std, dimension,
                     rows_per_unit, tuple(sorted((v, lo, hi) for v, (lo, hi) in clipping.items())))


def _dp_ring_bits(noise: NoisePlan, max_rows_per_node: int) -> int:
    from privacy.noise import tail_bound

    unit = 1 << DP_FRAC_BITS
    tail = tail_bound(noise.sigma_share, MAX_PARTICIPANTS, dim=noise.dimension)
    bound = max_rows_per_node * unit * MAX_PARTICIPANTS + tail + unit
    return plan_ring(-bound, bound).bits
