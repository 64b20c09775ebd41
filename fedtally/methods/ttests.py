"""What the three t-tests share: the result, the argument checks, and the finishing from
exact or noisy moments (:func:`t_result`, :func:`dp_t_result`).

Every statistic is computed from the exact totals (sums of the nodes' float64 local sums,
in rational arithmetic), so on the pooled rows the results equal scipy's
(``ttest_1samp``, ``ttest_rel``, ``ttest_ind``) to about 1e-15.

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
Every estimate is a ratio of noisy totals. Its variance is taken by the delta
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

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from fedtally.methods.sums import NoisySums, Sums
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError

ALTERNATIVES = ("two-sided", "less", "greater")


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise QueryError("alpha must be a number strictly between 0 and 1")
    return float(alpha)


def check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise QueryError(f"alternative must be one of {list(ALTERNATIVES)}")
    return alternative


def check_mu(mu: float) -> float:
    if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu):
        raise QueryError("mu must be a finite number")
    return float(mu)


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
                           self.alpha if alpha is None else check_alpha(alpha))


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


def t_result(*, test: str, estimate: Fraction, mu: float, variance_of_mean: Fraction,
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


def dp_t_result(*, test: str, estimate: float, mu: float, sampling_variance: float,
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


def sample_frame(rows: Mapping[str, Sums]) -> pd.DataFrame:
    frame = pd.DataFrame({"nobs": [s.n for s in rows.values()],
                          "mean": [float(s.mean) if s.n else math.nan for s in rows.values()],
                          "std": [s.std() for s in rows.values()]}, index=list(rows))
    frame["nobs"] = frame["nobs"].astype(np.int64)
    return frame


def noisy_sample_frame(rows: Mapping[str, NoisySums]) -> pd.DataFrame:
    """Per sample: noisy nobs, mean, std (clamped variance), and the noise std of the mean."""
    return pd.DataFrame(
        {"nobs": [float(s.n) for s in rows.values()],
         "mean": [s.mean for s in rows.values()],
         "std": [math.sqrt(s.variance()) for s in rows.values()],
         "mean_noise_std": [math.sqrt(s.mean_noise_variance()) for s in rows.values()]},
        index=list(rows))
