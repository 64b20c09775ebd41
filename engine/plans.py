"""Algorithm plans: which sufficient statistics a query needs, as a flat vector of slots.

Node and client both derive the layout from the query specification and the data model
alone (never from data), so they agree on the vector without shipping anything about the
rows. Each slot is a count (an exact integer) or a real (a node's local float64 sum encoded
as fixed point with ``REAL_FRAC_BITS`` fractional bits). The ring is planned from the
federation's declared bounds so that no total can wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from crypto.encoding import plan_ring
from engine.errors import QueryError
from engine.query import QuerySpec

#: fractional bits of real slots: 2^-48 absolute resolution on each node's local sum
REAL_FRAC_BITS = 48
#: a node's local real sum must satisfy |S| < 2^REAL_INT_BITS or the node refuses the query
REAL_INT_BITS = 62
#: the protocol's ceiling on participants, used for ring planning
MAX_PARTICIPANTS = 1024

#: slots every plan carries: how many nodes contributed, how many cells they suppressed
NODES_CONTRIBUTING = ("nodes_contributing",)
CELLS_SUPPRESSED = ("cells_suppressed",)


class ModelView(Protocol):
    """What a plan needs to know about the data model."""

    def datasets(self) -> tuple[str, ...]: ...

    def is_numeric(self, code: str) -> bool: ...

    def levels(self, code: str) -> tuple[str, ...]: ...

    def has_variable(self, code: str) -> bool: ...


@dataclass(frozen=True)
class Slot:
    key: tuple[str | None, ...]
    real: bool


@dataclass(frozen=True)
class Layout:
    slots: tuple[Slot, ...]
    ring_bits: int

    @property
    def length(self) -> int:
        return len(self.slots)

    def index(self) -> dict[tuple[str | None, ...], int]:
        return {slot.key: i for i, slot in enumerate(self.slots)}


def ring_bits_for(slots: Sequence[Slot], max_rows_per_node: int) -> int:
    """Smallest ring holding any total of these slots over MAX_PARTICIPANTS nodes."""
    per_node = max((1 << (REAL_INT_BITS + REAL_FRAC_BITS)) if s.real else max_rows_per_node
                   for s in slots)
    bound = per_node * MAX_PARTICIPANTS
    return plan_ring(-bound, bound).bits


def check_variables(spec: QuerySpec, model: ModelView) -> None:
    unknown_datasets = [d for d in spec.datasets if d not in model.datasets()]
    if unknown_datasets:
        raise QueryError(f"unknown dataset(s) {unknown_datasets} in data model {spec.data_model}")
    for code in (*spec.variables, *([spec.by] if spec.by else [])):
        if not model.has_variable(code):
            raise QueryError(f"unknown variable {code!r} in data model {spec.data_model}")
    if spec.by is not None and model.is_numeric(spec.by):
        raise QueryError(f"cannot group by {spec.by!r}: it is not categorical")


def groups(spec: QuerySpec, model: ModelView) -> tuple[str | None, ...]:
    """``None`` is the whole scope; then one group per level of ``by`` (from the model)."""
    return (None,) if spec.by is None else (None, *model.levels(spec.by))


def layout(spec: QuerySpec, model: ModelView, max_rows_per_node: int) -> Layout:
    check_variables(spec, model)
    slots: list[Slot] = []
    if spec.method == "count":
        slots += [Slot(("rows", d), False) for d in spec.datasets]
    elif spec.method == "descriptive_stats":
        for d in spec.datasets:
            for g in groups(spec, model):
                slots.append(Slot(("rows", d, g), False))
                for v in spec.variables:
                    slots.append(Slot(("count", d, g, v), False))
                    if model.is_numeric(v):
                        slots.append(Slot(("sum", d, g, v), True))
                        slots.append(Slot(("sumsq", d, g, v), True))
    else:  # pragma: no cover - QuerySpec refuses unknown methods
        raise QueryError(f"no plan for {spec.method}")
    slots += [Slot(NODES_CONTRIBUTING, False), Slot(CELLS_SUPPRESSED, False)]
    return Layout(tuple(slots), ring_bits_for(slots, max_rows_per_node))
