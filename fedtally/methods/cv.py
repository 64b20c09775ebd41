"""K-fold cross-validation of linear and logistic regression, with the folds kept at the nodes.

Each node assigns each of its rows to a fold from the row's position in its data and a
public seed (``stats.kinds.frame.fold_numbers``: splitmix64 of position + seed, modulo k), so no
row, index or fold membership leaves a node. The folds therefore differ from Exareme2's
(sklearn ``KFold`` without shuffling over each node's rows), and the per-fold numbers differ
from Exareme2's accordingly; the metrics are the same definitions.

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

**Logistic** (Newton rounds, then evaluation rounds). The ``logistic`` kind with ``folds``
and ``betas`` returns, for each fold, the totals over the rows *outside* it at that fold's
coefficients, so the k training fits run side by side, one round per Newton iteration
(a fold that has converged keeps its coefficients). ``logistic_eval`` then gives each
fold's confusion matrix at probability 0.5, from which accuracy, precision, recall and F1
follow (0 where a ratio is 0/0, as Exareme2).

*ROC and AUC.* Exareme2 sums the confusion counts at 200 thresholds ``linspace(1, 0, 200)``
and integrates the ROC curve by the trapezoid rule. The evaluation query asks
``logistic_eval`` for the true and false positives at every inner threshold ``t`` too, as
the fold's intercept shifted by ``logit(t)`` (``p >= t`` exactly when ``eta - logit(t) >=
0``); the end points (``t = 1``: nothing positive; ``t = 0``: everything positive) need no
count. The curve costs no round of its own; ``roc_thresholds=0`` skips it and the ``auc``
column. The curve is Exareme2's, with ``p >= t`` instead of ``p > t`` (they differ only on ties).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from fedtally.analyses import Analyses, FilterLike
from fedtally.display import with_cv_summary
from fedtally.methods.common import check_privacy, names, triangle
from fedtally.methods.registry import catalog_method
from fedtally.methods.regression import (
    Evaluation,
    Newton,
    check_newton,
    linear_terms,
    logistic_design,
    ols_fit,
    present_terms,
    sub_matrix,
    who,
)
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.design import Term
from stats.kinds import MAX_FOLDS

__all__ = [
    "LinearRegressionCVResult",
    "LogisticRegressionCVResult",
    "linear_regression_cv",
    "logistic_regression_cv",
]

SUMMARY_ROWS = ("average", "stdev")


def _check_splits(n_splits: int, fold_seed: int) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) \
            or not 2 <= n_splits <= MAX_FOLDS:
        raise QueryError(f"n_splits must be an integer from 2 to {MAX_FOLDS}")
    if isinstance(fold_seed, bool) or not isinstance(fold_seed, int):
        raise QueryError("fold_seed must be an integer")


def _fold_names(k: int) -> list[str]:
    return [f"fold_{i}" for i in range(1, k + 1)]


def _summary(folds: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof 1) over the folds, as Exareme2."""
    table = folds[list(columns)]
    return pd.DataFrame([table.mean(), table.std(ddof=1)], index=list(SUMMARY_ROWS))


def _in_fold(f: int) -> str:
    return f" in the training rows of fold {f + 1}"


