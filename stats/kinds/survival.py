"""``survival``: per group and interval of a time grid, the events and the censored rows.

Interval j holds times in (grid[j-1], grid[j]]; j = 0 is up to grid[0]; the last, j =
len(grid), holds times past the grid (at risk until its end, never an event time). Rows
missing the duration, the event (or ``by``) are left out. Each (group, interval, events or
censored) count is a cell of its own: groups partition the rows, so the curve of all
groups is the client's sum and a small group cannot be recovered from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stats.kinds.base import Computed, DPProfile, Guard, Kind, unit_bound
from stats.kinds.frame import binary, level_codes, numeric, present
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


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    duration, event, level, grid = survival_of(spec, model)
    happened = binary(rows, event, level)
    mask = present(rows, [duration] + ([spec.by] if spec.by else [])) & ~np.isnan(happened)
    part = rows[mask]
    times = numeric(part, duration)
    events = happened[mask] == 1
    interval = np.searchsorted(np.asarray(grid), times, side="left")
    out = Computed(rows=int(mask.sum()))
    levels = model.levels(spec.by) if spec.by else ()
    by_codes = level_codes(part, spec.by, levels) if spec.by else None
    size = len(grid) + 1
    for group in groups(spec, model, missing=False):
        selected = np.ones(len(part), dtype=bool)
        if by_codes is not None:
            selected = by_codes == levels.index(str(group))
        for head, hit in zip(HEADS, (events, ~events), strict=True):
            counts = np.bincount(interval[selected & hit], minlength=size)
            for j in range(size):
                out.values[(head, group, j)] = int(counts[j])
                out.guards[(head, group, j)] = {Guard.ROWS: int(counts[j])}
    return out


def _size(spec: QuerySpec, model: ModelView) -> int:
    return len(HEADS) * len(groups(spec, model, missing=False)) * (len(survival_of(spec, model)[3]) + 1)


KIND = Kind("survival", _layout, _compute, unit_bound, size=_size,
            row_cost=lambda spec, model: 8 * 6,
            # a row is in one group, one interval, and is an event or censored there
            dp=DPProfile(rows_touch=lambda spec, model: 1))
