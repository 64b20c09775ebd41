"""Run the body of an Exareme2 algorithm request and answer in Exareme2's shape, so that
MIP users can move over with their requests unchanged.

    fed.run_exareme2({"inputdata": {...}, "parameters": {...}}, algorithm="linear_regression")

The algorithm name is the one in Exareme2's URL (``/algorithms/<name>``); it may also be
given inside the request as ``"algorithm"``. Each handler translates the request into one
of our analyses (:mod:`fedtally.methods`) and the result into the fields of Exareme2's
result model for that algorithm (``exareme2/algorithms/exareme2/<name>.py``, tag 0.28.0).
Rows are the complete cases of the request's variables, as Exareme2's data loader keeps.

Where Exareme2's answer and ours differ on purpose, the handler says so:

* Fields that would release single patients' values (exact min, max and quartiles,
  per-group minima and maxima, SVM support vectors) are never produced: see
  :data:`NOT_RELEASED`. ``svm_scikit`` is not offered at all (its result is patient rows).
* ``multiple_histograms`` of a numeric variable: Exareme2 lays the bins between the data's
  exact minimum and maximum; here they span the data model's declared ``min``/``max``
  (a :class:`QueryError` where none is declared). Counts below Exareme2's minimum row count
  (10) are written as null, as Exareme2 does.
* ``kmeans`` starts from public centers (see :mod:`fedtally.methods.clustering`), not
  from uniform draws between exact minima and maxima.
* ``anova_oneway``: ``p_tuckey`` is the exact studentized-range p-value (Exareme2 reads
  statsmodels' interpolated table, clipped to [0.001, 0.9]).
* ``ttest_independent``: ``p`` is Welch's p-value on Welch's degrees of freedom (Exareme2
  takes it on ``n - 2``, which its own R reference does not); ``df`` is ``n - 2`` as
  Exareme2 reports it. T-test intervals are at ``1 - alpha`` as Exareme2 computes them;
  an infinite bound is written ``"Infinity"`` / ``"-Infinity"`` (JSON has no infinity).
* ``linear_regression_cv`` / ``logistic_regression_cv``: the folds are drawn at the nodes
  (:mod:`fedtally.methods.cv`), so per-fold numbers differ from Exareme2's.
* ``naive_bayes_*_cv`` are not offered: cross-validated naive Bayes is not in our catalog.

Categorical predictors are coded as Exareme2 (and patsy, which made its references) code
them: the first *sorted* level present is the reference, and the indicator columns come
before the numeric ones. Our regressions take the data model's first level as reference;
the coefficients and their covariance are re-expressed exactly in Exareme2's coding (a
linear change of parameters, same fitted model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally.analyses import Analyses, filter_tree
from fedtally.methods.anova import anova_oneway, anova_twoway
from fedtally.methods.bayes import (
    complete_cases,
    naive_bayes_categorical,
    naive_bayes_categorical_predictions,
    naive_bayes_gaussian,
)
from fedtally.methods.classical import (
    TTestResult,
    resolved_datasets,
    ttest_independent,
    ttest_onesample,
    ttest_paired,
)
from fedtally.methods.clustering import kmeans
from fedtally.methods.common import INTERCEPT
from fedtally.methods.cv import linear_regression_cv, logistic_regression_cv
from fedtally.methods.histogram import histogram, histogram_edges
from fedtally.methods.multivariate import (
    PCAResult,
    _correlation,
    _flip_signs,
    _Scatter,
    pca,
    pearson_correlation,
)
from fedtally.methods.regression import (
    linear_regression,
    logistic_regression,
    outcome_spec,
)
from fedtally.results import moments
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.suggest import unknown

#: Exareme2 output fields we deliberately never release, with the reason
NOT_RELEASED = {
    "min": "an exact minimum is one patient's value",
    "max": "an exact maximum is one patient's value",
    "q1": "exact quartiles are single patients' values",
    "q2": "exact quartiles are single patients' values",
    "q3": "exact quartiles are single patients' values",
    "min_max_per_group": "exact per-group minima and maxima are single patients' values",
    "support_vectors": "support vectors are patient rows",
}
ALL_DATASETS = "all datasets"
#: Exareme2 reports no statistics (None) for a variable without data points in a dataset;
#: small cohorts are the nodes' business (their min_row_count and small-cell rules)
MIN_DATAPOINTS = 1
#: Exareme2's minimum row count: its histograms write null for a smaller count
MIN_ROW_COUNT = 10
#: Exareme2's regressions report 95 % intervals whatever the request (ALPHA = 0.05)
REGRESSION_ALPHA = 0.05
RESIDUALS = "Residuals"
TRANSFORMATIONS = ("log", "exp", "center", "standardize")
@dataclass(frozen=True)
class Request:
    data_model: str
    datasets: list[str]
    x: list[str]
    y: list[str]
    filters: Any
    parameters: dict[str, Any]


def parse_request(body: Any) -> Request:
    if not isinstance(body, dict) or not isinstance(body.get("inputdata"), dict):
        raise QueryError('an Exareme2 request is {"inputdata": {...}, "parameters": {...}}')
    data = body["inputdata"]
    for key in ("data_model", "datasets"):
        if key not in data:
            raise QueryError(f"inputdata lacks {key!r}")
    filters = data.get("filters") or None
    if isinstance(filters, dict) and not filters.get("rules"):
        filters = None
    return Request(data_model=data["data_model"], datasets=list(data["datasets"]),
                   x=list(data.get("x") or []), y=list(data.get("y") or []), filters=filters,
                   parameters=dict(body.get("parameters") or {}))


Handler = Callable[[Analyses, Request], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}
#: Exareme2 algorithm -> the catalog method that answers it (the only method its handler
#: asks the nodes for; tests/fedtally/test_exareme2.py records every query and checks)
ANSWERED_BY: dict[str, str] = {}


def handles(*names: str, method: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of Exareme2's ``names``, answered
    with the catalog's ``method``."""
    def add(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
            ANSWERED_BY[name] = method
        return fn

    return add


def run_exareme2(fed: Analyses, body: dict[str, Any], algorithm: str | None = None) -> dict[str, Any]:
    name = algorithm or body.get("algorithm")
    if not isinstance(name, str) or name not in HANDLERS:
        raise QueryError(f"unknown Exareme2 algorithm {name!r}; available: "
                         f"{', '.join(sorted(HANDLERS))}")
    return HANDLERS[name](fed, parse_request(body))


def _not_null(variables: Sequence[str], filters: Any) -> dict[str, Any]:
    """A filter tree: every variable present, and the request's own filter."""
    from stats import filters as trees

    items = [trees.IsNull(v, negated=True).to_json() for v in variables]
    tree = filter_tree(filters)
    if tree is not None:
        items.append(tree.to_json())
    return {"op": "and", "items": items}


# --- descriptive statistics ---------------------------------------------------------------


def _describe(fed: Analyses, req: Request, variables: list[str], filters: Any
              ) -> list[dict[str, Any]]:
    """Exareme2's descriptive statistics: per dataset, a variable without data points is
    None; "all datasets" pools the datasets that were not None."""
    view = PlanModel(fed.model(req.data_model))
    numeric = [v for v in variables if view.has_variable(v) and view.is_numeric(v)]
    categorical = [v for v in variables if v not in numeric]
    rows_stat = fed.statistic("descriptive_stats", variables=numeric or [variables[0]],
                              datasets=req.datasets, filters=filters,
                              data_model=req.data_model)
    first = (numeric or [variables[0]])[0]

    def rows_of(d: str) -> int:  # every row holds the first variable or misses it
        return rows_stat.count(("count", d, None, first)) + \
            rows_stat.count(("missing", d, None, first))

    # per (variable, dataset): data points, total rows, and the pieces to pool
    cells: dict[tuple[str, str], tuple[int, int, Any]] = {}
    for variable in numeric:
        for d in req.datasets:
            n = rows_stat.count(("count", d, None, variable))
            pieces = (rows_stat.exact(("sum", d, None, variable)),
                      rows_stat.exact(("sumsq", d, None, variable)))
            cells[(variable, d)] = (n, rows_of(d), pieces)
    dataset_levels = view.levels("dataset")
    for variable in categorical:
        levels = view.levels(variable)
        table = fed.statistic("descriptive_stats", kind="counts", datasets=req.datasets,
                              filters=filters, data_model=req.data_model,
                              parameters={"axes": [{"var": "dataset"}, {"var": variable}]})
        for d in req.datasets:
            counts = {level: table.count(("cell", dataset_levels.index(d), j))
                      for j, level in enumerate(levels)}
            cells[(variable, d)] = (sum(counts.values()), rows_of(d), counts)

    def record(variable: str, chosen: list[tuple[int, int, Any]]) -> dict[str, Any] | None:
        n = sum(c[0] for c in chosen)
        if n < MIN_DATAPOINTS:
            return None
        total = sum(c[1] for c in chosen)
        out: dict[str, Any] = {"num_dtps": n, "num_na": total - n, "num_total": total}
        if variable in numeric:
            s = sum((c[2][0] for c in chosen), Fraction(0))
            ss = sum((c[2][1] for c in chosen), Fraction(0))
            mean, std = moments(n, s, ss)
            # Exareme2 writes null where a statistic is undefined (one data point)
            out["mean"], out["std"] = _json_number(mean), _json_number(std)
        else:
            pooled: dict[str, int] = {}
            for c in chosen:
                for level, count in c[2].items():
                    pooled[level] = pooled.get(level, 0) + count
            out["counts"] = {k: v for k, v in pooled.items() if v}
        return out

    records: list[dict[str, Any]] = []
    kept: dict[str, list[tuple[int, int, Any]]] = {v: [] for v in variables}
    for d in req.datasets:
        for variable in variables:
            data = record(variable, [cells[(variable, d)]])
            if data is not None:
                kept[variable].append(cells[(variable, d)])
            records.append({"variable": variable, "dataset": d, "data": data})
    for variable in variables:
        records.append({"variable": variable, "dataset": ALL_DATASETS,
                        "data": record(variable, kept[variable])})
    return records


@handles("descriptive_stats", method="descriptive_stats")
def _descriptive_stats(fed: Analyses, req: Request) -> dict[str, Any]:
    # Exareme2 leaves the dataset column itself out of the statistics
    variables = [v for v in req.y + req.x if v != "dataset"]
    if not variables:
        raise QueryError("descriptive_stats needs variables in y or x")
    return {"variable_based": _describe(fed, req, variables, req.filters),
            "model_based": _describe(fed, req, variables, _not_null(variables, req.filters))}


# --- shared pieces ---------------------------------------------------------------------------


def _json_number(value: Any) -> float | None:
    """A JSON number: Python float, None for NaN (Exareme2 writes null where undefined)."""
    value = float(value)
    return None if math.isnan(value) else value


def _bound(value: float) -> float | str:
    """An interval bound: Exareme2 writes an infinite one as "Infinity" / "-Infinity"."""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def _numbers(values: Any) -> list[float | None]:
    return [_json_number(v) for v in np.ravel(np.asarray(values, dtype=np.float64))]


def _single(names: list[str], role: str, algorithm: str) -> str:
    if len(names) != 1:
        raise QueryError(f"{algorithm} takes exactly one {role} variable; got {names}")
    return names[0]


def _param(req: Request, name: str, default: Any = None) -> Any:
    value = req.parameters.get(name)
    if value is None:  # absent or null: the default, as Exareme2
        value = default
    if value is None:
        raise QueryError(f"the request's parameters lack {name!r}")
    return value


def _integer(req: Request, name: str, default: int | None = None) -> int:
    value = _param(req, name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise QueryError(f"parameter {name!r} must be an integer")
    return int(value)


def _real(req: Request, name: str, default: float | None = None) -> float:
    value = _param(req, name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(f"parameter {name!r} must be a number")
    return float(value)


def _scope(req: Request) -> dict[str, Any]:
    return {"datasets": req.datasets, "filters": req.filters, "data_model": req.data_model}


def _view(fed: Analyses, req: Request) -> PlanModel:
    return PlanModel(Analyses.model(fed, req.data_model))  # SimulatedFederation shadows .model


def _enumerations(fed: Analyses, req: Request, variable: str) -> list[str]:
    """A categorical variable's levels as Exareme2 lists them: the data model's, except
    for ``dataset``, whose levels are the datasets the federation holds (Exareme2's
    metadata lists the loaded datasets, not every dataset a data model declares)."""
    model = Analyses.model(fed, req.data_model)
    if variable != "dataset":
        return list(PlanModel(model).levels(variable))
    held = set(resolved_datasets(fed, req.data_model, None))
    return [d for d in model.datasets() if d in held]


# --- histograms --------------------------------------------------------------------------------


def _counts(values: Sequence[int]) -> list[int | None]:
    """Exareme2 writes null for a count below its minimum row count."""
    return [int(v) if v >= MIN_ROW_COUNT else None for v in values]


@handles("multiple_histograms", method="histogram")
def _multiple_histograms(fed: Analyses, req: Request) -> dict[str, Any]:
    """Counts of y over the complete cases of y and every x: first over all those rows,
    then one block per level of each (categorical) x; levels as Exareme2 lists them."""
    y = _single(req.y, "y", "multiple_histograms")
    groupings = [v for v in dict.fromkeys(req.x) if v != y]
    view = _view(fed, req)
    for name in [y, *groupings]:
        if not view.has_variable(name):
            raise QueryError(unknown("variable", name, view.variable_names()))
    for name in groupings:
        if view.is_numeric(name):
            raise QueryError(f"multiple_histograms groups by categorical x; {name!r} is numeric")
    bins: Any = _integer(req, "bins", 20)
    labels: list[Any]
    if view.is_numeric(y):
        # the data model's declared range (Exareme2 would take the data's exact min and max)
        bins = histogram_edges(y, bins, None, view)
        labels = list(bins)
    else:
        labels = _enumerations(fed, req, y)
    scope = _scope(req)
    if groupings:
        scope["filters"] = complete_cases([y, *groupings], req.filters, view)

    def block(rows: pd.DataFrame, grouping: str | None, level: str | None) -> dict[str, Any]:
        counts = (rows["count"] if view.is_numeric(y)
                  else rows.set_index("category")["count"].loc[labels])
        return {"var": y, "grouping_var": grouping, "grouping_enum": level, "bins": labels,
                "counts": _counts(counts.tolist())}

    blocks = [block(histogram(fed, y, bins, **scope), None, None)]
    for grouping in groupings:
        table = histogram(fed, y, bins, by=grouping, **scope)
        blocks += [block(table[table[grouping] == level], grouping, level)
                   for level in _enumerations(fed, req, grouping)]
    return {"histogram": blocks}


# --- correlation and principal components -----------------------------------------------------


def _by_column(frame: pd.DataFrame) -> dict[str, Any]:
    """Exareme2's matrix layout: ``variables`` names the rows, then one list per column."""
    return {"variables": list(frame.index),
            **{str(c): _numbers(frame[c].to_numpy()) for c in frame.columns}}


@handles("pearson_correlation", method="pearson_correlation")
def _pearson_correlation(fed: Analyses, req: Request) -> dict[str, Any]:
    """Rows are x (y when x is empty), columns y. Exareme2's ``alpha`` (default 0.95) has
    the meaning of ours: intervals at confidence ``1 - alpha``."""
    result = pearson_correlation(fed, req.y, _real(req, "alpha", 0.95), x=req.x or None,
                                 **_scope(req))
    return {"title": "Pearson Correlation Coefficient", "n_obs": result.nobs,
            "correlations": _by_column(result.r), "p_values": _by_column(result.pvalues),
            "ci_hi": _by_column(result.ci_high), "ci_lo": _by_column(result.ci_low)}


def _pca_output(result: PCAResult) -> dict[str, Any]:
    """Exareme2's PCAResult: components as rows of ``eigenvectors`` (signs are arbitrary
    in Exareme2; ours follow scikit-learn's rule)."""
    return {"title": "Eigenvalues and Eigenvectors", "n_obs": result.nobs,
            "eigenvalues": _numbers(result.eigenvalues.to_numpy()),
            "eigenvectors": [_numbers(row) for row in result.eigenvectors.T.to_numpy()]}


@handles("pca", method="pca")
def _pca(fed: Analyses, req: Request) -> dict[str, Any]:
    return _pca_output(pca(fed, req.y, standardize=True, **_scope(req)))


def _transforms(req: Request) -> dict[str, str]:
    """Variable -> "log" / "exp" from ``data_transformation``. Centering and standardizing
    are accepted and have no effect: Exareme2's PCA standardizes every column anyway."""
    spec = req.parameters.get("data_transformation") or {}
    if not isinstance(spec, dict) or set(spec) - set(TRANSFORMATIONS):
        raise QueryError(f"data_transformation maps {', '.join(TRANSFORMATIONS)} to variables")
    chosen: dict[str, str] = {}
    for kind in ("log", "exp"):
        for variable in spec.get(kind) or []:
            if variable not in req.y:
                raise QueryError(f"{kind} names {variable!r}, which is not among y")
            if variable in chosen:
                raise QueryError(f"{variable!r} is both log- and exp-transformed")
            chosen[variable] = kind
    for kind in ("center", "standardize"):
        for variable in spec.get(kind) or []:
            if variable not in req.y:
                raise QueryError(f"{kind} names {variable!r}, which is not among y")
    return chosen


@handles("pca_with_transformation", method="pca")
def _pca_with_transformation(fed: Analyses, req: Request) -> dict[str, Any]:
    """PCA of y after log / exp transforms, which the nodes apply (design terms). A log of
    a non-positive value is refused by the node holding it."""
    transforms = _transforms(req)
    if not transforms:
        return _pca(fed, req)
    return _pca_output(_transformed_pca(fed, req, transforms))


def _transformed_pca(fed: Analyses, req: Request, transforms: dict[str, str]) -> PCAResult:
    """:func:`fedtally.methods.multivariate.pca` on transformed columns. That function
    takes plain variable names; until it takes design terms, this repeats its last steps
    on the cross-products of ``[Intercept, transformed y...]``."""
    view = _view(fed, req)
    names = tuple(req.y)
    for name in names:
        if not view.has_variable(name) or not view.is_numeric(name):
            raise QueryError(f"pca needs known numeric variables; {name!r} is not one")
    terms = [INTERCEPT] + [{"var": v, "transform": transforms[v]} if v in transforms
                           else {"var": v} for v in names]
    stat = fed.statistic("pca", variables=names, kind="crossprod", parameters={"terms": terms},
                         **_scope(req))
    n = stat.count(("n", None))
    if n < 2:
        raise DegenerateInput(f"pca needs at least 2 complete rows; {n} remain")
    p = len(names)
    xx = [[stat.exact(("xx", None, min(i, j), max(i, j))) for j in range(p + 1)]
          for i in range(p + 1)]
    sums = [xx[0][i + 1] for i in range(p)]
    scatter = [[xx[i + 1][j + 1] - sums[i] * sums[j] / n for j in range(p)] for i in range(p)]
    matrix = _correlation(_Scatter(variables=names, n=n, sums=sums, scatter=scatter,
                                   federation=stat.federation), "standardization")
    values, vectors = np.linalg.eigh(matrix)
    order = np.argsort(values)[::-1]
    values = np.maximum(values[order], 0.0)
    vectors = _flip_signs(vectors[:, order])
    components = [f"PC{i + 1}" for i in range(p)]
    total = float(values.sum())
    labels = [f"{transforms[v]}({v})" if v in transforms else v for v in names]
    return PCAResult(
        eigenvalues=pd.Series(values, index=components),
        eigenvectors=pd.DataFrame(vectors, index=labels, columns=components),
        explained_variance_ratio=pd.Series(values / total if total > 0 else values,
                                           index=components),
        means=pd.Series([float(s / n) for s in sums], index=labels),
        stds=pd.Series([math.sqrt(max(float(scatter[i][i] / (n - 1)), 0.0))
                        for i in range(p)], index=labels),
        nobs=n, standardize=True, federation=stat.federation)


# --- k-means ---------------------------------------------------------------------------------


@handles("kmeans", method="kmeans")
def _kmeans(fed: Analyses, req: Request) -> dict[str, Any]:
    """Exareme2's defaults: k = 4, maxiter = 1, tol = 0.01. Clusters left empty are
    dropped (Exareme2 reports them at the origin)."""
    result = kmeans(fed, req.y, _integer(req, "k", 4), max_iter=_integer(req, "maxiter", 1),
                    tol=_real(req, "tol", 0.01), seed=0, **_scope(req))
    return {"title": "K-Means Centers",
            "centers": [_numbers(row) for row in result.centers.to_numpy()]}


# --- regressions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Coding:
    """Exareme2's names of the coefficients, and the matrix taking ours to them."""

    names: list[str]
    matrix: np.ndarray


def _present_levels(fed: Analyses, y: str, x: list[str], algorithm: str, view: PlanModel,
                    scope: dict[str, Any], extra: dict[str, Any]) -> dict[str, list[str]]:
    """The levels of each categorical predictor present in the complete rows (y and every
    x present: the design's own complete cases), from the diagonal of one round's
    cross-products of the level indicators (exact counts)."""
    factors = [v for v in x if not view.is_numeric(v)]
    if not factors:
        return {}
    terms = [INTERCEPT] + [{"var": v, "level": level} for v in factors
                           for level in view.levels(v)]
    terms += [{"var": v} for v in x if view.is_numeric(v)]
    if algorithm.startswith("linear"):
        stat = fed.statistic(algorithm, variables=[y, *x], kind="crossprod",
                             parameters={"terms": [*terms, {"var": y}]}, **scope)
        head: tuple[Any, ...] = ("xx", None)
    else:  # the logistic kind at beta = 0 gives the information X'X / 4
        stat = fed.statistic(algorithm, variables=[y, *x], kind="logistic",
                             parameters={"terms": terms, **extra,
                                         "beta": [0.0] * len(terms)}, **scope)
        head = ("hess", None)
    present: dict[str, list[str]] = {}
    k = 1
    for v in factors:
        present[v] = []
        for level in view.levels(v):
            if stat.exact((*head, k, k)) > 0:
                present[v].append(level)
            k += 1
    return present


def _exareme2_coding(labels: list[str], x: list[str], view: PlanModel,
                     present: dict[str, list[str]]) -> _Coding:
    """Our coefficients (data-model reference level) -> Exareme2's (reference: the first
    present level in sorted order; Intercept, indicators of each categorical x, then the
    numeric x, each in x's order). Same fitted values, so a linear map A: gamma = A beta."""
    ours = {name: i for i, name in enumerate(labels)}
    rows: list[tuple[str, dict[int, float]]] = [("Intercept", {ours["Intercept"]: 1.0})]
    for v in (v for v in x if not view.is_numeric(v)):
        levels = sorted(present[v])
        reference = levels[0]
        ours_ref = next(lv for lv in view.levels(v) if lv in present[v]
                        and f"{v}[T.{lv}]" not in ours)

        def column(level: str, v: str = v, ours_ref: str = ours_ref) -> int | None:
            return None if level == ours_ref else ours[f"{v}[T.{level}]"]

        shift = column(reference)
        if shift is not None:  # the intercept takes the new reference's effect
            rows[0][1][shift] = rows[0][1].get(shift, 0.0) + 1.0
        for level in levels[1:]:
            weights: dict[int, float] = {}
            own = column(level)
            if own is not None:
                weights[own] = 1.0
            if shift is not None:
                weights[shift] = weights.get(shift, 0.0) - 1.0
            rows.append((f"{v}[{level}]", weights))
    for v in (v for v in x if view.is_numeric(v)):
        rows.append((v, {ours[v]: 1.0}))
    matrix = np.zeros((len(rows), len(labels)))
    for r, (_, weights) in enumerate(rows):
        for c, w in weights.items():
            matrix[r, c] = w
    return _Coding([name for name, _ in rows], matrix)


def _recoded(params: pd.Series, covariance: pd.DataFrame, coding: _Coding
             ) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and standard errors in Exareme2's coding."""
    a = coding.matrix
    cov = covariance.loc[params.index, params.index].to_numpy()
    return a @ params.to_numpy(), np.sqrt(np.maximum(np.diag(a @ cov @ a.T), 0.0))


def _regression_inputs(fed: Analyses, req: Request, view: PlanModel, algorithm: str,
                       extra: dict[str, Any]
                       ) -> tuple[str, list[str], dict[str, Any], dict[str, list[str]]]:
    """y, the predictors Exareme2 would code, the scope and each categorical predictor's
    present levels. A categorical predictor with a single level present is left out, as
    Exareme2 (and patsy) give it no column (ours would refuse it as constant); the rows
    stay the complete cases of y and every x, as Exareme2's data loader keeps."""
    y = _single(req.y, "y", algorithm)
    x = list(dict.fromkeys(req.x))
    if not x:
        raise QueryError(f"{algorithm} needs predictors in x")
    for name in [y, *x]:
        if not view.has_variable(name):
            raise QueryError(unknown("variable", name, view.variable_names()))
    scope = _scope(req)
    present = _present_levels(fed, y, x, algorithm, view, scope, extra)
    kept = [v for v in x if view.is_numeric(v) or len(present[v]) > 1]
    if kept != x:  # keep the dropped predictors' complete cases
        scope["filters"] = complete_cases([y, *x], req.filters, view)
    return y, kept, scope, present


@handles("linear_regression", method="linear_regression")
def _linear_regression(fed: Analyses, req: Request) -> dict[str, Any]:
    view = _view(fed, req)
    y, x, scope, present = _regression_inputs(fed, req, view, "linear_regression", {})
    result = linear_regression(fed, y, x, **scope)
    coding = _exareme2_coding(list(result.params.index), x, view, present)
    beta, se = _recoded(result.params, result.cov_params(), coding)
    df = result.df_resid
    t = beta / se
    quantile = float(stats.t.ppf(1 - REGRESSION_ALPHA / 2, df))
    return {"dependent_var": y, "n_obs": result.nobs, "df_resid": float(df),
            "df_model": float(result.df_model), "rse": result.rse,
            "r_squared": result.rsquared, "r_squared_adjusted": result.rsquared_adj,
            "f_stat": result.fvalue, "f_pvalue": result.f_pvalue, "indep_vars": coding.names,
            "coefficients": _numbers(beta), "std_err": _numbers(se), "t_stats": _numbers(t),
            "pvalues": _numbers(2 * stats.t.sf(np.abs(t), df)),
            "lower_ci": _numbers(beta - quantile * se),
            "upper_ci": _numbers(beta + quantile * se)}


def _outcome(req: Request, view: PlanModel) -> tuple[Any, dict[str, Any]]:
    positive = _param(req, "positive_class")
    y = _single(req.y, "y", "logistic regression")
    outcome, _ = outcome_spec(view, y, positive)
    return positive, {"outcome": outcome}


@handles("logistic_regression", method="logistic_regression")
def _logistic_regression(fed: Analyses, req: Request) -> dict[str, Any]:
    """Exareme2's ``r_squared_cs`` is Cox and Snell's ``1 - exp(2 (ll0 - ll) / n)``."""
    view = _view(fed, req)
    positive, extra = _outcome(req, view)
    y, x, scope, present = _regression_inputs(fed, req, view, "logistic_regression", extra)
    result = logistic_regression(fed, y, x, positive, **scope)
    coding = _exareme2_coding(list(result.params.index), x, view, present)
    beta, se = _recoded(result.params, result.cov_params(), coding)
    z = beta / se
    quantile = float(stats.norm.ppf(1 - REGRESSION_ALPHA / 2))
    n, ll, ll0 = result.nobs, result.llf, result.llnull
    summary = {"n_obs": n, "coefficients": _numbers(beta), "stderr": _numbers(se),
               "lower_ci": _numbers(beta - quantile * se),
               "upper_ci": _numbers(beta + quantile * se), "z_scores": _numbers(z),
               "pvalues": _numbers(2 * stats.norm.sf(np.abs(z))),
               "df_model": int(result.df_model), "df_resid": int(result.df_resid),
               "r_squared_cs": 1 - math.exp(2 * (ll0 - ll) / n),
               "r_squared_mcf": result.prsquared, "ll0": ll0, "ll": ll, "aic": result.aic,
               "bic": result.bic}
    return {"dependent_var": y, "indep_vars": coding.names, "summary": summary}


@handles("linear_regression_cv", method="linear_regression_cv")
def _linear_regression_cv(fed: Analyses, req: Request) -> dict[str, Any]:
    y, x, scope, _ = _regression_inputs(fed, req, _view(fed, req), "linear_regression_cv", {})
    return linear_regression_cv(fed, y, x, _integer(req, "n_splits", 5), **scope).to_exareme2()


@handles("logistic_regression_cv", method="logistic_regression_cv")
def _logistic_regression_cv(fed: Analyses, req: Request) -> dict[str, Any]:
    view = _view(fed, req)
    positive, extra = _outcome(req, view)
    y, x, scope, _ = _regression_inputs(fed, req, view, "logistic_regression_cv", extra)
    return logistic_regression_cv(fed, y, x, positive, _integer(req, "n_splits", 5),
                                  **scope).to_exareme2()


# --- analysis of variance --------------------------------------------------------------------


def _tukey_pairs(groups: pd.DataFrame, order: list[str], mse: float, df: float
                 ) -> list[dict[str, Any]]:
    """Tukey-Kramer comparisons in Exareme2's layout: the statistics of the analysis'
    ``tukey`` (:func:`fedtally.methods.anova.tukey_hsd`: ``se = sqrt(MSE (1/n_a +
    1/n_b))``, p-value ``studentized_range.sf(sqrt(2) |t|, k, df)``) without its critical
    value, which Exareme2 does not report and which costs a numerical quantile."""
    pairs = list(combinations(order, 2))
    if not pairs:
        return []
    mean, n = groups["mean"], groups["nobs"]
    diff = np.array([mean[a] - mean[b] for a, b in pairs], dtype=np.float64)
    se = np.sqrt([mse * (1 / n[a] + 1 / n[b]) for a, b in pairs])
    t = diff / se
    p = np.atleast_1d(stats.studentized_range.sf(math.sqrt(2) * np.abs(t), len(order), df))
    return [{"groupA": a, "groupB": b, "meanA": float(mean[a]), "meanB": float(mean[b]),
             "diff": float(diff[i]), "se": float(se[i]), "t_stat": float(t[i]),
             "p_tuckey": float(p[i])} for i, (a, b) in enumerate(pairs)]


@handles("anova_oneway", method="anova_oneway")
def _anova_oneway(fed: Analyses, req: Request) -> dict[str, Any]:
    """Exareme2's AnovaResult without ``min_max_per_group`` (see :data:`NOT_RELEASED`).
    Tukey pairs follow Exareme2: groups in the data model's order, ``diff = meanA -
    meanB``, ``t_stat = diff / se``; ``p_tuckey`` is exact (see the module notes)."""
    y = _single(req.y, "y", "anova_oneway")
    x = _single(req.x, "x", "anova_oneway")
    result = anova_oneway(fed, y, x, **_scope(req))
    table, groups = result.table, result.groups
    anova_table = {
        "n_obs": result.nobs, "y_label": y, "x_label": x,
        "df_residual": float(table.at["Residual", "df"]), "df_explained": float(table.at[x, "df"]),
        "ss_residual": float(table.at["Residual", "sum_sq"]),
        "ss_explained": float(table.at[x, "sum_sq"]),
        "ms_residual": float(table.at["Residual", "mean_sq"]),
        "ms_explained": float(table.at[x, "mean_sq"]),
        "p_value": result.pvalue, "f_stat": result.statistic}
    order = [g for g in _enumerations(fed, req, x) if g in groups.index]
    pairs = _tukey_pairs(groups, order, float(table.at["Residual", "mean_sq"]),
                         float(table.at["Residual", "df"]))
    means = {g: float(groups.at[g, "mean"]) for g in order}
    stds = {g: _json_number(groups.at[g, "std"]) for g in order}
    ci_info = {"sample_stds": stds, "means": means,
               "m-s": {g: None if stds[g] is None else means[g] - stds[g] for g in order},
               "m+s": {g: None if stds[g] is None else means[g] + stds[g] for g in order}}
    return {"anova_table": anova_table, "tuckey_test": pairs, "ci_info": ci_info}


@handles("anova", method="anova_twoway")
def _anova_twoway(fed: Analyses, req: Request) -> dict[str, Any]:
    """Exareme2's two-way AnovaResult: terms x1, x2, x1:x2, Residuals. An effect with no
    degree of freedom left (aliased) is written with zero sum of squares and df, and no F;
    the residuals have no F either."""
    y = _single(req.y, "y", "anova")
    if len(req.x) != 2:
        raise QueryError(f"anova (two-way) takes exactly two x variables; got {req.x}")
    x1, x2 = req.x
    result = anova_twoway(fed, y, x1, x2, _integer(req, "sstype", 2), **_scope(req))
    table = result.table
    terms = [x1, x2, f"{x1}:{x2}"]
    out: dict[str, list[Any]] = {"terms": [*terms, RESIDUALS], "sum_sq": [], "df": [],
                                 "f_stat": [], "f_pvalue": []}
    for term in terms:
        present = term in table.index
        out["sum_sq"].append(float(table.at[term, "sum_sq"]) if present else 0.0)
        out["df"].append(int(table.at[term, "df"]) if present else 0)
        out["f_stat"].append(_json_number(table.at[term, "F"]) if present else None)
        out["f_pvalue"].append(_json_number(table.at[term, "PR(>F)"]) if present else None)
    out["sum_sq"].append(float(table.at["Residual", "sum_sq"]))
    out["df"].append(int(table.at["Residual", "df"]))
    out["f_stat"].append(None)
    out["f_pvalue"].append(None)
    return out


# --- t-tests ---------------------------------------------------------------------------------


def _test_options(req: Request) -> dict[str, Any]:
    return {"alternative": _param(req, "alt_hypothesis", "two-sided"),
            "alpha": _real(req, "alpha", 0.05)}


def _t_fields(result: TTestResult, mean_diff: float, df: float) -> dict[str, Any]:
    low, high = result.ci
    return {"t_stat": result.statistic, "df": int(df), "p": result.pvalue,
            "mean_diff": mean_diff, "se_diff": result.se, "ci_upper": _bound(high),
            "ci_lower": _bound(low), "cohens_d": result.cohens_d}


@handles("ttest_onesample", method="ttest_onesample")
def _ttest_onesample(fed: Analyses, req: Request) -> dict[str, Any]:
    """As Exareme2: ``mean_diff`` is the sample mean, the interval is the mean's, ``std``
    the sample standard deviation; ``cohens_d`` is ``(mean - mu) / std`` (Exareme2 flips
    its sign)."""
    y = _single(req.y, "y", "ttest_onesample")
    result = ttest_onesample(fed, y, mu=_real(req, "mu", 0.0), **_test_options(req),
                             **_scope(req))
    return {"n_obs": result.nobs, **_t_fields(result, result.estimate, result.df),
            "std": _json_number(result.samples.at[y, "std"])}


@handles("ttest_paired", method="ttest_paired")
def _ttest_paired(fed: Analyses, req: Request) -> dict[str, Any]:
    """x minus y (Exareme2's order); ``cohens_d`` over the mean of the two variances.
    ``n_obs`` is added (Exareme2's paired result has none)."""
    y = _single(req.y, "y", "ttest_paired")
    x = _single(req.x, "x", "ttest_paired")
    result = ttest_paired(fed, x, y, **_test_options(req), **_scope(req))
    return {"n_obs": result.nobs, **_t_fields(result, result.estimate, result.df)}


@handles("ttest_independent", method="ttest_independent")
def _ttest_independent(fed: Analyses, req: Request) -> dict[str, Any]:
    """Welch's test of groupA against groupB of x (see the module notes on ``p`` and
    ``df``); ``cohens_d`` over the pooled standard deviation."""
    y = _single(req.y, "y", "ttest_independent")
    x = _single(req.x, "x", "ttest_independent")
    result = ttest_independent(fed, y, x, _param(req, "groupA"), _param(req, "groupB"),
                               equal_var=False, **_test_options(req), **_scope(req))
    return _t_fields(result, result.estimate, result.nobs - 2)


# --- naive Bayes (Exareme2's testing endpoints of its fitted models) ------------------------


def _classes_sorted(classes: Sequence[str]) -> list[str]:
    return sorted(classes)  # Exareme2 (and scikit-learn) order classes by name


@handles("test_nb_gaussian_fit", method="naive_bayes_gaussian")
def _nb_gaussian_fit(fed: Analyses, req: Request) -> dict[str, Any]:
    y = _single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_gaussian(fed, y, req.x, **_scope(req))
    classes = _classes_sorted(fitted.classes_)
    return {"theta": [_numbers(r) for r in fitted.theta_.loc[classes].to_numpy()],
            "var": [_numbers(r) for r in fitted.var_.loc[classes].to_numpy()],
            "class_count": [int(fitted.class_count_[c]) for c in classes]}


@handles("test_nb_gaussian_predict", method="naive_bayes_gaussian")
def _nb_gaussian_predict(fed: Analyses, req: Request) -> dict[str, Any]:
    """Rows of the training data assigned to each class: the nodes evaluate the fitted
    model on their complete rows and return counts per class."""
    y = _single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_gaussian(fed, y, req.x, **_scope(req))
    classes = _classes_sorted(fitted.classes_)  # ties go to the first, as scikit-learn
    features = list(fitted.features)
    stat = fed.statistic(
        "naive_bayes_gaussian", kind="gaussian_nb_predict", variables=features,
        parameters={"classes": classes,
                    "theta": fitted.theta_.loc[classes, features].to_numpy().tolist(),
                    "var": fitted.var_.loc[classes, features].to_numpy().tolist(),
                    "log_prior": [math.log(fitted.class_prior_[c]) for c in classes]},
        datasets=req.datasets, data_model=req.data_model,
        filters=complete_cases([y, *features], req.filters, _view(fed, req)))
    counts = {c: stat.count(("predicted", i)) for i, c in enumerate(classes)}
    return {"predictions": {c: n for c, n in counts.items() if n}}


@handles("test_nb_categorical_fit", method="naive_bayes_categorical")
def _nb_categorical_fit(fed: Analyses, req: Request) -> dict[str, Any]:
    """Per feature, per class (sorted), the count at each of the feature's levels sorted
    by name (all its levels, see :func:`_enumerations`)."""
    y = _single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_categorical(fed, y, req.x, **_scope(req))
    classes = _classes_sorted(fitted.classes_)
    counts = []
    for feature in fitted.features:
        levels = sorted(_enumerations(fed, req, feature))
        counts.append(fitted.category_count_[feature].loc[classes, levels].to_numpy().tolist())
    return {"category_count": counts,
            "class_count": [int(fitted.class_count_[c]) for c in classes]}


@handles("test_nb_categorical_predict", method="naive_bayes_categorical")
def _nb_categorical_predict(fed: Analyses, req: Request) -> dict[str, Any]:
    y = _single(req.y, "y", "naive Bayes")
    fitted = naive_bayes_categorical(fed, y, req.x, **_scope(req))
    counts = naive_bayes_categorical_predictions(fed, fitted, y, **_scope(req))
    return {"predictions": {str(c): int(n) for c, n in counts.items()}}


# --- Exareme2's comparison rule -------------------------------------------------------------


def is_close(ours: float | str | None, theirs: float | str | None, rel: float = 1e-6,
             abs_: float = 1e-9) -> bool:
    """Exareme2's tolerance (relative 1e-6, absolute 1e-9 by default); None and NaN are
    both "undefined"; infinities may be written as strings ("Infinity")."""
    if isinstance(ours, str):
        ours = float(ours)
    if isinstance(theirs, str):
        theirs = float(theirs)
    if ours is None or theirs is None:
        return (ours is None or math.isnan(ours)) and (theirs is None or math.isnan(theirs))
    if math.isnan(theirs) or math.isnan(ours):
        return math.isnan(theirs) and math.isnan(ours)
    return math.isclose(ours, theirs, rel_tol=rel, abs_tol=abs_)
