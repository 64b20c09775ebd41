"""``count``: the rows of each dataset. Datasets partition the rows, so each is a cell."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from stats.aggregates import Aggregation, LevelKey, Result, Rows, Statistic
from stats.kinds.base import Computed, DPProfile, Guard, Kind, Scale, unit_bound
from stats.plans import DATASET, Disclosure, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    return [Slot(("rows", d), False, Disclosure.ROWS, ("rows", d)) for d in spec.datasets]


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    def assemble(results: Sequence[Result]) -> Computed:
        counts = results[0]
        out = Computed()
        for index, d in enumerate(spec.datasets):
            n = int(counts.get((index,), (0,))[0])
            out.values[("rows", d)] = n
            out.guards[("rows", d)] = {Guard.ROWS: n}
            out.rows += n
        return out

    grouped = Aggregation((Rows(),), (LevelKey(DATASET, tuple(spec.datasets)),))
    return Statistic((grouped,), assemble, frozenset({DATASET}))


KIND = Kind("count", _layout, None, unit_bound, statistic=_statistic,
            size=lambda spec, model: len(spec.datasets),
            row_cost=lambda spec, model: 16,
            dp=DPProfile(rows_touch=lambda spec, model: 1))
