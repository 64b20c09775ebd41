"""Classical tests: t-tests (one sample, paired, independent), contingency tables and the
chi-square test of independence, from secure sums of sufficient statistics.

Every statistic is computed from the exact totals (sums of the nodes' float64 local sums,
in rational arithmetic), so on the pooled rows the results equal scipy's
(``ttest_1samp``, ``ttest_rel``, ``ttest_ind``, ``chi2_contingency``) to about 1e-15.

**The dataset as a factor.** The MIP lets ``dataset`` be a grouping variable (e.g. the
groups of an independent t-test or the rows of a table). Design terms and ``by`` cannot
name it, so it is handled here: moments are released per dataset anyway, and tables are
asked once per dataset.

**Small cells.** A node leaves out a group (or a table cell) smaller than its
``small_cell_threshold``, and contributes nothing when its whole cohort is smaller than
its ``min_row_count``; results then describe the rows that were released, and say so in
``federation`` (``cells_suppressed``, ``nodes_contributing``).

**Exareme2.** How the MIP's (R-made) reference numbers map onto ours:

* one sample: ``mean_diff`` is their sample mean, our ``estimate``; their interval is
  ``conf_int(0.05)`` (always 95 %, whatever ``alpha``); their ``cohens_d`` is our
  ``|cohens_d|``.
* paired (their ``y`` and ``x``): our ``ttest_paired(y1=x, y2=y)``; interval
  ``conf_int(0.05)``; ``cohens_d`` as ours (d_av, see :func:`ttest_paired`).
* independent: Welch's test (``equal_var=False``) for statistic, p-value, ``se`` and
  ``conf_int(0.05)``; but their ``df`` is ``nobs - 2`` and their ``cohens_d`` uses the
  pooled standard deviation, as ours does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import special, stats

from engine.errors import DegenerateInput, QueryError
from fedtally.algorithms.common import INTERCEPT, check_privacy
from fedtally.analyses import Analyses, FilterLike
from fedtally.results import Statistic
from node.datamodel import DATASET
from node.kinds import PlanModel

__all__ = [
    "ALTERNATIVES",
    "ChiSquareResult",
    "ContingencyTable",
    "Sums",
    "TTestResult",
    "chi_square",
    "contingency_table",
    "group_sums",
    "ttest_independent",
    "ttest_onesample",
    "ttest_paired",
]

ALTERNATIVES = ("two-sided", "less", "greater")


# --- shared pieces (also used by anova) ---------------------------------------------------


class Sums(NamedTuple):
    """Exact sufficient statistics of one sample: count, sum and sum of squares."""

    n: int
    s: Fraction
    ss: Fraction

    @property
    def mean(self) -> Fraction:
        return self.s / self.n

    @property
    def centered(self) -> Fraction:
        """Sum of squared deviations from the mean (exact)."""
        return self.ss - self.s * self.s / self.n if self.n else Fraction(0)

    def std(self) -> float:
        """Sample standard deviation (ddof 1); NaN below two rows."""
        return math.sqrt(float(self.centered / (self.n - 1))) if self.n > 1 else math.nan


def merge_federation(stats_: Sequence[Statistic]) -> dict[str, Any]:
    """One query's ``federation``; for several (one per dataset), the widest counts, the
    suppressed cells summed and each query's own record under ``per_query``."""
    records = [s.federation for s in stats_]
    if len(records) == 1:
        return records[0]
    return {"nodes_asked": max(r["nodes_asked"] for r in records),
            "nodes_answered": min(r["nodes_answered"] for r in records),
            "nodes_contributing": max(r["nodes_contributing"] for r in records),
            "cells_suppressed": sum(r["cells_suppressed"] for r in records),
            "queries": len(records), "per_query": records}


def no_rows(federation: Mapping[str, Any], what: str = "the analysis") -> DegenerateInput:
    return DegenerateInput(
        f"no rows for {what}: the filters leave none, or every node's cohort is below its "
        f"minimum row count ({federation.get('nodes_contributing', 0)} of "
        f"{federation.get('nodes_asked', 0)} nodes contributed)")


