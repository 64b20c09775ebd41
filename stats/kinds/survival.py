"""``survival``: per group and interval of a time grid, the events and the censored rows.

Interval j holds times in (grid[j-1], grid[j]]; j = 0 is up to grid[0]; the last, j =
len(grid), holds times past the grid (at risk until its end, never an event time). Rows
missing the duration, the event (or ``by``) are left out. Each (group, interval, events or
censored) count is a cell of its own: groups partition the rows, so the curve of all
groups is the client's sum and a small group cannot be recovered from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from stats.aggregates import (
    Aggregation,
    All,
    Binary,
    Compare,
    Const,
    Defined,
    FlagKey,
    IntervalKey,
    LevelKey,
    Present,
    Result,
    Rows,
    Statistic,
    Var,
    variables_of,
)
from stats.aggregates import Key as GroupKey
from stats.kinds.base import Computed, DPProfile, Guard, Kind, Scale, unit_bound
from stats.kinds.params import survival_of
from stats.plans import Disclosure, ModelView, Slot, groups

if TYPE_CHECKING:
    from stats.query import QuerySpec

HEADS = ("events", "censored")


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    _, _, _, grid = survival_of(spec, model)
    keys = [(head, g, j) for g in groups(spec, model, missing=False)
            for j in range(len(grid) + 1) for head in HEADS]
    return [Slot(key, False, Disclosure.ROWS, key) for key in keys]


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    """The complete rows grouped by ``by``'s level, the interval of their time and whether
    the event happened: each group's rows are one count."""
    duration, event, level, grid = survival_of(spec, model)
    happened = Binary(event, level)
    keys: list[GroupKey] = [IntervalKey(Var(duration), tuple(float(g) for g in grid)),
                            FlagKey(Compare("=", happened, Const(1.0)))]
    present = [Present(duration), Defined(happened)]
    levels: tuple[str, ...] = ()
    if spec.by:
        levels = tuple(model.levels(spec.by))
        keys.insert(0, LevelKey(spec.by, levels))
        present.append(Present(spec.by))
    aggregation = Aggregation((Rows(),), tuple(keys), All(tuple(present)))
    offset = 1 if spec.by else 0

    def assemble(results: Sequence[Result]) -> Computed:
        counts = results[0]
        out = Computed()
        for group in groups(spec, model, missing=False):
            prefix = (levels.index(str(group)),) if spec.by else ()
            for j in range(len(grid) + 1):
                for head, flag in zip(HEADS, (1, 0), strict=True):
                    n = int(counts.get((*prefix, j, flag), (0,))[0])
                    out.values[(head, group, j)] = n
                    out.guards[(head, group, j)] = {Guard.ROWS: n}
        out.rows = int(sum(v[0] for k, v in counts.items() if not offset or k[0] >= 0))
        return out

    return Statistic((aggregation,), assemble, frozenset(variables_of(aggregation)))


def _size(spec: QuerySpec, model: ModelView) -> int:
    return len(HEADS) * len(groups(spec, model, missing=False)) * (len(survival_of(spec, model)[3]) + 1)


KIND = Kind("survival", _layout, None, unit_bound, size=_size, statistic=_statistic,
            row_cost=lambda spec, model: 8 * 6,
            # a row is in one group, one interval, and is an event or censored there
            dp=DPProfile(rows_touch=lambda spec, model: 1))
