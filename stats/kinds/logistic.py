"""``logistic``: per fold, one Newton step's sums for a logistic model at the coefficients
the query carries: n, the number of positive outcomes, the log-likelihood, the gradient
X'(y - p) and the information matrix X'WX with W = p(1 - p). With folds, each fold's sums
cover the rows outside it (the training rows).

The researcher chooses beta, hence the weights: a beta under which p(1 - p) vanishes for
every row but one would make X'WX that row's covariates. So besides the cells and
non-zero terms guarded as for :mod:`stats.kinds.crossprod` (the outcome's two classes
included), each weighted sum needs an effective sample size (sum w)^2 / sum w^2 of at least
the threshold over the rows its terms are non-zero on; beta itself is bounded by the
data model's ranges (:func:`stats.kinds.params.check_betas`). With folds, the held-out
rows are guarded too, at the same beta: training sums over complements add up to theirs.

Declared as aggregations (one per fold, each at its fold's beta, grouped by fold, outcome
class and cells): a fold's training sums add up the other folds' groups, its held-out
guards read its own. log(1 + e^eta) is written max(eta, 0) + log(1 + e^-|eta|), so no row
overflows; the effective sample sizes are ratios of float sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from stats.aggregates import (
    Aggregation,
    All,
    Arith,
    Binary,
    Compare,
    Cond,
    Const,
    Defined,
    ExactSum,
    Expr,
    FlagKey,
    FloatSum,
    FoldKey,
    Func,
    IfElse,
    Measure,
    Ref,
    Result,
    Rows,
    Statistic,
    dot,
    group_sum,
    mul,
    nonzero,
    variables_of,
)
from stats.aggregates import Key as GroupKey
from stats.design import Term
from stats.kinds.base import Computed, DeclarationError, Guard, Kind, Magnitude, Scale
from stats.kinds.columns import (
    Cells,
    cells_of,
    complete,
    ess,
    exact,
    fold_split,
    pair_counts,
    refs,
    smallest_nonzero,
    term_columns,
)
from stats.kinds.frame import cell_count, smallest_positive
from stats.kinds.params import (
    check_betas,
    folds_of,
    outcome_of,
    param,
    term_bound,
    terms_of,
    triangle,
)
from stats.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


def betas_of(spec: QuerySpec, model: ModelView) -> list[list[float]]:
    terms = terms_of(spec, model)
    folds = folds_of(spec)
    raw = param(spec, "betas") if folds != [None] else [param(spec, "beta")]
    return check_betas(spec, model, terms, raw, folds)


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    outcome_of(spec, model)
    betas_of(spec, model)
    slots = []
    for f in folds_of(spec):
        family = ("fold", f)
        slots += [Slot(("n", f), False, Disclosure.ROWS, family),
                  Slot(("ysum", f), False, Disclosure.ROWS, family),
                  Slot(("loglik", f), True, Disclosure.WEIGHTED, family)]
        slots += [Slot(("grad", f, i), True, Disclosure.WEIGHTED, family)
                  for i in range(len(terms))]
        slots += [Slot(("hess", f, i, j), True, Disclosure.WEIGHTED, family)
                  for i, j in triangle(len(terms))]
    return slots


def softplus(eta: Expr, tail: Expr | None = None) -> Expr:
    """log(1 + e^eta) without overflow: max(eta, 0) + log(1 + e^-|eta|) (``tail``: a
    column holding e^-|eta| already)."""
    if tail is None:
        tail = Func("exp", Arith("-", Const(0.0), Func("abs", eta)))
    return Arith("+", IfElse(Compare(">", eta, Const(0.0)), eta, Const(0.0)),
                 Func("log", Arith("+", Const(1.0), tail)))


def fitted(values: Sequence[Expr], beta: Sequence[float]) -> tuple[tuple[str, Expr], ...]:
    """Derived columns of a logistic model at ``beta``: the linear predictor ``eta``,
    ``tail`` = e^-|eta|, ``sp`` = log(1 + e^eta) and the probability ``p`` = 1 / (1 +
    e^-eta), written with the tail (1 / (1 + tail) for eta >= 0, tail / (1 + tail)
    below): no overflow, two calls of the C library per row."""
    eta, tail = Ref("eta"), Ref("tail")
    denominator = Arith("+", Const(1.0), tail)
    return (("eta", dot(values, beta)),
            ("tail", Func("exp", Arith("-", Const(0.0), Func("abs", eta)))),
            ("sp", softplus(eta, tail)),
            ("p", IfElse(Compare(">=", eta, Const(0.0)), Arith("/", Const(1.0), denominator),
                         Arith("/", tail, denominator))))


@dataclass(frozen=True)
class Outcome:
    """A logistic model's rows as aggregations read them: the design's columns, the 0/1
    outcome ``y``, the complete cases, the cells, and the group keys (the fold if any, the
    outcome's class, then the cells' variables)."""

    columns: tuple[tuple[str, Expr], ...]
    values: list[Expr]
    where: All
    cells: Cells
    keys: tuple[GroupKey, ...]

    @property
    def offset(self) -> int:
        """Where the cells' keys start."""
        return len(self.keys) - len(self.cells.keys)

    def constant(self, group: tuple[int, ...]) -> np.ndarray:
        """The columns constant in a group: y, 1 - y, then the cells."""
        y = float(group[self.offset - 1])
        return np.concatenate([[y, 1.0 - y], self.cells.indicators(group, self.offset)])