def resolved_datasets(fed: Analyses, data_model: str | None,
                      datasets: Sequence[str] | str | None) -> list[str]:
    """The datasets a query covers: those given, or every dataset the federation holds."""
    model = Analyses.model(fed, data_model)
    if isinstance(datasets, str):
        datasets = [datasets]
    if datasets is not None:
        unknown = [d for d in datasets if d not in model.datasets()]
        if unknown:
            raise QueryError(f"unknown dataset(s) {unknown} in {model.name}")
        return list(dict.fromkeys(datasets))
    held = fed.datasets()
    return sorted(d for m, d in held.index if m == model.name)


def check_numeric(view: PlanModel, variable: str) -> None:
    if not isinstance(variable, str) or not view.has_variable(variable):
        raise QueryError(f"unknown variable {variable!r}")
    if not view.is_numeric(variable):
        raise QueryError(f"{variable!r} is categorical; a numeric variable is needed here")


def check_factor(view: PlanModel, variable: str) -> None:
    """A grouping variable: categorical, or the ``dataset`` itself."""
    if variable == DATASET:
        return
    if not isinstance(variable, str) or not view.has_variable(variable):
        raise QueryError(f"unknown variable {variable!r}")
    if view.is_numeric(variable):
        raise QueryError(f"{variable!r} is numeric; a categorical variable is needed here")


def _sums(stat: Statistic, variable: str, group: str | None,
          datasets: Sequence[str]) -> Sums:
    return Sums(sum(stat.count(("count", d, group, variable)) for d in datasets),
                sum((stat.exact(("sum", d, group, variable)) for d in datasets), Fraction(0)),
                sum((stat.exact(("sumsq", d, group, variable)) for d in datasets), Fraction(0)))


def group_sums(fed: Analyses, algorithm: str, y: str, group: str, *,
               datasets: Sequence[str] | str | None, filters: FilterLike,
               data_model: str | None) -> tuple[dict[str, Sums], Statistic]:
    """Exact sums of ``y`` per level of ``group`` (one moments query), levels in the data
    model's order; ``group="dataset"`` gives one level per dataset queried."""
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y)
    check_factor(view, group)
    if group == DATASET:
        stat = fed.statistic(algorithm, variables=[y], datasets=datasets, filters=filters,
                             data_model=data_model, kind="moments")
        return {d: _sums(stat, y, None, [d]) for d in stat.spec.datasets}, stat
    stat = fed.statistic(algorithm, variables=[y], by=group, datasets=datasets,
                         filters=filters, data_model=data_model, kind="moments")
    return {g: _sums(stat, y, g, stat.spec.datasets) for g in view.levels(group)}, stat


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise QueryError("alpha must be a number strictly between 0 and 1")
    return float(alpha)


def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise QueryError(f"alternative must be one of {list(ALTERNATIVES)}")
    return alternative


def _check_mu(mu: float) -> float:
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu):
        raise QueryError("mu must be a finite number")
    return float(mu)


# --- t-tests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TTestResult:
    """A Student (or Welch) t-test, as scipy reports it, plus effect size and the samples'
    summaries."""

    #: t statistic: ``mean_diff / se``
    statistic: float
    #: p-value for ``alternative``
    pvalue: float
    #: degrees of freedom (Welch-Satterthwaite for ``equal_var=False``)
    df: float
    #: the difference the test is about: ``estimate - mu``
    mean_diff: float
    #: standard error of ``mean_diff``
    se: float
    #: ``1 - alpha`` confidence interval of ``estimate`` (as scipy's
    #: ``confidence_interval``); one-sided alternatives give an infinite bound
    ci: tuple[float, float]
    #: Cohen's d: ``mean_diff`` over a standard deviation (see each test)
    cohens_d: float
    #: rows used (complete cases; both groups for the independent test)
    nobs: int
    #: one sample: mean of y; paired: mean of y1 - y2; independent: mean(a) - mean(b)
    estimate: float
    #: hypothesised value of ``estimate`` under the null (0 for the independent test)
    mu: float
    alternative: str
    alpha: float
    #: "one-sample", "paired" or "independent"
    test: str
    #: per sample (y; y1, y2 and their difference; groups a and b): nobs, mean, std
    samples: pd.DataFrame
    privacy: dict[str, Any]
    federation: dict[str, Any]

    def conf_int(self, alpha: float | None = None) -> tuple[float, float]:
        """The ``1 - alpha`` confidence interval of ``estimate`` (default: this result's
        alpha), as scipy's ``confidence_interval(1 - alpha)``."""
        return _t_interval(self.estimate, self.se, self.df, self.alternative,
                           self.alpha if alpha is None else _check_alpha(alpha))


