"""``logistic_eval``: per fold, on that fold's rows, the confusion matrix at probability 0.5
and the log-likelihood of a fitted logistic model (its coefficients come with the query).

Each confusion count is a cell of the fold's rows; the log-likelihood is a weighted sum
whose terms the coefficients set, guarded by their effective sample size.

With ``"shifts": [s_1, ...]`` (an ROC curve) it also gives, per fold and shift ``j``, the
true and false positives ``("tp", fold, j)`` and ``("fp", fold, j)`` with the intercept
lowered by ``s_j`` (``p >= t`` exactly when ``eta - logit(t) >= 0``). That is what one
``logistic_eval`` query per shift would release, cell for cell, guarded alike; each shifted
coefficient vector is held to the same bound as the fit's, so no shift reaches further
into the declared ranges than a coefficient vector of its own could.

Declared as one aggregation per fold (at its beta, grouped by fold and outcome class, and
with shifts by how many shifted thresholds lie above each row's decision value: a binary
search per row, not one comparison per shift), read for the fold's own rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from protocol.errors import QueryError
from stats.aggregates import (
    Aggregation,
    Arith,
    Compare,
    Const,
    CountIf,
    ExactSum,
    Expr,
    FloatSum,
    Func,
    IntervalKey,
    Ref,
    Result,
    Rows,
    Statistic,
    dot,
    group_sum,
    mul,
    variables_of,
)
from stats.design import Term
from stats.kinds.base import Computed, Guard, Kind, Magnitude, Scale
from stats.kinds.columns import ess, exact, fold_split
from stats.kinds.frame import cell_count
from stats.kinds.logistic import outcome_selection, softplus
from stats.kinds.params import (
    check_betas,
    folds_of,
    number_list,
    outcome_of,
    param,
    term_bound,
    terms_of,
)
from stats.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec

CELLS = ("tp", "fp", "tn", "fn")
#: the cells given at every shift (the ROC curve needs no more)
SHIFTED_CELLS = ("tp", "fp")
#: at most this many shifts in one query (an ROC curve takes 198 by default)
MAX_SHIFTS = 1000


def shifts_of(spec: QuerySpec, model: ModelView, terms: list[Term],
              betas: list[list[float]]) -> list[float]:
    """The intercept shifts asked for (none by default), each shifted coefficient vector
    checked as the fit's own are."""
    value = spec.parameters.get("shifts")
    if value is None:
        return []
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SHIFTS:
        raise QueryError(f"shifts must be a list of 1 to {MAX_SHIFTS} numbers")
    shifts = number_list(value, "shifts")
    if not terms or set(terms[0]) != {"const"}:
        raise QueryError("shifts lower the intercept: the first term must be {\"const\": 1}")
    shifted = [[beta[0] - s, *beta[1:]] for s in shifts for beta in betas]
    check_betas(spec, model, terms, shifted, [None] * len(shifted))
    return shifts


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    outcome_of(spec, model)
    folds = folds_of(spec)
    betas = check_betas(spec, model, terms, param(spec, "betas"), folds)
    shifts = shifts_of(spec, model, terms, betas)
    slots = []
    for f in folds:
        slots += [Slot((name, f), False, Disclosure.ROWS, (name, f)) for name in CELLS]
        slots.append(Slot(("loglik", f), True, Disclosure.WEIGHTED, ("loglik", f)))
        slots += [Slot((name, f, j), False, Disclosure.ROWS, (name, f, j))
                  for j in range(len(shifts)) for name in SHIFTED_CELLS]
    return slots


