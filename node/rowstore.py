"""Where a node's validated rows are kept, and what the node asks of them: how many there
are, which datasets they hold, each numeric variable's largest |value|, and a kind's
computed statistic over a query's rows. Three stores: :class:`FrameRows` (a pandas
DataFrame, for rows handed to ``SimulatedFederation`` and for SQL databases other than
PostgreSQL), :class:`node.sql.duckdb_rows.DuckRows` (CSV and Parquet files, computed in
DuckDB: the default for files) and :class:`node.sql.postgres_rows.PostgresRows` (a
PostgreSQL table, computed in the hospital's database). All run the same declaration of
each kind, so they give the same integers, and the disclosure rules are applied after,
the same way for all (:mod:`node.statistics`)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from node.filter_rows import evaluate
from stats import filters
from stats.datamodel import DataModel, PlanModel
from stats.kinds import KINDS
from stats.kinds.base import Clipping, Computed, Scale
from stats.plans import DATASET, Key
from stats.query import QuerySpec


class RowStore(Protocol):
    def count(self) -> int: ...

    def held(self) -> list[str]: ...

    def largest_magnitude(self, code: str) -> float: ...

    def working_rows(self, spec: QuerySpec) -> int:
        """Rows a query's kind holds in this process's memory (policies bound it)."""
        ...

    def computed(self, spec: QuerySpec, scale: Scale, clip: Clipping | None) -> Computed:
        """The kind's statistic over the query's rows (datasets, filter, rows per patient
        in DP mode), its sums at ``scale``, clipped to ``clip`` in DP mode."""
        ...

    def abs_sums(self, spec: QuerySpec) -> dict[Key, float]:
        """The kind's absolute sums over every row of the query's datasets (no filter)."""
        ...

    def interrupt(self) -> bool:
        """From another thread: stop the statement running now, which then raises in the
        thread computing it (the store stays usable). False where nothing can be stopped."""
        ...

    def check_available(self) -> None:
        """Before a query is charged: ServiceUnavailable where the rows cannot be read now
        (the hospital's database is down, or the node's role lost its grant), so that an
        outage refuses queries instead of charging each for nothing."""
        ...


def select_rows(spec: QuerySpec, data: pd.DataFrame, model: DataModel) -> pd.DataFrame:
    """The rows a query is about: its datasets, then its filter (checked at planning). In
    DP mode on a model with several rows per patient, each patient keeps at most its
    declared number of rows (the first ones), so that the sensitivity holds."""
    selected = data[DATASET].isin(spec.datasets).to_numpy()
    rows = data if selected.all() else data[selected]  # no copy when every row is asked for
    if spec.filters is not None:
        rows = rows[evaluate(filters.from_json(spec.filters), rows).to_numpy(dtype=bool)]
    limit, patient = model.max_rows_per_patient, model.patient_id
    if spec.privacy.get("mode") == "dp" and limit is not None and patient is not None:
        # rows without a patient identifier each count as a patient of their own
        # (groupby's cumcount is NaN there, so they are kept explicitly)
        keep = rows.groupby(rows[patient], dropna=True, sort=False).cumcount() < limit
        rows = rows[(keep | rows[patient].isna()).to_numpy(dtype=bool)]
    return rows


def clip_frame(rows: pd.DataFrame, clip: Clipping | None) -> pd.DataFrame:
    """Every clipped variable limited to its bounds (for kinds computed on a DataFrame)."""
    if not clip:
        return rows
    rows = rows.copy()
    for name, (low, high) in clip.items():
        if name in rows.columns:
            rows[name] = pd.to_numeric(rows[name], errors="coerce").clip(low, high)
    return rows


def frame_computed(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, scale: Scale,
                   clip: Clipping | None) -> Computed:
    """A kind's statistic on the query's rows held in a DataFrame."""
    kind = KINDS[spec.kind]
    if kind.statistic is not None:
        return kind.compute(spec, rows, PlanModel(model), scale, clip)
    return kind.compute(spec, clip_frame(rows, clip), PlanModel(model))


class FrameRows:
    """Rows held in a pandas DataFrame (typed by :func:`node.validation.coerce`)."""

    def __init__(self, rows: pd.DataFrame, model: DataModel) -> None:
        self.rows = rows
        self.model = model

    def count(self) -> int:
        return len(self.rows)

    def held(self) -> list[str]:
        return sorted(str(d) for d in self.rows[DATASET].dropna().unique())

    def largest_magnitude(self, code: str) -> float:
        if code not in self.rows.columns:
            return 0.0
        values = pd.to_numeric(self.rows[code], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan)
        finite = np.abs(values[np.isfinite(values)])
        return float(finite.max()) if finite.size else 0.0

    def working_rows(self, spec: QuerySpec) -> int:
        return len(self.rows)

    def computed(self, spec: QuerySpec, scale: Scale, clip: Clipping | None) -> Computed:
        return frame_computed(spec, select_rows(spec, self.rows, self.model), self.model,
                              scale, clip)

    def abs_sums(self, spec: QuerySpec) -> dict[Key, float]:
        mine = self.rows[self.rows[DATASET].isin(spec.datasets).to_numpy()]
        return KINDS[spec.kind].abs_sums(spec, mine, PlanModel(self.model))

    def interrupt(self) -> bool:
        """pandas computes in this thread, and cannot be stopped from another: what a query
        may cost here is bounded by its memory instead (the policy's max_query_memory_mb)."""
        return False

    def check_available(self) -> None:
        """Rows in memory are always there."""