def _t_interval(estimate: float, se: float, df: float, alternative: str,
                alpha: float) -> tuple[float, float]:
    # scipy's _t_confidence_interval: quantiles by stdtrit, then scaled and shifted
    if alternative == "less":
        return -math.inf, float(special.stdtrit(df, 1 - alpha)) * se + estimate
    if alternative == "greater":
        return float(special.stdtrit(df, alpha)) * se + estimate, math.inf
    low, high = special.stdtrit(df, [alpha / 2, 1 - alpha / 2])
    return float(low) * se + estimate, float(high) * se + estimate


def _t_pvalue(t: float, df: float, alternative: str) -> float:
    dist = stats.t(df)
    if alternative == "less":
        return float(dist.cdf(t))
    if alternative == "greater":
        return float(dist.sf(t))
    return float(2 * dist.sf(abs(t)))


def _t_result(*, test: str, estimate: Fraction, mu: float, variance_of_mean: Fraction,
              df: float, d_scale: Fraction, nobs: int, alternative: str, alpha: float,
              samples: pd.DataFrame, privacy: dict[str, Any], federation: dict[str, Any]
              ) -> TTestResult:
    """The common tail of every t-test, from exact moments."""
    if variance_of_mean <= 0 or d_scale <= 0:
        raise DegenerateInput(f"the {test} t-test is undefined: the data have no variance "
                              "(the statistic would be infinite or NaN)")
    diff = estimate - Fraction(mu)
    se = math.sqrt(float(variance_of_mean))
    t = float(diff) / se
    if not math.isfinite(t):
        raise DegenerateInput(f"the {test} t statistic is not finite")
    return TTestResult(
        statistic=t, pvalue=_t_pvalue(t, df, alternative), df=df, mean_diff=float(diff),
        se=se, ci=_t_interval(float(estimate), se, df, alternative, alpha),
        cohens_d=float(diff) / math.sqrt(float(d_scale)), nobs=nobs, estimate=float(estimate),
        mu=mu, alternative=alternative, alpha=alpha, test=test, samples=samples,
        privacy=privacy, federation=federation)


def _samples(rows: Mapping[str, Sums]) -> pd.DataFrame:
    frame = pd.DataFrame({"nobs": [s.n for s in rows.values()],
                          "mean": [float(s.mean) if s.n else math.nan for s in rows.values()],
                          "std": [s.std() for s in rows.values()]}, index=list(rows))
    frame["nobs"] = frame["nobs"].astype(np.int64)
    return frame


def ttest_onesample(fed: Analyses, y: str, mu: float = 0.0, alternative: str = "two-sided",
                    alpha: float = 0.05, *, datasets: Sequence[str] | None = None,
                    filters: FilterLike = None, data_model: str | None = None,
                    privacy: Any = None) -> TTestResult:
    """One-sample t-test of H0: mean(y) = mu (scipy.stats.ttest_1samp), rows where y is
    present. ``estimate`` and ``ci`` are the mean of y and its interval (as scipy);
    ``mean_diff = mean - mu``; ``cohens_d = (mean - mu) / std(y)``."""
    privacy_ = check_privacy(privacy)
    alternative, alpha, mu = _check_alternative(alternative), _check_alpha(alpha), _check_mu(mu)
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y)
    stat = fed.statistic("ttest_onesample", variables=[y], datasets=datasets, filters=filters,
                         data_model=data_model, kind="moments")
    sums = _sums(stat, y, None, stat.spec.datasets)
    federation = stat.federation
    if sums.n == 0:
        raise no_rows(federation, "the one-sample t-test")
    if sums.n < 2:
        raise DegenerateInput("the one-sample t-test needs at least two rows")
    variance = sums.centered / (sums.n - 1)
    return _t_result(test="one-sample", estimate=sums.mean, mu=mu,
                     variance_of_mean=variance / sums.n, df=float(sums.n - 1),
                     d_scale=variance, nobs=sums.n, alternative=alternative, alpha=alpha,
                     samples=_samples({y: sums}), privacy=privacy_, federation=federation)


