"""Gaussian naive Bayes fitted from secure sums (see :mod:`fedtally.methods.naive_bayes`).

One ``moments`` round by class gives each class's count, and each feature's sum and sum
of squares, so its mean and (ddof=0) variance exactly.
Equal to ``sklearn.naive_bayes.GaussianNB()`` (same ``var_smoothing`` rule:
``epsilon = var_smoothing * max over features of the feature's variance``, added to every
class variance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import check_privacy, complete_cases
from fedtally.methods.naive_bayes import Classifier, check_names, observed_classes
from fedtally.methods.registry import catalog_method, handles
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DataModel, PlanModel


@dataclass(frozen=True)
class GaussianNaiveBayes(Classifier):
    """A fitted Gaussian naive Bayes model (scikit-learn's ``GaussianNB`` attribute names).

    ``classes_``; ``class_count_`` (rows per class) and ``class_prior_`` (Series by
    class); ``theta_`` and ``var_`` (DataFrames class x feature: per-class mean and
    variance, ``var_`` including ``epsilon_``); ``epsilon_`` (the added variance,
    ``var_smoothing`` times the largest feature variance); ``features``; ``nobs``."""

    classes_: tuple[str, ...]
    features: tuple[str, ...]
    class_count_: pd.Series
    class_prior_: pd.Series
    theta_: pd.DataFrame
    var_: pd.DataFrame
    epsilon_: float
    var_smoothing: float
    nobs: int
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    federation: dict[str, int] = field(default_factory=dict)

    def _joint_log_likelihood(self, data: pd.DataFrame) -> np.ndarray:
        x = data[list(self.features)].astype(float).to_numpy()
        theta, var = self.theta_.to_numpy(), self.var_.to_numpy()
        jll = np.empty((len(x), len(self.classes_)))
        for i, prior in enumerate(self.class_prior_.to_numpy()):
            # GaussianNB._joint_log_likelihood, term by term; NaN features drop out
            terms = -0.5 * np.log(2.0 * np.pi * var[i]) - 0.5 * (x - theta[i]) ** 2 / var[i]
            jll[:, i] = np.log(prior) + np.where(np.isnan(x), 0.0, terms).sum(axis=1)
        return jll


def _total(stat: Statistic, head: str, group: str | None, *rest: str) -> Fraction:
    return sum((stat.exact((head, d, group, *rest)) for d in stat.spec.datasets), Fraction(0))


@catalog_method(kinds=("moments", "gaussian_nb_predict"))
def naive_bayes_gaussian(fed: Analyses, y: str, x: Sequence[str], *,
                         var_smoothing: float = 1e-9, datasets: Sequence[str] | None = None,
                         filters: FilterLike = None, data_model: str | None = None,
                         privacy: Any = None) -> GaussianNaiveBayes:
    """Gaussian naive Bayes of the categorical class ``y`` on numeric features ``x``, fitted
    on the complete rows (one secure round); equal to scikit-learn's ``GaussianNB``.
    No complete row, or a zero variance with nothing to smooth it (every feature constant,
    or ``var_smoothing=0``), raise :class:`DegenerateInput`. A single observed class is
    fitted, as scikit-learn and Exareme2 do (it is then always predicted)."""
    mode = check_privacy(privacy, "naive_bayes_gaussian")
    if not (isinstance(var_smoothing, int | float) and 0 <= var_smoothing < math.inf):
        raise QueryError("var_smoothing must be a finite number >= 0")
    model: DataModel = fed.model(data_model)
    view = PlanModel(model)
    features = check_names(y, x, view, numeric=True, what="naive_bayes_gaussian")
    stat = fed.statistic("naive_bayes_gaussian", variables=features, by=y, datasets=datasets,
                         filters=complete_cases([y, *features], filters, view),
                         data_model=data_model, kind="moments")
    # complete cases only (the filter), so the first feature's count is the class's rows
    counts = {c: sum(stat.count(("count", d, c, features[0])) for d in stat.spec.datasets)
              for c in view.levels(y)}
    classes = observed_classes(counts, stat.federation, "naive_bayes_gaussian")
    n = {c: counts[c] for c in classes}
    sums = {c: [_total(stat, "sum", c, v) for v in features] for c in classes}
    squares = {c: [_total(stat, "sumsq", c, v) for v in features] for c in classes}
    nobs = sum(n.values())
    # sklearn: epsilon = var_smoothing * max_j var(X[:, j]) over all training rows (ddof=0)
    overall = []
    for j in range(len(features)):
        s = sum((sums[c][j] for c in classes), Fraction(0))
        ss = sum((squares[c][j] for c in classes), Fraction(0))
        overall.append((ss - s * s / nobs) / nobs)
    epsilon = var_smoothing * float(max(overall))
    theta = [[float(sums[c][j] / n[c]) for j in range(len(features))] for c in classes]
    var = [[float((squares[c][j] - sums[c][j] ** 2 / n[c]) / n[c]) + epsilon
            for j in range(len(features))] for c in classes]
    if min(min(row) for row in var) <= 0:
        raise DegenerateInput("naive_bayes_gaussian: a class has zero variance in a feature "
                              "and no feature varies (or var_smoothing is 0), so the "
                              "likelihood is undefined")
    return GaussianNaiveBayes(
        classes_=tuple(classes), features=features,
        class_count_=pd.Series([float(n[c]) for c in classes], index=classes,
                               name="class_count"),
        class_prior_=pd.Series([n[c] / nobs for c in classes], index=classes,
                               name="class_prior"),
        theta_=pd.DataFrame(theta, index=classes, columns=list(features)),
        var_=pd.DataFrame(var, index=classes, columns=list(features)),
        epsilon_=epsilon, var_smoothing=float(var_smoothing), nobs=nobs, privacy=mode,
        federation=stat.federation)


@handles("test_nb_gaussian_fit", method="naive_bayes_gaussian")
def _nb_gaussian_fit(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    y = exareme2.single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_gaussian(fed, y, req.x, **exareme2.query_scope(req))
    classes = exareme2.classes_sorted(fitted.classes_)
    return {"theta": [exareme2.numbers(r) for r in fitted.theta_.loc[classes].to_numpy()],
            "var": [exareme2.numbers(r) for r in fitted.var_.loc[classes].to_numpy()],
            "class_count": [int(fitted.class_count_[c]) for c in classes]}


@handles("test_nb_gaussian_predict", method="naive_bayes_gaussian")
def _nb_gaussian_predict(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Rows of the training data assigned to each class: the nodes evaluate the fitted
    model on their complete rows and return counts per class."""
    y = exareme2.single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_gaussian(fed, y, req.x, **exareme2.query_scope(req))
    classes = exareme2.classes_sorted(fitted.classes_)  # ties go to the first, as scikit-learn
    features = list(fitted.features)
    stat = fed.statistic(
        "naive_bayes_gaussian", kind="gaussian_nb_predict", variables=features,
        parameters={"classes": classes,
                    "theta": fitted.theta_.loc[classes, features].to_numpy().tolist(),
                    "var": fitted.var_.loc[classes, features].to_numpy().tolist(),
                    "log_prior": [math.log(fitted.class_prior_[c]) for c in classes]},
        datasets=req.datasets, data_model=req.data_model,
        filters=complete_cases([y, *features], req.filters, exareme2.plan_view(fed, req)))
    counts = {c: stat.count(("predicted", i)) for i, c in enumerate(classes)}
    return {"predictions": {c: n for c, n in counts.items() if n}}
