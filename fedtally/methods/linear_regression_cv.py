"""K-fold cross-validation of linear regression, with the folds kept at the nodes (see
:mod:`fedtally.methods.folds`).

**Linear** (two rounds). The ``crossprod`` kind with ``folds`` returns the cross-products of
``[Intercept, predictors..., y]`` of each fold; a fold's training set is the total minus
the fold, fitted exactly (:func:`fedtally.methods.regression.ols_fit`). One
``regression_eval`` round then sums, on each fold's own rows, ``y``, ``y^2``, the residual,
its square and its absolute value under that fold's coefficients. Per fold (as Exareme2's
``LinearRegression.compute_summary`` on the test rows):

* ``n_obs``: training rows; ``n_test``: the fold's rows;
* ``rmse = sqrt(SSE / n_test)`` -- Exareme2 reports this value under the name
  ``mean_sq_error``; ``mse = SSE / n_test`` is given too;
* ``r_squared = 1 - SSE / TSS`` with TSS around the fold's own mean of y;
* ``mean_abs_error = sum |residual| / n_test``.
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
from fedtally.display import with_cv_summary
from fedtally.methods.common import check_privacy, names, triangle
from fedtally.methods.folds import check_splits, fold_names, fold_summary, in_fold
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.regression import linear_terms, ols_fit, present_terms, sub_matrix, who
from fedtally.results import Statistic
from protocol.errors import DegenerateInput
from stats.design import Term


@dataclass(frozen=True)
class LinearRegressionCVResult:
    """Per-fold test metrics of linear regression (see the module docstring)."""

    dependent_var: str
    #: design columns (Intercept first)
    indep_vars: list[str]
    #: one row per fold (fold_1 ...): n_obs (training rows), n_test, rmse, mse, r_squared,
    #: mean_abs_error
    folds: pd.DataFrame
    #: rows "average" and "stdev" (ddof 1) of the metric columns over the folds
    summary: pd.DataFrame
    #: each fold's coefficients (columns fold_1 ...), fitted on the other folds
    params: pd.DataFrame
    privacy: dict[str, Any] = field(default_factory=dict)
    federation: dict[str, int] = field(default_factory=dict)

    def to_exareme2(self) -> dict[str, Any]:
        """Exareme2's ``CVLinearRegressionResult``: ``[mean, std]`` pairs; Exareme2's
        ``mean_sq_error`` holds the root mean squared error."""
        def pair(column: str) -> list[float]:
            return [float(self.summary.loc["average", column]),
                    float(self.summary.loc["stdev", column])]

        return {"dependent_var": self.dependent_var, "indep_vars": list(self.indep_vars),
                "n_obs": [int(v) for v in self.folds["n_obs"]],
                "mean_sq_error": pair("rmse"), "r_squared": pair("r_squared"),
                "mean_abs_error": pair("mean_abs_error")}


@catalog_method(kinds=("crossprod", "regression_eval"))
def linear_regression_cv(fed: Analyses, y: str, x: Sequence[str] | str, n_splits: int = 5, *,
                         fold_seed: int = 0, datasets: Sequence[str] | None = None,
                         filters: FilterLike = None, data_model: str | None = None,
                         privacy: Any = None) -> LinearRegressionCVResult:
    """K-fold cross-validation of ordinary least squares of ``y`` on ``x``: two rounds."""
    privacy_info = check_privacy(privacy, "linear_regression_cv")
    check_splits(n_splits, fold_seed)
    terms, variables = linear_terms(fed, y, x, data_model)
    folds = list(range(n_splits))
    common = {"variables": variables, "datasets": datasets, "filters": filters,
              "data_model": data_model}
    stat = fed.statistic("linear_regression_cv", kind="crossprod", **common,
                         parameters={"terms": terms, "folds": n_splits, "fold_seed": fold_seed})
    per_fold = [triangle(stat, ("xx", f), len(terms)) for f in folds]
    counts = [stat.count(("n", f)) for f in folds]
    n = sum(counts)
    if n == 0:
        raise DegenerateInput(f"no complete rows to fit ({who(stat)})")
    total = [[sum((m[i][j] for m in per_fold), Fraction(0)) for j in range(len(terms))]
             for i in range(len(terms))]
    keep = present_terms(terms[:-1], total)
    labels = names([terms[k] for k in keep])
    columns = [*keep, len(terms) - 1]
    # sums of squares about the nodes' centres: what "constant" is judged against
    about = [[stat.about_centre(("xx", f, k, k)) for k in columns] for f in folds]
    betas = []
    for f in folds:
        if counts[f] == 0:
            raise DegenerateInput(f"fold {f + 1} has no rows ({n} rows in all)")
        train = [[total[i][j] - per_fold[f][i][j] for j in range(len(terms))]
                 for i in range(len(terms))]
        floors = [sum((about[g][c] for g in folds if g != f), Fraction(0))
                  for c in range(len(columns))]
        fit = ols_fit(sub_matrix(train, columns), n - counts[f], labels, in_fold(f), floors)
        betas.append([float(b) for b in fit.beta])
    kept_terms: list[Term] = [terms[k] for k in keep]
    evaluation = fed.statistic("linear_regression_cv", kind="regression_eval", **common,
                               parameters={"terms": kept_terms, "y": y, "folds": n_splits,
                                           "fold_seed": fold_seed, "betas": betas})
    records = [_linear_metrics(evaluation, f, n) for f in folds]
    table = pd.DataFrame.from_records(records, index=fold_names(n_splits))
    params = pd.DataFrame(np.array(betas).T, index=labels, columns=fold_names(n_splits))
    return with_cv_summary(LinearRegressionCVResult(
        dependent_var=y, indep_vars=labels, folds=table,
        summary=fold_summary(table, ["rmse", "mse", "r_squared", "mean_abs_error"]),
        params=params, privacy=privacy_info, federation=evaluation.federation))


def _linear_metrics(stat: Statistic, f: int, n: int) -> dict[str, float | int]:
    n_test = stat.count(("n", f))
    if n_test == 0:
        raise DegenerateInput(f"fold {f + 1} has no rows to evaluate")
    sy, syy = stat.exact(("sy", f)), stat.exact(("syy", f))
    see, sae = stat.exact(("see", f)), stat.exact(("sae", f))
    tss = syy - sy * sy / n_test
    if tss <= 0:
        raise DegenerateInput(f"the outcome is constant in fold {f + 1}: R^2 is undefined")
    mse = see / n_test
    return {"n_obs": n - n_test, "n_test": n_test, "rmse": math.sqrt(float(mse)),
            "mse": float(mse), "r_squared": float(1 - see / tss),
            "mean_abs_error": float(sae / n_test)}


@handles("linear_regression_cv", method="linear_regression_cv")
def _linear_regression_cv(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    y, x, scope, _ = exareme2.regression_inputs(fed, req, exareme2.plan_view(fed, req),
                                                "linear_regression_cv", {})
    return linear_regression_cv(fed, y, x, exareme2.integer(req, "n_splits", 5),
                                **scope).to_exareme2()
