"""Linear regression (ordinary least squares) over secure sums: see
:mod:`fedtally.methods.regression` for the fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.common import names, series, triangle
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.regression import (
    OLSFit,
    check_alpha,
    covariance_frame,
    diag_float,
    interval,
    linear_terms,
    ols_fit,
    present_terms,
    sub_matrix,
    who,
)
from fedtally.results import Statistic
from protocol.errors import DegenerateInput


@dataclass(frozen=True)
class LinearRegressionResult:
    """Ordinary least squares, named as statsmodels' ``OLSResults``."""

    dependent_var: str
    #: coefficients, indexed by term name (Intercept first; dummies as ``sex[T.M]``)
    params: pd.Series
    #: standard errors of the coefficients
    bse: pd.Series
    #: t statistics (params / bse)
    tvalues: pd.Series
    #: two-sided p-values of the t tests, on df_resid degrees of freedom
    pvalues: pd.Series
    #: complete-case rows used
    nobs: int
    #: number of slopes (coefficients but the intercept)
    df_model: float
    #: nobs - number of coefficients
    df_resid: float
    #: 1 - ssr / centered_tss
    rsquared: float
    #: 1 - (1 - rsquared) (nobs - 1) / df_resid
    rsquared_adj: float
    #: F statistic of every slope being zero
    fvalue: float
    f_pvalue: float
    #: residual sum of squares
    ssr: float
    #: explained sum of squares (centered_tss - ssr)
    ess: float
    #: total sum of squares around the mean of y
    centered_tss: float
    #: ssr / df_resid, the estimate of the error variance
    mse_resid: float
    #: residual standard error, sqrt(mse_resid)
    rse: float
    #: Gaussian log-likelihood at the estimate
    llf: float
    aic: float
    bic: float
    covariance: pd.DataFrame = field(repr=False)
    privacy: dict[str, Any] = field(default_factory=dict)
    #: nodes asked / answered / contributing and cells suppressed, for the round used
    federation: dict[str, int] = field(default_factory=dict)
    #: DP only: each coefficient's std due to the noise (already included in bse)
    noise_std: pd.Series | None = None

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Confidence intervals of the coefficients (t quantiles): columns 0 and 1."""
        check_alpha(alpha)
        return interval(self.params, self.bse, float(stats.t.ppf(1 - alpha / 2, self.df_resid)))

    def cov_params(self) -> pd.DataFrame:
        """Covariance matrix of the coefficients, mse_resid (X'X)^-1."""
        return self.covariance.copy()


@catalog_method(kinds=("crossprod",))
def linear_regression(fed: Analyses, y: str, x: Sequence[str] | str, *,
                      datasets: Sequence[str] | None = None, filters: FilterLike = None,
                      data_model: str | None = None, privacy: Any = None
                      ) -> LinearRegressionResult:
    """Ordinary least squares of numeric ``y`` on ``x`` (numeric or categorical) with an
    intercept, over the complete cases of the federation: one secure-sum round.

    With ``privacy=fedtally.DP(...)`` the cross-products are noisy sufficient statistics
    (clipped to the bounds of every variable); the fit is post-processing of them.
    ``noise_std`` is the standard deviation of each coefficient due to the noise, from a
    parametric bootstrap of the released noise on the client (200 draws of Gaussian noise
    with each slot's reported std, refitting in floating point), and ``bse`` then combines
    the sampling and noise parts, sqrt(bse_sampling^2 + noise_std^2), so that intervals
    and tests include the noise."""
    spec = privacy_spec(privacy)
    terms, variables = linear_terms(fed, y, x, data_model)
    stat = fed.statistic("linear_regression", variables=variables, datasets=datasets,
                         filters=filters, data_model=data_model, kind="crossprod",
                         parameters={"terms": terms}, privacy=privacy)
    noisy = spec["mode"] == "dp"
    n = round(stat.real(("n", None))) if noisy else stat.count(("n", None))
    if n <= 0:
        raise DegenerateInput(f"no complete rows to fit ({who(stat)})")
    cross = triangle(stat, ("xx", None), len(terms))
    keep = present_terms(terms[:-1], cross) + [len(terms) - 1]
    cross = sub_matrix(cross, keep)
    labels = names([terms[k] for k in keep[:-1]])
    floors = [stat.about_centre(("xx", None, k, k)) for k in keep]
    try:
        fit = ols_fit(cross, n, labels, floors=floors)
    except DegenerateInput as exc:
        if noisy:  # e.g. a noisy residual sum of squares below zero
            raise DegenerateInput("the noisy sufficient statistics cannot be fitted at this "
                                  "privacy level: ask with a larger epsilon, tighter bounds "
                                  "or fewer predictors") from exc
        raise
    result = _linear_result(fit, labels, y, stat.privacy, stat.federation)
    if not noisy:
        return result
    noise = _coefficient_noise(stat, keep, labels)
    bse = np.sqrt(result.bse ** 2 + noise ** 2)
    tvalues = result.params / bse
    pvalues = series(2 * stats.t.sf(np.abs(tvalues.to_numpy()), result.df_resid), labels)
    return replace(result, bse=bse, tvalues=tvalues, pvalues=pvalues, noise_std=noise)


def _coefficient_noise(stat: Statistic, keep: list[int], labels: list[str],
                       draws: int = 200) -> pd.Series:
    """Std of the coefficients due to the released noise: refit on the released
    cross-products perturbed by fresh Gaussian noise of each slot's reported std (client-side
    post-processing; no privacy noise is drawn here)."""
    p = len(keep) - 1
    released = np.array([[stat.real(("xx", None, min(a, b), max(a, b))) for b in keep]
                         for a in keep])
    stds = np.array([[stat.noise_std(("xx", None, min(a, b), max(a, b))) for b in keep]
                     for a in keep])
    generator = np.random.default_rng(0)
    betas = []
    for _ in range(draws):
        upper = np.triu(generator.normal(0.0, 1.0, released.shape) * stds)
        matrix = released + upper + np.triu(upper, 1).T
        try:
            betas.append(np.linalg.solve(matrix[:p, :p], matrix[:p, p]))
        except np.linalg.LinAlgError:
            continue
    if len(betas) < draws // 2:
        raise DegenerateInput("the noisy cross-products are too unstable for this privacy "
                              "level: ask with a larger epsilon or fewer predictors")
    return series(np.std(np.array(betas), axis=0, ddof=1), labels)


def _linear_result(fit: OLSFit, labels: list[str], y: str, privacy: dict[str, Any],
                   federation: dict[str, int]) -> LinearRegressionResult:
    n, p = fit.n, len(labels)
    df_resid, df_model = n - p, p - 1
    scale = fit.ssr / df_resid
    params = series([float(b) for b in fit.beta], labels)
    bse = series(np.sqrt(diag_float(fit.inverse, scale)), labels)
    tvalues = params / bse
    pvalues = series(2 * stats.t.sf(np.abs(tvalues.to_numpy()), df_resid), labels)
    ess = fit.centered_tss - fit.ssr
    rsquared = 1 - fit.ssr / fit.centered_tss
    fvalue = float((ess / df_model) / scale)
    llf = -n / 2 * (math.log(2 * math.pi) + math.log(float(fit.ssr / n)) + 1)
    return LinearRegressionResult(
        dependent_var=y, params=params, bse=bse, tvalues=tvalues, pvalues=pvalues, nobs=n,
        df_model=float(df_model), df_resid=float(df_resid), rsquared=float(rsquared),
        rsquared_adj=float(1 - (1 - rsquared) * (n - 1) / df_resid), fvalue=fvalue,
        f_pvalue=float(stats.f.sf(fvalue, df_model, df_resid)), ssr=float(fit.ssr),
        ess=float(ess), centered_tss=float(fit.centered_tss), mse_resid=float(scale),
        rse=math.sqrt(float(scale)), llf=llf, aic=-2 * llf + 2 * p,
        bic=-2 * llf + math.log(n) * p,
        covariance=covariance_frame(fit.inverse, scale, labels), privacy=privacy,
        federation=federation)


@handles("linear_regression", method="linear_regression")
def _linear_regression(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    view = exareme2.plan_view(fed, req)
    y, x, scope, present = exareme2.regression_inputs(fed, req, view, "linear_regression", {})
    result = linear_regression(fed, y, x, **scope)
    coding = exareme2.predictor_coding(list(result.params.index), x, view, present)
    beta, se = exareme2.recoded(result.params, result.cov_params(), coding)
    df = result.df_resid
    t = beta / se
    quantile = float(stats.t.ppf(1 - exareme2.REGRESSION_ALPHA / 2, df))
    return {"dependent_var": y, "n_obs": result.nobs, "df_resid": float(df),
            "df_model": float(result.df_model), "rse": result.rse,
            "r_squared": result.rsquared, "r_squared_adjusted": result.rsquared_adj,
            "f_stat": result.fvalue, "f_pvalue": result.f_pvalue, "indep_vars": coding.names,
            "coefficients": exareme2.numbers(beta), "std_err": exareme2.numbers(se),
            "t_stats": exareme2.numbers(t),
            "pvalues": exareme2.numbers(2 * stats.t.sf(np.abs(t), df)),
            "lower_ci": exareme2.numbers(beta - quantile * se),
            "upper_ci": exareme2.numbers(beta + quantile * se)}
