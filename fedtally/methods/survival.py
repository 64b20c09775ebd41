"""Kaplan-Meier survival curves and the log-rank test on a declared time grid.

Nodes never release an individual's time. Each node counts, per group, the events and
the censorings that fall in each interval of a public grid ``t_0 < t_1 < ... < t_m``
(interval ``j`` is ``(t_{j-1}, t_j]``, interval 0 is everything up to ``t_0``, and one more
interval holds the times past ``t_m``); only the secure sums of those counts leave the
nodes. Everything below is computed from them:

* at risk at ``t_j``: everyone whose time is past ``t_{j-1}``, i.e. the cohort minus the
  events and censorings of the earlier intervals (a censoring tied with an event counts as
  at risk, the usual convention and lifelines');
* events at ``t_j``: the events in ``(t_{j-1}, t_j]``.

**What the grid means.** Where the grid resolves every time (integer durations and the
default whole-unit grid) each interval holds a single possible time, and the curve is the
ordinary Kaplan-Meier estimate of the pooled rows, equal to lifelines' at every grid time.
A coarser grid merges the times inside each interval: the estimate becomes the grouped
(life-table-like) Kaplan-Meier at the grid points, a step of ``1 - d_j / n_j`` per
interval, where ``n_j`` counts everyone still in follow-up at the start of the interval
(those censored inside the interval count as at risk for all of it; there is no actuarial
half-interval correction). It then differs from the fine estimate by at most the effect of
the censorings inside each interval. Coarser grids are a privacy lever: fewer, larger
counts, and no event time is known more precisely than its interval. Times past the last
grid point count as at risk up to it and are never events (censored at the horizon).

Every (group, interval) count of events, and of censorings, is a cell: a node releases it
only if it is 0 or at least its ``small_cell_threshold`` (``federation
["cells_below_threshold"]`` counts the node-level cells that read 0, empty ones included);
a node whose whole cohort is smaller than its ``min_row_count`` contributes nothing
(``federation["nodes_contributing"]``). A fine grid on a small cohort therefore loses the
intervals with few events: that is the grid's privacy cost, and why coarser grids are the
lever. The curve of all groups is the client's sum of the groups' cells, never a node's.

**Differential privacy** (``kaplan_meier(..., privacy=fedtally.DP(...))``): every interval's
event and censoring count is released with independent noise (no suppression); one row
changes one count per group it belongs to, so no clipping bounds are needed. Everything
else is post-processing of the noisy counts: see :func:`kaplan_meier`. A coarser grid means
fewer noisy counts per at-risk number, hence less noise in the curve. The log-rank test is
exact-only for now.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally.analyses import Analyses, FilterLike, filter_tree
from fedtally.display import ResultFrame
from fedtally.dp import privacy_spec
from fedtally.methods.common import check_privacy
from fedtally.methods.registry import catalog_method
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats import filters as filter_trees
from stats.datamodel import DataModel, PlanModel
from stats.filters import Filter
from stats.kinds import MAX_GRID
from stats.plans import check_variable
from stats.suggest import did_you_mean

__all__ = ["KaplanMeierTable", "LogrankResult", "kaplan_meier", "logrank_test", "time_grid"]

COLUMNS = ["time", "at_risk", "events", "censored", "survival", "ci_lower", "ci_upper"]
#: added in DP mode: the noise standard deviation of survival and of at_risk
DP_COLUMNS = ["noise_std", "at_risk_noise_std"]
TOO_NOISY = ("the noisy count is too small for this privacy level: ask with a larger epsilon "
             "or a coarser query")


class KaplanMeierTable(ResultFrame):
    """A Kaplan-Meier table (a pandas DataFrame) that also carries how it was made:
    ``privacy`` ({"mode": "exact"}, or with DP what was spent), ``federation`` (nodes
    asked/answered/contributing, cells suppressed), ``alpha`` of the confidence band; all
    kept in ``attrs`` too (with DP also ``count_noise_std``, the noise std of each released
    interval count)."""

    _title = "Kaplan-Meier estimate (federated)"

    @property
    def alpha(self) -> float:
        return float(self.attrs.get("alpha", math.nan))


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


# --- the grid ---------------------------------------------------------------------------


def time_grid(model: DataModel, duration: str, times: Any = None,
              horizon: float | None = None) -> list[float]:
    """The public time grid: ``times`` (increasing numbers) if given; else, for an ``int``
    duration, every whole unit from the model's min (or 0) to its max, or to
    ``ceil(horizon)`` when ``horizon`` is given. A ``real`` duration needs ``times``."""
    check_variable(PlanModel(model), duration, numeric=True)
    if times is not None:
        if horizon is not None:
            raise QueryError("give times= or horizon=, not both")
        return _explicit_grid(times)
    variable = model.variable(duration)
    if variable.sql_type != "int":
        raise QueryError(f"{duration!r} is a real-valued duration: give the time grid "
                         "(times=[...]), it has no whole-unit resolution")
    start = math.floor(variable.min) if variable.min is not None else 0
    if horizon is not None:
        if isinstance(horizon, bool) or not isinstance(horizon, int | float) \
                or not math.isfinite(horizon):
            raise QueryError("horizon must be a finite number")
        stop = math.ceil(horizon)
    elif variable.max is None:
        raise QueryError(f"the data model gives no maximum for {duration!r}: pass the time "
                         "grid (times=[...]) or horizon= (the last time of interest)")
    else:
        stop = math.floor(variable.max)
    if stop < start:
        raise QueryError(f"the grid for {duration!r} would be empty ({start} to {stop})")
    if stop - start + 1 > MAX_GRID:
        raise QueryError(f"{duration!r} spans {stop - start + 1} whole units; at most "
                         f"{MAX_GRID} grid points: pass a coarser times=[...]")
    return [float(t) for t in range(start, stop + 1)]


def _explicit_grid(times: Any) -> list[float]:
    try:
        values = np.asarray(times, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise QueryError("times must be increasing numbers") from exc
    if values.size == 0 or values.size > MAX_GRID or not np.all(np.isfinite(values)) \
            or np.any(np.diff(values) <= 0):
        raise QueryError(f"times must be 1 to {MAX_GRID} finite, strictly increasing numbers")
    return [float(v) for v in values]


# --- the query ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Counts:
    """Pooled counts of one group: per grid interval (plus the one past the grid). With DP
    the counts are the noisy released values (floats, possibly negative) and
    ``events_var`` / ``censored_var`` hold each count's noise variance."""

    events: np.ndarray
    censored: np.ndarray
    events_var: np.ndarray | None = None
    censored_var: np.ndarray | None = None

    @property
    def noisy(self) -> bool:
        return self.events_var is not None

    @property
    def rows(self) -> int | float:
        total = self.events.sum() + self.censored.sum()
        return float(total) if self.noisy else int(total)

    def at_risk(self) -> np.ndarray:
        """At risk at each grid time: the rows not yet out in an earlier interval."""
        gone = np.concatenate([[0], np.cumsum(self.events + self.censored)[:-2]])
        return self.rows - gone


