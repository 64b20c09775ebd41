"""``regression_eval``: per fold, on that fold's rows, the sums that score a fitted linear
model: n, sum and sum of squares of y, and of the residuals y - x.beta (with the sum of
their absolute values).

The researcher chooses beta, and varying it turns the residual sums into any combination
of the design's column sums and cross-products over the fold: so a fold is guarded as
:mod:`stats.kinds.crossprod` guards its matrix, plus the rows where y and the residual are
non-zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from stats.aggregates import (
    Aggregation,
    All,
    Arith,
    ExactSum,
    Func,
    Measure,
    Ref,
    Result,
    Rows,
    Statistic,
    Var,
    dot,
    group_sum,
    split,
    variables_of,
)
from stats.kinds.base import Computed, Guard, Kind, Magnitude, Scale
from stats.kinds.columns import (
    complete,
    exact,
    group_keys,
    pair_counts,
    product,
    refs,
    smallest_nonzero,
    term_columns,
)
from stats.kinds.frame import cell_count
from stats.kinds.params import check_betas, folds_of, param, term_bound, terms_of
from stats.plans import Disclosure, Key, ModelView, Slot, check_variable

if TYPE_CHECKING:
    from stats.query import QuerySpec

SUMS = ("sy", "syy", "se", "see", "sae")


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    check_variable(model, param(spec, "y"), numeric=True)
    folds = folds_of(spec)
    check_betas(spec, model, terms, param(spec, "betas"), folds)
    slots = []
    for f in folds:
        family = ("fold", f)
        slots.append(Slot(("n", f), False, Disclosure.ROWS, family))
        slots += [Slot((name, f), True, Disclosure.SUM, family) for name in SUMS]
    return slots


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    """One aggregation per fold (each fold has its own beta, hence its own residual), over
    the complete cases grouped by fold and by the design's cells; a fold's sums are its own
    group's. The guard counts, as :mod:`stats.kinds.crossprod` does, the rows where each
    pair of the design's columns, y and the residual (and every cell) is non-zero."""
    terms = spec.parameters["terms"]
    y_name = spec.parameters["y"]
    columns = term_columns(terms)
    values = refs(columns)
    cells, keys = group_keys(spec, terms, model)
    folds = folds_of(spec)
    offset = 0 if folds == [None] else 1
    where = All(tuple(complete(terms, values, [y_name])))
    y, residual = Ref("y"), Ref("r")
    aggregations = []
    for fold, beta in zip(folds, spec.parameters["betas"], strict=True):
        derived = (*columns, ("y", Var(y_name)),
                   ("r", Arith("-", y, dot(values, [float(b) for b in beta]))))
        measures: list[Measure] = [
            Rows(), ExactSum(y, scale(("sy", fold))), ExactSum(product(y, y), scale(("syy", fold))),
            ExactSum(residual, scale(("se", fold))),
            ExactSum(product(residual, residual), scale(("see", fold))),
            ExactSum(Func("abs", residual), scale(("sae", fold)))]
        measures += pair_counts([*values, y, residual])
        aggregations.append(Aggregation(tuple(measures), tuple(keys), where, derived))
    varying = len(values) + 2

    def assemble(results: Sequence[Result]) -> Computed:
        out = Computed()
        for position, (fold, result) in enumerate(zip(folds, results, strict=True)):
            part = split(result, 0).get(position, {}) if offset else result
            n = int(group_sum(part, 0))
            out.rows += n
            out.values[("n", fold)] = n
            for m, name in enumerate(SUMS):
                key = (name, fold)
                out.values[key] = exact(int(group_sum(part, 1 + m)), scale(key))
            smallest = smallest_nonzero(part, 0, 1 + len(SUMS), varying,
                                        lambda group: cells.indicators(group, offset))
            out.guards[("fold", fold)] = {Guard.ROWS: n, Guard.NONZERO: smallest}
        return out

    return Statistic(tuple(aggregations), assemble,
                     frozenset(v for a in aggregations for v in variables_of(a)))


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    y = magnitude(spec.parameters["y"])
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]
    reach = max(sum(abs(b) * t for b, t in zip(beta, bounds, strict=True))
                for beta in spec.parameters["betas"])
    residual = y + reach
    table = {"n": 1.0, "sy": y, "syy": y * y, "se": residual, "see": residual * residual,
             "sae": residual}
    return lambda key: table[str(key[0])]


def _size(spec: QuerySpec, model: ModelView) -> int:
    return len(folds_of(spec)) * (1 + len(SUMS))


def _row_cost(spec: QuerySpec, model: ModelView) -> int:
    terms = terms_of(spec, model)
    return 8 * 3 * (len(terms) + cell_count(terms, model) + 3)


KIND = Kind("regression_eval", _layout, None, _row_bound, size=_size, row_cost=_row_cost,
            statistic=_statistic)
