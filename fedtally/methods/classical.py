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
``federation`` (``nodes_contributing``; ``cells_below_threshold`` counts the node-level cells
that read 0, empty ones included, so that it never tells an empty cell from a small one).

**Exareme2.** How the MIP's (R-made) reference numbers map onto ours:

* one sample: ``mean_diff`` is their sample mean, our ``estimate``; their interval is
  ``conf_int(0.05)`` (always 95 %, whatever ``alpha``); their ``cohens_d`` is our
  ``|cohens_d|``.
* paired (their ``y`` and ``x``): our ``ttest_paired(y1=x, y2=y)``; interval
  ``conf_int(0.05)``; ``cohens_d`` as ours (d_av, see :func:`ttest_paired`).
* independent: Welch's test (``equal_var=False``) for statistic, p-value, ``se`` and
  ``conf_int(0.05)``; but their ``df`` is ``nobs - 2`` and their ``cohens_d`` uses the
  pooled standard deviation, as ours does.

**Differential privacy** (``privacy=fedtally.DP(...)``). Nodes clip numeric values to their
bounds, release every count and sum with Gaussian noise and suppress nothing; results are
computed from the noisy totals (post-processing) and say what they spent (``privacy``).

* Tables hold the noisy counts (floats, possibly negative), with ``noise_std`` per cell.
* Chi-square: the statistic is Pearson's on the noisy table; its p-value is a parametric
  bootstrap that simulates the noise too (see :func:`chi_square`); ``pvalue_asymptotic``
  is the chi-square distribution's, which ignores the noise.
* t-tests: every estimate is a ratio of noisy totals. Its variance is taken by the delta
  method, sampling plus noise: for a mean S/N,
  ``Var(mean) = s^2/n + (sd(S)^2 + mean^2 sd(N)^2) / n^2`` (s the sample standard
  deviation, sd(.) the noise standard deviations); for a difference of independent means,
  the sum of the two. ``se`` is its square root, ``statistic`` and ``pvalue`` are those of
  the normal approximation ``(estimate - mu) / se ~ N(0, 1)`` (``df`` is infinite), and
  ``ci`` is ``estimate +- z se``: intervals include the noise. ``noise_std`` is the noise
  part alone, ``sqrt(sd(S)^2 + mean^2 sd(N)^2) / n`` (summed in quadrature for a
  difference). Both approximations need n well above its noise: a noisy count below 2, or
  within 3 noise standard deviations of 0, raises :class:`DegenerateInput`. Negative noisy
  variances are clamped at 0 (post-processing); Cohen's d is then NaN.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import special, stats

from fedtally import coverage
from fedtally.analyses import Analyses, FilterLike
from fedtally.display import ResultFrame
from fedtally.dp import privacy_spec
from fedtally.methods.common import INTERCEPT
from fedtally.methods.registry import catalog_method
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DATASET, PlanModel
from stats.kinds.counts import OUTSIDE
from stats.suggest import did_you_mean, unknown

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

#: a DP count must exceed this many noise standard deviations to be divided by (below it,
#: the delta method's linearisation of 1/n is meaningless) and a table level's noisy total
#: must exceed it to be tested (below, it cannot be told from an empty level)
NOISE_MARGIN = 3.0
#: simulations behind a DP chi-square p-value: its Monte Carlo error is at most 0.005
CHI_SQUARE_SIMULATIONS = 10_000
TOO_NOISY = "is too small for this privacy level: ask with a larger epsilon or a coarser query"


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
            "cells_below_threshold": sum(r["cells_below_threshold"] for r in records),
            "queries": len(records), "per_query": records}


def no_rows(federation: Mapping[str, Any], what: str = "the analysis") -> DegenerateInput:
    return DegenerateInput(
        f"no rows for {what}: the filters leave none, or every node's cohort is below its "
        f"minimum row count ({federation.get('nodes_contributing', 0)} of "
        f"{federation.get('nodes_asked', 0)} nodes contributed)")


