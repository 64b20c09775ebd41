"""Run the body of an Exareme2 algorithm request and answer in Exareme2's shape, so that
MIP users can move over with their requests unchanged.

    fed.run_exareme2({"inputdata": {...}, "parameters": {...}}, algorithm="linear_regression")

The algorithm name is the one in Exareme2's URL (``/algorithms/<name>``); it may also be
given inside the request as ``"algorithm"``. Each adapter translates the request into one
of our analyses and the result into the fields of Exareme2's result model for that
algorithm (``exareme2/algorithms/exareme2/<name>.py``, tag 0.28.0). An adapter sits in its
method's module (``@handles`` in ``fedtally/methods/<method>.py``, see
:mod:`fedtally.methods.registry`); this module holds what they share: the request and its
parameter readers, Exareme2's JSON shapes, the coding of categorical predictors, the
runner, and the adapter of ``descriptive_stats`` (a method of every federation). Rows are
the complete cases of the request's variables, as Exareme2's data loader keeps.

Where Exareme2's answer and ours differ on purpose, the adapter says so:

* Fields that would release single patients' values (exact min, max and quartiles,
  per-group minima and maxima, SVM support vectors) are never produced: see
  :data:`NOT_RELEASED`. ``svm_scikit`` is not offered at all (its result is patient rows).
* ``multiple_histograms`` of a numeric variable: Exareme2 lays the bins between the data's
  exact minimum and maximum; here they span the data model's declared ``min``/``max``
  (a :class:`QueryError` where none is declared). Counts below Exareme2's minimum row count
  (10) are written as null, as Exareme2 does.
* ``kmeans`` starts from public centers (see :mod:`fedtally.methods.kmeans`), not
  from uniform draws between exact minima and maxima.
* ``anova_oneway``: ``p_tuckey`` is the exact studentized-range p-value (Exareme2 reads
  statsmodels' interpolated table, clipped to [0.001, 0.9]).
* ``ttest_independent``: ``p`` is Welch's p-value on Welch's degrees of freedom (Exareme2
  takes it on ``n - 2``, which its own R reference does not); ``df`` is ``n - 2`` as
  Exareme2 reports it. T-test intervals are at ``1 - alpha`` as Exareme2 computes them;
  an infinite bound is written ``"Infinity"`` / ``"-Infinity"`` (JSON has no infinity).
* ``linear_regression_cv`` / ``logistic_regression_cv``: the folds are drawn at the nodes
  (:mod:`fedtally.methods.folds`), so per-fold numbers differ from Exareme2's.
* ``naive_bayes_*_cv`` are not offered: cross-validated naive Bayes is not in our catalog.

Categorical predictors are coded as Exareme2 (and patsy, which made its references) code
them: the first *sorted* level present is the reference, and the indicator columns come
before the numeric ones. Our regressions take the data model's first level as reference;
the coefficients and their covariance are re-expressed exactly in Exareme2's coding (a
linear change of parameters, same fitted model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from fedtally.analyses import Analyses, filter_tree
from fedtally.methods.common import INTERCEPT, complete_cases, resolved_datasets
from fedtally.methods.newton import outcome_spec
from fedtally.methods.registry import Adapter, adapters, handles
from fedtally.methods.ttests import TTestResult
from fedtally.results import moments
from protocol.errors import QueryError
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


def handlers() -> dict[str, Adapter]:
    """Every Exareme2 algorithm we answer, with its adapter: those of the method modules
    (:func:`fedtally.methods.registry.adapters`) and this module's ``descriptive_stats``,
    answered by :meth:`Analyses.statistic` itself."""
    return adapters()


def run_exareme2(fed: Analyses, body: dict[str, Any], algorithm: str | None = None) -> dict[str, Any]:
    known = handlers()
    name = algorithm or body.get("algorithm")
    if not isinstance(name, str) or name not in known:
        raise QueryError(f"unknown Exareme2 algorithm {name!r}; available: "
                         f"{', '.join(sorted(known))}")
    return known[name].function(fed, parse_request(body))


def _not_null(variables: Sequence[str], filters: Any) -> dict[str, Any]:
    """A filter tree: every variable present, and the request's own filter."""
    from stats import filters as trees

    items = [trees.IsNull(v, negated=True).to_json() for v in variables]
    tree = filter_tree(filters)
    if tree is not None:
        items.append(tree.to_json())
    return {"op": "and", "items": items}


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
            out["mean"], out["std"] = json_number(mean), json_number(std)
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


def json_number(value: Any) -> float | None:
    """A JSON number: Python float, None for NaN (Exareme2 writes null where undefined)."""
    value = float(value)
    return None if math.isnan(value) else value


