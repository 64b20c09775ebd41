"""The logistic fit by Newton-Raphson over secure sums, shared by logistic regression and
its cross-validation.

Logistic regression is fitted by Newton-Raphson from ``beta = 0``, one ``logistic`` round
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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import scipy.linalg

from fedtally.analyses import Analyses
from fedtally.methods.common import exact_inverse, predictor_terms, triangle
from fedtally.methods.regression import Matrix, check_inputs, check_rank, sub_matrix
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.design import Term
from stats.suggest import did_you_mean

#: smallest generalised eigenvalue of the information matrix (relative to X'X/4) below
#: which the fit is separated
SEPARATION_TOL = 1e-10

#: a log-likelihood this close to 0 means every fitted probability is at its outcome
PERFECT_PREDICTION_LL = 1e-6

MAX_HALVINGS = 30


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