def resolved_datasets(fed: Analyses, data_model: str | None,
                      datasets: Sequence[str] | str | None) -> list[str]:
    """The datasets a query covers: those given, or every dataset the data model declares,
    less those no online node holds (reported as :class:`fedtally.IncompleteAnswer`, or an
    error under ``strict``)."""
    scope = Analyses.scope(fed, data_model, datasets)
    if not scope.sent:
        raise QueryError(f"no online node holds dataset(s) {list(scope.asked)}")
    if scope.offline:
        coverage.report([f"dataset {d!r}: {coverage.OFFLINE}" for d in scope.offline],
                        scope.offline, strict=coverage.strict_now(fed.strict))
    return list(scope.sent)


def check_numeric(view: PlanModel, variable: str) -> None:
    if not isinstance(variable, str) or not view.has_variable(variable):
        raise QueryError(unknown("variable", variable, view.variable_names()))
    if not view.is_numeric(variable):
        raise QueryError(f"{variable!r} is categorical; a numeric variable is needed here")


def check_factor(view: PlanModel, variable: str) -> None:
    """A grouping variable: categorical, or the ``dataset`` itself."""
    if variable == DATASET:
        return
    if not isinstance(variable, str) or not view.has_variable(variable):
        raise QueryError(unknown("variable", variable, view.variable_names()))
    if view.is_numeric(variable):
        raise QueryError(f"{variable!r} is numeric; a categorical variable is needed here")


def _sums(stat: Statistic, variable: str, group: str | None,
          datasets: Sequence[str]) -> Sums:
    return Sums(sum(stat.count(("count", d, group, variable)) for d in datasets),
                sum((stat.exact(("sum", d, group, variable)) for d in datasets), Fraction(0)),
                sum((stat.exact(("sumsq", d, group, variable)) for d in datasets), Fraction(0)))


def _group_moments(fed: Analyses, algorithm: str, y: str, group: str, *,
                   datasets: Sequence[str] | str | None, filters: FilterLike,
                   data_model: str | None, privacy: Any = None
                   ) -> tuple[dict[str, tuple[str | None, list[str]]], Statistic]:
    """One moments query of ``y`` by ``group``, and per level the (group key, datasets) whose
    slots add up to that level's totals."""
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y)
    check_factor(view, group)
    if group == DATASET:
        stat = fed.statistic(algorithm, variables=[y], datasets=datasets, filters=filters,
                             data_model=data_model, kind="moments", privacy=privacy)
        return {d: (None, [d]) for d in stat.spec.datasets}, stat
    stat = fed.statistic(algorithm, variables=[y], by=group, datasets=datasets,
                         filters=filters, data_model=data_model, kind="moments",
                         privacy=privacy)
    return {g: (g, list(stat.spec.datasets)) for g in view.levels(group)}, stat


def group_sums(fed: Analyses, algorithm: str, y: str, group: str, *,
               datasets: Sequence[str] | str | None, filters: FilterLike,
               data_model: str | None) -> tuple[dict[str, Sums], Statistic]:
    """Exact sums of ``y`` per level of ``group`` (one moments query), levels in the data
    model's order; ``group="dataset"`` gives one level per dataset queried."""
    where, stat = _group_moments(fed, algorithm, y, group, datasets=datasets,
                                 filters=filters, data_model=data_model)
    return {level: _sums(stat, y, g, ds) for level, (g, ds) in where.items()}, stat


# --- noisy moments (differential privacy) --------------------------------------------------


@dataclass(frozen=True)
class NoisySums:
    """A sample's released (noisy) count, sum and sum of squares, and the standard deviation
    of the noise in the count and in the sum: what the delta method needs."""

    n: Fraction
    s: Fraction
    ss: Fraction
    n_noise: float
    s_noise: float

    def check(self, what: str) -> None:
        """Refuse to divide by a count that the noise may have brought near or below 0."""
        if self.n < 2 or float(self.n) < NOISE_MARGIN * self.n_noise:
            raise DegenerateInput(f"the noisy count of {what} ({float(self.n):.1f}, noise "
                                  f"std {self.n_noise:.2g}) {TOO_NOISY}")

    @property
    def mean(self) -> float:
        return float(self.s / self.n)

    def variance(self) -> float:
        """Sample variance (ddof 1) of the noisy moments, clamped at 0 (post-processing:
        the noise in the sum of squares can make it negative)."""
        return max(float((self.ss - self.s * self.s / self.n) / (self.n - 1)), 0.0)

    def mean_noise_variance(self) -> float:
        """Variance the noise adds to S/N, by the delta method: (sd(S)^2 + mean^2 sd(N)^2)
        / n^2."""
        size = float(self.n)
        return (self.s_noise ** 2 + self.mean ** 2 * self.n_noise ** 2) / (size * size)


