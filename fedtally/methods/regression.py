"""Linear and logistic regression over secure sums.

**Linear regression** (ordinary least squares) takes one round: the secure sum of the
cross-products of the design ``[Intercept, predictors..., y]`` (the ``crossprod`` kind).
Split as ``[[X'X, X'y], [y'X, y'y]]`` it is all OLS needs. The totals are exact (the sum of
the nodes' float64 sums), and everything up to the residual sum of squares is computed
from them in rational arithmetic: ``beta = (X'X)^-1 X'y`` and ``SSR = y'y - beta' X'y``, so
no cancellation happens outside the nodes' own float64 sums. The statistics are the usual
ones (Greene, *Econometric Analysis*, ch. 4-5; statsmodels' ``OLSResults``): ``bse`` from
``SSR / df_resid * diag((X'X)^-1)``, t tests on ``df_resid = n - p`` degrees of freedom, the
overall F test of every slope against the intercept-only model, and the Gaussian
log-likelihood ``-n/2 (log(2 pi) + log(SSR/n) + 1)``.

**Logistic regression** is fitted by Newton-Raphson from ``beta = 0``, one ``logistic`` round
per iteration: each node returns its log-likelihood ``sum y eta - log(1 + e^eta)``, gradient
``X'(y - p)`` and information matrix ``X' W X`` (``W = p(1 - p)``) at the proposed
coefficients, and the step ``(X'WX)^-1 X'(y - p)`` is solved exactly. Iteration stops when
both the log-likelihood change and the step are below ``tol`` (relative to the size of the
log-likelihood and of the coefficients); ``bse`` is the square root of the diagonal of the
inverse information at the last evaluation, z tests are Wald tests, and ``llnull`` is the
intercept-only maximum in closed form, ``n1 log(n1/n) + n0 log(n0/n)``. A step that lowers
the log-likelihood is halved (a safeguard plain Newton lacks; it is rarely needed).

**Separation.** When a combination of predictors separates the outcome (completely or
quasi-completely) the maximum likelihood estimate does not exist: coefficients diverge and
the information matrix collapses in the separating direction. This is detected without
looking at rows: the smallest generalised eigenvalue of the information matrix against the
one at ``beta = 0`` (``X'X / 4``) falls below ``1e-10`` (all fitted probabilities in that
direction within about ``1e-10`` of 0 or 1), or the log-likelihood reaches 0 (every fitted
probability at its outcome, statsmodels' "perfect prediction"). Either raises
:class:`DegenerateInput`.

**Levels.** Categorical predictors are coded against the data model's first level. A level
absent from the selected rows gives an all-zero indicator, seen in the exact totals; it is
left out, and if the reference level itself is absent the first present level becomes the
reference, as patsy does on the pooled rows. A column that is constant or a linear
combination of the others (to float64 precision: ``1 - R^2 < 1e-10`` against the earlier
columns) raises :class:`DegenerateInput`, naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import stats

from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.common import (
    check_privacy,
    exact_inverse,
    names,
    predictor_terms,
    series,
    triangle,
)
from fedtally.methods.registry import catalog_method
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.design import Term
from stats.suggest import did_you_mean, unknown

__all__ = [
    "LinearRegressionResult",
    "LogisticRegressionResult",
    "linear_regression",
    "logistic_regression",
]

#: a column whose residual after regression on the earlier columns keeps less than this
#: share of its sum of squares is constant or collinear to float64 precision (a constant
#: column's float64 sums over 3 x 10^6 rows leave ~1e-13; a real column closer to constant
#: than 1e-10 cannot be resolved from raw float64 sums anyway)
RANK_TOL = 1e-10
#: smallest generalised eigenvalue of the information matrix (relative to X'X/4) below
#: which the fit is separated
SEPARATION_TOL = 1e-10
#: a log-likelihood this close to 0 means every fitted probability is at its outcome
PERFECT_PREDICTION_LL = 1e-6
MAX_HALVINGS = 30

Matrix = list[list[Fraction]]


# --- shared pieces ---------------------------------------------------------------------------


def who(stat: Statistic) -> str:
    """Who contributed to a round, for error messages."""
    f = stat.federation
    return f"{f['nodes_contributing']} of {f['nodes_answered']} nodes contributed"


def check_inputs(view: PlanModel, y: str, x: Sequence[str] | str) -> list[str]:
    """The predictor list, after checking it names known, distinct variables other than y."""
    predictors = [x] if isinstance(x, str) else list(x)
    if not view.has_variable(y):
        raise QueryError(unknown("variable", y, view.variable_names()))
    if not predictors:
        raise QueryError("give at least one predictor in x")
    if len(set(predictors)) != len(predictors):
        raise QueryError("a predictor is listed twice in x")
    if y in predictors:
        raise QueryError(f"{y!r} is the outcome; it cannot also be a predictor")
    for variable in predictors:
        if not view.has_variable(variable):
            raise QueryError(unknown("variable", variable, view.variable_names()))
    return predictors


def sub_matrix(matrix: Sequence[Sequence[Fraction]], keep: Sequence[int]) -> Matrix:
    return [[matrix[i][j] for j in keep] for i in keep]


def present_terms(terms: Sequence[Term], gram: Sequence[Sequence[Fraction]]) -> list[int]:
    """Indices of the terms to keep: indicators of levels absent from the rows (zero on the
    diagonal of the Gram matrix) are dropped, and where a variable's reference level is
    absent its first present level becomes the reference (patsy's coding of the pooled
    rows). ``gram[0]`` is the intercept row, so ``gram[0][k]`` counts the rows of level k."""
    n = gram[0][0]
    keep = [k for k in range(len(terms)) if "level" not in terms[k]]
    variables = dict.fromkeys(t["var"] for t in terms if "level" in t)
    for variable in variables:
        own = [k for k, t in enumerate(terms) if t.get("var") == variable and "level" in t]
        present = [k for k in own if gram[k][k] != 0]
        if present and sum(gram[0][k] for k in present) == n:
            present = present[1:]  # the reference level has no rows
        if not present:
            raise DegenerateInput(f"{variable!r} takes a single level in the selected rows: "
                                  "it is constant")
        keep.extend(present)
    return sorted(keep)


def check_rank(gram: Sequence[Sequence[Fraction]], labels: Sequence[str],
               what: str = "", floors: Sequence[Fraction] | None = None) -> None:
    """Raise DegenerateInput if a column is constant or collinear with the earlier ones.

    Symmetric elimination in term order, in exact arithmetic: the k-th pivot over the k-th
    column's sum of squares is ``1 - R^2`` of column k on the columns before it, which a
    constant column (after the intercept) or a linear combination brings to the rounding
    level of the nodes' float64 sums. ``floors`` are the sums of squares the nodes
    rounded against (about the centres they used, :meth:`Statistic.about_centre`; the
    diagonal where nothing was centred), so the test does not depend on the data's
    location."""
    p = len(gram)
    work = [list(row) for row in gram]
    for k in range(p):
        diagonal = gram[k][k]
        if diagonal == 0:
            raise DegenerateInput(f"{labels[k]} is zero on every row{what}")
        pivot = work[k][k]
        floor = diagonal if floors is None else floors[k]
        if pivot <= 0 or pivot / floor < RANK_TOL:
            earlier = "the intercept" if k == 1 else "the earlier columns"
            raise DegenerateInput(f"{labels[k]} is constant or a linear combination of "
                                  f"{earlier}{what}: the design is singular")
        for i in range(k + 1, p):
            if work[i][k] != 0:
                factor = work[i][k] / pivot
                for j in range(k + 1, p):
                    work[i][j] -= factor * work[k][j]


def diag_float(matrix: Matrix, scale: Fraction = Fraction(1)) -> np.ndarray:
    return np.array([float(matrix[i][i] * scale) for i in range(len(matrix))])


def covariance_frame(inverse: Matrix, scale: Fraction, labels: Sequence[str]) -> pd.DataFrame:
    values = np.array([[float(v * scale) for v in row] for row in inverse])
    return pd.DataFrame(values, index=list(labels), columns=list(labels))


def interval(params: pd.Series, bse: pd.Series, quantile: float) -> pd.DataFrame:
    """statsmodels' ``conf_int()`` shape: columns 0 (lower) and 1 (upper)."""
    return pd.DataFrame({0: params - quantile * bse, 1: params + quantile * bse})


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise QueryError("alpha must be between 0 and 1")


