"""One- and two-way analysis of variance from secure sums.

One-way: one moments query grouped by the factor gives each group's exact count, sum and
sum of squares; the F test, the ANOVA table (as statsmodels' ``anova_lm``) and Tukey's HSD
(as statsmodels' ``pairwise_tukeyhsd``, p-values from ``scipy.stats.studentized_range``)
follow.

Two-way: one cross-product query over the full design (intercept, treatment dummies of
both factors and their products, and y) gives the exact X'X. The residual sum of squares
of every nested model (intercept; + x1; + x2; + both; full) comes from that one matrix,
by exact elimination on the rows and columns of the model's terms, and the sums of
squares are differences of those (type I: sequential; type II: each main effect after the
other, the interaction after both; Fox, *Applied Regression Analysis*, ch. 8). A column
that is a linear combination of earlier ones (an empty cell, an absent level) is aliased
and skipped, as R's ``lm`` does, so degrees of freedom are ranks; an effect left with no
degree of freedom is dropped from the table, as R's ``anova`` and ``car::Anova`` do (the
MIP's references were made with R). statsmodels differs from R only on such
rank-deficient designs.

**Exareme2.** One-way: ``n_obs`` is ``nobs``; ``df_/ss_/ms_explained`` and
``..._residual`` are the table's two rows; ``tuckey_test`` rows are the ``tukey`` rows
with ``groupA = group1``, ``groupB = group2``, ``meanA/meanB`` from ``groups``,
``diff = -meandiff`` (they report mean A minus mean B), ``se`` and ``t_stat = diff / se``.
Their ``p_tuckey`` is not the exact ``p-adj`` but statsmodels' old interpolated table
(clipped to [0.001, 0.9]): ``statsmodels.stats.libqsturng.psturng(q, k, df_resid)`` on
our ``q`` reproduces 2439 of their 2473 pairs to 1e-6 (the others to about 1e-3). Two-way:
``sum_sq``, ``df``, ``F`` and ``PR(>F)`` by effect, ``Residual`` named ``Residuals``;
``aliased`` effects are absent from their type I tables (R's ``anova``) and listed with
zeros in their type II tables (``car::Anova``).
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

from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.classical import (
    Sums,
    check_factor,
    check_numeric,
    group_sums,
    merge_federation,
    no_rows,
    resolved_datasets,
)
from fedtally.methods.common import INTERCEPT, check_privacy, triangle
from fedtally.methods.registry import catalog_method
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DATASET, PlanModel
from stats.design import Term

__all__ = ["AnovaOnewayResult", "AnovaTwowayResult", "anova_oneway", "anova_twoway"]

RESIDUAL = "Residual"
TUKEY_COLUMNS = ["group1", "group2", "meandiff", "p-adj", "lower", "upper", "reject",
                 "se", "q"]


# --- one-way ----------------------------------------------------------------------------------


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
    table = _table([(x, between, k - 1)], within, n - k, sstype=1)
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


def _table(effects: list[tuple[str, Fraction, int]], rss: Fraction, df_resid: int,
           sstype: int) -> pd.DataFrame:
    """An ANOVA table shaped as statsmodels' anova_lm for ``typ=sstype``."""
    mse = rss / df_resid
    index, rows = [], []
    for name, ss, df in effects:
        f = (ss / df) / mse
        index.append(name)
        rows.append((float(df), float(ss), float(ss / df), float(f),
                     float(stats.f.sf(float(f), df, df_resid))))
    index.append(RESIDUAL)
    rows.append((float(df_resid), float(rss), float(mse), math.nan, math.nan))
    frame = pd.DataFrame(rows, index=index, columns=["df", "sum_sq", "mean_sq", "F", "PR(>F)"])
    if sstype == 1:
        return frame
    return frame[["sum_sq", "df", "F", "PR(>F)"]]  # statsmodels' typ=2 columns


# --- two-way ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnovaTwowayResult:
    """Two-way ANOVA with interaction, ``y ~ C(x1) * C(x2)``, as statsmodels'
    ``anova_lm(ols(...), typ=sstype)`` (and R's ``anova`` / ``car::Anova``)."""

    #: rows x1, x2, x1:x2 (those with degrees of freedom) and Residual; columns as
    #: statsmodels' for the type: typ 1 df, sum_sq, mean_sq, F, PR(>F); typ 2 sum_sq, df,
    #: F, PR(>F)
    table: pd.DataFrame
    #: F per effect (Series indexed as the table's effect rows)
    statistic: pd.Series
    #: p-value per effect
    pvalue: pd.Series
    #: 1 (sequential, x1 then x2 then x1:x2) or 2 (each main effect after the other)
    sstype: int
    #: effects with no degree of freedom left (e.g. a factor with a single level present,
    #: or an interaction fully aliased by empty cells): not in the table, as R. When all
    #: three are, nothing is tested: the table holds only the Residual row and
    #: ``statistic`` / ``pvalue`` are empty
    aliased: tuple[str, ...]
    #: rows used (y, x1 and x2 present)
    nobs: int
    #: cells (level pairs) with rows: the rank of the full model
    cells: int
    privacy: dict[str, Any]
    federation: dict[str, Any]