def _noisy_sums(stat: Statistic, variable: str, group: str | None,
                datasets: Sequence[str]) -> NoisySums:
    def total(head: str) -> Fraction:
        return sum((stat.exact((head, d, group, variable)) for d in datasets), Fraction(0))

    def noise(head: str) -> float:
        # independent noise in every slot: variances add
        return math.sqrt(sum(stat.noise_std((head, d, group, variable)) ** 2 for d in datasets))

    return NoisySums(total("count"), total("sum"), total("sumsq"), noise("count"), noise("sum"))


def _noisy_samples(rows: Mapping[str, NoisySums]) -> pd.DataFrame:
    """Per sample: noisy nobs, mean, std (clamped variance), and the noise std of the mean."""
    return pd.DataFrame(
        {"nobs": [float(s.n) for s in rows.values()],
         "mean": [s.mean for s in rows.values()],
         "std": [math.sqrt(s.variance()) for s in rows.values()],
         "mean_noise_std": [math.sqrt(s.mean_noise_variance()) for s in rows.values()]},
        index=list(rows))


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

    #: t statistic: ``mean_diff / se`` (DP: the same ratio, read as a z statistic)
    statistic: float
    #: p-value for ``alternative`` (DP: from the normal approximation)
    pvalue: float
    #: degrees of freedom (Welch-Satterthwaite for ``equal_var=False``; DP: infinite, i.e.
    #: the normal distribution)
    df: float
    #: the difference the test is about: ``estimate - mu``
    mean_diff: float
    #: standard error of ``mean_diff`` (DP: sampling and noise, by the delta method)
    se: float
    #: ``1 - alpha`` confidence interval of ``estimate`` (as scipy's
    #: ``confidence_interval``); one-sided alternatives give an infinite bound.
    #: DP: ``estimate +- z se``, so it includes the noise
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
    #: per sample (y; y1, y2 and their difference; groups a and b): nobs, mean, std (DP:
    #: noisy nobs, and the noise std of each mean in ``mean_noise_std``)
    samples: pd.DataFrame
    privacy: dict[str, Any]
    federation: dict[str, Any]
    #: standard deviation of the noise in ``estimate`` (delta method; 0 for exact answers)
    noise_std: float = 0.0

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


def _dp_t_result(*, test: str, estimate: float, mu: float, sampling_variance: float,
                 noise_variance: float, d_scale: float, nobs: float, alternative: str,
                 alpha: float, samples: pd.DataFrame, stat: Statistic) -> TTestResult:
    """The common tail of every DP t-test: the normal approximation with the noise variance
    added to the sampling variance (see the module notes)."""
    variance = sampling_variance + noise_variance
    if not variance > 0 or not math.isfinite(variance):
        raise DegenerateInput(f"the {test} test is undefined: its variance is not positive")
    se = math.sqrt(variance)
    diff = estimate - mu
    z = diff / se
    return TTestResult(
        statistic=z, pvalue=_z_pvalue(z, alternative), df=math.inf, mean_diff=diff, se=se,
        # stdtrit at infinite df is the normal quantile, so conf_int() stays consistent
        ci=_t_interval(estimate, se, math.inf, alternative, alpha),
        cohens_d=diff / math.sqrt(d_scale) if d_scale > 0 else math.nan,
        nobs=round(nobs), estimate=estimate, mu=mu, alternative=alternative, alpha=alpha,
        test=test, samples=samples, privacy=stat.privacy, federation=stat.federation,
        noise_std=math.sqrt(noise_variance))


def _z_pvalue(z: float, alternative: str) -> float:
    if alternative == "less":
        return float(stats.norm.cdf(z))
    if alternative == "greater":
        return float(stats.norm.sf(z))
    return float(2 * stats.norm.sf(abs(z)))


def _samples(rows: Mapping[str, Sums]) -> pd.DataFrame:
    frame = pd.DataFrame({"nobs": [s.n for s in rows.values()],
                          "mean": [float(s.mean) if s.n else math.nan for s in rows.values()],
                          "std": [s.std() for s in rows.values()]}, index=list(rows))
    frame["nobs"] = frame["nobs"].astype(np.int64)
    return frame