def _query(fed: Analyses, algorithm: str, duration: str, event: str, by: str | None,
           times: Any, horizon: float | None, event_level: str | None,
           datasets: Sequence[str] | None, filters: FilterLike, data_model: str | None,
           privacy: Any = None) -> tuple[list[float], Statistic, dict[str | None, _Counts]]:
    # Analyses.model, not fed.model: SimulatedFederation shadows the method with an attribute
    model = Analyses.model(fed, data_model)
    view = PlanModel(model)
    check_variable(view, event)
    if by is not None:
        check_variable(view, by, numeric=False)
    if view.is_numeric(event):
        if event_level not in (None, 1):
            raise QueryError(f"the numeric event {event!r} holds 0/1: event_level must be "
                             "None (or 1)")
        event_level = None
    elif event_level is None or str(event_level) not in view.levels(event):
        raise QueryError(f"name the event_level of the categorical {event!r} "
                         f"(one of {list(view.levels(event))})"
                         + ("" if event_level is None
                            else did_you_mean(event_level, view.levels(event))))
    grid = time_grid(model, duration, times, horizon)
    parameters: dict[str, Any] = {"duration": duration, "event": event, "grid": grid}
    if event_level is not None:
        parameters["event_level"] = str(event_level)
    if not view.is_numeric(event):
        filters = _and_present(filters, event, view.levels(event))
    stat = fed.statistic(algorithm, by=by, datasets=datasets, filters=filters,
                         data_model=data_model, kind="survival", parameters=parameters,
                         privacy=privacy)
    groups: tuple[str | None, ...] = (None,) if by is None else view.levels(by)
    size = len(grid) + 1
    noisy = stat.layout.noise is not None
    counts = {}
    for g in groups:
        if noisy:
            block = _noisy_counts(stat, g, size)
        else:
            block = _Counts(
                np.array([stat.count(("events", g, j)) for j in range(size)], np.int64),
                np.array([stat.count(("censored", g, j)) for j in range(size)], np.int64))
        # levels without rows (or suppressed everywhere) are left out; with DP, levels whose
        # noisy size is not positive (the noise hides whether they have rows at all)
        if block.rows > 0:
            counts[g] = block
    if not counts:
        if noisy:
            raise DegenerateInput(f"{algorithm}: {TOO_NOISY} (no group has a positive noisy "
                                  "number of rows)")
        raise DegenerateInput(f"no rows with {duration!r} and {event!r} present were "
                              f"released ({_who(stat)})")
    return grid, stat, counts


