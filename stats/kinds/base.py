"""What a statistic kind declares, in one place, and the disclosure rules every kind obeys.

A *kind* is a sufficient statistic nodes compute for a query (moments, cross-products, table
cells, ...). Its declaration (one module per kind in this package) says:

* its **slots**, from the query and the public data model alone; every slot carries its
  :class:`~stats.plans.Disclosure` class and the **family** it belongs to. A node releases
  or withholds a family as a whole: a cell's count together with the sums over that cell.
  The families of a kind are disjoint cells of the query's rows (groups, table cells,
  clusters, folds), so no released value is the sum of others: a margin ("all", a row
  total) is computed by the client from released cells and can never recover a withheld
  one by subtraction;
* how a node **computes** the slots on its rows, and each family's **guards**: the
  count-like quantities the exact-mode rules test (:class:`Guard`);
* each slot's **row bound**: the most one row can add to it, given the magnitude of every
  variable. In DP mode the magnitudes are the clipping bounds, so the row bounds are the
  sensitivity; in exact mode they are what a node's values can reach, so a node refuses,
  before reading the query's rows, a query whose sums could leave the exactly encodable
  range. Kinds whose sums can be far below rows x bound (a sum of exp(x)^2) may instead
  give the **absolute sums** of each slot over every row of the query's datasets, ignoring
  its filter: a bound on any cohort's sum that no filter can aim at one row;
* its **DP profile**, when it offers differential privacy: how many slots one row can
  change (the variables it sums are clipped);
* what it costs: its number of slots (checked against a node's policy before a layout is
  built) and its working memory per row.

The rules (enforced in :func:`release` from the declaration alone, so a new kind cannot
forget one), with ``k`` the node's ``small_cell_threshold``:

* A family whose count (rows, or values entering its sums) lies in ``[1, k)`` is withheld
  whole: it reads as zeros, which is what an empty cell shows.
* Its ``SUM`` slots are withheld (read 0) where fewer than ``k`` of the terms they add are
  non-zero (a sum whose other terms are 0 is one patient's value); its ``WEIGHTED`` slots
  where the effective sample size ``(sum w)^2 / sum w^2`` of their weights is below ``k``.
  The counts stay: a sum withheld this way reads exactly as a sum of zeros does, so the
  researcher cannot tell "withheld" from "all zero" either.
* The number of families with a guard below ``k`` is released (``cells_below_threshold``),
  counting guards of 0 with the others, so it never tells an empty cell from a small one.

A kind that sums centred values (``z = (x - c) / h``, see :mod:`stats.kinds.centring`)
gives, for each such sum, the value its family's values would sum to were they all 0
(``Computed.zeros``): a sum withheld for few non-zero terms reads as that, so that it still
reads exactly as a sum of zeros does. Such a kind also says how the client recovers the
plain totals from the released ones (``Kind.uncentre``).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

from stats.aggregates import Statistic
from stats.plans import REAL_FRAC_BITS, Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


class Guard(enum.Enum):
    """A count-like quantity a family's release depends on (computed by the kind)."""

    #: rows in the family's cell
    ROWS = "rows"
    #: values entering the family's sums (rows where the summed variables are present)
    VALUES = "values"
    #: the smallest number of rows with a non-zero term in any of the family's sums,
    #: products and reference levels included
    NONZERO = "non-zero terms"
    #: the smallest effective sample size (sum w)^2 / sum w^2 of the family's weights, taken
    #: over the rows where each weighted sum's term is non-zero
    WEIGHTS = "effective sample size"


#: the guards a family must carry for each class of slot it holds
REQUIRED_GUARDS: dict[Disclosure, tuple[frozenset[Guard], ...]] = {
    Disclosure.ROWS: (frozenset({Guard.ROWS}),),
    Disclosure.VALUES: (frozenset({Guard.VALUES}),),
    # a sum needs its count (rows or values) and the count of its non-zero terms
    Disclosure.SUM: (frozenset({Guard.ROWS, Guard.VALUES}), frozenset({Guard.NONZERO})),
    Disclosure.WEIGHTED: (frozenset({Guard.ROWS}), frozenset({Guard.WEIGHTS})),
    Disclosure.TALLY: (),
}


