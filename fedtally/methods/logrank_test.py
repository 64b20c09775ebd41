"""The log-rank test on a declared time grid (the counts of :mod:`fedtally.methods.survival`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import check_privacy
from fedtally.methods.registry import catalog_method
from fedtally.methods.survival import grid_counts, no_events_released, who
from protocol.errors import DegenerateInput


@dataclass(frozen=True)
class LogrankResult:
    """The (multi-group) log-rank test on the grid."""

    #: chi-square statistic: (O - E) V^-1 (O - E) over all groups but the last
    statistic: float
    #: upper tail of the chi-square distribution with ``dof`` degrees of freedom
    pvalue: float
    #: number of groups with rows, minus one
    dof: int
    #: events per group (within the grid)
    observed: pd.Series
    #: expected events per group under equal hazards
    expected: pd.Series
    #: rows per group
    nobs: pd.Series
    privacy: dict[str, Any]
    federation: dict[str, int]


@catalog_method(kinds=("survival",))
def logrank_test(fed: Analyses, duration: str, event: str, group: str, times: Any = None, *,
                 event_level: str | None = None, horizon: float | None = None,
                 datasets: Sequence[str] | None = None, filters: FilterLike = None,
                 data_model: str | None = None, privacy: Any = None) -> LogrankResult:
    """The log-rank test of equal survival across the levels of ``group`` (the multi-group
    test of Mantel 1966; for two groups the usual log-rank test), on the time grid: at
    each grid time with events, group k expects ``d n_k / n`` of the ``d`` events, and

        V_kl = sum d (n - d) / (n - 1) * (n_k / n) * (delta_kl - n_l / n),

    statistic = (O - E) V^-1 (O - E) over all groups but one, chi-square with groups - 1
    degrees of freedom (as lifelines' ``multivariate_logrank_test``). Events past the
    grid are not counted (as lifelines' ``t_0``). Levels without rows are left out; fewer
    than two groups, or no events, raise :class:`DegenerateInput`. Exact answers only for
    now (``privacy=fedtally.DP(...)`` raises :class:`QueryError`).
    """
    privacy_info = check_privacy(privacy, "logrank_test")
    grid, stat, counts = grid_counts(fed, "logrank_test", duration, event, group, times,
                                     horizon, event_level, datasets, filters, data_model)
    if len(counts) < 2:
        raise DegenerateInput(f"the log-rank test needs two groups with rows; {group!r} has "
                              f"{len(counts)} ({who(stat)})")
    m = len(grid)
    names = [str(g) for g in counts]
    at_risk = np.array([c.at_risk()[:m] for c in counts.values()], dtype=np.float64)
    events = np.array([c.events[:m] for c in counts.values()], dtype=np.float64)
    observed, expected, variance = _logrank_sums(at_risk, events)
    if observed.sum() == 0:
        raise no_events_released(stat, "the log-rank test")
    k = len(names) - 1
    sub = variance[:k, :k]
    if np.linalg.matrix_rank(sub) < k:
        raise DegenerateInput("the log-rank variance is singular: some group has nobody at "
                              "risk alongside the others at any event time")
    diff = (observed - expected)[:k]
    statistic = float(diff @ np.linalg.solve(sub, diff))
    return LogrankResult(
        statistic=statistic, pvalue=float(stats.chi2.sf(statistic, k)), dof=k,
        observed=pd.Series(observed, index=names, name="observed"),
        expected=pd.Series(expected, index=names, name="expected"),
        nobs=pd.Series([c.rows for c in counts.values()], index=names, name="nobs",
                       dtype=np.int64),
        privacy=privacy_info, federation=stat.federation)


def _logrank_sums(at_risk: np.ndarray, events: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed and expected events per group and the covariance of O - E, from the
    groups x times matrices of at-risk and event counts (times without events add 0)."""
    n = at_risk.sum(axis=0)
    d = events.sum(axis=0)
    used = (d > 0) & (n > 0)
    n, d, nk, dk = n[used], d[used], at_risk[:, used], events[:, used]
    share = nk / n
    # the hypergeometric factor; an event time with a single subject at risk adds 0
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(n > 1, d * (n - d) / (n - 1), 0.0)
    groups = at_risk.shape[0]
    observed = np.array([math.fsum(row) for row in dk])
    expected = np.array([math.fsum(row * d) for row in share])
    variance = np.empty((groups, groups))
    for a in range(groups):
        for b in range(groups):
            cross = share[a] * ((a == b) - share[b]) * spread
            variance[a, b] = math.fsum(cross)
    return observed, expected, variance
