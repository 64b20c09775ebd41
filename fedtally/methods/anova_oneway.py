"""One-way analysis of variance from secure sums.

One-way: one moments query grouped by the factor gives each group's exact count, sum and
sum of squares; the F test, the ANOVA table (as statsmodels' ``anova_lm``) and Tukey's HSD
(as statsmodels' ``pairwise_tukeyhsd``, p-values from ``scipy.stats.studentized_range``)
follow.

**Exareme2.** ``n_obs`` is ``nobs``; ``df_/ss_/ms_explained`` and ``..._residual`` are the
table's two rows; ``tuckey_test`` rows are the ``tukey`` rows with ``groupA = group1``,
``groupB = group2``, ``meanA/meanB`` from ``groups``, ``diff = -meandiff`` (they report
mean A minus mean B), ``se`` and ``t_stat = diff / se``. Their ``p_tuckey`` is not the
exact ``p-adj`` but statsmodels' old interpolated table (clipped to [0.001, 0.9]):
``statsmodels.stats.libqsturng.psturng(q, k, df_resid)`` on our ``q`` reproduces 2439 of
their 2473 pairs to 1e-6 (the others to about 1e-3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.anova import anova_table
from fedtally.methods.common import check_privacy, no_rows
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.sums import Sums, group_sums
from protocol.errors import DegenerateInput, QueryError

TUKEY_COLUMNS = ["group1", "group2", "meandiff", "p-adj", "lower", "upper", "reject",
                 "se", "q"]


@dataclass(frozen=True)
class AnovaOnewayResult:
    """One-way ANOVA of y by the levels of x (statsmodels ``anova_lm(ols("y ~ C(x)"))``,
    ``scipy.stats.f_oneway``) with Tukey's HSD."""

    #: F statistic (between-group mean square over residual mean square)
    statistic: float
    pvalue: float
    #: rows x and Residual; columns df, sum_sq, mean_sq, F, PR(>F) (Residual F and p: NaN,
    #: as statsmodels)
    table: pd.DataFrame
    #: the groups tested (levels with rows, in the data model's order; datasets in the
    #: order asked): nobs, mean, std (NaN for a group of one row)
    groups: pd.DataFrame
    #: levels of x with no rows: left out of every computation
    empty_groups: tuple[str, ...]
    #: rows used (y and x present)
    nobs: int
    #: family-wise error rate of the Tukey intervals and rejections
    alpha: float
    privacy: dict[str, Any]
    federation: dict[str, Any]
    #: exact sums of the groups tested and the residual mean square (for ``tukey``)
    _sums: dict[str, Sums] = field(repr=False, compare=False, default_factory=dict)
    _mse: Fraction = field(repr=False, compare=False, default=Fraction(0))

    @cached_property
    def tukey(self) -> pd.DataFrame:
        """Tukey's HSD for every pair of groups (in sorted order, as statsmodels'
        pairwise_tukeyhsd): group1, group2, meandiff (mean2 - mean1), p-adj, lower, upper,
        reject (at ``alpha``); also se (standard error of the difference,
        sqrt(MSE (1/n1 + 1/n2))) and q (the studentized range statistic
        |meandiff| / sqrt(MSE / 2 (1/n1 + 1/n2))). Computed on first use: the p-values
        are numerical integrals (about 20 ms a pair)."""
        return tukey_hsd(self._sums, self._mse, self.nobs - len(self._sums), self.alpha)


@catalog_method(kinds=("moments",))
def anova_oneway(fed: Analyses, y: str, x: str, alpha: float = 0.05, *,
                 datasets: Sequence[str] | None = None, filters: FilterLike = None,
                 data_model: str | None = None, privacy: Any = None) -> AnovaOnewayResult:
    """One-way ANOVA of the numeric ``y`` across the levels of the categorical ``x`` (or
    ``"dataset"``). Levels with no rows are left out (listed in ``empty_groups``); fewer
    than two groups with rows, no residual degree of freedom or no variation within groups
    raise DegenerateInput."""
    privacy_ = check_privacy(privacy, "anova_oneway")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise QueryError("alpha must be a number strictly between 0 and 1")
    sums, stat = group_sums(fed, "anova_oneway", y, x, datasets=datasets, filters=filters,
                            data_model=data_model)
    federation = stat.federation
    present = {g: s for g, s in sums.items() if s.n > 0}
    n = sum(s.n for s in present.values())
    if n == 0:
        raise no_rows(federation, "the one-way ANOVA")
    k = len(present)
    if k < 2:
        raise DegenerateInput(f"one-way ANOVA needs at least two groups with rows; {x!r} "
                              f"has {k} here")
    if n - k < 1:
        raise DegenerateInput("one-way ANOVA has no residual degree of freedom (every group "
                              "has a single row)")
    within = sum((s.centered for s in present.values()), Fraction(0))
    if within <= 0:
        raise DegenerateInput("y does not vary within groups: the F statistic is infinite")
    total_s = sum((s.s for s in present.values()), Fraction(0))
    between = sum((s.s * s.s / s.n for s in present.values()), Fraction(0)) - total_s ** 2 / n
    table = anova_table([(x, between, k - 1)], within, n - k, sstype=1)
    groups = pd.DataFrame({"nobs": [s.n for s in present.values()],
                           "mean": [float(s.mean) for s in present.values()],
                           "std": [s.std() for s in present.values()]},
                          index=pd.Index(list(present), name=x))
    return AnovaOnewayResult(
        statistic=float(table.at[x, "F"]), pvalue=float(table.at[x, "PR(>F)"]), table=table,
        groups=groups, empty_groups=tuple(g for g, s in sums.items() if s.n == 0), nobs=n,
        alpha=float(alpha), privacy=privacy_, federation=federation, _sums=present,
        _mse=within / (n - k))