def _noisy_counts(stat: Statistic, group: str | None, size: int) -> _Counts:
    """The released noisy counts as floats (never rounded: rounding would bias the sums
    that make the at-risk numbers) with their noise variances."""
    def values(head: str) -> np.ndarray:
        return np.array([float(stat.exact((head, group, j))) for j in range(size)])

    def variances(head: str) -> np.ndarray:
        return np.array([stat.noise_std((head, group, j)) ** 2 for j in range(size)])

    return _Counts(values("events"), values("censored"), variances("events"),
                   variances("censored"))


def _and_present(filters: FilterLike, variable: str, levels: Sequence[str]) -> Filter:
    """``filters`` and "``variable`` holds one of its levels": rows whose categorical event
    is missing (or a code the data model does not know) are left out explicitly."""
    present = filter_trees.Membership(variable, tuple(levels))
    tree = filter_tree(filters)
    return present if tree is None else filter_trees.And((tree, present))


def _who(stat: Statistic) -> str:
    f = stat.federation
    return (f"{f['nodes_contributing']} of {f['nodes_answered']} nodes contributed, "
            f"{f['cells_below_threshold']} node-level cells read 0 (empty or below the "
            "small-cell threshold)")


# --- Kaplan-Meier -------------------------------------------------------------------------


@catalog_method(kinds=("survival",))
def kaplan_meier(fed: Analyses, duration: str, event: str, by: str | None = None,
                 times: Any = None, *, event_level: str | None = None,
                 horizon: float | None = None, alpha: float = 0.05,
                 datasets: Sequence[str] | None = None, filters: FilterLike = None,
                 data_model: str | None = None, privacy: Any = None) -> KaplanMeierTable:
    """The Kaplan-Meier estimate at each point of the time grid (see the module docstring
    for the grid and what a coarser one means), per level of ``by`` if given.

    ``event`` is a 0/1 numeric variable, or a categorical one with ``event_level`` naming
    the level that is an event. Rows missing the duration, the event (or ``by``) are left
    out. Returns one row per grid time (a block per group, with a ``group`` column, when
    ``by`` is given; groups without rows are left out): ``time``; ``at_risk``; ``events``
    and ``censored`` in ``(previous grid time, time]``; ``survival``; ``ci_lower`` and
    ``ci_upper``, the pointwise ``1 - alpha`` interval from Greenwood's variance on the
    log(-log) scale (Kalbfleisch & Prentice 2002, sec. 1.4; the "exponential Greenwood"
    interval lifelines' KaplanMeierFitter reports): with ``V = sum d / (n (n - d))``,
    ``S ** exp(+-z sqrt(V) / log S)``; it is (1, 1) while S = 1 and (0, 0) once S = 0.

    With ``privacy=fedtally.DP(...)`` the interval counts are noisy and the table is built
    from them by post-processing only:

    * ``events``, ``censored``: the noisy released counts (floats, unrounded and unclamped,
      so unbiased); ``at_risk``: the sum of the noisy counts of this and later intervals,
      its noise accumulating: ``at_risk_noise_std`` is the square root of the sum of their
      noise variances (largest at the start of the curve);
    * ``survival``: the product of the unclamped factors ``1 - d / n`` (unbiased where
      intervals hold no events), then made non-increasing by a running minimum and clamped
      to [0, 1]; a factor <= 0 (noisy ``d >= n``) sets it to 0 from there on; where the
      noisy at-risk number is 0 or below the curve is not estimable at this privacy level
      and is NaN from there on;
    * ``noise_std``: the noise standard deviation of the (unconstrained) product by the
      delta method: the gradient of log S with respect to every released count, including
      the correlation through the counts shared by the at-risk numbers, times S. The
      running minimum and the clamps are not in it: they shrink the spread where the
      truth sits on a clamp (S = 1 before the first event) and, on grids whose intervals
      hold fewer events than the noise, bias the curve slightly downward; NaN where the
      noise set S to 0;
    * interval: normal on the log scale, ``S exp(-/+ z sqrt(V + W))`` capped at 1, with
      ``V`` Greenwood's sum (from the noisy d clamped to [0, n]) and ``W`` the noise
      variance of log S (sampling and noise independent). This is the "log" interval
      (R survival's default) rather than exact mode's log(-log) one: the log(-log)
      transform divides by log S, which explodes the noise near S = 1 where events are
      few. Where the noise set S to 0: ``(0, the previous upper bound)``.
    """
    privacy_spec(privacy)  # a malformed request fails here, before any work
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise QueryError("alpha must be in (0, 1)")
    grid, stat, counts = _query(fed, "kaplan_meier", duration, event, by, times, horizon,
                                event_level, datasets, filters, data_model, privacy)
    z = float(stats.norm.ppf(1 - alpha / 2))
    blocks = []
    for group, block in counts.items():
        frame = _km_block_dp(grid, block, z) if block.noisy else _km_block(grid, block, z)
        if by is not None:
            frame.insert(0, "group", group)
        blocks.append(frame)
    table = KaplanMeierTable(pd.concat(blocks, ignore_index=True))
    table.attrs.update({"privacy": stat.privacy, "federation": stat.federation,
                        "alpha": float(alpha), "by": by})
    if stat.layout.noise is not None:
        table.attrs["count_noise_std"] = max(
            stat.noise_std(("events", g, 0)) for g in counts)
    return table


