"""Logistic regression over secure sums: see :mod:`fedtally.methods.newton` for the fit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import check_privacy, names, series, triangle
from fedtally.methods.newton import Evaluation, Newton, check_newton, logistic_design
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.regression import (
    check_alpha,
    covariance_frame,
    diag_float,
    interval,
    present_terms,
    who,
)
from fedtally.results import Statistic
from protocol.errors import DegenerateInput
from stats.design import Term


@dataclass(frozen=True)
class LogisticRegressionResult:
    """Binary logistic regression by maximum likelihood, named as statsmodels'
    ``LogitResults``."""

    dependent_var: str
    #: the level of y counted as 1
    positive_class: str
    #: coefficients (log-odds), indexed by term name (Intercept first)
    params: pd.Series
    #: standard errors, from the inverse information at the estimate
    bse: pd.Series
    #: z statistics (params / bse), as statsmodels' ``tvalues``
    tvalues: pd.Series
    #: two-sided p-values of the Wald z tests
    pvalues: pd.Series
    nobs: int
    #: number of slopes
    df_model: float
    #: nobs - number of coefficients
    df_resid: float
    #: log-likelihood at the estimate
    llf: float
    #: log-likelihood of the intercept-only model
    llnull: float
    #: likelihood-ratio statistic 2 (llf - llnull) and its chi-square p-value
    llr: float
    llr_pvalue: float
    #: McFadden's pseudo R^2, 1 - llf / llnull
    prsquared: float
    aic: float
    bic: float
    converged: bool
    #: logistic rounds used (Newton iterations, including any halved steps)
    n_iterations: int
    covariance: pd.DataFrame = field(repr=False)
    privacy: dict[str, Any] = field(default_factory=dict)
    federation: dict[str, int] = field(default_factory=dict)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald confidence intervals (normal quantiles): columns 0 and 1."""
        check_alpha(alpha)
        return interval(self.params, self.bse, float(stats.norm.ppf(1 - alpha / 2)))

    def cov_params(self) -> pd.DataFrame:
        """Covariance matrix of the coefficients, the inverse information."""
        return self.covariance.copy()


@catalog_method(kinds=("logistic",))
def logistic_regression(fed: Analyses, y: str, x: Sequence[str] | str,
                        positive_class: Any = None, *, max_iter: int = 50, tol: float = 1e-10,
                        datasets: Sequence[str] | None = None, filters: FilterLike = None,
                        data_model: str | None = None, privacy: Any = None
                        ) -> LogisticRegressionResult:
    """Logistic regression of ``y == positive_class`` (a categorical y; a numeric y must hold
    0/1) on ``x`` with an intercept, by Newton-Raphson: one secure-sum round per iteration.
    Separation raises :class:`DegenerateInput`; running out of ``max_iter`` returns
    ``converged=False``."""
    privacy_info = check_privacy(privacy, "logistic_regression")
    check_newton(max_iter, tol)
    design = logistic_design(fed, y, x, positive_class, data_model)
    terms = design.terms

    def evaluate(current: list[Term], beta: np.ndarray) -> Statistic:
        return fed.statistic("logistic_regression", variables=design.variables,
                             datasets=datasets, filters=filters, data_model=data_model,
                             kind="logistic", parameters={"terms": current,
                                                          "outcome": design.outcome,
                                                          "beta": [float(b) for b in beta]})

    stat = evaluate(terms, np.zeros(len(terms)))
    if stat.count(("n", None)) == 0:
        raise DegenerateInput(f"no complete rows to fit ({who(stat)})")
    # at beta = 0 the information is X'X/4: its diagonal shows absent levels
    keep = present_terms(terms, triangle(stat, ("hess", None), len(terms)))
    terms_kept = [terms[k] for k in keep]
    newton = Newton(len(keep), names(terms_kept), tol)
    newton.observe(Evaluation.read(stat, None, keep))
    identity = list(range(len(keep)))
    while not newton.converged and newton.rounds < max_iter:
        stat = evaluate(terms_kept, newton.beta)
        newton.observe(Evaluation.read(stat, None, identity))
    return _logistic_result(newton, y, design.positive, privacy_info, stat.federation)


def _logistic_result(newton: Newton, y: str, positive: str, privacy: dict[str, Any],
                     federation: dict[str, int]) -> LogisticRegressionResult:
    ev = newton.last
    assert ev is not None
    labels, p, n = newton.labels, newton.p, ev.n
    params = series(newton.params, labels)
    bse = series(np.sqrt(diag_float(newton.inverse)), labels)
    tvalues = params / bse
    pvalues = series(2 * stats.norm.sf(np.abs(tvalues.to_numpy())), labels)
    llf = float(ev.loglik)
    n1, n0 = ev.ysum, n - ev.ysum
    llnull = n1 * math.log(n1 / n) + n0 * math.log(n0 / n)
    llr = 2 * (llf - llnull)
    return LogisticRegressionResult(
        dependent_var=y, positive_class=positive, params=params, bse=bse, tvalues=tvalues,
        pvalues=pvalues, nobs=n, df_model=float(p - 1), df_resid=float(n - p), llf=llf,
        llnull=llnull, llr=llr, llr_pvalue=float(stats.chi2.sf(llr, p - 1)),
        prsquared=1 - llf / llnull, aic=-2 * llf + 2 * p, bic=-2 * llf + math.log(n) * p,
        converged=newton.converged, n_iterations=newton.rounds,
        covariance=covariance_frame(newton.inverse, Fraction(1), labels), privacy=privacy,
        federation=federation)


@handles("logistic_regression", method="logistic_regression")
def _logistic_regression(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Exareme2's ``r_squared_cs`` is Cox and Snell's ``1 - exp(2 (ll0 - ll) / n)``."""
    view = exareme2.plan_view(fed, req)
    positive, extra = exareme2.outcome(req, view)
    y, x, scope, present = exareme2.regression_inputs(fed, req, view, "logistic_regression", extra)
    result = logistic_regression(fed, y, x, positive, **scope)
    coding = exareme2.predictor_coding(list(result.params.index), x, view, present)
    beta, se = exareme2.recoded(result.params, result.cov_params(), coding)
    z = beta / se
    quantile = float(stats.norm.ppf(1 - exareme2.REGRESSION_ALPHA / 2))
    n, ll, ll0 = result.nobs, result.llf, result.llnull
    summary = {"n_obs": n, "coefficients": exareme2.numbers(beta), "stderr": exareme2.numbers(se),
               "lower_ci": exareme2.numbers(beta - quantile * se),
               "upper_ci": exareme2.numbers(beta + quantile * se), "z_scores": exareme2.numbers(z),
               "pvalues": exareme2.numbers(2 * stats.norm.sf(np.abs(z))),
               "df_model": int(result.df_model), "df_resid": int(result.df_resid),
               "r_squared_cs": 1 - math.exp(2 * (ll0 - ll) / n),
               "r_squared_mcf": result.prsquared, "ll0": ll0, "ll": ll, "aic": result.aic,
               "bic": result.bic}
    return {"dependent_var": y, "indep_vars": coding.names, "summary": summary}