@catalog_method(kinds=("moments",))
def ttest_onesample(fed: Analyses, y: str, mu: float = 0.0, alternative: str = "two-sided",
                    alpha: float = 0.05, *, datasets: Sequence[str] | None = None,
                    filters: FilterLike = None, data_model: str | None = None,
                    privacy: Any = None) -> TTestResult:
    """One-sample t-test of H0: mean(y) = mu (scipy.stats.ttest_1samp), rows where y is
    present. ``estimate`` and ``ci`` are the mean of y and its interval (as scipy);
    ``mean_diff = mean - mu``; ``cohens_d = (mean - mu) / std(y)``.

    With ``privacy=fedtally.DP(...)`` (one noisy moments query; y clipped to its bounds):
    ``estimate = S/N`` from the noisy count and sum, ``se^2 = s^2/n + (sd(S)^2 +
    mean^2 sd(N)^2)/n^2`` (delta method: sampling plus noise), ``statistic``, ``pvalue``
    and ``ci`` from the normal approximation with that variance, ``noise_std`` the noise
    part of ``se``; see the module notes."""
    privacy_ = privacy_spec(privacy)
    alternative, alpha, mu = _check_alternative(alternative), _check_alpha(alpha), _check_mu(mu)
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y)
    stat = fed.statistic("ttest_onesample", variables=[y], datasets=datasets, filters=filters,
                         data_model=data_model, kind="moments", privacy=privacy)
    if privacy_["mode"] == "dp":
        sample = _noisy_sums(stat, y, None, stat.spec.datasets)
        sample.check(repr(y))
        variance = sample.variance()
        return _dp_t_result(test="one-sample", estimate=sample.mean, mu=mu,
                            sampling_variance=variance / float(sample.n),
                            noise_variance=sample.mean_noise_variance(), d_scale=variance,
                            nobs=float(sample.n), alternative=alternative, alpha=alpha,
                            samples=_noisy_samples({y: sample}), stat=stat)
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


