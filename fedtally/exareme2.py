"""Run the body of an Exareme2 algorithm request and answer in Exareme2's shape, so that
MIP users can move over with their requests unchanged.

    fed.run_exareme2({"inputdata": {...}, "parameters": {...}}, algorithm="linear_regression")

The algorithm name is the one in Exareme2's URL (``/algorithms/<name>``); it may also be
given inside the request as ``"algorithm"``. Fields that would release single patients'
values (exact min, max and quartiles in descriptive statistics, SVM support vectors) are
never produced; see :data:`NOT_RELEASED`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from engine.errors import QueryError
from fedtally.analyses import Analyses
from fedtally.results import moments
from node.kinds import PlanModel

#: Exareme2 output fields we deliberately never release, with the reason
NOT_RELEASED = {
    "min": "an exact minimum is one patient's value",
    "max": "an exact maximum is one patient's value",
    "q1": "exact quartiles are single patients' values",
    "q2": "exact quartiles are single patients' values",
    "q3": "exact quartiles are single patients' values",
    "support_vectors": "support vectors are patient rows",
}
ALL_DATASETS = "all datasets"
#: Exareme2 reports no statistics (None) for a variable without data points in a dataset;
#: small cohorts are the nodes' business (their min_row_count and small-cell rules)
MIN_DATAPOINTS = 1


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


def handles(*names: str) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
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
    from node import filters as trees

    items = [trees.IsNull(v, negated=True).to_json() for v in variables]
    if filters is not None:
        tree = trees.parse_querybuilder(filters) if "rules" in filters else trees.from_json(filters)
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
    # per (variable, dataset): data points, total rows, and the pieces to pool
    cells: dict[tuple[str, str], tuple[int, int, Any]] = {}
    for variable in numeric:
        for d in req.datasets:
            n = rows_stat.count(("count", d, None, variable))
            pieces = (rows_stat.exact(("sum", d, None, variable)),
                      rows_stat.exact(("sumsq", d, None, variable)))
            cells[(variable, d)] = (n, rows_stat.count(("rows", d, None)), pieces)
    dataset_levels = view.levels("dataset")
    for variable in categorical:
        levels = view.levels(variable)
        table = fed.statistic("descriptive_stats", kind="counts", datasets=req.datasets,
                              filters=filters, data_model=req.data_model,
                              parameters={"axes": [{"var": "dataset"}, {"var": variable}]})
        for d in req.datasets:
            counts = {level: table.count(("cell", dataset_levels.index(d), j))
                      for j, level in enumerate(levels)}
            cells[(variable, d)] = (sum(counts.values()), rows_stat.count(("rows", d, None)),
                                    counts)

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


@handles("descriptive_stats")
def _descriptive_stats(fed: Analyses, req: Request) -> dict[str, Any]:
    # Exareme2 leaves the dataset column itself out of the statistics
    variables = [v for v in req.y + req.x if v != "dataset"]
    if not variables:
        raise QueryError("descriptive_stats needs variables in y or x")
    return {"variable_based": _describe(fed, req, variables, req.filters),
            "model_based": _describe(fed, req, variables, _not_null(variables, req.filters))}


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def is_close(ours: float | None, theirs: float | str | None, rel: float = 1e-6,
             abs_: float = 1e-9) -> bool:
    """Exareme2's tolerance (relative 1e-6, absolute 1e-9 by default); None and NaN are
    both "undefined"; Exareme2 writes infinities as strings."""
    if ours is None or theirs is None:
        return (ours is None or math.isnan(ours)) and (
            theirs is None or (isinstance(theirs, float) and math.isnan(theirs)))
    if isinstance(theirs, str):
        theirs = float(theirs)
    if math.isnan(theirs) or math.isnan(ours):
        return math.isnan(theirs) and math.isnan(ours)
    return math.isclose(ours, theirs, rel_tol=rel, abs_tol=abs_)