def ttest_paired(fed: Analyses, y1: str, y2: str, mu: float = 0.0,
                 alternative: str = "two-sided", alpha: float = 0.05, *,
                 datasets: Sequence[str] | None = None, filters: FilterLike = None,
                 data_model: str | None = None, privacy: Any = None) -> TTestResult:
    """Paired t-test of H0: mean(y1 - y2) = mu (scipy.stats.ttest_rel, which has mu = 0)
    over the rows where both are present.

    One cross-product query over [Intercept, y1, y2] gives n, the sums, the sums of
    squares and the sum of products, so the mean and variance of the differences are
    exact (note: sum((y1-y2)^2) is formed from the three second moments, so for pairs
    whose difference is tiny next to the values themselves the nodes' float64 rounding of
    those moments limits the precision).

    ``cohens_d`` is d_av (Cumming 2012; what Exareme2 reports): ``mean_diff`` over
    ``sqrt((var(y1) + var(y2)) / 2)``. The other common paired effect size, d_z, is
    ``mean_diff / std(y1 - y2)`` = ``statistic / sqrt(nobs)``; ``samples`` holds every
    standard deviation."""
    privacy_ = check_privacy(privacy)
    alternative, alpha, mu = _check_alternative(alternative), _check_alpha(alpha), _check_mu(mu)
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y1)
    check_numeric(view, y2)
    if y1 == y2:
        raise QueryError("a paired t-test needs two different variables")
    terms = [INTERCEPT, {"var": y1}, {"var": y2}]
    stat = fed.statistic("ttest_paired", datasets=datasets, filters=filters,
                         data_model=data_model, kind="crossprod", parameters={"terms": terms})
    n = stat.count(("n", None))
    federation = stat.federation
    if n == 0:
        raise no_rows(federation, "the paired t-test")
    if n < 2:
        raise DegenerateInput("the paired t-test needs at least two complete pairs")

    def xx(i: int, j: int) -> Fraction:
        return stat.exact(("xx", None, i, j))

    first, second = Sums(n, xx(0, 1), xx(1, 1)), Sums(n, xx(0, 2), xx(2, 2))
    difference = Sums(n, first.s - second.s, first.ss - 2 * xx(1, 2) + second.ss)
    variance = difference.centered / (n - 1)
    d_av = (first.centered + second.centered) / (2 * (n - 1))
    samples = _samples({y1: first, y2: second, f"{y1} - {y2}": difference})
    return _t_result(test="paired", estimate=difference.mean, mu=mu,
                     variance_of_mean=variance / n, df=float(n - 1), d_scale=d_av, nobs=n,
                     alternative=alternative, alpha=alpha, samples=samples,
                     privacy=privacy_, federation=federation)


def ttest_independent(fed: Analyses, y: str, group: str, a: str, b: str,
                      alternative: str = "two-sided", alpha: float = 0.05,
                      equal_var: bool = True, *, datasets: Sequence[str] | None = None,
                      filters: FilterLike = None, data_model: str | None = None,
                      privacy: Any = None) -> TTestResult:
    """Two-sample t-test of H0: mean(y | group = a) = mean(y | group = b)
    (scipy.stats.ttest_ind): Student's with ``equal_var=True``, Welch's otherwise. Only
    levels ``a`` and ``b`` of ``group`` are used (``group`` may be ``"dataset"``).

    ``estimate = mean_diff = mean(a) - mean(b)``; ``cohens_d`` divides it by the pooled
    standard deviation ``sqrt(((n_a-1) var_a + (n_b-1) var_b) / (n_a + n_b - 2))``
    whichever test is run (as Exareme2)."""
    privacy_ = check_privacy(privacy)
    alternative, alpha = _check_alternative(alternative), _check_alpha(alpha)
    a, b = str(a), str(b)
    if a == b:
        raise QueryError("name two different groups a and b")
    sums, stat = group_sums(fed, "ttest_independent", y, group, datasets=datasets,
                            filters=filters, data_model=data_model)
    for level in (a, b):
        if level not in sums:
            raise QueryError(f"{level!r} is not a level of {group!r} (here: {list(sums)})")
    first, second = sums[a], sums[b]
    federation = stat.federation
    if first.n + second.n == 0:
        raise no_rows(federation, "the independent t-test")
    for level, s in ((a, first), (b, second)):
        if s.n == 0:
            raise DegenerateInput(f"group {level!r} of {group!r} has no rows with {y!r}")
    pooled_df = first.n + second.n - 2
    pooled = (first.centered + second.centered) / pooled_df if pooled_df > 0 else Fraction(0)
    if equal_var:
        if pooled_df < 1:
            raise DegenerateInput("Student's t-test needs at least three rows in all")
        variance_of_mean = pooled * (Fraction(1, first.n) + Fraction(1, second.n))
        df = float(pooled_df)
    else:
        if first.n < 2 or second.n < 2:
            raise DegenerateInput("Welch's t-test needs at least two rows in each group")
        va, vb = first.centered / (first.n - 1), second.centered / (second.n - 1)
        variance_of_mean = va / first.n + vb / second.n
        df = _welch_df(float(va / first.n), float(vb / second.n), first.n, second.n)
    return _t_result(test="independent", estimate=first.mean - second.mean, mu=0.0,
                     variance_of_mean=variance_of_mean, df=df, d_scale=pooled,
                     nobs=first.n + second.n, alternative=alternative, alpha=alpha,
                     samples=_samples({a: first, b: second}), privacy=privacy_,
                     federation=federation)