def _km_block(grid: list[float], counts: _Counts, z: float) -> pd.DataFrame:
    m = len(grid)
    n = counts.at_risk()[:m].astype(np.float64)
    d = counts.events[:m].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 0, 1.0 - d / n, 1.0)
        # Greenwood's terms; an interval that empties the risk set (d = n) adds 0, as in
        # lifelines (S is then 0 and so is its interval)
        terms = np.where(n > d, d / (n * (n - d)), 0.0)
    survival = np.cumprod(factor)
    variance = np.cumsum(terms)
    lower, upper = _loglog_interval(survival, variance, z)
    return pd.DataFrame({
        "time": np.asarray(grid, dtype=np.float64),
        "at_risk": counts.at_risk()[:m].astype(np.int64),
        "events": counts.events[:m].astype(np.int64),
        "censored": counts.censored[:m].astype(np.int64),
        "survival": survival, "ci_lower": lower, "ci_upper": upper,
    }, columns=COLUMNS)


def _km_block_dp(grid: list[float], counts: _Counts, z: float) -> pd.DataFrame:
    """One group's curve from noisy counts (see :func:`kaplan_meier` for the rules)."""
    assert counts.events_var is not None and counts.censored_var is not None
    m = len(grid)
    n = counts.at_risk()[:m]
    d = counts.events[:m]
    # at_risk_j is the sum of the counts of intervals j..m (the cohort minus the earlier
    # ones, which cancel), so its noise variance is the sum of theirs
    per_interval = counts.events_var + counts.censored_var
    n_var = np.cumsum(per_interval[::-1])[::-1][:m]
    estimable = np.logical_and.accumulate(n > 0)
    safe_n = np.where(estimable, n, 1.0)
    # unclamped factors keep the product unbiased where intervals hold no events (clamping
    # each noisy d at 0 would add phantom events); a factor <= 0 (noisy d >= n) ends the
    # curve at 0, so nothing past it can pull the running minimum back up
    factor = 1.0 - d / safe_n
    alive = estimable & np.logical_and.accumulate(factor > 0)
    raw = np.cumprod(np.where(alive, factor, 0.0))
    survival = np.clip(np.minimum.accumulate(raw), 0.0, 1.0)
    survival[~estimable] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        # Greenwood's sampling terms need a count in [0, n): the noisy d, clamped
        clamped = np.clip(d, 0.0, safe_n)
        greenwood = np.cumsum(np.where(alive & (clamped < safe_n),
                                       clamped / (safe_n * (safe_n - clamped)), 0.0))
        # the gradient of log(1 - d_k / n_k): a_k = d/dn_k (n_k sums later counts), and
        # -1/n_k for the event count itself (it is in n_k too); see _log_survival_noise
        a = np.where(alive, d / (safe_n * (safe_n - d)), 0.0)
        direct = np.where(alive, 1.0 / safe_n, 0.0)
    log_var = _log_survival_noise(a, direct, counts.events_var, counts.censored_var)
    noise = np.where(alive, raw * np.sqrt(log_var), np.nan)
    spread = z * np.sqrt(greenwood + log_var)
    lower = survival * np.exp(-spread)
    upper = np.minimum(survival * np.exp(spread), 1.0)
    for j in np.flatnonzero(estimable & ~alive):
        # the noise ended the curve: the truth is still below the last upper bound
        upper[j] = upper[j - 1] if j > 0 else 1.0
    return pd.DataFrame({
        "time": np.asarray(grid, dtype=np.float64), "at_risk": n, "events": d,
        "censored": counts.censored[:m].astype(np.float64), "survival": survival,
        "ci_lower": lower, "ci_upper": upper, "noise_std": noise,
        "at_risk_noise_std": np.sqrt(n_var),
    }, columns=COLUMNS + DP_COLUMNS)


