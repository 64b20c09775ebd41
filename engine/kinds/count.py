"""``count``: the rows of each dataset. Datasets partition the rows, so each is a cell."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from engine.kinds.base import Computed, DPProfile, Guard, Kind, unit_bound
from engine.plans import DATASET, Disclosure, ModelView, Slot

if TYPE_CHECKING:
    from engine.query import QuerySpec


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    return [Slot(("rows", d), False, Disclosure.ROWS, ("rows", d)) for d in spec.datasets]


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    counts = rows[DATASET].value_counts()
    out = Computed(rows=len(rows))
    for d in spec.datasets:
        n = int(counts.get(d, 0))
        out.values[("rows", d)] = n
        out.guards[("rows", d)] = {Guard.ROWS: n}
    return out


KIND = Kind("count", _layout, _compute, unit_bound,
            size=lambda spec, model: len(spec.datasets),
            row_cost=lambda spec, model: 16,
            dp=DPProfile(rows_touch=lambda spec, model: 1))
