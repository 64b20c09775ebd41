"""The two-sample t-test, Student's or Welch's (scipy.stats.ttest_ind), from one ``moments``
query; the notes on exactness, Exareme2's numbers and differential privacy are in
:mod:`fedtally.methods.ttests`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.common import no_rows
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.sums import group_moments, noisy_sums, sums_of
from fedtally.methods.ttests import (
    TTestResult,
    check_alpha,
    check_alternative,
    dp_t_result,
    noisy_sample_frame,
    sample_frame,
    t_result,
)
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.suggest import did_you_mean


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
    ``noise_std`` is the noise part (see :mod:`fedtally.methods.ttests`)."""
    privacy_ = privacy_spec(privacy)
    alternative, alpha = check_alternative(alternative), check_alpha(alpha)
    a, b = str(a), str(b)
    if a == b:
        raise QueryError("name two different groups a and b")
    where, stat = group_moments(fed, "ttest_independent", y, group, datasets=datasets,
                                filters=filters, data_model=data_model, privacy=privacy)
    for level in (a, b):
        if level not in where:
            raise QueryError(f"{level!r} is not a level of {group!r} (here: {list(where)})"
                             + did_you_mean(level, where))
    if privacy_["mode"] == "dp":
        return _dp_independent(stat, y, group, {level: where[level] for level in (a, b)},
                               equal_var, alternative, alpha)
    sums = {level: sums_of(stat, y, g, ds) for level, (g, ds) in where.items()}
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
    return t_result(test="independent", estimate=first.mean - second.mean, mu=0.0,
                    variance_of_mean=variance_of_mean, df=df, d_scale=pooled,
                    nobs=first.n + second.n, alternative=alternative, alpha=alpha,
                    samples=sample_frame({a: first, b: second}), privacy=privacy_,
                    federation=federation)


def _dp_independent(stat: Statistic, y: str, group: str,
                    where: Mapping[str, tuple[str | None, list[str]]], equal_var: bool,
                    alternative: str, alpha: float) -> TTestResult:
    samples = {level: noisy_sums(stat, y, g, ds) for level, (g, ds) in where.items()}
    for level, sample in samples.items():
        sample.check(f"group {level!r} of {group!r} with {y!r}")
    first, second = samples.values()
    na, nb = float(first.n), float(second.n)
    va, vb = first.variance(), second.variance()
    pooled = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
    sampling = pooled * (1 / na + 1 / nb) if equal_var else va / na + vb / nb
    # disjoint groups, separate slots: the two means' noises are independent
    noise = first.mean_noise_variance() + second.mean_noise_variance()
    return dp_t_result(test="independent", estimate=first.mean - second.mean, mu=0.0,
                       sampling_variance=sampling, noise_variance=noise, d_scale=pooled,
                       nobs=na + nb, alternative=alternative, alpha=alpha,
                       samples=noisy_sample_frame(samples), stat=stat)


def _welch_df(vn1: float, vn2: float, n1: int, n2: int) -> float:
    """Welch-Satterthwaite degrees of freedom (scipy's ``_unequal_var_ttest_denom``)."""
    denominator = vn1 ** 2 / (n1 - 1) + vn2 ** 2 / (n2 - 1)
    return (vn1 + vn2) ** 2 / denominator if denominator > 0 else 1.0


@handles("ttest_independent", method="ttest_independent")
def _ttest_independent(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Welch's test of groupA against groupB of x (see :mod:`fedtally.exareme2`'s notes on
    ``p`` and ``df``); ``cohens_d`` over the pooled standard deviation."""
    y = exareme2.single(req.y, "y", "ttest_independent")
    x = exareme2.single(req.x, "x", "ttest_independent")
    result = ttest_independent(fed, y, x, exareme2.param(req, "groupA"),
                               exareme2.param(req, "groupB"), equal_var=False,
                               **exareme2.test_options(req), **exareme2.query_scope(req))
    return exareme2.t_fields(result, result.estimate, result.nobs - 2)