def decision(values: Sequence[Expr], terms: Sequence[Term], beta: Sequence[float]
             ) -> tuple[Expr, float]:
    """A row is called positive at ``beta`` (p >= 0.5, that is x . beta >= 0) where the
    expression is at least the threshold. With the intercept first, that is the other
    terms' sum against -beta[0]: a lowered intercept then moves the threshold alone
    (-(beta[0] - s)), and a query at the lowered coefficients compares the same sum with
    the same double, so the cells at each shift are those of one query per shift, row for
    row. Decided on x . beta, not on p, so that no rounding of exp or log moves a row."""
    if terms and set(terms[0]) == {"const"}:
        rest = dot(values[1:], beta[1:]) if len(values) > 1 else Const(0.0)
        return rest, -float(beta[0])
    return dot(values, beta), 0.0


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    rows = outcome_selection(spec, model)
    keys = rows.keys[:rows.offset]  # the fold, then the outcome's class
    folds = folds_of(spec)
    terms = terms_of(spec, model)
    betas = check_betas(spec, model, terms, param(spec, "betas"), folds)
    shifts = [float(s) for s in spec.parameters.get("shifts") or ()]
    aggregations = []
    grids = []
    # one aggregation per fold, at its beta, over every row grouped by fold (each fold reads
    # its own group): the rows called positive, the log-likelihood and its weights' moments;
    # with shifts, the rows are also grouped by how many shifted thresholds lie above their
    # decision value (the thresholds distinct, in decreasing order)
    for fold, beta in zip(folds, betas, strict=True):
        eta, loglik, rest = Ref("eta"), Ref("ll"), Ref("rest")
        value, threshold = decision(rows.values, terms, beta)
        derived = (*rows.columns, ("eta", dot(rows.values, beta)), ("sp", softplus(eta)),
                   ("ll", Arith("-", mul(Ref("y"), eta), Ref("sp"))), ("rest", value))
        measures = (Rows(), CountIf(Compare(">=", rest, Const(threshold))),
                    ExactSum(loglik, scale(("loglik", fold))),
                    FloatSum(Func("abs", loglik)), FloatSum(mul(loglik, loglik)))
        grid = sorted({-(beta[0] - shift) for shift in shifts}, reverse=True)
        grids.append(grid)
        # IntervalKey counts the grid points strictly below its value: -rest against the
        # negated thresholds counts the thresholds above rest
        above = (IntervalKey(Arith("-", Const(0.0), rest), tuple(-t for t in grid)),) \
            if grid else ()
        aggregations.append(Aggregation(measures, (*keys, *above), rows.where, derived))
    flag = len(keys) - 1

    def assemble(results: Sequence[Result]) -> Computed:
        out = Computed(rows=int(group_sum(results[0], 0)))
        for position, (fold, beta) in enumerate(zip(folds, betas, strict=True)):
            part = fold_split(results[position], None if fold is None else position)[0]

            def count(measure: int, outcome: int, part: Result = part) -> int:
                return int(group_sum(part, measure, lambda group: group[flag] == outcome))

            positives, negatives = count(0, 1), count(0, 0)
            tp, fp = count(1, 1), count(1, 0)
            cells = {"tp": tp, "fp": fp, "tn": negatives - fp, "fn": positives - tp}
            for name, n in cells.items():
                out.values[(name, fold)] = n
                out.guards[(name, fold)] = {Guard.ROWS: n}
            out.values[("loglik", fold)] = exact(int(group_sum(part, 2)),
                                                 scale(("loglik", fold)))
            out.guards[("loglik", fold)] = {
                Guard.ROWS: positives + negatives,
                Guard.WEIGHTS: ess(group_sum(part, 3), group_sum(part, 4))}
            index = {t: i for i, t in enumerate(grids[position])}
            for j, shift in enumerate(shifts):
                # called where none but the thresholds above this one lie above rest
                i = index[-(beta[0] - shift)]
                for name, outcome in (("tp", 1), ("fp", 0)):
                    n = int(group_sum(part, 0, lambda group, outcome=outcome, i=i:
                                      group[flag] == outcome and group[-1] <= i))
                    out.values[(name, fold, j)] = n
                    out.guards[(name, fold, j)] = {Guard.ROWS: n}
        return out

    variables = set().union(*(variables_of(a) for a in aggregations))
    return Statistic(tuple(aggregations), assemble, frozenset(variables))


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]
    eta = max(sum(abs(b) * t for b, t in zip(beta, bounds, strict=True))
              for beta in spec.parameters["betas"])
    return lambda key: eta + math.log(2) if key[0] == "loglik" else 1.0


KIND = Kind("logistic_eval", _layout, None, _row_bound, statistic=_statistic,
            size=lambda spec, model: len(folds_of(spec)) * (
                5 + len(SHIFTED_CELLS) * len(spec.parameters.get("shifts") or ())),
            row_cost=lambda spec, model: 8 * 4 * (len(terms_of(spec, model)) + 4))