def tukey_hsd(groups: dict[str, Sums], mse: Fraction, df: int, alpha: float) -> pd.DataFrame:
    """Tukey-Kramer pairwise comparisons (statsmodels' ``tukeyhsd``): for groups i < j in
    sorted order, ``q = |m_j - m_i| / sqrt(MSE / 2 (1/n_i + 1/n_j))``, the p-value
    ``studentized_range.sf(q, k, df)`` and the interval ``m_j - m_i +- q_crit sqrt(MSE / 2
    (1/n_i + 1/n_j))`` with ``q_crit = studentized_range.ppf(1 - alpha, k, df)``."""
    names = sorted(groups)  # statsmodels orders groups by np.unique
    k = len(names)
    pairs = list(combinations(names, 2))
    meandiff = np.array([float(groups[b].mean - groups[a].mean) for a, b in pairs])
    half_var = [mse / 2 * (Fraction(1, groups[a].n) + Fraction(1, groups[b].n))
                for a, b in pairs]
    std_pairs = np.sqrt(np.array([float(v) for v in half_var]))
    q = np.abs(meandiff) / std_pairs
    q_crit = float(stats.studentized_range.ppf(1 - alpha, k, df))
    pvalues = np.atleast_1d(stats.studentized_range.sf(q, k, df))
    frame = pd.DataFrame({
        "group1": [a for a, _ in pairs], "group2": [b for _, b in pairs],
        "meandiff": meandiff, "p-adj": pvalues.astype(np.float64),
        "lower": meandiff - std_pairs * q_crit, "upper": meandiff + std_pairs * q_crit,
        "reject": q > q_crit, "se": std_pairs * math.sqrt(2), "q": q}, columns=TUKEY_COLUMNS)
    return frame


def _tukey_pairs(groups: pd.DataFrame, order: list[str], mse: float, df: float
                 ) -> list[dict[str, Any]]:
    """Tukey-Kramer comparisons in Exareme2's layout: the statistics of the analysis'
    ``tukey`` (:func:`tukey_hsd`: ``se = sqrt(MSE (1/n_a +
    1/n_b))``, p-value ``studentized_range.sf(sqrt(2) |t|, k, df)``) without its critical
    value, which Exareme2 does not report and which costs a numerical quantile."""
    pairs = list(combinations(order, 2))
    if not pairs:
        return []
    mean, n = groups["mean"], groups["nobs"]
    diff = np.array([mean[a] - mean[b] for a, b in pairs], dtype=np.float64)
    se = np.sqrt([mse * (1 / n[a] + 1 / n[b]) for a, b in pairs])
    t = diff / se
    p = np.atleast_1d(stats.studentized_range.sf(math.sqrt(2) * np.abs(t), len(order), df))
    return [{"groupA": a, "groupB": b, "meanA": float(mean[a]), "meanB": float(mean[b]),
             "diff": float(diff[i]), "se": float(se[i]), "t_stat": float(t[i]),
             "p_tuckey": float(p[i])} for i, (a, b) in enumerate(pairs)]


@handles("anova_oneway", method="anova_oneway")
def _anova_oneway(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Exareme2's AnovaResult without ``min_max_per_group`` (see
    :data:`fedtally.exareme2.NOT_RELEASED`). Tukey pairs follow Exareme2: groups in the data
    model's order, ``diff = meanA - meanB``, ``t_stat = diff / se``; ``p_tuckey`` is exact
    (see :mod:`fedtally.exareme2`'s notes)."""
    y = exareme2.single(req.y, "y", "anova_oneway")
    x = exareme2.single(req.x, "x", "anova_oneway")
    result = anova_oneway(fed, y, x, **exareme2.query_scope(req))
    table, groups = result.table, result.groups
    anova_table = {
        "n_obs": result.nobs, "y_label": y, "x_label": x,
        "df_residual": float(table.at["Residual", "df"]), "df_explained": float(table.at[x, "df"]),
        "ss_residual": float(table.at["Residual", "sum_sq"]),
        "ss_explained": float(table.at[x, "sum_sq"]),
        "ms_residual": float(table.at["Residual", "mean_sq"]),
        "ms_explained": float(table.at[x, "mean_sq"]),
        "p_value": result.pvalue, "f_stat": result.statistic}
    order = [g for g in exareme2.enumerations(fed, req, x) if g in groups.index]
    pairs = _tukey_pairs(groups, order, float(table.at["Residual", "mean_sq"]),
                         float(table.at["Residual", "df"]))
    means = {g: float(groups.at[g, "mean"]) for g in order}
    stds = {g: exareme2.json_number(groups.at[g, "std"]) for g in order}
    ci_info = {"sample_stds": stds, "means": means,
               "m-s": {g: None if stds[g] is None else means[g] - stds[g] for g in order},
               "m+s": {g: None if stds[g] is None else means[g] + stds[g] for g in order}}
    return {"anova_table": anova_table, "tuckey_test": pairs, "ci_info": ci_info}