def _welch_df(vn1: float, vn2: float, n1: int, n2: int) -> float:
    """Welch-Satterthwaite degrees of freedom (scipy's ``_unequal_var_ttest_denom``)."""
    denominator = vn1 ** 2 / (n1 - 1) + vn2 ** 2 / (n2 - 1)
    return (vn1 + vn2) ** 2 / denominator if denominator > 0 else 1.0


# --- contingency tables ----------------------------------------------------------------------


class ContingencyTable(pd.DataFrame):
    """Counts of rows per (row level, column level): a pandas DataFrame indexed by the
    levels of ``row`` (in the data model's order; datasets for ``"dataset"``), columns the
    levels of ``col``. Cells a node found smaller than its ``small_cell_threshold`` hold
    zero for that node (``cells_suppressed`` says how many such local cells there were).
    Also carries ``excluded`` (rows missing ``row`` or ``col``), ``privacy`` and
    ``federation``, kept in ``attrs``."""

    @property
    def _constructor(self) -> Callable[..., ContingencyTable]:
        return ContingencyTable

    @property
    def federation(self) -> dict[str, Any]:
        return dict(self.attrs.get("federation", {}))

    @property
    def privacy(self) -> dict[str, Any]:
        return dict(self.attrs.get("privacy", {}))

    @property
    def cells_suppressed(self) -> int:
        return int(self.attrs.get("federation", {}).get("cells_suppressed", 0))

    @property
    def excluded(self) -> int:
        return int(self.attrs.get("excluded", 0))


def _table(fed: Analyses, algorithm: str, row: str, col: str, *,
           datasets: Sequence[str] | str | None, filters: FilterLike, data_model: str | None,
           privacy: Any) -> ContingencyTable:
    privacy_ = check_privacy(privacy)
    view = PlanModel(Analyses.model(fed, data_model))
    check_factor(view, row)
    check_factor(view, col)
    if row == col:
        raise QueryError("a contingency table needs two different variables")
    if DATASET not in (row, col):
        stat = fed.statistic(algorithm, datasets=datasets, filters=filters,
                             data_model=data_model, kind="counts",
                             parameters={"axes": [{"var": row}, {"var": col}]})
        rows, cols = view.levels(row), view.levels(col)
        counts = [[stat.count(("cell", i, j)) for j in range(len(cols))]
                  for i in range(len(rows))]
        stats_, excluded = [stat], stat.count(("excluded",))
    else:
        # the dataset cannot be a table axis: one query per dataset, over the other variable
        other = col if row == DATASET else row
        levels = view.levels(other)
        per_dataset, stats_ = {}, []
        for dataset in resolved_datasets(fed, data_model, datasets):
            stat = fed.statistic(algorithm, datasets=[dataset], filters=filters,
                                 data_model=data_model, kind="counts",
                                 parameters={"axes": [{"var": other}]})
            per_dataset[dataset] = [stat.count(("cell", j)) for j in range(len(levels))]
            stats_.append(stat)
        excluded = sum(s.count(("excluded",)) for s in stats_)
        names = tuple(per_dataset)
        grid = [per_dataset[d] for d in names]
        if row == DATASET:
            rows, cols, counts = names, levels, grid
        else:
            rows, cols = levels, names
            counts = [[grid[j][i] for j in range(len(names))] for i in range(len(levels))]
    table = ContingencyTable(np.array(counts, dtype=np.int64).reshape(len(rows), len(cols)),
                             index=pd.Index(list(rows), name=row),
                             columns=pd.Index(list(cols), name=col))
    table.attrs.update(federation=merge_federation(stats_), privacy=privacy_,
                       excluded=int(excluded))
    return table


