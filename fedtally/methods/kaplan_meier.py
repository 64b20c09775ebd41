"""Kaplan-Meier survival curves on a declared time grid (the counts of
:mod:`fedtally.methods.survival`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally.analyses import Analyses, FilterLike
from fedtally.display import ResultFrame
from fedtally.dp import privacy_spec
from fedtally.methods.registry import catalog_method
from fedtally.methods.survival import Counts, grid_counts, no_events_released
from protocol.errors import QueryError

COLUMNS = ["time", "at_risk", "events", "censored", "survival", "ci_lower", "ci_upper"]

#: added in DP mode: the noise standard deviation of survival and of at_risk
DP_COLUMNS = ["noise_std", "at_risk_noise_std"]


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
    grid, stat, counts = grid_counts(fed, "kaplan_meier", duration, event, by, times, horizon,
                                     event_level, datasets, filters, data_model, privacy)
    z = float(stats.norm.ppf(1 - alpha / 2))
    if stat.layout.noise is None and all(not block.events.any() for block in counts.values()):
        # a curve of survival 1 would say "no deaths" of a cohort that may have had many
        raise no_events_released(stat, "the Kaplan-Meier estimate")
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


def _km_block(grid: list[float], counts: Counts, z: float) -> pd.DataFrame:
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


def _km_block_dp(grid: list[float], counts: Counts, z: float) -> pd.DataFrame:
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