#: the slots a guard below the threshold withholds: a small count withholds its whole
#: family; few non-zero terms only its sums; a small effective sample size only its
#: weighted sums
GUARDED: dict[Guard, frozenset[Disclosure]] = {
    Guard.ROWS: frozenset(Disclosure),
    Guard.VALUES: frozenset(Disclosure),
    Guard.NONZERO: frozenset({Disclosure.SUM}),
    Guard.WEIGHTS: frozenset({Disclosure.WEIGHTED}),
}


def missing_guards(classes: set[Disclosure], guards: set[Guard]) -> list[str]:
    """What a family holding slots of ``classes`` lacks among ``guards`` (empty if none)."""
    lacking = []
    for cls in sorted(classes, key=lambda c: c.value):
        for alternatives in REQUIRED_GUARDS[cls]:
            if not alternatives & guards:
                lacking.append(f"{cls.value} needs {'/'.join(sorted(g.value for g in alternatives))}")
    return lacking


@functools.lru_cache(maxsize=1024)
def _lacking(classes: frozenset[Disclosure], guards: frozenset[Guard]) -> tuple[str, ...]:
    # a kind's families come in a few shapes: check each shape once, not each family
    return tuple(missing_guards(set(classes), set(guards)))


@dataclass
class Computed:
    """A node's statistic for one kind, before the disclosure rules. Counts are ints; sums
    are exact rationals (the fixed-point sums of :mod:`stats.aggregates`, in the slot's
    units), or floats where a caller builds one by hand."""

    values: dict[Key, int | float | Fraction] = field(default_factory=dict)
    #: per family, its guards (see :class:`Guard`)
    guards: dict[Key, dict[Guard, float]] = field(default_factory=dict)
    #: rows the statistic used (after complete-case selection): the node's cohort
    rows: int = 0
    #: for sums of centred values: what the sum reads when it is withheld for few non-zero
    #: terms (the sum of its family's values were they all 0); absent slots read 0
    zeros: dict[Key, int | float | Fraction] = field(default_factory=dict)


@dataclass(frozen=True)
class Released:
    """What a node may put in its vector for one kind (exact mode)."""

    values: dict[Key, int | float | Fraction]
    #: families with a guard below the threshold, 0 included (see the module docstring)
    zeroed: int
    #: families with slots withheld because a guard lay in [1, k) (the node's log only)
    withheld: int


class DeclarationError(Exception):
    """A kind's computation does not match its declaration: a bug, never a data problem."""


def release(slots: tuple[Slot, ...] | list[Slot], computed: Computed, threshold: int) -> Released:
    """Apply the exact-mode rules to a kind's computed values, family by family."""
    families: dict[Key, list[Slot]] = {}
    for slot in slots:
        if slot.disclosure is not Disclosure.TALLY:
            families.setdefault(slot.family, []).append(slot)
    known = {slot.key for members in families.values() for slot in members}
    stray = [key for key in computed.values if key not in known]
    if stray:
        raise DeclarationError(f"computed values for undeclared slots {stray[:3]}")
    values: dict[Key, int | float | Fraction] = {}
    zeroed = withheld = 0
    for family, members in families.items():
        guards = computed.guards.get(family, {})
        lacking = _lacking(frozenset(s.disclosure for s in members), frozenset(guards))
        if lacking:
            raise DeclarationError(f"family {family}: {'; '.join(lacking)}")
        small = {guard for guard, value in guards.items() if 0 < value < threshold}
        hidden: set[Disclosure] = set()
        for guard in small:
            hidden |= GUARDED[guard]
        # a family whose count is withheld reads as an empty cell; one whose sums alone
        # are withheld, as a cell of zeros
        whole = bool(small & {Guard.ROWS, Guard.VALUES})
        withheld += bool(small)
        zeroed += threshold > 1 and any(value < threshold for value in guards.values())
        for slot in members:
            if slot.disclosure not in hidden and slot.key in computed.values:
                values[slot.key] = computed.values[slot.key]
            elif not whole and slot.disclosure in hidden and slot.key in computed.zeros:
                values[slot.key] = computed.zeros[slot.key]
    return Released(values, zeroed, withheld)


# --- the declaration ------------------------------------------------------------------------