@catalog_method(kinds=("crossprod",))
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
    standard deviation.

    With ``privacy=fedtally.DP(...)`` (one noisy cross-product query; y1, y2 clipped to
    their bounds): n is the inverse-variance average of its two independent noisy releases
    (the count slot and the intercept's own cross-product); the mean difference is
    ``(S1 - S2)/n`` with ``sd(S)^2 = sd(S1)^2 + sd(S2)^2``, and ``se``, ``statistic``,
    ``pvalue``, ``ci`` and ``noise_std`` are as for :func:`ttest_onesample` (delta method,
    normal approximation; see the module notes)."""
    privacy_ = privacy_spec(privacy)
    alternative, alpha, mu = _check_alternative(alternative), _check_alpha(alpha), _check_mu(mu)
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y1)
    check_numeric(view, y2)
    if y1 == y2:
        raise QueryError("a paired t-test needs two different variables")
    terms = [INTERCEPT, {"var": y1}, {"var": y2}]
    stat = fed.statistic("ttest_paired", datasets=datasets, filters=filters,
                         data_model=data_model, kind="crossprod", parameters={"terms": terms},
                         privacy=privacy)
    if privacy_["mode"] == "dp":
        return _dp_paired(stat, y1, y2, mu, alternative, alpha)
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


def _dp_paired(stat: Statistic, y1: str, y2: str, mu: float, alternative: str,
               alpha: float) -> TTestResult:
    def xx(i: int, j: int) -> Fraction:
        return stat.exact(("xx", None, i, j))

    def sd(i: int, j: int) -> float:
        return stat.noise_std(("xx", None, i, j))

    # the count is released twice with independent noise (its slot, and Intercept x
    # Intercept): their inverse-variance average is the better estimate (post-processing)
    weights = [1 / stat.noise_std(("n", None)) ** 2, 1 / sd(0, 0) ** 2]
    n = (Fraction(weights[0]) * stat.exact(("n", None)) + Fraction(weights[1]) * xx(0, 0)) \
        / Fraction(sum(weights))
    n_noise = 1 / math.sqrt(sum(weights))
    first = NoisySums(n, xx(0, 1), xx(1, 1), n_noise, sd(0, 1))
    second = NoisySums(n, xx(0, 2), xx(2, 2), n_noise, sd(0, 2))
    difference = NoisySums(n, first.s - second.s, first.ss - 2 * xx(1, 2) + second.ss, n_noise,
                           math.hypot(sd(0, 1), sd(0, 2)))
    difference.check("complete pairs")
    d_av = (first.variance() + second.variance()) / 2
    return _dp_t_result(test="paired", estimate=difference.mean, mu=mu,
                        sampling_variance=difference.variance() / float(n),
                        noise_variance=difference.mean_noise_variance(), d_scale=d_av,
                        nobs=float(n), alternative=alternative, alpha=alpha,
                        samples=_noisy_samples({y1: first, y2: second,
                                                f"{y1} - {y2}": difference}), stat=stat)


@catalog_method(kinds=("moments",))
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
    whichever test is run (as Exareme2).

    With ``privacy=fedtally.DP(...)`` (one noisy moments query; y clipped to its bounds):
    each group's mean is S/N from noisy totals; ``se^2`` is the sampling variance (pooled
    or Welch's, from the noisy moments) plus the noise variance of both means by the delta
    method, ``(sd(S_a)^2 + mean_a^2 sd(N_a)^2)/n_a^2 + (same for b)``; ``statistic``,
    ``pvalue`` and ``ci`` come from the normal approximation with that variance and
    ``noise_std`` is the noise part (see the module notes)."""
    privacy_ = privacy_spec(privacy)
    alternative, alpha = _check_alternative(alternative), _check_alpha(alpha)
    a, b = str(a), str(b)
    if a == b:
        raise QueryError("name two different groups a and b")
    where, stat = _group_moments(fed, "ttest_independent", y, group, datasets=datasets,
                                 filters=filters, data_model=data_model, privacy=privacy)
    for level in (a, b):
        if level not in where:
            raise QueryError(f"{level!r} is not a level of {group!r} (here: {list(where)})"
                             + did_you_mean(level, where))
    if privacy_["mode"] == "dp":
        return _dp_independent(stat, y, group, {level: where[level] for level in (a, b)},
                               equal_var, alternative, alpha)
    sums = {level: _sums(stat, y, g, ds) for level, (g, ds) in where.items()}
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


def _dp_independent(stat: Statistic, y: str, group: str,
                    where: Mapping[str, tuple[str | None, list[str]]], equal_var: bool,
                    alternative: str, alpha: float) -> TTestResult:
    samples = {level: _noisy_sums(stat, y, g, ds) for level, (g, ds) in where.items()}
    for level, sample in samples.items():
        sample.check(f"group {level!r} of {group!r} with {y!r}")
    first, second = samples.values()
    na, nb = float(first.n), float(second.n)
    va, vb = first.variance(), second.variance()
    pooled = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
    sampling = pooled * (1 / na + 1 / nb) if equal_var else va / na + vb / nb
    # disjoint groups, separate slots: the two means' noises are independent
    noise = first.mean_noise_variance() + second.mean_noise_variance()
    return _dp_t_result(test="independent", estimate=first.mean - second.mean, mu=0.0,
                        sampling_variance=sampling, noise_variance=noise, d_scale=pooled,
                        nobs=na + nb, alternative=alternative, alpha=alpha,
                        samples=_noisy_samples(samples), stat=stat)


def _welch_df(vn1: float, vn2: float, n1: int, n2: int) -> float:
    """Welch-Satterthwaite degrees of freedom (scipy's ``_unequal_var_ttest_denom``)."""
    denominator = vn1 ** 2 / (n1 - 1) + vn2 ** 2 / (n2 - 1)
    return (vn1 + vn2) ** 2 / denominator if denominator > 0 else 1.0


# --- contingency tables ----------------------------------------------------------------------


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


def _table(fed: Analyses, algorithm: str, row: str, col: str, *,
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


@catalog_method(kinds=("counts",))
def contingency_table(fed: Analyses, row: str, col: str, *,
                      datasets: Sequence[str] | None = None, filters: FilterLike = None,
                      data_model: str | None = None, privacy: Any = None) -> ContingencyTable:
    """Cross-tabulation of two categorical variables (either may be ``"dataset"``): the
    rows with both present, every level of the data model (absent levels count zero).
    With ``privacy=fedtally.DP(...)`` the cells are noisy floats and ``.noise_std`` has
    their noise standard deviations (see :class:`ContingencyTable`)."""
    return _table(fed, "contingency_table", row, col, datasets=datasets, filters=filters,
                  data_model=data_model, privacy=privacy)


@dataclass(frozen=True)
class ChiSquareResult:
    """Pearson's chi-square test of independence (scipy.stats.chi2_contingency)."""

    #: chi-square statistic (with Yates' correction when ``correction`` is True)
    statistic: float
    #: p-value; under DP, a parametric bootstrap that simulates the noise too
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
    cells_below_threshold: int
    privacy: dict[str, Any]
    federation: dict[str, Any]
    #: standard deviation of the noise in each cell of ``observed`` (zeros when exact)
    noise_std: pd.DataFrame | None = None
    #: the chi-square distribution's p-value for ``statistic``; equals ``pvalue`` when
    #: exact, and under DP ignores the noise (so it is too small: anti-conservative)
    pvalue_asymptotic: float = math.nan
    #: how the p-value was obtained, under DP
    note: str = ""


@catalog_method(kinds=("counts",))
def chi_square(fed: Analyses, row: str, col: str, correction: bool = True, *,
               datasets: Sequence[str] | None = None, filters: FilterLike = None,
               data_model: str | None = None, privacy: Any = None) -> ChiSquareResult:
    """Chi-square test of independence of two categorical variables.

    Levels with no rows (all-zero rows or columns: levels absent from the data, or only in
    suppressed cells) are dropped first, as their expected counts would be zero. Yates'
    continuity correction follows scipy's default: ``correction=True`` applies it, and only
    to a table with one degree of freedom (2 x 2), moving each observed count half a unit
    (at most) toward its expected count.

    With ``privacy=fedtally.DP(...)`` the test runs on the noisy table (post-processing):

    * levels whose noisy total is not above 3 noise standard deviations (of that total) are
      dropped, as they cannot be told from empty ones and a near-zero expected count would
      dominate the statistic; ``observed`` holds the noisy counts tested (possibly
      negative), ``noise_std`` their noise and ``nobs`` their rounded total;
    * ``statistic`` is Pearson's, without Yates' correction (it corrects for discrete
      counts; noisy counts are continuous), so ``correction`` is False;
    * ``pvalue`` is noise-aware: a parametric bootstrap (as Gaboardi et al. 2016, "Differentially
      private chi-squared hypothesis testing") that draws tables under independence from
      the noisy margins (multinomial), adds Gaussian noise of the released standard
      deviations and recomputes the statistic, ``CHI_SQUARE_SIMULATIONS`` times (Monte
      Carlo error at most 0.005); ``pvalue_asymptotic`` is chi2(dof)'s, which ignores
      the noise and is too small when the noise is not negligible. ``note`` says so."""
    table = _table(fed, "chi_square", row, col, datasets=datasets, filters=filters,
                   data_model=data_model, privacy=privacy)
    if table.is_noisy:
        return _dp_chi_square(table, row, col)
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
    pvalue = float(stats.chi2.sf(value, dof))
    return ChiSquareResult(
        statistic=value, pvalue=pvalue, dof=dof,
        expected=pd.DataFrame([[float(e) for e in line] for line in expected],
                              index=observed.index, columns=observed.columns),
        observed=observed, correction=apply_yates, nobs=n,
        dropped_rows=tuple(str(v) for v in table.index[~keep_rows]),
        dropped_cols=tuple(str(v) for v in table.columns[~keep_cols]),
        cells_below_threshold=table.cells_below_threshold, privacy=table.privacy,
        federation=federation, noise_std=pd.DataFrame(
            np.zeros(observed.shape), index=observed.index, columns=observed.columns),
        pvalue_asymptotic=pvalue)


def _pearson(tables: np.ndarray) -> np.ndarray:
    """Pearson's statistic of each table in a stack (k, r, c), expected counts from each
    table's own margins; a cell whose expected count is not positive (possible only for a
    simulated noisy table) adds nothing rather than dividing by it."""
    rows, cols = tables.sum(axis=2), tables.sum(axis=1)
    n = rows.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = rows[:, :, None] * cols[:, None, :] / n[:, None, None]
        terms = np.where(expected > 0, (tables - expected) ** 2 / expected, 0.0)
    return terms.sum(axis=(1, 2))


def _dp_chi_square(table: ContingencyTable, row: str, col: str) -> ChiSquareResult:
    counts = table.to_numpy(dtype=np.float64)
    noise = table.noise_std.to_numpy(dtype=np.float64)
    # a level's total carries the noise of all its cells (independent, so variances add)
    keep_rows = counts.sum(axis=1) > NOISE_MARGIN * np.sqrt((noise ** 2).sum(axis=1))
    keep_cols = counts.sum(axis=0) > NOISE_MARGIN * np.sqrt((noise ** 2).sum(axis=0))
    observed, sigma = counts[keep_rows][:, keep_cols], noise[keep_rows][:, keep_cols]
    r, c = observed.shape
    if r < 2 or c < 2:
        raise DegenerateInput(
            f"the noisy table of {row!r} by {col!r} has {r} row(s) and {c} column(s) clearly "
            f"above the noise; the test needs at least 2 x 2. The table {TOO_NOISY}")
    n = float(observed.sum())
    statistic = float(_pearson(observed[None])[0])
    dof = (r - 1) * (c - 1)
    row_totals, col_totals = observed.sum(axis=1), observed.sum(axis=0)
    expected = np.outer(row_totals, col_totals) / n
    pvalue = _simulated_pvalue(observed, sigma, statistic)
    asymptotic = float(stats.chi2.sf(statistic, dof))
    index, columns = table.index[keep_rows], table.columns[keep_cols]
    return ChiSquareResult(
        statistic=statistic, pvalue=pvalue, dof=dof,
        expected=pd.DataFrame(expected, index=index, columns=columns),
        observed=pd.DataFrame(observed, index=index, columns=columns), correction=False,
        nobs=round(n), dropped_rows=tuple(str(v) for v in table.index[~keep_rows]),
        dropped_cols=tuple(str(v) for v in table.columns[~keep_cols]),
        cells_below_threshold=table.cells_below_threshold, privacy=table.privacy,
        federation=table.federation,
        noise_std=pd.DataFrame(sigma, index=index, columns=columns),
        pvalue_asymptotic=asymptotic,
        note=(f"differential privacy: the statistic is computed on the noisy table; the "
              f"p-value is a parametric bootstrap under independence that includes the "
              f"noise ({CHI_SQUARE_SIMULATIONS} simulations); pvalue_asymptotic "
              f"({asymptotic:.3g}) ignores the noise"))


def _simulated_pvalue(observed: np.ndarray, sigma: np.ndarray, statistic: float) -> float:
    """P(X >= statistic) under independence with the release's noise: tables drawn from the
    multinomial with the observed (noisy, positive) margins' probabilities and the observed
    total, plus Gaussian noise of each cell's standard deviation (the sum of the nodes'
    discrete Gaussian shares, at this resolution Gaussian), with the (1 + hits) / (1 + R)
    rule so the p-value is never 0."""
    n = float(observed.sum())
    probabilities = np.outer(observed.sum(axis=1) / n, observed.sum(axis=0) / n).ravel()
    # post-processing of released numbers: any generator is safe here; seeding it from the
    # release makes the same release always give the same p-value
    seed = int.from_bytes(hashlib.sha256(observed.tobytes() + sigma.tobytes()).digest()[:8],
                          "big")
    rng = np.random.default_rng(seed)
    cells = probabilities.size
    chunk = max(1, min(CHI_SQUARE_SIMULATIONS, 1_000_000 // cells))  # bounded memory
    hits, done = 0, 0
    while done < CHI_SQUARE_SIMULATIONS:
        size = min(chunk, CHI_SQUARE_SIMULATIONS - done)
        draws = rng.multinomial(round(n), probabilities, size=size).astype(np.float64)
        draws += rng.normal(0.0, 1.0, size=draws.shape) * sigma.ravel()
        simulated = _pearson(draws.reshape(size, *observed.shape))
        # a small tolerance so that ties with the observed value count as "at least"
        hits += int((simulated >= statistic * (1 - 1e-12)).sum())
        done += size
    return (1 + hits) / (1 + CHI_SQUARE_SIMULATIONS)