# --- linear regression -----------------------------------------------------------------------


@dataclass(frozen=True)
class OLSFit:
    """Exact OLS from a cross-product matrix: what both the plain fit and CV folds need."""

    n: int
    beta: list[Fraction]
    inverse: Matrix  # (X'X)^-1
    ssr: Fraction
    centered_tss: Fraction


def ols_fit(cross: Sequence[Sequence[Fraction]], n: int, labels: Sequence[str],
            what: str = "", floors: Sequence[Fraction] | None = None) -> OLSFit:
    """OLS from the exact cross-products of ``[Intercept, predictors..., y]`` (y last);
    ``floors`` as for :func:`check_rank`, one per column."""
    p = len(cross) - 1
    if n == 0:
        raise DegenerateInput(f"no complete rows{what}: every row misses a variable or is "
                              "filtered out")
    if n <= p:
        raise DegenerateInput(f"{n} rows for {p} coefficients{what}: no residual degrees "
                              "of freedom")
    xx = sub_matrix(cross, range(p))
    xy = [cross[i][p] for i in range(p)]
    yy = cross[p][p]
    check_rank(xx, labels, what, None if floors is None else floors[:p])
    inverse = exact_inverse(xx)
    beta = [sum((a * b for a, b in zip(row, xy, strict=True)), Fraction(0)) for row in inverse]
    ssr = yy - sum((b * c for b, c in zip(beta, xy, strict=True)), Fraction(0))
    centered_tss = yy - xy[0] * xy[0] / n  # xy[0] is the sum of y (the intercept column)
    if centered_tss <= 0 or centered_tss / (yy if floors is None else floors[p]) < RANK_TOL:
        raise DegenerateInput(f"the outcome is constant{what}")
    if ssr <= 0 or ssr / centered_tss < RANK_TOL:
        raise DegenerateInput(f"the predictors fit the outcome exactly (R^2 = 1){what}")
    return OLSFit(n, beta, inverse, ssr, centered_tss)


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


