"""Algorithm plans: which sufficient statistics a query needs, as a flat vector of slots.

Node and client both derive the layout from the query specification and the data model
alone (never from data), so they agree on the vector without shipping anything about the
rows. Each slot is a count (an exact integer) or a real (a node's local float64 sum encoded
as fixed point with ``REAL_FRAC_BITS`` fractional bits). The ring is planned from the
federation's declared bounds so that no total can wrap. Each statistic kind registers its
layout in :mod:`engine.kinds`.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Slot:
    key: Key
    real: bool


@dataclass(frozen=True)
class Layout:
    slots: tuple[Slot, ...]
    ring_bits: int

    @property
    def length(self) -> int:
        return len(self.slots)

    def index(self) -> dict[Key, int]:
        return {slot.key: i for i, slot in enumerate(self.slots)}


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


def layout(spec: QuerySpec, model: ModelView, max_rows_per_node: int) -> Layout:
    from engine.kinds import KINDS

    check_common(spec, model)
    slots = list(KINDS[spec.kind](spec, model))
    slots += [Slot(NODES_CONTRIBUTING, False), Slot(CELLS_SUPPRESSED, False)]
    if len(slots) > MAX_SLOTS:
        raise QueryError(f"the query needs {len(slots)} values; at most {MAX_SLOTS} are allowed")
    return Layout(tuple(slots), ring_bits_for(slots, max_rows_per_node))
