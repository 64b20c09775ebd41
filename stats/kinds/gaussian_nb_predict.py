"""``gaussian_nb_predict``: how many complete-case rows a fitted Gaussian naive Bayes model
(it comes with the query) assigns to each class. Classes partition the complete rows;
each count is a cell. Class means must lie in the data model's declared ranges."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from protocol.errors import QueryError
from stats.aggregates import (
    Aggregation,
    All,
    ArgMinKey,
    Arith,
    Const,
    Present,
    Ref,
    Result,
    Rows,
    Statistic,
    Var,
    add,
    mul,
)
from stats.kinds.base import Computed, Guard, Kind, Scale, unit_bound
from stats.kinds.params import (
    MAX_CENTERS,
    check_in_box,
    check_magnitudes,
    check_numeric,
    number_list,
    param,
)
from stats.plans import Disclosure, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


def _classes(spec: QuerySpec, model: ModelView) -> int:
    check_numeric(model, spec.variables, "the model")
    classes = param(spec, "classes")
    if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CENTERS:
        raise QueryError(f"classes must be a list of 1 to {MAX_CENTERS} labels")
    p = len(spec.variables)
    for name in ("theta", "var"):
        rows = param(spec, name)
        if not isinstance(rows, list) or len(rows) != len(classes):
            raise QueryError(f"{name} must have one row per class")
        for row in rows:
            values = number_list(row, name, p)
            check_magnitudes(values, "a class mean" if name == "theta" else "a variance")
            if name == "var" and min(values) <= 0:
                raise QueryError("variances must be positive")
            if name == "theta":
                check_in_box(model, spec.variables, values, "a class mean")
    check_magnitudes(number_list(param(spec, "log_prior"), "log_prior", len(classes)),
                     "a log prior")
    return len(classes)


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    return [Slot(("predicted", c), False, Disclosure.ROWS, ("predicted", c))
            for c in range(_classes(spec, model))]


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    """The complete-case rows grouped by the class of largest joint log-likelihood (as
    scikit-learn's GaussianNB: log prior - (sum log(2 pi var) + sum (x - theta)^2 / var) / 2,
    the first class on ties), each class's negative score a derived column."""
    theta = spec.parameters["theta"]
    var = spec.parameters["var"]
    log_prior = spec.parameters["log_prior"]
    columns = [Var(v) for v in spec.variables]
    scores = []
    for c in range(len(log_prior)):
        constant = float(sum(math.log(2 * math.pi * float(v)) for v in var[c]))
        squares = add(*(Arith("/", mul(Arith("-", x, Const(float(t))),
                                       Arith("-", x, Const(float(t)))), Const(float(v)))
                        for x, t, v in zip(columns, theta[c], var[c], strict=True)))
        # -(log prior + log likelihood): the class with the smallest is predicted
        scores.append((f"s{c}", Arith("-", Arith("*", Const(0.5), Arith(
            "+", Const(constant), squares)), Const(float(log_prior[c])))))
    where = All(tuple(Present(v) for v in spec.variables))
    aggregation = Aggregation((Rows(),), (ArgMinKey(tuple(Ref(n) for n, _ in scores)),),
                              where, tuple(scores))

    def assemble(results: Sequence[Result]) -> Computed:
        out = Computed()
        for c in range(len(log_prior)):
            n = int(results[0].get((c,), (0,))[0])
            out.rows += n
            out.values[("predicted", c)] = n
            out.guards[("predicted", c)] = {Guard.ROWS: n}
        return out

    return Statistic((aggregation,), assemble, frozenset(spec.variables))


KIND = Kind("gaussian_nb_predict", _layout, None, unit_bound, statistic=_statistic,
            size=lambda spec, model: _classes(spec, model),
            row_cost=lambda spec, model: 8 * (2 * len(spec.variables) + 4))
