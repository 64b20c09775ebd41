"""Two-way tables of counts (one ``counts`` query, or one per dataset when ``dataset`` is an
axis), shared by :func:`contingency_table` and :func:`chi_square`.

**The dataset as a factor.** The MIP lets ``dataset`` be a grouping variable (e.g. the
groups of an independent t-test or the rows of a table). Design terms and ``by`` cannot
name it, so a table with ``dataset`` as an axis is asked once per dataset, over the other
variable.

**Small cells.** A node leaves out a table cell smaller than its
``small_cell_threshold``, and contributes nothing when its whole cohort is smaller than
its ``min_row_count``; results then describe the rows that were released, and say so in
``federation`` (``nodes_contributing``; ``cells_below_threshold`` counts the node-level cells
that read 0, empty ones included, so that it never tells an empty cell from a small one).

**Differential privacy** (``privacy=fedtally.DP(...)``): every cell is released with
Gaussian noise and nothing is suppressed; tables hold the noisy counts (floats, possibly
negative), with ``noise_std`` per cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedtally.analyses import Analyses, FilterLike
from fedtally.display import ResultFrame
from fedtally.dp import privacy_spec
from fedtally.methods.common import check_factor, merge_federation, resolved_datasets
from fedtally.results import Statistic
from protocol.errors import QueryError
from stats.datamodel import DATASET, PlanModel
from stats.kinds.counts import OUTSIDE


class ContingencyTable(ResultFrame):
    """Counts of rows per (row level, column level): a pandas DataFrame indexed by the
    levels of ``row`` (in the data model's order; datasets for ``"dataset"``), columns the
    levels of ``col``. Cells a node found smaller than its ``small_cell_threshold`` hold
    zero for that node (``cells_below_threshold`` counts such node-level cells, empty ones
    included). Also carries ``excluded`` (rows missing ``row`` or ``col``), ``privacy`` and
    ``federation``, kept in ``attrs``.

    Under differential privacy the cells are the noisy counts (floats, possibly negative;
    nothing is suppressed), ``noise_std`` gives each cell's noise standard deviation and
    ``excluded`` is noisy too (its noise in ``attrs["excluded_noise_std"]``)."""

    _title = "Contingency table (federated)"

    @property
    def cells_below_threshold(self) -> int:
        return int(self.attrs.get("federation", {}).get("cells_below_threshold", 0))

    @property
    def excluded(self) -> int | float:
        """Rows left out; under DP the noisy (float) count."""
        value = self.attrs.get("excluded", 0)
        return float(value) if self.is_noisy else int(value)

    @property
    def is_noisy(self) -> bool:
        return self.attrs.get("privacy", {}).get("mode") == "dp"

    @property
    def noise_std(self) -> pd.DataFrame:
        """Standard deviation of each cell's noise (zeros for exact answers). Kept in
        ``attrs`` as plain lists, which pandas copies and compares safely."""
        values = self.attrs.get("noise_std")
        grid = np.zeros(self.shape) if values is None else np.array(values, dtype=np.float64)
        return pd.DataFrame(grid, index=self.index.copy(), columns=self.columns.copy())


def two_way_table(fed: Analyses, algorithm: str, row: str, col: str, *,
                  datasets: Sequence[str] | str | None, filters: FilterLike, data_model: str | None,
                  privacy: Any) -> ContingencyTable:
    privacy_ = privacy_spec(privacy)
    noisy = privacy_["mode"] == "dp"
    view = PlanModel(Analyses.model(fed, data_model))
    check_factor(view, row)
    check_factor(view, col)
    if row == col:
        raise QueryError("a contingency table needs two different variables")

    def cell(stat: Statistic, key: tuple[Any, ...]) -> tuple[int | float, float]:
        # DP: the released total itself, unrounded, which is what noise_std describes
        if noisy:
            return stat.real(key), stat.noise_std(key)
        return stat.count(key), 0.0

    if DATASET not in (row, col):
        stat = fed.statistic(algorithm, datasets=datasets, filters=filters,
                             data_model=data_model, kind="counts",
                             parameters={"axes": [{"var": row}, {"var": col}]},
                             privacy=privacy)
        rows, cols = view.levels(row), view.levels(col)
        cells = [[cell(stat, ("cell", i, j)) for j in range(len(cols))]
                 for i in range(len(rows))]
        stats_ = [stat]
    else:
        # the dataset cannot be a table axis: one query per dataset, over the other variable
        # (under DP each is charged to its own dataset's budget: the rows are disjoint)
        other = col if row == DATASET else row
        levels = view.levels(other)
        per_dataset, stats_ = {}, []
        for dataset in resolved_datasets(fed, data_model, datasets):
            stat = fed.statistic(algorithm, datasets=[dataset], filters=filters,
                                 data_model=data_model, kind="counts",
                                 parameters={"axes": [{"var": other}]}, privacy=privacy)
            per_dataset[dataset] = [cell(stat, ("cell", j)) for j in range(len(levels))]
            stats_.append(stat)
        names = tuple(per_dataset)
        grid = [per_dataset[d] for d in names]
        if row == DATASET:
            rows, cols, cells = names, levels, grid
        else:
            rows, cols = levels, names
            cells = [[grid[j][i] for j in range(len(names))] for i in range(len(levels))]
    excluded = [cell(s, key) for s in stats_ for key in OUTSIDE if s.has(key)]
    shape = (len(rows), len(cols))
    counts = [[value for value, _ in line] for line in cells]
    table = ContingencyTable(
        np.array(counts, dtype=np.float64 if noisy else np.int64).reshape(shape),
        index=pd.Index(list(rows), name=row), columns=pd.Index(list(cols), name=col))
    if not noisy:
        table.attrs.update(federation=merge_federation(stats_), privacy=privacy_,
                           excluded=int(sum(value for value, _ in excluded)))
        return table
    spent = dict(stats_[0].privacy)  # every query asked the same rho of its own dataset
    if len(stats_) > 1:
        spent["queries"] = len(stats_)
        spent["note"] = ("one query per dataset, each charged to that dataset's budget "
                         "(disjoint rows: parallel composition)")
    table.attrs.update(
        federation=merge_federation(stats_), privacy=spent,
        excluded=float(sum(value for value, _ in excluded)),
        excluded_noise_std=math.sqrt(sum(noise ** 2 for _, noise in excluded)),
        noise_std=[[float(noise) for _, noise in line] for line in cells])
    return table
