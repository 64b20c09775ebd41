"""Algorithm plans: which sufficient statistics a query needs, as a flat vector of slots.

Node and client both derive the layout from the query specification and the data model
alone (never from data), so they agree on the vector without shipping anything about the
rows. Each slot is a count (an exact integer) or a real (a node's local float64 sum encoded
as fixed point with ``REAL_FRAC_BITS`` fractional bits). The ring is planned from the
federation's declared bounds so that no total can wrap. Each statistic kind registers its
layout in :mod:`engine.kinds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from crypto.encoding import plan_ring
from engine.errors import QueryError

if TYPE_CHECKING:
    from engine.query import QuerySpec

#: fractional bits of real slots: 2^-48 absolute resolution on each node's local sum
REAL_FRAC_BITS = 48
#: a node's local real sum must satisfy |S| < 2^REAL_INT_BITS or the node refuses the query
REAL_INT_BITS = 62
#: DP slots are encoded in units of (row bound) / 2^DP_FRAC_BITS: far below the noise
DP_FRAC_BITS = 20
#: the protocol's ceiling on participants, used for ring planning
MAX_PARTICIPANTS = 1024
MAX_SLOTS = 1 << 21

#: slots every plan carries: how many nodes contributed, how many cells they suppressed
NODES_CONTRIBUTING = ("nodes_contributing",)
CELLS_SUPPRESSED = ("cells_suppressed",)

Key = tuple[object, ...]


class ModelView(Protocol):
    """What a plan needs to know about the data model."""

    def datasets(self) -> tuple[str, ...]: ...

    def is_numeric(self, code: str) -> bool: ...

    def levels(self, code: str) -> tuple[str, ...]: ...

    def has_variable(self, code: str) -> bool: ...

    def bounds(self, code: str) -> tuple[float, float] | None: ...


@dataclass(frozen=True)
class Slot:
    key: Key
    real: bool
    #: DP only: the most one row can add to this slot (|value| bound after clipping); the
    #: slot is encoded in units of bound / 2^frac_bits so that every slot has the same
    #: sensitivity and one noise scale fits the vector
    bound: float = 1.0


@dataclass(frozen=True)
class NoisePlan:
    """The distributed discrete Gaussian every node adds (see privacy/calibration.py)."""

    rho: float
    #: honest nodes assumed to survive a round; their shares alone give rho-zCDP
    honest: int
    #: slots one row can change (each by at most its bound)
    rows_touch: int
    sensitivity_l2: float
    sigma_share: float
    #: standard deviation of one node's share (the discrete Gaussian's exact std)
    share_std: float


@dataclass(frozen=True)
class Layout:
    slots: tuple[Slot, ...]
    ring_bits: int
    frac_bits: int = REAL_FRAC_BITS
    noise: NoisePlan | None = None

    @property
    def length(self) -> int:
        return len(self.slots)

    def index(self) -> dict[Key, int]:
        return {slot.key: i for i, slot in enumerate(self.slots)}

    def noisy(self, slot: Slot) -> bool:
        """Bookkeeping slots are public facts; every other slot carries noise in DP mode."""
        return self.noise is not None and slot.key not in (NODES_CONTRIBUTING, CELLS_SUPPRESSED)


def ring_bits_for(slots: Sequence[Slot], max_rows_per_node: int) -> int:
    """Smallest ring holding any total of these slots over MAX_PARTICIPANTS nodes."""
    per_node = max((1 << (REAL_INT_BITS + REAL_FRAC_BITS)) if s.real else max_rows_per_node
                   for s in slots)
    bound = per_node * MAX_PARTICIPANTS
    return plan_ring(-bound, bound).bits


def check_variable(model: ModelView, code: str, *, numeric: bool | None = None) -> None:
    if not model.has_variable(code):
        raise QueryError(f"unknown variable {code!r}")
    if numeric is True and not model.is_numeric(code):
        raise QueryError(f"{code!r} is categorical; a numeric variable is needed here")
    if numeric is False and model.is_numeric(code):
        raise QueryError(f"{code!r} is numeric; a categorical variable is needed here")


def check_common(spec: QuerySpec, model: ModelView) -> None:
    unknown_datasets = [d for d in spec.datasets if d not in model.datasets()]
    if unknown_datasets:
        raise QueryError(f"unknown dataset(s) {unknown_datasets} in data model {spec.data_model}")
    for code in spec.variables:
        if not model.has_variable(code):
            raise QueryError(f"unknown variable {code!r} in data model {spec.data_model}")
    if spec.by is not None:
        check_variable(model, spec.by, numeric=False)


def groups(spec: QuerySpec, model: ModelView) -> tuple[str | None, ...]:
    """``None`` is the whole scope; then one group per level of ``by`` (from the model)."""
    return (None,) if spec.by is None else (None, *model.levels(spec.by))


def variable_bound(spec: QuerySpec, model: ModelView, code: str) -> float:
    """max(|low|, |high|) of a numeric variable, from the query's bounds or the data model.
    In DP mode these are the clipping bounds, hence the sensitivity."""
    declared = spec.privacy.get("bounds", {}).get(code)
    pair = tuple(declared) if declared is not None else model.bounds(code)
    if pair is None:
        raise QueryError(f"no bounds for {code!r}: the data model declares no min/max, so "
                         f"pass bounds={{{code!r}: (low, high)}} with the DP request")
    return float(max(abs(pair[0]), abs(pair[1]), 1e-300))


def layout(spec: QuerySpec, model: ModelView, max_rows_per_node: int, *,
           honest_nodes: int = 1) -> Layout:
    from engine.kinds import DP_PROFILES, KINDS

    check_common(spec, model)
    slots = list(KINDS[spec.kind](spec, model))
    if len(slots) + 2 > MAX_SLOTS:
        raise QueryError(f"the query needs {len(slots)} values; at most {MAX_SLOTS} are allowed")
    bookkeeping = [Slot(NODES_CONTRIBUTING, False), Slot(CELLS_SUPPRESSED, False)]
    if spec.privacy.get("mode") != "dp":
        slots += bookkeeping
        return Layout(tuple(slots), ring_bits_for(slots, max_rows_per_node))
    profile = DP_PROFILES.get(spec.kind)
    if profile is None:
        raise QueryError(f"{spec.algorithm} does not offer differential privacy yet")
    scale_of, rows_touch = profile(spec, model)
    slots = [Slot(s.key, s.real, scale_of(s.key)) for s in slots] + bookkeeping
    return _dp_layout(spec, slots, rows_touch, max_rows_per_node, honest_nodes)


def _dp_layout(spec: QuerySpec, slots: list[Slot], rows_touch: int, max_rows_per_node: int,
               honest_nodes: int) -> Layout:
    from privacy.calibration import discrete_gaussian_variance, share_sigma
    from privacy.noise import tail_bound

    rho = float(spec.privacy["rho"])
    unit = 1 << DP_FRAC_BITS
    # every noisy slot moves by at most `unit` when one row is added or removed
    sensitivity = unit * math.sqrt(rows_touch)
    noisy = len(slots) - 2
    sigma = share_sigma(rho, sensitivity, honest_nodes, dim=noisy)
    share_std = math.sqrt(discrete_gaussian_variance(sigma))
    tail = tail_bound(sigma, MAX_PARTICIPANTS, dim=noisy)
    bound = max_rows_per_node * unit * MAX_PARTICIPANTS + tail + unit
    bits = plan_ring(-bound, bound).bits
    noise = NoisePlan(rho, honest_nodes, rows_touch, sensitivity, sigma, share_std)
    return Layout(tuple(slots), bits, DP_FRAC_BITS, noise)
