"""Naive Bayes classifiers fitted from secure sums, used for prediction on local rows.

Both are fitted on the complete cases: rows where the class ``y`` and every feature are
present (the query's filter is the researcher's filter AND ``v is not null`` for each of
them), as scikit-learn, which accepts no missing value, sees the rows after ``dropna()``.

* :func:`naive_bayes_gaussian`: one ``moments`` round by class gives each class's count,
  and each feature's sum and sum of squares, so its mean and (ddof=0) variance exactly.
  Equal to ``sklearn.naive_bayes.GaussianNB()`` (same ``var_smoothing`` rule:
  ``epsilon = var_smoothing * max over features of the feature's variance``, added to every
  class variance).
* :func:`naive_bayes_categorical`: one ``counts`` round for the class counts, and one
  two-way table ``[y, feature]`` per feature. Equal to ``sklearn.naive_bayes.CategoricalNB(
  alpha=alpha, min_categories=<number of levels>)`` with each feature encoded by the data
  model's level order: the categories are the data model's levels, never the ones a node
  happens to hold.

Classes are the levels of ``y`` (data-model order) that have at least one complete row;
scikit-learn orders its ``classes_`` alphabetically, so compare by label. Cells and
classes smaller than a node's small-cell threshold are left out by that node
(``federation["cells_below_threshold"]`` counts the node-level cells that read 0, empty ones
included), so on data with small cells the fit is that of the rows that were released.

Prediction runs on the caller's own rows (``predict``, ``predict_proba``,
``predict_log_proba`` on a pandas DataFrame). Unlike scikit-learn, which refuses them, a
missing feature value (or, for the categorical model, a value that is not a level of the
data model) is left out of that row's likelihood: naive Bayes marginalizes a feature by
dropping its factor.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logsumexp

from fedtally.analyses import Analyses, FilterLike, filter_tree
from fedtally.methods.common import check_privacy
from fedtally.methods.registry import catalog_method
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats import filters as filter_trees
from stats.datamodel import DataModel, PlanModel
from stats.suggest import unknown

__all__ = ["CategoricalNaiveBayes", "GaussianNaiveBayes", "complete_cases",
           "naive_bayes_categorical", "naive_bayes_categorical_predictions",
           "naive_bayes_gaussian"]


def complete_cases(variables: Sequence[str], filters: FilterLike, view: PlanModel
                   ) -> filter_trees.Filter:
    """The researcher's filter AND "present" for every variable, as a filter tree: ``v is
    not null`` for a numeric variable, ``v in (its levels)`` for a categorical one (which
    also leaves out codes the data model does not know)."""
    items: list[filter_trees.Filter] = [
        filter_trees.IsNull(v, negated=True) if view.is_numeric(v)
        else filter_trees.Membership(v, view.levels(v)) for v in variables]
    tree = filter_tree(filters)
    if tree is not None:
        items.append(tree)
    return filter_trees.And(tuple(items))


class _Classifier(ABC):
    """Shared prediction: subclasses give the joint log-likelihood of each class."""

    classes_: tuple[str, ...]
    features: tuple[str, ...]

    @abstractmethod
    def _joint_log_likelihood(self, data: pd.DataFrame) -> np.ndarray: ...

    def predict_log_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        """Log posterior probability of each class (columns) for each local row."""
        jll = self._joint_log_likelihood(data)
        return pd.DataFrame(jll - logsumexp(jll, axis=1, keepdims=True), index=data.index,
                            columns=list(self.classes_))

    def predict_proba(self, data: pd.DataFrame) -> pd.DataFrame:
        """Posterior probability of each class (columns) for each local row."""
        return np.exp(self.predict_log_proba(data))

    def predict(self, data: pd.DataFrame) -> pd.Series:
        """The most probable class of each local row."""
        jll = self._joint_log_likelihood(data)
        labels = np.asarray(self.classes_, dtype=object)[np.argmax(jll, axis=1)]
        return pd.Series(labels, index=data.index, name="prediction")


@dataclass(frozen=True)
class GaussianNaiveBayes(_Classifier):
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


@dataclass(frozen=True)
class CategoricalNaiveBayes(_Classifier):
    """A fitted categorical naive Bayes model (scikit-learn's ``CategoricalNB`` names).

    ``classes_``; ``class_count_``, ``class_prior_`` and ``class_log_prior_`` (Series by
    class); per feature (dicts keyed by feature name, DataFrames class x level):
    ``category_count_`` (rows of each class at each level) and ``feature_log_prob_``
    (``log((count + alpha) / (class total + alpha * levels))``); ``alpha``; ``features``;
    ``nobs``."""

    classes_: tuple[str, ...]
    features: tuple[str, ...]
    class_count_: pd.Series
    class_prior_: pd.Series
    class_log_prior_: pd.Series
    category_count_: dict[str, pd.DataFrame]
    feature_log_prob_: dict[str, pd.DataFrame]
    alpha: float
    nobs: int
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    federation: dict[str, int] = field(default_factory=dict)

    def _joint_log_likelihood(self, data: pd.DataFrame) -> np.ndarray:
        jll = np.tile(self.class_log_prior_.to_numpy(), (len(data), 1))
        for feature in self.features:
            table = self.feature_log_prob_[feature]
            codes = pd.Categorical(data[feature].astype("string"),
                                   categories=list(table.columns)).codes
            known = codes >= 0  # missing or unknown values drop out
            jll[known] += table.to_numpy().T[codes[known]]
        return jll


# --- fitting ------------------------------------------------------------------------------


def _check_names(y: str, x: Sequence[str] | str, view: PlanModel, numeric: bool,
                 what: str) -> tuple[str, ...]:
    if isinstance(x, str):
        x = [x]
    features = tuple(x)
    if not view.has_variable(y):
        raise QueryError(unknown("variable", y, view.variable_names()))
    if view.is_numeric(y):
        raise QueryError(f"{what}: the class {y!r} must be categorical")
    if not features or len(set(features)) != len(features) or y in features:
        raise QueryError(f"{what} needs distinct features, other than the class {y!r}")
    kind = "numeric" if numeric else "categorical"
    for v in features:
        if not view.has_variable(v):
            raise QueryError(unknown("variable", v, view.variable_names()))
        if view.is_numeric(v) != numeric:
            raise QueryError(f"{what} needs {kind} features; {v!r} is not {kind}")
    return features


def _observed(counts: dict[str, int], federation: dict[str, int], what: str) -> list[str]:
    classes = [c for c, n in counts.items() if n > 0]
    if not classes:
        raise DegenerateInput(
            f"{what}: no complete rows (the filter matched none, or every node's cohort was "
            f"below its minimum: {federation['nodes_contributing']} of "
            f"{federation['nodes_asked']} nodes contributed)")
    return classes


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
    features = _check_names(y, x, view, numeric=True, what="naive_bayes_gaussian")
    stat = fed.statistic("naive_bayes_gaussian", variables=features, by=y, datasets=datasets,
                         filters=complete_cases([y, *features], filters, view),
                         data_model=data_model, kind="moments")
    # complete cases only (the filter), so the first feature's count is the class's rows
    counts = {c: sum(stat.count(("count", d, c, features[0])) for d in stat.spec.datasets)
              for c in view.levels(y)}
    classes = _observed(counts, stat.federation, "naive_bayes_gaussian")
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


def _table(fed: Analyses, axes: list[str], scope: dict[str, Any]) -> Statistic:
    return fed.statistic("naive_bayes_categorical", kind="counts",
                         parameters={"axes": [{"var": v} for v in axes]}, **scope)


@catalog_method(kinds=("counts",))
def naive_bayes_categorical(fed: Analyses, y: str, x: Sequence[str], alpha: float = 1.0, *,
                            datasets: Sequence[str] | None = None, filters: FilterLike = None,
                            data_model: str | None = None,
                            privacy: Any = None) -> CategoricalNaiveBayes:
    """Categorical naive Bayes of the class ``y`` on categorical features ``x`` with
    Laplace smoothing ``alpha`` (> 0), fitted on the complete rows (one secure round for
    the class counts, one per feature); equal to scikit-learn's ``CategoricalNB`` with the
    data model's levels as categories. No complete row raises :class:`DegenerateInput`; a
    single observed class is fitted (and always predicted), as scikit-learn does."""
    mode = check_privacy(privacy, "naive_bayes_categorical")
    if not (isinstance(alpha, int | float) and 0 < alpha < math.inf):
        raise QueryError("alpha must be a finite number > 0")
    model: DataModel = fed.model(data_model)
    view = PlanModel(model)
    features = _check_names(y, x, view, numeric=False, what="naive_bayes_categorical")
    scope = {"datasets": datasets, "data_model": data_model,
             "filters": complete_cases([y, *features], filters, view)}
    levels = view.levels(y)
    classes_stat = _table(fed, [y], scope)
    counts = {c: classes_stat.count(("cell", i)) for i, c in enumerate(levels)}
    classes = _observed(counts, classes_stat.federation, "naive_bayes_categorical")
    rows = [levels.index(c) for c in classes]
    category_count: dict[str, pd.DataFrame] = {}
    feature_log_prob: dict[str, pd.DataFrame] = {}
    federation = dict(classes_stat.federation)
    for feature in features:
        stat = _table(fed, [y, feature], scope)
        federation["cells_below_threshold"] += stat.federation["cells_below_threshold"]
        categories = view.levels(feature)
        table = np.array([[stat.count(("cell", r, k)) for k in range(len(categories))]
                          for r in rows], dtype=np.float64)
        # CategoricalNB._update_feature_log_prob
        smoothed = table + alpha
        log_prob = np.log(smoothed) - np.log(smoothed.sum(axis=1, keepdims=True))
        category_count[feature] = pd.DataFrame(table.astype(np.int64), index=classes,
                                               columns=list(categories))
        feature_log_prob[feature] = pd.DataFrame(log_prob, index=classes,
                                                 columns=list(categories))
    class_count = np.array([counts[c] for c in classes], dtype=np.float64)
    return CategoricalNaiveBayes(
        classes_=tuple(classes), features=features,
        class_count_=pd.Series(class_count, index=classes, name="class_count"),
        class_prior_=pd.Series(class_count / class_count.sum(), index=classes,
                               name="class_prior"),
        class_log_prior_=pd.Series(np.log(class_count) - np.log(class_count.sum()),
                                   index=classes, name="class_log_prior"),
        category_count_=category_count, feature_log_prob_=feature_log_prob,
        alpha=float(alpha), nobs=int(class_count.sum()), privacy=mode, federation=federation)


def naive_bayes_categorical_predictions(fed: Analyses, fitted: CategoricalNaiveBayes,
                                        y: str, *, datasets: Sequence[str] | None = None,
                                        filters: FilterLike = None,
                                        data_model: str | None = None,
                                        privacy: Any = None) -> pd.Series:
    """How many of the federation's complete rows (class ``y`` and every feature present)
    ``fitted`` assigns to each class: what Exareme2's ``predictions`` reports on the
    training rows. A categorical model's prediction depends only on the cell of the
    features' joint table, so one ``counts`` round over the features (at most 4) gives it
    without any row leaving a node; cells a node suppresses are not counted. Classes that
    no row is assigned to are left out."""
    check_privacy(privacy, "naive_bayes_categorical_predictions")
    features = list(fitted.features)
    if not 1 <= len(features) <= 4:
        raise QueryError("predictions need a joint table of the features: 1 to 4 of them")
    view = PlanModel(fed.model(data_model))
    stat = _table(fed, features, {"datasets": datasets, "data_model": data_model,
                                  "filters": complete_cases([y, *features], filters, view)})
    grids = np.meshgrid(*[np.arange(len(view.levels(f))) for f in features], indexing="ij")
    cells = np.column_stack([g.ravel() for g in grids])
    frame = pd.DataFrame({f: np.asarray(view.levels(f), dtype=object)[cells[:, i]]
                          for i, f in enumerate(features)})
    predicted = fitted.predict(frame).to_numpy()
    totals = pd.Series(0, index=list(fitted.classes_), dtype=np.int64, name="predictions")
    for cell, label in zip(cells, predicted, strict=True):
        totals[label] += stat.count(("cell", *(int(c) for c in cell)))
    return totals[totals > 0]