def bound(value: float) -> float | str:
    """An interval bound: Exareme2 writes an infinite one as "Infinity" / "-Infinity"."""
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float(value)


def numbers(values: Any) -> list[float | None]:
    return [json_number(v) for v in np.ravel(np.asarray(values, dtype=np.float64))]


def single(names: list[str], role: str, algorithm: str) -> str:
    if len(names) != 1:
        raise QueryError(f"{algorithm} takes exactly one {role} variable; got {names}")
    return names[0]


def param(req: Request, name: str, default: Any = None) -> Any:
    value = req.parameters.get(name)
    if value is None:  # absent or null: the default, as Exareme2
        value = default
    if value is None:
        raise QueryError(f"the request's parameters lack {name!r}")
    return value


def integer(req: Request, name: str, default: int | None = None) -> int:
    value = param(req, name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise QueryError(f"parameter {name!r} must be an integer")
    return int(value)


def real(req: Request, name: str, default: float | None = None) -> float:
    value = param(req, name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(f"parameter {name!r} must be a number")
    return float(value)


def query_scope(req: Request) -> dict[str, Any]:
    return {"datasets": req.datasets, "filters": req.filters, "data_model": req.data_model}


def plan_view(fed: Analyses, req: Request) -> PlanModel:
    return PlanModel(Analyses.model(fed, req.data_model))  # SimulatedFederation shadows .model


def enumerations(fed: Analyses, req: Request, variable: str) -> list[str]:
    """A categorical variable's levels as Exareme2 lists them: the data model's, except
    for ``dataset``, whose levels are the datasets the federation holds (Exareme2's
    metadata lists the loaded datasets, not every dataset a data model declares)."""
    model = Analyses.model(fed, req.data_model)
    if variable != "dataset":
        return list(PlanModel(model).levels(variable))
    held = set(resolved_datasets(fed, req.data_model, None))
    return [d for d in model.datasets() if d in held]


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


def predictor_coding(labels: list[str], x: list[str], view: PlanModel,
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


def recoded(params: pd.Series, covariance: pd.DataFrame, coding: _Coding
            ) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and standard errors in Exareme2's coding."""
    a = coding.matrix
    cov = covariance.loc[params.index, params.index].to_numpy()
    return a @ params.to_numpy(), np.sqrt(np.maximum(np.diag(a @ cov @ a.T), 0.0))


def regression_inputs(fed: Analyses, req: Request, view: PlanModel, algorithm: str,
                      extra: dict[str, Any]
                      ) -> tuple[str, list[str], dict[str, Any], dict[str, list[str]]]:
    """y, the predictors Exareme2 would code, the scope and each categorical predictor's
    present levels. A categorical predictor with a single level present is left out, as
    Exareme2 (and patsy) give it no column (ours would refuse it as constant); the rows
    stay the complete cases of y and every x, as Exareme2's data loader keeps."""
    y = single(req.y, "y", algorithm)
    x = list(dict.fromkeys(req.x))
    if not x:
        raise QueryError(f"{algorithm} needs predictors in x")
    for name in [y, *x]:
        if not view.has_variable(name):
            raise QueryError(unknown("variable", name, view.variable_names()))
    where = query_scope(req)
    present = _present_levels(fed, y, x, algorithm, view, where, extra)
    kept = [v for v in x if view.is_numeric(v) or len(present[v]) > 1]
    if kept != x:  # keep the dropped predictors' complete cases
        where["filters"] = complete_cases([y, *x], req.filters, view)
    return y, kept, where, present


def outcome(req: Request, view: PlanModel) -> tuple[Any, dict[str, Any]]:
    positive = param(req, "positive_class")
    y = single(req.y, "y", "logistic regression")
    outcome, _ = outcome_spec(view, y, positive)
    return positive, {"outcome": outcome}


def test_options(req: Request) -> dict[str, Any]:
    return {"alternative": param(req, "alt_hypothesis", "two-sided"),
            "alpha": real(req, "alpha", 0.05)}


def t_fields(result: TTestResult, mean_diff: float, df: float) -> dict[str, Any]:
    low, high = result.ci
    return {"t_stat": result.statistic, "df": int(df), "p": result.pvalue,
            "mean_diff": mean_diff, "se_diff": result.se, "ci_upper": bound(high),
            "ci_lower": bound(low), "cohens_d": result.cohens_d}


def classes_sorted(classes: Sequence[str]) -> list[str]:
    return sorted(classes)  # Exareme2 (and scikit-learn) order classes by name


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