#: a column of the full design: (level of x1 or None, level of x2 or None); None, None is
#: the intercept, (a, None) the dummy of a, (a, b) their product
Column = tuple[str | None, str | None]


@catalog_method(kinds=("crossprod",))
def anova_twoway(fed: Analyses, y: str, x1: str, x2: str, sstype: int = 2, *,
                 datasets: Sequence[str] | None = None, filters: FilterLike = None,
                 data_model: str | None = None, privacy: Any = None) -> AnovaTwowayResult:
    """Two-way ANOVA of the numeric ``y`` by the categorical ``x1`` and ``x2`` (either may
    be ``"dataset"``) with their interaction; type I or type II sums of squares. Type III
    is not offered (with treatment coding it does not test the usual hypotheses)."""
    privacy_ = check_privacy(privacy, "anova_twoway")
    if sstype not in (1, 2) or isinstance(sstype, bool):
        raise QueryError("sstype must be 1 or 2 (type III sums of squares are not offered)")
    model = Analyses.model(fed, data_model)
    view = PlanModel(model)
    check_numeric(view, y)
    check_factor(view, x1)
    check_factor(view, x2)
    if x1 == x2:
        raise QueryError("a two-way ANOVA needs two different factors")
    # the dataset as a factor: its levels are the datasets asked about
    chosen = tuple(resolved_datasets(fed, data_model, datasets)) if DATASET in (x1, x2) else ()
    levels1 = chosen if x1 == DATASET else view.levels(x1)
    levels2 = chosen if x2 == DATASET else view.levels(x2)
    columns: list[Column] = ([(None, None)] + [(a, None) for a in levels1[1:]]
                             + [(None, b) for b in levels2[1:]]
                             + [(a, b) for a in levels1[1:] for b in levels2[1:]])
    if DATASET in (x1, x2):
        matrix, stats_ = _per_dataset_crossprod(fed, y, x1, x2, levels1, levels2, columns,
                                                filters=filters, data_model=data_model)
    else:
        terms = [_term(x1, x2, c) for c in columns] + [{"var": y}]
        stat = fed.statistic("anova_twoway", datasets=datasets, filters=filters,
                             data_model=data_model, kind="crossprod",
                             parameters={"terms": terms})
        matrix, stats_ = triangle(stat, ("xx", None), len(terms)), [stat]
    federation = merge_federation(stats_)
    return _twoway(matrix, columns, levels1, levels2, x1, x2, sstype, privacy_, federation)


def _term(x1: str, x2: str, column: Column) -> Term:
    a, b = column
    factors = ([{"var": x1, "level": a}] if a is not None else []) + \
        ([{"var": x2, "level": b}] if b is not None else [])
    if not factors:
        return INTERCEPT
    return factors[0] if len(factors) == 1 else {"product": factors}


def _per_dataset_crossprod(fed: Analyses, y: str, x1: str, x2: str, levels1: Sequence[str],
                           levels2: Sequence[str], columns: list[Column], *,
                           filters: FilterLike, data_model: str | None
                           ) -> tuple[list[list[Fraction]], list[Statistic]]:
    """The full design's X'X when one factor is the dataset (which design terms cannot
    name): one query per dataset over [Intercept, dummies of the other factor, y]; a row of
    dataset d has every dataset dummy 0 but d's, so each entry of X'X is a sum of the
    per-dataset blocks."""
    first_is_dataset = x1 == DATASET
    other, other_levels = (x2, levels2) if first_is_dataset else (x1, levels1)
    datasets = levels1 if first_is_dataset else levels2
    base_terms: list[Term] = [INTERCEPT] + [{"var": other, "level": v}
                                            for v in other_levels[1:]] + [{"var": y}]
    base_index = {v: i + 1 for i, v in enumerate(other_levels[1:])}
    p = len(columns) + 1
    # per full column: (dataset it needs or None, index in the per-dataset block)
    parts: list[tuple[str | None, int]] = []
    for a, b in columns:
        dataset, level = (a, b) if first_is_dataset else (b, a)
        parts.append((dataset, 0 if level is None else base_index[level]))
    parts.append((None, len(base_terms) - 1))  # y
    matrix = [[Fraction(0)] * p for _ in range(p)]
    stats_ = []
    for d in datasets:
        stat = fed.statistic("anova_twoway", datasets=[d], filters=filters,
                             data_model=data_model, kind="crossprod",
                             parameters={"terms": base_terms})
        stats_.append(stat)
        block = triangle(stat, ("xx", None), len(base_terms))
        active = [i for i, (dataset, _) in enumerate(parts) if dataset in (None, d)]
        for i in active:
            for j in active:
                matrix[i][j] += block[parts[i][1]][parts[j][1]]
    return matrix, stats_