LayoutFn = Callable[["QuerySpec", ModelView], list[Slot]]
#: a kind's computation on rows held in a DataFrame (kinds not yet declared as a Statistic)
ComputeFn = Callable[["QuerySpec", pd.DataFrame, ModelView], Computed]
#: per real slot, the scale its terms are rounded at (2^REAL_FRAC_BITS in exact mode; in DP
#: mode, 2^frac_bits / the slot's row bound): ExactSum(term, scale(key))
Scale = Callable[[Key], float]
#: the aggregations a kind computes (stats/aggregates.py) and how they become ``Computed``
StatisticFn = Callable[["QuerySpec", ModelView, Scale], Statistic]
#: per real slot, sum of |each row's term| over every row of the query's datasets (floats)
AbsStatisticFn = Callable[["QuerySpec", ModelView], Statistic]
#: magnitude of a variable: the largest |value| a row can hold
Magnitude = Callable[[str], float]
RowBoundFn = Callable[["QuerySpec", ModelView, Magnitude], Callable[[Key], float]]
CountFn = Callable[["QuerySpec", ModelView], int]
#: for a slot key, the released slots and exact coefficients whose combination is its plain
#: (uncentred) total; None where the slot is released as it is
UncentreFn = Callable[["QuerySpec", ModelView], Callable[[Key], dict[Key, Fraction] | None]]
#: a phrase naming what a slot sums, for refusals ("the sum of squares of 'age'")
DescribeFn = Callable[["QuerySpec", ModelView, Key], str]


@dataclass(frozen=True)
class DPProfile:
    """How a kind offers differential privacy: the slots one row (added or removed) can
    change, each by at most its row bound. ``check`` refuses what the kind cannot clip."""

    rows_touch: CountFn
    check: Callable[[QuerySpec, ModelView], None] = lambda spec, model: None


#: the scale of every real slot in exact mode: the fixed point of the secure sum
EXACT_SCALE = float(1 << REAL_FRAC_BITS)


def exact_scale(key: Key) -> float:
    return EXACT_SCALE


#: (low, high) per variable: the DP clipping bounds, applied to a value before any use
Clipping = dict[str, tuple[float, float]]


@dataclass(frozen=True)
class Kind:
    """A kind declares its computation once, as a :class:`~stats.aggregates.Statistic`
    (``statistic``), which every backend runs (pandas here, SQL at the node); kinds not yet
    declared that way give ``frame_compute``, run on a DataFrame of the query's rows."""

    name: str
    layout: LayoutFn
    frame_compute: ComputeFn | None
    row_bound: RowBoundFn
    #: number of slots, computed without building the layout (policies bound it)
    size: CountFn
    #: bytes of working memory per row of the node's data
    row_cost: CountFn
    #: numeric variables whose values enter sums (clipped in DP mode)
    summed: Callable[[QuerySpec, ModelView], list[str]] = lambda spec, model: []
    dp: DPProfile | None = None
    statistic: StatisticFn | None = None
    #: per real slot, sum of |each row's term| over the given rows (see the module doc)
    abs_statistic: AbsStatisticFn | None = None
    #: kinds that sum centred values: how the client recovers the plain totals
    uncentre: UncentreFn | None = None
    #: a phrase naming what a slot sums (refusals name it)
    describe: DescribeFn | None = None

    def __post_init__(self) -> None:
        if (self.frame_compute is None) == (self.statistic is None):
            raise DeclarationError(f"kind {self.name}: give a statistic or a frame_compute")

    def compute(self, spec: QuerySpec, rows: pd.DataFrame, model: ModelView,
                scale: Scale = exact_scale, clip: Clipping | None = None) -> Computed:
        """The statistic on rows held in a DataFrame (the in-memory path). ``clip`` is
        applied by declared kinds; a ``frame_compute`` kind gets rows clipped already."""
        if self.statistic is None:
            assert self.frame_compute is not None
            return self.frame_compute(spec, rows, model)
        from stats.kinds.evaluate import run

        return cast(Computed, run(self.statistic(spec, model, scale), rows, clip))

    def abs_sums(self, spec: QuerySpec, rows: pd.DataFrame, model: ModelView
                 ) -> dict[Key, float]:
        if self.abs_statistic is None:
            return {}
        from stats.kinds.evaluate import run

        return cast(dict[Key, float], run(self.abs_statistic(spec, model), rows))


def unit_bound(spec: Any, model: ModelView, magnitude: Magnitude) -> Callable[[Key], float]:
    """Row bound of kinds that only count rows: one row adds at most 1 anywhere."""
    return lambda key: 1.0
