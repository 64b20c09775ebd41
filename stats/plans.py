"""Algorithm plans: which sufficient statistics a query needs, as a flat vector of slots.

Node and client both derive the layout from the query specification and the data model
alone (never from data), so they agree on the vector without shipping anything about the
rows. Each slot is a count (an exact integer) or a real (a node's local float64 sum encoded
as fixed point with ``REAL_FRAC_BITS`` fractional bits). The ring is planned from the
federation's declared bounds so that no total can wrap. Each statistic kind registers its
layout in :mod:`stats.kinds`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from crypto.encoding import plan_ring
from protocol.errors import QueryError
from stats.suggest import unknown

if TYPE_CHECKING:
    from stats.query import QuerySpec

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
CELLS_BELOW_THRESHOLD = ("cells_below_threshold",)
#: a verifiable plan's slots for the digits of each node's commitment blinding
#: (protocol/commitment.py; 16 digits of 16 bits, as crypto.commitments.DIGITS/DIGIT_BITS)
BLINDING = tuple(("blinding", i) for i in range(16))

Key = tuple[object, ...]

#: the variable (and column) that says which dataset a row belongs to, as in the MIP
DATASET = "dataset"


class _MissingLevel:
    """The group of the rows whose grouping variable is missing: never a level of the data
    model, so it cannot collide with one. Nodes release it as a cell of its own, beside the
    levels, so that the groups partition the rows and no margin is ever released."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _MissingLevel()


class Disclosure(enum.Enum):
    """What a released value is, which decides the rule that protects it in exact mode
    (stats/kinds/base.py states each rule; node/statistics.py enforces them)."""

    #: the number of rows in one cell; the cells of a kind partition the query's rows
    ROWS = "row count"
    #: the number of (non-missing) values that enter its family's sums
    VALUES = "value count"
    #: a sum of row values (or of products of them) over its family's rows
    SUM = "sum"
    #: a sum whose per-row weights follow from parameters the researcher chose (a Newton
    #: step's p(1 - p)), so that a few rows could carry it
    WEIGHTED = "weighted sum"
    #: protocol bookkeeping: how many nodes contributed, how many cells they withheld
    TALLY = "tally"


class ModelView(Protocol):
    """What a plan needs to know about the data model."""

    def datasets(self) -> tuple[str, ...]: ...

    def is_numeric(self, code: str) -> bool: ...

    def levels(self, code: str) -> tuple[str, ...]: ...

    def has_variable(self, code: str) -> bool: ...

    def bounds(self, code: str) -> tuple[float, float] | None: ...

    def dp_rows_per_unit(self) -> int:
        """Rows one privacy unit (a patient) may have; raises QueryError where the model
        cannot support differential privacy (bounds inferred from the rows, or several rows
        per patient without a declared identifier and maximum)."""
        ...


@dataclass(frozen=True)
class Slot:
    """One value of the vector. ``disclosure`` says what the value is (stats/kinds/base.py
    lists the classes and the rule each obeys) and ``family`` which slots a node releases or
    withholds together (a cell's count with the sums over that cell)."""

    key: Key
    real: bool
    disclosure: Disclosure
    family: Key
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
    #: noisy slots (the vector's dimension, without the bookkeeping slots)
    dimension: int = 0
    #: rows one privacy unit (a patient) may have in the data
    rows_per_unit: int = 1
    #: (variable, low, high) each value is clipped to before it is summed
    clipping: tuple[tuple[str, float, float], ...] = ()


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
        """Tallies (and blinding digits) are bookkeeping; every other slot carries noise in
        DP mode."""
        return self.noise is not None and slot.disclosure is not Disclosure.TALLY

    @property
    def verifiable(self) -> bool:
        """Whether contributors commit to their vectors (mask mode's verifiable totals)."""
        return bool(self.slots) and self.slots[-1].key == BLINDING[-1]

    def without_blinding(self) -> Layout:
        """The layout a researcher reads once the total is checked: the blinding digits
        (uniformly random per query) are left out."""
        if not self.verifiable:
            return self
        return replace(self, slots=self.slots[:-len(BLINDING)])