def _rss(matrix: list[list[Fraction]], cols: Sequence[int], target: int
         ) -> tuple[Fraction, int]:
    """Residual sum of squares of the ``target`` column regressed on ``cols``, and the rank
    of ``cols``: symmetric Gaussian elimination of the cross-product matrix in exact
    arithmetic. A column whose pivot is exactly zero lies in the span of the earlier ones
    (its whole row is then zero too, the matrix being positive semi-definite): it is
    aliased and skipped, as R's lm does. The design block holds exact counts, so aliasing
    is decided exactly."""
    index = list(cols) + [target]
    work = [[matrix[i][j] for j in index] for i in index]
    m, rank = len(cols), 0
    for k in range(m):
        pivot = work[k][k]
        if pivot == 0:
            continue
        rank += 1
        for i in range(k + 1, m + 1):
            factor = work[i][k] / pivot
            if factor:
                row_i, row_k = work[i], work[k]
                for j in range(k + 1, m + 1):
                    row_i[j] -= factor * row_k[j]
    return work[m][m], rank


def _cells(matrix: list[list[Fraction]], columns: list[Column], levels1: Sequence[str],
           levels2: Sequence[str]) -> dict[tuple[str, str], tuple[Fraction, Fraction]]:
    """Rows and sum of y per cell (level pair), by inclusion-exclusion on the design's
    column totals (row 0 of X'X) and column-y products (last row)."""
    where = {c: i for i, c in enumerate(columns)}
    y = len(columns)

    def total(a: str | None, b: str | None) -> tuple[Fraction, Fraction]:
        """Rows (and sum of y) with x1 = a (any if None) and x2 = b (any if None); the
        reference levels are reached by subtracting the others."""
        if a == levels1[0]:
            n, s = total(None, b)
            for other in levels1[1:]:
                n_o, s_o = total(other, b)
                n, s = n - n_o, s - s_o
            return n, s
        if b == levels2[0]:
            n, s = total(a, None)
            for other in levels2[1:]:
                n_o, s_o = total(a, other)
                n, s = n - n_o, s - s_o
            return n, s
        i = where[(a, b)]
        return matrix[0][i], matrix[i][y]

    return {(a, b): total(a, b) for a in levels1 for b in levels2}


def _twoway(matrix: list[list[Fraction]], columns: list[Column], levels1: Sequence[str],
            levels2: Sequence[str], x1: str, x2: str, sstype: int, privacy: dict[str, Any],
            federation: dict[str, Any]) -> AnovaTwowayResult:
    n = int(matrix[0][0])
    if n == 0:
        raise no_rows(federation, "the two-way ANOVA")
    y = len(columns)
    one = [0]
    first = [i for i, (a, b) in enumerate(columns) if a is not None and b is None]
    second = [i for i, (a, b) in enumerate(columns) if a is None and b is not None]
    rss0, r0 = _rss(matrix, one, y)
    rss1, r1 = _rss(matrix, one + first, y)
    rss2, r2 = _rss(matrix, one + second, y)
    rss12, r12 = _rss(matrix, one + first + second, y)
    # the full model spans the cell indicators: its residuals are the within-cell ones
    cells = [(c_n, c_s) for c_n, c_s in _cells(matrix, columns, levels1, levels2).values()
             if c_n > 0]
    rank = len(cells)
    rss_full = matrix[y][y] - sum((s * s / c for c, s in cells), Fraction(0))
    df_resid = n - rank
    if df_resid < 1:
        raise DegenerateInput("two-way ANOVA has no residual degree of freedom (one row per "
                              "cell)")
    if rss_full <= 0:
        raise DegenerateInput("y does not vary within cells: the F statistics are infinite")
    interaction = f"{x1}:{x2}"
    if sstype == 1:
        effects = [(x1, rss0 - rss1, r1 - r0), (x2, rss1 - rss12, r12 - r1)]
    else:
        effects = [(x1, rss2 - rss12, r12 - r2), (x2, rss1 - rss12, r12 - r1)]
    effects.append((interaction, rss12 - rss_full, rank - r12))
    # an effect without a degree of freedom is not in the table (R's anova); with none
    # left, the table holds the residual row alone (R's answer, and the MIP's reference)
    kept = [e for e in effects if e[2] > 0]
    table = _table(kept, rss_full, df_resid, sstype)
    names = [e[0] for e in kept]
    return AnovaTwowayResult(
        table=table, statistic=table.loc[names, "F"].astype(np.float64).rename("F"),
        pvalue=table.loc[names, "PR(>F)"].astype(np.float64).rename("PR(>F)"),
        sstype=sstype, aliased=tuple(e[0] for e in effects if e[2] <= 0), nobs=n,
        cells=rank, privacy=privacy, federation=federation)
