"""The one-sample t-test (scipy.stats.ttest_1samp) from one ``moments`` query; the notes on
exactness, Exareme2's numbers and differential privacy are in :mod:`fedtally.methods.ttests`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.common import check_numeric, no_rows
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.sums import noisy_sums, sums_of
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
from protocol.errors import DegenerateInput
from stats.datamodel import PlanModel


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
    part of ``se``; see :mod:`fedtally.methods.ttests`."""
    privacy_ = privacy_spec(privacy)
    alternative, alpha, mu = check_alternative(alternative), check_alpha(alpha), check_mu(mu)
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y)
    stat = fed.statistic("ttest_onesample", variables=[y], datasets=datasets, filters=filters,
                         data_model=data_model, kind="moments", privacy=privacy)
    if privacy_["mode"] == "dp":
        sample = noisy_sums(stat, y, None, stat.spec.datasets)
        sample.check(repr(y))
        variance = sample.variance()
        return dp_t_result(test="one-sample", estimate=sample.mean, mu=mu,
                           sampling_variance=variance / float(sample.n),
                           noise_variance=sample.mean_noise_variance(), d_scale=variance,
                           nobs=float(sample.n), alternative=alternative, alpha=alpha,
                           samples=noisy_sample_frame({y: sample}), stat=stat)
    sums = sums_of(stat, y, None, stat.spec.datasets)
    federation = stat.federation
    if sums.n == 0:
        raise no_rows(federation, "the one-sample t-test")
    if sums.n < 2:
        raise DegenerateInput("the one-sample t-test needs at least two rows")
    variance = sums.centered / (sums.n - 1)
    return t_result(test="one-sample", estimate=sums.mean, mu=mu,
                    variance_of_mean=variance / sums.n, df=float(sums.n - 1),
                    d_scale=variance, nobs=sums.n, alternative=alternative, alpha=alpha,
                    samples=sample_frame({y: sums}), privacy=privacy_, federation=federation)


@handles("ttest_onesample", method="ttest_onesample")
def _ttest_onesample(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """As Exareme2: ``mean_diff`` is the sample mean, the interval is the mean's, ``std``
    the sample standard deviation; ``cohens_d`` is ``(mean - mu) / std`` (Exareme2 flips
    its sign)."""
    y = exareme2.single(req.y, "y", "ttest_onesample")
    result = ttest_onesample(fed, y, mu=exareme2.real(req, "mu", 0.0), **exareme2.test_options(req),
                             **exareme2.query_scope(req))
    return {"n_obs": result.nobs, **exareme2.t_fields(result, result.estimate, result.df),
            "std": exareme2.json_number(result.samples.at[y, "std"])}
