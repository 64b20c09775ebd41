"""K-fold cross-validation of logistic regression, with the folds kept at the nodes (see
:mod:`fedtally.methods.folds`).

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

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.display import with_cv_summary
from fedtally.methods.common import check_privacy, names, triangle
from fedtally.methods.folds import SUMMARY_ROWS, check_splits, fold_names, fold_summary, in_fold
from fedtally.methods.newton import Evaluation, Newton, check_newton, logistic_design
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.regression import present_terms, who
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.design import Term


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
    check_splits(n_splits, fold_seed)
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
    fits = [Newton(len(keep), labels, tol, in_fold(f)) for f in folds]
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
    table = pd.DataFrame.from_records(records, index=fold_names(n_splits))
    curves: dict[str, pd.DataFrame] = {}
    if roc_thresholds:
        positives = [evaluation.count(("tp", f)) + evaluation.count(("fn", f)) for f in folds]
        negatives = [int(table.iloc[f]["n_test"]) - positives[f] for f in folds]
        curves = _roc_curves(evaluation, thresholds, positives, negatives)
        table["auc"] = [float(np.trapezoid(c["tpr"], c["fpr"])) for c in curves.values()]
    metrics = [c for c in table.columns if c not in ("n_obs", "n_test")]
    params = pd.DataFrame(np.array(betas).T, index=labels, columns=fold_names(n_splits))
    return with_cv_summary(LogisticRegressionCVResult(
        dependent_var=y, positive_class=design.positive, indep_vars=labels, folds=table,
        summary=fold_summary(table, metrics), params=params, confusion_matrix=confusion,
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
    for f, name in enumerate(fold_names(k)):
        tpr = [_ratio(int(t), positives[f]) for t in tp[:, f]]
        # Exareme2's fpr is 1 - specificity, with specificity 0 where there are no negatives
        fpr = [1 - _ratio(negatives[f] - int(c), negatives[f]) for c in fp[:, f]]
        curves[name] = pd.DataFrame({"threshold": thresholds, "fpr": fpr, "tpr": tpr})
    return curves


@handles("logistic_regression_cv", method="logistic_regression_cv")
def _logistic_regression_cv(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    view = exareme2.plan_view(fed, req)
    positive, extra = exareme2.outcome(req, view)
    y, x, scope, _ = exareme2.regression_inputs(fed, req, view, "logistic_regression_cv", extra)
    return logistic_regression_cv(fed, y, x, positive, exareme2.integer(req, "n_splits", 5),
                                  **scope).to_exareme2()
