"""The statistic kinds nodes compute, one module each (see :mod:`stats.kinds.base` for what
a kind declares and the disclosure rules), and which methods use which kinds: nodes refuse
a query whose kind does not belong to its method, so a policy that allows a method allows
exactly its statistics.

Every kind's parameters are plain JSON inside the signed query. Layouts depend only on the
specification and the data model.
"""

from __future__ import annotations

from stats.kinds import (
    count,
    counts,
    crossprod,
    gaussian_nb_predict,
    kmeans,
    logistic,
    logistic_eval,
    moments,
    regression_eval,
    survival,
)
from stats.kinds.base import Kind
from stats.kinds.params import MAX_CELLS, MAX_CENTERS, MAX_FOLDS, MAX_GRID

__all__ = ["METHOD_KINDS", "KINDS", "MAX_CELLS", "MAX_CENTERS", "MAX_FOLDS", "MAX_GRID",
           "Kind"]

KINDS: dict[str, Kind] = {module.KIND.name: module.KIND for module in (
    count, moments, crossprod, regression_eval, logistic, logistic_eval, counts, kmeans,
    survival, gaussian_nb_predict)}

#: method -> statistic kinds it may ask for (the first is its default)
METHOD_KINDS: dict[str, tuple[str, ...]] = {
    "count": ("count",),
    "descriptive_stats": ("moments", "counts"),
    "histogram": ("counts",),
    "contingency_table": ("counts",),
    "chi_square": ("counts",),
    "ttest_onesample": ("moments",),
    "ttest_paired": ("crossprod",),
    "ttest_independent": ("moments",),
    "anova_oneway": ("moments",),
    "anova_twoway": ("crossprod",),
    "pearson_correlation": ("crossprod",),
    "linear_regression": ("crossprod",),
    "linear_regression_cv": ("crossprod", "regression_eval"),
    "logistic_regression": ("logistic",),
    "logistic_regression_cv": ("logistic", "logistic_eval"),
    "pca": ("crossprod",),
    "kmeans": ("kmeans", "moments"),
    "naive_bayes_gaussian": ("moments", "gaussian_nb_predict"),
    "naive_bayes_categorical": ("counts",),
    "kaplan_meier": ("survival",),
    "logrank_test": ("survival",),
}