# --- linear ------------------------------------------------------------------------------------


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
    _check_splits(n_splits, fold_seed)
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
        fit = ols_fit(sub_matrix(train, columns), n - counts[f], labels, _in_fold(f), floors)
        betas.append([float(b) for b in fit.beta])
    kept_terms: list[Term] = [terms[k] for k in keep]
    evaluation = fed.statistic("linear_regression_cv", kind="regression_eval", **common,
                               parameters={"terms": kept_terms, "y": y, "folds": n_splits,
                                           "fold_seed": fold_seed, "betas": betas})
    records = [_linear_metrics(evaluation, f, n) for f in folds]
    table = pd.DataFrame.from_records(records, index=_fold_names(n_splits))
    params = pd.DataFrame(np.array(betas).T, index=labels, columns=_fold_names(n_splits))
    return with_cv_summary(LinearRegressionCVResult(
        dependent_var=y, indep_vars=labels, folds=table,
        summary=_summary(table, ["rmse", "mse", "r_squared", "mean_abs_error"]),
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


# --- logistic ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogisticRegressionCVResult:
    """Per-fold test metrics of logistic regression (see the module docstring)."""

    dependent_var: str
    positive_class: str
    indep_vars: list[str]
    #: one row per fold: n_obs (training rows), n_test, accuracy, precision, recall, fscore,
    #: and auc when the ROC curve was computed
    folds: pd.DataFrame
    #: rows "average" and "stdev" (ddof 1) of the metric columns over the folds
    summary: pd.DataFrame
    #: each fold's coefficients (columns fold_1 ...), fitted on the other folds
    params: pd.DataFrame
    #: the summed confusion matrix over the folds at probability 0.5: tp, fp, tn, fn
    confusion_matrix: dict[str, int]
    #: per fold, the ROC curve: columns threshold, fpr, tpr (empty without a curve)
    roc_curves: dict[str, pd.DataFrame]
    #: whether every fold's Newton iteration converged; Newton rounds used
    converged: bool
    n_iterations: int
    privacy: dict[str, Any] = field(default_factory=dict)
    federation: dict[str, int] = field(default_factory=dict)

    def to_exareme2(self) -> dict[str, Any]:
        """Exareme2's ``CVLogisticRegressionResult``."""
        metrics = ["accuracy", "precision", "recall", "fscore"]
        row_names = [*self.folds.index, *SUMMARY_ROWS]
        summary: dict[str, Any] = {"row_names": row_names,
                                   "n_obs": [int(v) for v in self.folds["n_obs"]] + [None, None]}
        for metric in metrics:
            summary[metric] = [float(v) for v in self.folds[metric]] + \
                [float(self.summary.loc[r, metric]) for r in SUMMARY_ROWS]
        curves = [{"name": f"fold_{i}", "tpr": curve["tpr"].tolist(),
                   "fpr": curve["fpr"].tolist(), "auc": float(self.folds.loc[name, "auc"])}
                  for i, (name, curve) in enumerate(self.roc_curves.items())]
        return {"dependent_var": self.dependent_var, "indep_vars": list(self.indep_vars),
                "summary": summary, "confusion_matrix": dict(self.confusion_matrix),
                "roc_curves": curves}


def _ratio(a: int, b: int) -> float:
    """a / b, and 0 where b is 0 (Exareme2's convention for these metrics)."""
    return a / b if b else 0.0


def classification_metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    fscore = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": _ratio(tp + tn, tp + fp + tn + fn), "precision": precision,
            "recall": recall, "fscore": fscore}


@catalog_method(kinds=("logistic", "logistic_eval"))
def logistic_regression_cv(fed: Analyses, y: str, x: Sequence[str] | str,
                           positive_class: Any = None, n_splits: int = 5, *,
                           fold_seed: int = 0, max_iter: int = 50, tol: float = 1e-10,
                           roc_thresholds: int = 200, datasets: Sequence[str] | None = None,
                           filters: FilterLike = None, data_model: str | None = None,
                           privacy: Any = None) -> LogisticRegressionCVResult:
    """K-fold cross-validation of logistic regression of ``y == positive_class`` on ``x``.
    ``roc_thresholds`` points on ``linspace(1, 0, roc_thresholds)`` make each fold's ROC
    curve and AUC (Exareme2's 200 by default; 0 skips them)."""
    privacy_info = check_privacy(privacy, "logistic_regression_cv")
    _check_splits(n_splits, fold_seed)
    check_newton(max_iter, tol)
    if isinstance(roc_thresholds, bool) or not isinstance(roc_thresholds, int) \
            or roc_thresholds < 0 or roc_thresholds == 1:
        raise QueryError("roc_thresholds must be 0 (no ROC curve) or at least 2")
    design = logistic_design(fed, y, x, positive_class, data_model)
    folds = list(range(n_splits))
    common = {"variables": design.variables, "datasets": datasets, "filters": filters,
              "data_model": data_model}
    base = {"outcome": design.outcome, "folds": n_splits, "fold_seed": fold_seed}

    def round_(kind: str, terms: list[Term], betas: list[np.ndarray], **extra: Any
               ) -> Statistic:
        return fed.statistic("logistic_regression_cv", kind=kind, **common,
                             parameters={**base, "terms": terms, **extra,
                                         "betas": [[float(b) for b in beta] for beta in betas]})

    terms = design.terms
    stat = round_("logistic", terms, [np.zeros(len(terms))] * n_splits)
    whole = _whole_information(stat, len(terms), n_splits)
    if whole[0][0] == 0:
        raise DegenerateInput(f"no complete rows to fit ({who(stat)})")
    keep = present_terms(terms, whole)
    terms = [terms[k] for k in keep]
    labels = names(terms)
    fits = [Newton(len(keep), labels, tol, _in_fold(f)) for f in folds]
    for f in folds:
        fits[f].observe(Evaluation.read(stat, f, keep))
    identity = list(range(len(keep)))
    rounds = 1
    while not all(fit.converged for fit in fits) and rounds < max_iter:
        stat = round_("logistic", terms, [fit.beta for fit in fits])
        rounds += 1
        for f in folds:
            fits[f].observe(Evaluation.read(stat, f, identity))
    betas = [fit.params for fit in fits]
    thresholds = np.linspace(1.0, 0.0, num=roc_thresholds) if roc_thresholds else None
    shifts = [] if thresholds is None else [math.log(t / (1 - t)) for t in thresholds[1:-1]]
    evaluation = round_("logistic_eval", terms, betas, **({"shifts": shifts} if shifts else {}))
    records, confusion = [], {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for f in folds:
        counts = {key: evaluation.count((key, f)) for key in confusion}
        n_test = sum(counts.values())
        if n_test == 0:
            raise DegenerateInput(f"fold {f + 1} has no rows to evaluate")
        for key, value in counts.items():
            confusion[key] += value
        train_n = fits[f].last.n if fits[f].last is not None else 0
        records.append({"n_obs": train_n, "n_test": n_test, **classification_metrics(**counts)})
    table = pd.DataFrame.from_records(records, index=_fold_names(n_splits))
    curves: dict[str, pd.DataFrame] = {}
    if roc_thresholds:
        positives = [evaluation.count(("tp", f)) + evaluation.count(("fn", f)) for f in folds]
        negatives = [int(table.iloc[f]["n_test"]) - positives[f] for f in folds]
        curves = _roc_curves(evaluation, thresholds, positives, negatives)
        table["auc"] = [float(np.trapezoid(c["tpr"], c["fpr"])) for c in curves.values()]
    metrics = [c for c in table.columns if c not in ("n_obs", "n_test")]
    params = pd.DataFrame(np.array(betas).T, index=labels, columns=_fold_names(n_splits))
    return with_cv_summary(LogisticRegressionCVResult(
        dependent_var=y, positive_class=design.positive, indep_vars=labels, folds=table,
        summary=_summary(table, metrics), params=params, confusion_matrix=confusion,
        roc_curves=curves, converged=all(fit.converged for fit in fits), n_iterations=rounds,
        privacy=privacy_info, federation=evaluation.federation))


def _whole_information(stat: Statistic, p: int, k: int) -> list[list[Fraction]]:
    """X'X/4 over all rows, from the training totals at beta = 0: each row lies outside
    exactly k - 1 folds, so the sum over folds counts it k - 1 times."""
    parts = [triangle(stat, ("hess", f), p) for f in range(k)]
    return [[sum((m[i][j] for m in parts), Fraction(0)) / (k - 1) for j in range(p)]
            for i in range(p)]


def _roc_curves(evaluation: Statistic, thresholds: np.ndarray, positives: list[int],
                negatives: list[int]) -> dict[str, pd.DataFrame]:
    """Exareme2's ROC curve per fold: tpr and fpr at ``thresholds`` (linspace(1, 0, points)),
    the inner ones counted by the evaluation's shifted cells."""
    points, k = len(thresholds), len(positives)
    tp = np.zeros((points, k), dtype=np.int64)
    fp = np.zeros((points, k), dtype=np.int64)
    tp[-1], fp[-1] = positives, negatives  # t = 0: every row is called positive
    for i in range(1, points - 1):
        tp[i] = [evaluation.count(("tp", f, i - 1)) for f in range(k)]
        fp[i] = [evaluation.count(("fp", f, i - 1)) for f in range(k)]
    curves = {}
    for f, name in enumerate(_fold_names(k)):
        tpr = [_ratio(int(t), positives[f]) for t in tp[:, f]]
        # Exareme2's fpr is 1 - specificity, with specificity 0 where there are no negatives
        fpr = [1 - _ratio(negatives[f] - int(c), negatives[f]) for c in fp[:, f]]
        curves[name] = pd.DataFrame({"threshold": thresholds, "fpr": fpr, "tpr": tpr})
    return curves