def contingency_table(fed: Analyses, row: str, col: str, *,
                      datasets: Sequence[str] | None = None, filters: FilterLike = None,
                      data_model: str | None = None, privacy: Any = None) -> ContingencyTable:
    """Cross-tabulation of two categorical variables (either may be ``"dataset"``): the
    rows with both present, every level of the data model (absent levels count zero)."""
    return _table(fed, "contingency_table", row, col, datasets=datasets, filters=filters,
                  data_model=data_model, privacy=privacy)


@dataclass(frozen=True)
class ChiSquareResult:
    """Pearson's chi-square test of independence (scipy.stats.chi2_contingency)."""

    #: chi-square statistic (with Yates' correction when ``correction`` is True)
    statistic: float
    pvalue: float
    #: degrees of freedom: (rows - 1) (columns - 1) of the tested table
    dof: int
    #: expected counts under independence (DataFrame shaped as ``observed``)
    expected: pd.DataFrame
    #: the counts tested: the table without its all-zero rows and columns
    observed: pd.DataFrame
    #: whether Yates' continuity correction was applied (only ever for dof = 1)
    correction: bool
    #: rows in the tested table
    nobs: int
    #: levels left out because no row has them (all-zero rows / columns of the table)
    dropped_rows: tuple[str, ...]
    dropped_cols: tuple[str, ...]
    #: local cells that nodes zeroed as too small (the test is on the released counts)
    cells_suppressed: int
    privacy: dict[str, Any]
    federation: dict[str, Any]


def chi_square(fed: Analyses, row: str, col: str, correction: bool = True, *,
               datasets: Sequence[str] | None = None, filters: FilterLike = None,
               data_model: str | None = None, privacy: Any = None) -> ChiSquareResult:
    """Chi-square test of independence of two categorical variables.

    Levels with no rows (all-zero rows or columns: levels absent from the data, or only in
    suppressed cells) are dropped first, as their expected counts would be zero. Yates'
    continuity correction follows scipy's default: ``correction=True`` applies it, and only
    to a table with one degree of freedom (2 x 2), moving each observed count half a unit
    (at most) toward its expected count."""
    table = _table(fed, "chi_square", row, col, datasets=datasets, filters=filters,
                   data_model=data_model, privacy=privacy)
    federation = table.federation
    counts = table.to_numpy(dtype=np.int64)
    keep_rows, keep_cols = counts.sum(axis=1) > 0, counts.sum(axis=0) > 0
    n = int(counts.sum())
    if n == 0:
        raise no_rows(federation, "the chi-square test")
    observed = pd.DataFrame(counts[keep_rows][:, keep_cols],
                            index=table.index[keep_rows], columns=table.columns[keep_cols])
    r, c = observed.shape
    if r < 2 or c < 2:
        raise DegenerateInput(f"the table of {row!r} by {col!r} has {r} non-empty row(s) and "
                              f"{c} non-empty column(s); the test needs at least 2 x 2")
    dof = (r - 1) * (c - 1)
    row_totals, col_totals = counts[keep_rows].sum(axis=1), counts[:, keep_cols].sum(axis=0)
    expected = [[Fraction(int(rt) * int(ct), n) for ct in col_totals] for rt in row_totals]
    apply_yates = bool(correction) and dof == 1
    statistic = Fraction(0)
    for i in range(r):
        for j in range(c):
            o, e = Fraction(int(observed.iat[i, j])), expected[i][j]
            if apply_yates:  # scipy: observed + min(0.5, |e - o|) * sign(e - o)
                o += min(Fraction(1, 2), abs(e - o)) * (1 if e > o else -1 if e < o else 0)
            statistic += (o - e) ** 2 / e
    value = float(statistic)
    return ChiSquareResult(
        statistic=value, pvalue=float(stats.chi2.sf(value, dof)), dof=dof,
        expected=pd.DataFrame([[float(e) for e in line] for line in expected],
                              index=observed.index, columns=observed.columns),
        observed=observed, correction=apply_yates, nobs=n,
        dropped_rows=tuple(str(v) for v in table.index[~keep_rows]),
        dropped_cols=tuple(str(v) for v in table.columns[~keep_cols]),
        cells_suppressed=table.cells_suppressed, privacy=table.privacy,
        federation=federation)
