"""The paired t-test (scipy.stats.ttest_rel) from one cross-product query; the notes on
exactness, Exareme2's numbers and differential privacy are in :mod:`fedtally.methods.ttests`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.common import INTERCEPT, check_numeric, no_rows
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.sums import NoisySums, Sums
from fedtally.methods.ttests import (
    TTestResult,
    check_alpha,
    check_alternative,
    check_mu,
    dp_t_result,
    noisy_sample_frame,
    sample_frame,
    t_result,
)
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel


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
    normal approximation; see :mod:`fedtally.methods.ttests`)."""
    privacy_ = privacy_spec(privacy)
    alternative, alpha, mu = check_alternative(alternative), check_alpha(alpha), check_mu(mu)
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
    samples = sample_frame({y1: first, y2: second, f"{y1} - {y2}": difference})
    return t_result(test="paired", estimate=difference.mean, mu=mu,
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
    return dp_t_result(test="paired", estimate=difference.mean, mu=mu,
                       sampling_variance=difference.variance() / float(n),
                       noise_variance=difference.mean_noise_variance(), d_scale=d_av,
                       nobs=float(n), alternative=alternative, alpha=alpha,
                       samples=noisy_sample_frame({y1: first, y2: second,
                                                   f"{y1} - {y2}": difference}), stat=stat)


@handles("ttest_paired", method="ttest_paired")
def _ttest_paired(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """x minus y (Exareme2's order); ``cohens_d`` over the mean of the two variances.
    ``n_obs`` is added (Exareme2's paired result has none)."""
    y = exareme2.single(req.y, "y", "ttest_paired")
    x = exareme2.single(req.x, "x", "ttest_paired")
    result = ttest_paired(fed, x, y, **exareme2.test_options(req), **exareme2.query_scope(req))
    return {"n_obs": result.nobs, **exareme2.t_fields(result, result.estimate, result.df)}