def outcome_selection(spec: QuerySpec, model: ModelView) -> Outcome:
    terms = spec.parameters["terms"]
    variable, level = outcome_of(spec, model)
    columns = (*term_columns(terms), ("y", Binary(variable, level)))
    values = refs(columns[:-1])
    cells = cells_of(terms, model)
    keys: list[GroupKey] = [FlagKey(Compare("=", Ref("y"), Const(1.0))), *cells.keys]
    folds = folds_of(spec)
    if folds != [None]:
        keys.insert(0, FoldKey(len(folds), int(spec.parameters.get("fold_seed", 0))))
    where = All((*complete(terms, values), Defined(Ref("y"))))
    return Outcome(columns, values, where, cells, tuple(keys))


def fixed_support(term: Term) -> list[tuple[str, str]] | None:
    """The levels a term is non-zero on, where the cells decide it (the intercept: none;
    an indicator or a product of indicators: theirs); None where the row's values do."""
    if "const" in term:
        return []
    if "level" in term:
        return [(term["var"], str(term["level"]))]
    if "product" in term:
        parts = [fixed_support(f) for f in term["product"]]
        if all(p is not None for p in parts):
            return [level for p in parts for level in p or []]
    return None


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    rows = outcome_selection(spec, model)
    values = rows.values
    terms = spec.parameters["terms"]
    p = len(values)
    pairs = list(triangle(p))
    y, prob, loglik = Ref("y"), Ref("p"), Ref("ll")
    weight, residual = Ref("w"), Ref("r")
    folds = folds_of(spec)
    # columns whose non-zero rows the cells decide (constant in each group): their
    # effective sample sizes come from per-group sums over every row
    supports = [fixed_support(t) for t in terms]
    varying = [i for i in range(p) if supports[i] is None]
    keys = {k.name: (position, k.levels) for position, k in enumerate(rows.cells.keys)}

    def on(i: int, group: tuple[int, ...]) -> bool:
        """Whether column i (constant in the group) is non-zero there."""
        return all(group[rows.offset + keys[v][0]] == keys[v][1].index(level)
                   for v, level in supports[i] or [])

    # the gradient's and information's sums: a column the cells decide is 1.0 or 0.0 on
    # each row, so a sum with it is the same rows' sum without it (bit for bit: x * 1.0 is
    # x), read over the groups where it is 1: one measure serves several slots (of one
    # scale: logistic offers no DP, so all have the exact mode's)
    sums: dict[Expr, int] = {}
    #: per measure, the slots it serves (name and indices; the fold goes between)
    users: dict[int, list[tuple[str, tuple[int, ...]]]] = {}

    def summed(expr: Expr, name: str, *index: int) -> int:
        measure = sums.setdefault(expr, len(sums))
        users.setdefault(measure, []).append((name, index))
        return measure

    grad_of = {i: (summed(mul(values[i], residual), "grad", i), ()) if supports[i] is None
               else (summed(residual, "grad", i), (i,)) for i in range(p)}
    hess_of: dict[tuple[int, int], tuple[int, tuple[int, ...]]] = {}
    for i, j in pairs:
        free = [k for k in (i, j) if supports[k] is None]
        fixed = tuple(k for k in (i, j) if supports[k] is not None)
        product = mul(values[i], values[j], weight) if len(free) == 2 else (
            mul(values[free[0]], weight) if free else weight)
        hess_of[(i, j)] = (summed(product, "hess", i, j), fixed)

    def sum_scale(measure: int, fold: int | None) -> float:
        found = {scale((name, fold, *index)) for name, index in users[measure]}
        if len(found) != 1:
            raise DeclarationError("logistic shares a sum between slots of different scales")
        return found.pop()

    # measures, at the same index in every fold's aggregation: rows, the log-likelihood,
    # the sums above, then the float sums of the effective sample sizes (first and second
    # moment of each weight over the rows where the term is non-zero); the first
    # aggregation also counts the non-zero terms of every pair of columns (beta plays no
    # part in them)
    loglik_ess = 2 + len(sums)
    grad_ess = {i: loglik_ess + 2 + 2 * m for m, i in enumerate(varying)}
    all_grad = loglik_ess + 2 + 2 * len(varying)
    varying_pairs = [(i, j) for i, j in pairs if i in grad_ess and j in grad_ess]
    hess_ess = {pair: all_grad + 2 + 2 * m for m, pair in enumerate(varying_pairs)}
    all_hess = all_grad + 2 + 2 * len(varying_pairs)
    counted = all_hess + 2

    def moments(weight: Expr, where: Cond | None) -> list[Measure]:
        """sum |w| and sum w^2 over the rows where the condition holds (all without)."""
        first, second = Func("abs", weight), mul(weight, weight)
        if where is None:
            return [FloatSum(first), FloatSum(second)]
        return [FloatSum(IfElse(where, first, Const(0.0))),
                FloatSum(IfElse(where, second, Const(0.0)))]

    aggregations = []
    for position, (fold, beta) in enumerate(zip(folds, betas_of(spec, model), strict=True)):
        derived = (*rows.columns, *fitted(values, beta),
                   ("w", mul(prob, Arith("-", Const(1.0), prob))),
                   ("ll", Arith("-", mul(y, Ref("eta")), Ref("sp"))),
                   ("r", Arith("-", y, prob)))
        measures: list[Measure] = [Rows(), ExactSum(loglik, scale(("loglik", fold)))]
        measures += [ExactSum(expr, sum_scale(m, fold)) for expr, m in sums.items()]
        measures += moments(loglik, None)
        for i in varying:
            measures += moments(residual, nonzero(values[i]))
        measures += moments(residual, None)
        for i, j in varying_pairs:
            both = nonzero(values[i]) if i == j else All((nonzero(values[i]),
                                                          nonzero(values[j])))
            measures += moments(weight, both)
        measures += moments(weight, None)
        if position == 0:
            measures += pair_counts(values)
        aggregations.append(Aggregation(tuple(measures), rows.keys, rows.where, derived))

    def spread(part: Result, at: int, constant: Sequence[int] = ()) -> float:
        """The effective sample size of the moments at ``at``, over the groups where the
        constant columns are non-zero."""
        chosen = {g: v for g, v in part.items() if all(on(i, g) for i in constant)}
        return ess(group_sum(chosen, at), group_sum(chosen, at + 1))

    def guards(part: Result, counts: Result) -> dict[Guard, float]:
        """The guards of one Newton step's sums over these rows (``counts``: the same rows'
        groups in the first aggregation)."""
        n = int(group_sum(part, 0))
        gradient = [spread(part, grad_ess[i]) if i in grad_ess else spread(part, all_grad, [i])
                    for i in range(p)]
        hessian = []
        for i, j in pairs:
            if (i, j) in hess_ess:
                hessian.append(spread(part, hess_ess[(i, j)]))
            elif i in grad_ess or j in grad_ess:  # one varying: its own non-zero rows
                free, fixed = (i, j) if i in grad_ess else (j, i)
                hessian.append(spread(part, hess_ess[(free, free)], [fixed]))
            else:
                hessian.append(spread(part, all_hess, [i, j]))
        weights = min(smallest_positive(np.array(hessian)),
                      smallest_positive(np.array(gradient)),
                      spread(part, loglik_ess)) if n else 0.0
        nonzeros = smallest_nonzero(counts, 0, counted, p, rows.constant)
        return {Guard.ROWS: n, Guard.NONZERO: nonzeros, Guard.WEIGHTS: weights}

    def read(part: Result, fold: int | None, measure: int, fixed: tuple[int, ...]
             ) -> Fraction:
        """A sum's value: its measure over the groups where its fixed columns are 1."""
        chosen = {g: v for g, v in part.items() if all(on(i, g) for i in fixed)}
        return exact(int(group_sum(chosen, 2 + measure)), sum_scale(measure, fold))

    def assemble(results: Sequence[Result]) -> Computed:
        out = Computed()
        flag = rows.offset - 1
        for position, fold in enumerate(folds):
            held, train = fold_split(results[position], None if fold is None else position)
            if fold is None:
                train, held = held, {}
            n = int(group_sum(train, 0))
            out.values[("n", fold)] = n
            out.values[("ysum", fold)] = int(group_sum(train, 0, lambda g: g[flag] == 1))
            out.values[("loglik", fold)] = exact(int(group_sum(train, 1)),
                                                 scale(("loglik", fold)))
            for i in range(p):
                out.values[("grad", fold, i)] = read(train, fold, *grad_of[i])
            for i, j in pairs:
                out.values[("hess", fold, i, j)] = read(train, fold, *hess_of[(i, j)])
            first = results[0]
            if fold is None:
                found = guards(train, first)
            else:
                inside, outside = fold_split(first, position)
                found = guards(train, outside)
                if held:
                    found = merge(found, guards(held, inside))
            out.guards[("fold", fold)] = found
        out.rows = int(group_sum(results[0], 0))
        return out

    variables = set().union(*(variables_of(a) for a in aggregations))
    return Statistic(tuple(aggregations), assemble, frozenset(variables))