def ring_bits_for(slots: Sequence[Slot], max_rows_per_node: int) -> int:
    """Smallest ring holding any total of these slots over MAX_PARTICIPANTS nodes."""
    per_node = max((1 << (REAL_INT_BITS + REAL_FRAC_BITS)) if s.real else max_rows_per_node
                   for s in slots)
    bound = per_node * MAX_PARTICIPANTS
    return plan_ring(-bound, bound).bits


def check_variable(model: ModelView, code: str, *, numeric: bool | None = None) -> None:
    if not model.has_variable(code):
        raise QueryError(unknown("variable", code, _names(model)))
    if numeric is True and not model.is_numeric(code):
        raise QueryError(f"{code!r} is categorical; a numeric variable is needed here")
    if numeric is False and model.is_numeric(code):
        raise QueryError(f"{code!r} is numeric; a categorical variable is needed here")


def _names(model: ModelView) -> tuple[str, ...]:
    """The variable names a view knows, for hints (a view without a list gives none)."""
    names = getattr(model, "variable_names", None)
    return tuple(names()) if callable(names) else ()


def check_common(spec: QuerySpec, model: ModelView) -> None:
    unknown_datasets = [d for d in spec.datasets if d not in model.datasets()]
    if unknown_datasets:
        raise QueryError(unknown("dataset", unknown_datasets[0], model.datasets(),
                                 f"data model {spec.data_model}"))
    for code in spec.variables:
        if not model.has_variable(code):
            raise QueryError(unknown("variable", code, _names(model),
                                     f"data model {spec.data_model}"))
    if spec.by is not None:
        check_variable(model, spec.by, numeric=False)


def groups(spec: QuerySpec, model: ModelView, *, missing: bool = True
           ) -> tuple[str | None | _MissingLevel, ...]:
    """The groups a query's rows fall into: ``None`` (every row) without ``by``; else each
    level of ``by`` (from the model) and, with ``missing``, :data:`MISSING` for the rows
    whose ``by`` is missing. Groups never overlap: a margin is the client's sum."""
    if spec.by is None:
        return (None,)
    levels = model.levels(spec.by)
    return (*levels, MISSING) if missing else levels


#: clipping bounds must keep every slot's scale a normal float (bounds of 0 or 1e-300 would
#: underflow a product of bounds to 0, and nothing could be divided by it)
MIN_MAGNITUDE = 1e-12
MAX_MAGNITUDE = 1e12


def clipping_bounds(spec: QuerySpec, model: ModelView, variables: Sequence[str]
                    ) -> dict[str, tuple[float, float]]:
    """DP clipping bounds of the variables a query sums: the request's ``bounds``, else the
    data model's min/max. They are the sensitivity, so they are checked here, at planning:
    finite, low < high, magnitude in [MIN_MAGNITUDE, MAX_MAGNITUDE]."""
    declared = spec.privacy.get("bounds", {})
    out = {}
    for code in variables:
        pair = declared.get(code)
        pair = tuple(pair) if pair is not None else model.bounds(code)
        if pair is None:
            raise QueryError(f"no bounds for {code!r}: the data model declares no min/max, so "
                             f"pass bounds={{{code!r}: (low, high)}} with the DP request")
        low, high = float(pair[0]), float(pair[1])
        magnitude = max(abs(low), abs(high))
        if not (math.isfinite(low) and math.isfinite(high) and low < high
                and MIN_MAGNITUDE <= magnitude <= MAX_MAGNITUDE):
            raise QueryError(f"the bounds of {code!r} must be finite with low < high and "
                             f"max(|low|, |high|) in [{MIN_MAGNITUDE:g}, {MAX_MAGNITUDE:g}]")
        out[code] = (low, high)
    return out