def linear_terms(fed: Analyses, y: str, x: Sequence[str] | str, data_model: str | None
                 ) -> tuple[list[Term], list[str]]:
    """The design ``[Intercept, predictors..., y]`` (y last) for the crossprod kind, and the
    variables it reads."""
    view = PlanModel(fed.model(data_model))
    predictors = check_inputs(view, y, x)
    if not view.is_numeric(y):
        raise QueryError(f"{y!r} is categorical; linear regression needs a numeric outcome")
    return predictor_terms(predictors, view) + [{"var": y}], [y, *predictors]


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


# --- logistic regression ---------------------------------------------------------------------


def outcome_spec(view: PlanModel, y: str, positive_class: Any) -> tuple[dict[str, Any], str]:
    """The ``outcome`` parameter of the logistic kinds, and the positive class's name."""
    if view.is_numeric(y):
        if positive_class not in (None, 1, "1", 1.0):
            raise QueryError(f"{y!r} is numeric: it must hold 0/1 and the positive class is 1")
        return {"var": y}, "1"
    levels = view.levels(y)
    if positive_class is None:
        raise QueryError(f"name the positive_class of {y!r} (one of {list(levels)})")
    if str(positive_class) not in levels:
        raise QueryError(f"{positive_class!r} is not a level of {y!r} ({list(levels)})"
                         + did_you_mean(positive_class, levels))
    return {"var": y, "positive": str(positive_class)}, str(positive_class)


@dataclass(frozen=True)
class Evaluation:
    """One model's logistic totals at one coefficient vector."""

    n: int
    ysum: int
    loglik: Fraction
    grad: list[Fraction]
    hess: Matrix

    @staticmethod
    def read(stat: Statistic, fold: int | None, keep: Sequence[int]) -> Evaluation:
        p = len(stat.spec.parameters["terms"])
        grad = [stat.exact(("grad", fold, i)) for i in range(p)]
        hess = triangle(stat, ("hess", fold), p)
        return Evaluation(stat.count(("n", fold)), stat.count(("ysum", fold)),
                          stat.exact(("loglik", fold)), [grad[k] for k in keep],
                          sub_matrix(hess, keep))


