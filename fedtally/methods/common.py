"""Pieces every analysis shares: privacy argument, input checks, model terms, exact
linear algebra, the federation record of several queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from fedtally import coverage
from fedtally.analyses import Analyses, FilterLike, filter_tree
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats import filters as filter_trees
from stats.datamodel import DATASET, PlanModel
from stats.design import Term, dummies, term_name
from stats.suggest import unknown

INTERCEPT: Term = {"const": 1}


def check_privacy(privacy: Any, method: str) -> dict[str, Any]:
    """For a method that gives exact answers only (for now): refuse a DP request by name."""
    if privacy is None or privacy == "exact" or privacy == {"mode": "exact"}:
        return {"mode": "exact"}
    raise QueryError(f"{method} gives exact answers only for now (privacy=None or 'exact'); "
                     "it refuses differential privacy")


def merge_federation(stats_: Sequence[Statistic]) -> dict[str, Any]:
    """One query's ``federation``; for several (one per dataset, over disjoint rows): the
    nodes asked and answering every query, the contributions summed (a node holding two of
    the datasets counts twice; never more than the nodes answering), the datasets covered
    and not covered by any, the cells read 0 summed, and each query's own record under
    ``per_query``. (Taking the largest contribution counted one node for a table whose
    every query one node answered alone: "3 answered, 1 contributed".)"""
    records = [s.federation for s in stats_]
    if len(records) == 1:
        return records[0]
    answered = min(r["nodes_answered"] for r in records)
    out: dict[str, Any] = {
        "nodes_asked": max(r["nodes_asked"] for r in records), "nodes_answered": answered,
        "nodes_contributing": min(sum(r["nodes_contributing"] for r in records),
                                  max(r["nodes_answered"] for r in records)),
        "cells_below_threshold": sum(r["cells_below_threshold"] for r in records),
        "queries": len(records), "per_query": records}
    if all("datasets_covered" in r for r in records):
        not_covered = {d: why for r in records
                       for d, why in r.get("datasets_not_covered", {}).items()}
        out["datasets_covered"] = [d for d in dict.fromkeys(
            d for r in records for d in r["datasets_covered"]) if d not in not_covered]
        out["datasets_not_covered"] = not_covered
        out["cells_of_datasets_not_held"] = sum(r.get("cells_of_datasets_not_held", 0)
                                                for r in records)
    return out


def no_rows(federation: Mapping[str, Any], what: str = "the analysis") -> DegenerateInput:
    return DegenerateInput(
        f"no rows for {what}: the filters leave none, or every node's cohort is below its "
        f"minimum row count ({federation.get('nodes_contributing', 0)} of "
        f"{federation.get('nodes_asked', 0)} nodes contributed)")


def resolved_datasets(fed: Analyses, data_model: str | None,
                      datasets: Sequence[str] | str | None) -> list[str]:
    """The datasets a query covers: those given, or every dataset the data model declares,
    less those no online node holds (reported as :class:`fedtally.IncompleteAnswer`, or an
    error under ``strict``)."""
    scope = Analyses.scope(fed, data_model, datasets)
    if not scope.sent:
        raise QueryError(f"no online node holds dataset(s) {list(scope.asked)}")
    if scope.offline:
        coverage.report([f"dataset {d!r}: {coverage.OFFLINE}" for d in scope.offline],
                        scope.offline, strict=coverage.strict_now(fed.strict))
    return list(scope.sent)


def check_numeric(view: PlanModel, variable: str) -> None:
    if not isinstance(variable, str) or not view.has_variable(variable):
        raise QueryError(unknown("variable", variable, view.variable_names()))
    if not view.is_numeric(variable):
        raise QueryError(f"{variable!r} is categorical; a numeric variable is needed here")


def check_factor(view: PlanModel, variable: str) -> None:
    """A grouping variable: categorical, or the ``dataset`` itself."""
    if variable == DATASET:
        return
    if not isinstance(variable, str) or not view.has_variable(variable):
        raise QueryError(unknown("variable", variable, view.variable_names()))
    if view.is_numeric(variable):
        raise QueryError(f"{variable!r} is numeric; a categorical variable is needed here")


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


def predictor_terms(x: Sequence[str], view: PlanModel, *, intercept: bool = True) -> list[Term]:
    """Intercept, then each numeric predictor as is and each categorical one as indicators
    of its levels but the first (levels from the data model, as statsmodels' treatment
    coding)."""
    terms: list[Term] = [INTERCEPT] if intercept else []
    for variable in x:
        if not view.has_variable(variable):
            raise QueryError(unknown("variable", variable, view.variable_names()))
        if view.is_numeric(variable):
            terms.append({"var": variable})
        else:
            terms.extend(dummies(variable, view))
    return terms


def names(terms: Sequence[Term]) -> list[str]:
    return [term_name(t) for t in terms]


def triangle(stat: Statistic, head: tuple[Any, ...], p: int) -> list[list[Fraction]]:
    """A symmetric p x p matrix of exact totals from the upper triangle ``(*head, i, j)``."""
    matrix = [[Fraction(0)] * p for _ in range(p)]
    for i in range(p):
        for j in range(i, p):
            matrix[i][j] = matrix[j][i] = stat.exact((*head, i, j))
    return matrix


def to_float(matrix: Sequence[Sequence[Fraction]]) -> np.ndarray:
    return np.array([[float(v) for v in row] for row in matrix], dtype=np.float64)


def exact_inverse(matrix: Sequence[Sequence[Fraction]], what: str = "the design") -> list[list[Fraction]]:
    """The exact inverse: the totals are exact, so is this. A singular matrix (collinear or
    constant columns) raises DegenerateInput.

    Fraction-free Gauss-Jordan elimination (Bareiss 1968) on the matrix scaled to integers
    by its common denominator: every intermediate entry is a minor of ``[A | I]``, so each
    division is exact and no step needs a gcd; at the end the left block is ``d I`` and the
    right block ``d A^-1``. (Gauss-Jordan over Fractions reduces every entry at every step,
    and took seconds for the Hessians of a logistic regression.)"""
    n = len(matrix)
    scale = math.lcm(*(Fraction(v).denominator for row in matrix for v in row))
    work = [[int(Fraction(v) * scale) for v in row] + [int(i == j) for j in range(n)]
            for i, row in enumerate(matrix)]
    previous = 1
    for col in range(n):
        pivot = next((r for r in range(col, n) if work[r][col] != 0), None)
        if pivot is None:
            raise DegenerateInput(f"{what} is singular: a column is constant or collinear")
        work[col], work[pivot] = work[pivot], work[col]
        top = work[col]
        lead = top[col]
        for r in range(n):
            if r == col:
                continue
            row = work[r]
            factor = row[col]
            work[r] = [(lead * a - factor * b) // previous for a, b in zip(row, top, strict=True)]
        previous = lead
    # every diagonal entry now equals the last pivot d; the right block is d A_scaled^-1,
    # and A^-1 = scale A_scaled^-1
    return [[Fraction(v * scale, previous) for v in row[n:]] for row in work]


def exact_solve(matrix: Sequence[Sequence[Fraction]], rhs: Sequence[Fraction],
                what: str = "the design") -> list[Fraction]:
    inverse = exact_inverse(matrix, what)
    return [sum((a * b for a, b in zip(row, rhs, strict=True)), Fraction(0)) for row in inverse]


def series(values: Sequence[float], index: Sequence[str], name: str | None = None) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=np.float64), index=list(index), name=name)