def _log_survival_noise(a: np.ndarray, direct: np.ndarray, events_var: np.ndarray,
                        censored_var: np.ndarray) -> np.ndarray:
    """Delta-method noise variance of log S_j = sum_{k<=j} log(1 - e_k / n_k), with
    n_k = sum_{l>=k} (e_l + c_l), over the independent noises of every count e_l, c_l
    (l = 0..m, the last interval being past the grid). With A_j = a_0 + ... + a_j:

        d log S_j / d c_l = A_min(j, l)
        d log S_j / d e_l = A_min(j, l-1) - [l <= j] / n_l

    and the variance sums these squared times the variances, in O(m) with cumulative sums:
    the terms with l > j all share the gradient A_j."""
    m = len(a)
    cum = np.cumsum(a)
    before = np.concatenate([[0.0], cum[:-1]])  # A_{l-1}
    early_c = np.cumsum(censored_var[:m] * cum ** 2)
    early_e = np.cumsum(events_var[:m] * (before - direct) ** 2)
    later = np.cumsum((events_var + censored_var)[::-1])[::-1]  # sum over l >= index
    tail = np.append(later[1:], 0.0)[:m]  # sum over l > j
    return np.asarray(early_c + early_e + cum ** 2 * tail)


def _loglog_interval(survival: np.ndarray, variance: np.ndarray, z: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    lower = np.ones_like(survival)
    upper = np.ones_like(survival)
    inside = (survival > 0) & (survival < 1)
    log_s = np.log(survival[inside])
    spread = z * np.sqrt(variance[inside]) / log_s  # negative: log S < 0
    base = np.log(-log_s)
    lower[inside] = np.exp(-np.exp(base - spread))
    upper[inside] = np.exp(-np.exp(base + spread))
    lower[survival <= 0] = 0.0
    upper[survival <= 0] = 0.0
    return lower, upper


# --- log-rank -----------------------------------------------------------------------------


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
    grid, stat, counts = _query(fed, "logrank_test", duration, event, group, times,
                                horizon, event_level, datasets, filters, data_model)
    if len(counts) < 2:
        raise DegenerateInput(f"the log-rank test needs two groups with rows; {group!r} has "
                              f"{len(counts)} ({_who(stat)})")
    m = len(grid)
    names = [str(g) for g in counts]
    at_risk = np.array([c.at_risk()[:m] for c in counts.values()], dtype=np.float64)
    events = np.array([c.events[:m] for c in counts.values()], dtype=np.float64)
    observed, expected, variance = _logrank_sums(at_risk, events)
    if observed.sum() == 0:
        raise DegenerateInput("the log-rank test needs events; there are none on the grid")
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
