"""Categorical naive Bayes fitted from secure sums of counts (see
:mod:`fedtally.methods.naive_bayes`).

One ``counts`` round for the class counts, and one two-way table ``[y, feature]`` per
feature. Equal to ``sklearn.naive_bayes.CategoricalNB(alpha=alpha, min_categories=<number
of levels>)`` with each feature encoded by the data model's level order: the categories
are the data model's levels, never the ones a node happens to hold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import check_privacy, complete_cases
from fedtally.methods.naive_bayes import Classifier, check_names, observed_classes
from fedtally.methods.registry import catalog_method, handles
from fedtally.results import Statistic
from protocol.errors import QueryError
from stats.datamodel import DataModel, PlanModel


@dataclass(frozen=True)
class CategoricalNaiveBayes(Classifier):
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
    features = check_names(y, x, view, numeric=False, what="naive_bayes_categorical")
    scope = {"datasets": datasets, "data_model": data_model,
             "filters": complete_cases([y, *features], filters, view)}
    levels = view.levels(y)
    classes_stat = _table(fed, [y], scope)
    counts = {c: classes_stat.count(("cell", i)) for i, c in enumerate(levels)}
    classes = observed_classes(counts, classes_stat.federation, "naive_bayes_categorical")
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


@handles("test_nb_categorical_fit", method="naive_bayes_categorical")
def _nb_categorical_fit(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Per feature, per class (sorted), the count at each of the feature's levels sorted
    by name (all its levels, see :func:`exareme2.enumerations`)."""
    y = exareme2.single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_categorical(fed, y, req.x, **exareme2.query_scope(req))
    classes = exareme2.classes_sorted(fitted.classes_)
    counts = []
    for feature in fitted.features:
        levels = sorted(exareme2.enumerations(fed, req, feature))
        counts.append(fitted.category_count_[feature].loc[classes, levels].to_numpy().tolist())
    return {"category_count": counts,
            "class_count": [int(fitted.class_count_[c]) for c in classes]}


@handles("test_nb_categorical_predict", method="naive_bayes_categorical")
def _nb_categorical_predict(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    y = exareme2.single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_categorical(fed, y, req.x, **exareme2.query_scope(req))
    counts = naive_bayes_categorical_predictions(fed, fitted, y, **exareme2.query_scope(req))
    return {"predictions": {str(c): int(n) for c, n in counts.items()}}