class Newton:
    """Newton-Raphson for one logistic model, driven by the evaluations it is fed.

    ``beta`` is the point to evaluate next; :meth:`observe` takes the totals there. Several
    instances run side by side in cross-validation (one per fold, one round for all)."""

    def __init__(self, p: int, labels: Sequence[str], tol: float, what: str = "") -> None:
        self.p, self.labels, self.tol, self.what = p, list(labels), tol, what
        self.beta = np.zeros(p)
        self.rounds = 0
        self.converged = False
        self.first: Evaluation | None = None
        self.base: np.ndarray | None = None  # X'X/4, the information at beta = 0
        self.last: Evaluation | None = None  # the accepted evaluation
        self.last_beta = np.zeros(p)
        self.step = np.zeros(p)
        self.halvings = 0
        self.params = np.zeros(p)
        self._inverse: Matrix | None = None  # inverse information, computed on demand

    def observe(self, ev: Evaluation) -> None:
        if self.converged:
            return
        self.rounds += 1
        if self.first is None:
            self._check_start(ev)
            self.first = ev
            self.base = np.array([[float(v) for v in row] for row in ev.hess])
        elif self.last is not None and ev.loglik < self.last.loglik - self._ll_noise():
            self._halve()
            return
        self._accept(ev)

    def _ll_noise(self) -> Fraction:
        assert self.last is not None
        return Fraction(self.tol) * max(Fraction(1), abs(self.last.loglik))

    def _check_start(self, ev: Evaluation) -> None:
        if ev.n == 0:
            raise DegenerateInput(f"no complete rows to fit{self.what}")
        if ev.n <= self.p:
            raise DegenerateInput(f"{ev.n} rows for {self.p} coefficients{self.what}: no "
                                  "residual degrees of freedom")
        if ev.ysum in (0, ev.n):
            kind = "positive" if ev.ysum == ev.n else "negative"
            raise DegenerateInput(f"every outcome is {kind}{self.what}: a single class")
        check_rank(ev.hess, self.labels, self.what)

    def _halve(self) -> None:
        self.halvings += 1
        if self.halvings > MAX_HALVINGS:
            raise DegenerateInput(f"the Newton iteration cannot increase the likelihood"
                                  f"{self.what}: the fit is degenerate")
        self.step = self.step / 2
        self.beta = self.last_beta + self.step

    def _accept(self, ev: Evaluation) -> None:
        if -ev.loglik <= PERFECT_PREDICTION_LL:
            raise DegenerateInput(f"perfect separation{self.what}: the predictors classify "
                                  "every row exactly, so the coefficients are infinite")
        if self.last is not None:
            self._check_separation(ev)
        # the step in float64 (it only moves the iterate); the exact inverse is taken once,
        # for the covariance at the final estimate (see ``inverse``)
        hess = np.array([[float(v) for v in row] for row in ev.hess])
        try:
            step = scipy.linalg.solve(hess, np.array([float(g) for g in ev.grad]),
                                      assume_a="pos")
        except (np.linalg.LinAlgError, ValueError) as exc:
            raise DegenerateInput(f"the information matrix is singular{self.what}: "
                                  "separation or collinearity") from exc
        previous = self.last
        self.last, self.last_beta, self.step, self.halvings = ev, self.beta.copy(), step, 0
        self._inverse = None
        self.params = self.beta + step
        if previous is not None and self._small(ev, previous, step):
            self.converged = True
        self.beta = self.params

    @property
    def inverse(self) -> Matrix:
        """Exact inverse information at the last accepted evaluation (the covariance)."""
        if self._inverse is None:
            assert self.last is not None
            try:
                self._inverse = exact_inverse(self.last.hess, "the information matrix")
            except DegenerateInput as exc:
                raise DegenerateInput(f"the information matrix is singular{self.what}: "
                                      "separation or collinearity") from exc
        return self._inverse

    def _small(self, ev: Evaluation, previous: Evaluation, step: np.ndarray) -> bool:
        ll_change = abs(float(ev.loglik - previous.loglik))
        size = max(1.0, float(np.max(np.abs(self.last_beta))))
        return (ll_change <= self.tol * max(1.0, abs(float(ev.loglik)))
                and float(np.max(np.abs(step))) <= self.tol * size)

    def _check_separation(self, ev: Evaluation) -> None:
        assert self.base is not None
        hess = np.array([[float(v) for v in row] for row in ev.hess])
        smallest = float(scipy.linalg.eigh(hess, self.base, eigvals_only=True)[0])
        if smallest < SEPARATION_TOL:
            raise DegenerateInput(f"separation{self.what}: a combination of predictors "
                                  "(quasi-)perfectly predicts the outcome, so the maximum "
                                  "likelihood estimate does not exist")


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


def check_newton(max_iter: int, tol: float) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise QueryError("max_iter must be a positive integer")
    if not 0 < tol < 1:
        raise QueryError("tol must be between 0 and 1")


@dataclass(frozen=True)
class LogisticDesign:
    terms: list[Term]
    outcome: dict[str, Any]  # the kinds' outcome parameter
    positive: str
    variables: list[str]


def logistic_design(fed: Analyses, y: str, x: Sequence[str] | str, positive_class: Any,
                    data_model: str | None) -> LogisticDesign:
    view = PlanModel(fed.model(data_model))
    predictors = check_inputs(view, y, x)
    outcome, positive = outcome_spec(view, y, positive_class)
    return LogisticDesign(predictor_terms(predictors, view), outcome, positive,
                          [y, *predictors])


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