def merge(*parts: dict[Guard, float]) -> dict[Guard, float]:
    """Guards of a family that must hold on several row sets: the smallest positive."""
    return {g: smallest_positive(np.array([p[g] for p in parts])) for g in parts[0]}


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    bounds = [term_bound(t, magnitude) for t in spec.parameters["terms"]]
    betas = spec.parameters.get("betas") or [spec.parameters["beta"]]
    eta = max(sum(abs(b) * t for b, t in zip(beta, bounds, strict=True)) for beta in betas)

    def bound(key: Key) -> float:
        head = key[0]
        if head == "loglik":
            return eta + math.log(2)  # |y eta - log(1 + e^eta)| <= |eta| + log 2
        if head == "grad":
            return bounds[int(key[2])]  # |y - p| <= 1
        if head == "hess":
            return bounds[int(key[2])] * bounds[int(key[3])] / 4  # p(1 - p) <= 1/4
        return 1.0

    return bound


def _size(spec: QuerySpec, model: ModelView) -> int:
    p = len(terms_of(spec, model))
    return len(folds_of(spec)) * (3 + p + p * (p + 1) // 2)


def _row_cost(spec: QuerySpec, model: ModelView) -> int:
    terms = terms_of(spec, model)
    return 8 * 4 * (len(terms) + cell_count(terms, model) + 4)


KIND = Kind("logistic", _layout, None, _row_bound, size=_size, row_cost=_row_cost,
            statistic=_statistic)
