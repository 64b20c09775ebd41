"""``crossprod``: per fold, the number of complete cases and the cross-products X'X of a
design (its last column is the outcome where a model needs one).

One family per fold. X'X holds, besides sums over all rows, sums over each level of a
categorical term and over products of levels; the intercept row minus the other levels'
rows is the reference level. So the guard counts, for every pair of columns and every
cell of every categorical term (reference levels included), the rows where the product is
non-zero: a level held by one patient, or a numeric column non-zero for one patient only,
withholds the matrix.

With ``"centring": {variable: [c, h]}`` (public values, :mod:`stats.kinds.centring`) every
plain term of a centred variable enters the matrix as ``(x - c) / h``; the design must hold
the intercept, through which the client recovers the plain X'X exactly. The guards count
the plain design's non-zero terms.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from protocol.errors import QueryError
from stats.aggregates import (
    Aggregation,
    All,
    ExactSum,
    Expr,
    FloatSum,
    Func,
    Measure,
    Ref,
    Result,
    Rows,
    Statistic,
    group_sum,
    split,
    variables_of,
)
from stats.aggregates import Key as GroupKey
from stats.design import Term, design_variables, term_name
from stats.kinds import centring
from stats.kinds.base import Computed, DPProfile, Guard, Kind, Magnitude, Scale
from stats.kinds.columns import (
    Cells,
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
from stats.kinds.params import folds_of, term_bound, terms_of, triangle
from stats.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


def _plain(terms: Sequence[Term], model: ModelView) -> list[str]:
    """The numeric variables some term holds as they are (no transform, no product)."""
    return list(dict.fromkeys(t["var"] for t in terms
                              if set(t) == {"var"} and model.is_numeric(t["var"])))


def _intercept(terms: Sequence[Term]) -> int | None:
    return next((i for i, t in enumerate(terms) if "const" in t), None)


def _centring(spec: QuerySpec, model: ModelView) -> centring.Centring:
    terms = terms_of(spec, model)
    shifts = centring.centring_of(spec, model, _plain(terms, model))
    if shifts and _intercept(terms) is None:
        raise QueryError("centring needs the intercept term {\"const\": 1} in the design")
    return shifts


def _centred_columns(terms: Sequence[Term], shifts: centring.Centring
                     ) -> dict[int, tuple[float, float]]:
    return {i: shifts[t["var"]] for i, t in enumerate(terms)
            if set(t) == {"var"} and t["var"] in shifts}


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    terms = terms_of(spec, model)
    cell_count(terms, model)
    _centring(spec, model)
    slots = []
    for f in folds_of(spec):
        family = ("fold", f)
        slots.append(Slot(("n", f), False, Disclosure.ROWS, family))
        slots += [Slot(("xx", f, i, j), True, Disclosure.SUM, family)
                  for i, j in triangle(len(terms))]
    return slots


def _size(spec: QuerySpec, model: ModelView) -> int:
    p = len(terms_of(spec, model))
    return len(folds_of(spec)) * (1 + p * (p + 1) // 2)


def _selection(spec: QuerySpec, model: ModelView
               ) -> tuple[tuple[tuple[str, Expr], ...], list[Expr], All, Cells, list[GroupKey]]:
    """The design's columns (derived per row), the complete-case condition, the cells of its
    categorical terms, and the group keys: the fold (if any), then the cells' variables."""
    terms = spec.parameters["terms"]
    columns = term_columns(terms)
    values = refs(columns)
    cells, keys = group_keys(spec, terms, model)
    return columns, values, All(tuple(complete(terms, values))), cells, keys


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    columns, values, where, cells, keys = _selection(spec, model)
    # centred columns are derived from the plain ones (z_i = (t_i - c) / h) and summed in
    # their place; the guards count the plain design's non-zero terms
    shifted = _centred_columns(spec.parameters["terms"], _centring(spec, model))
    centred = tuple((f"z{i}", centring.centred_expr(values[i], c, h))
                    for i, (c, h) in shifted.items())
    summed = [Ref(f"z{i}") if i in shifted else v for i, v in enumerate(values)]
    folds = folds_of(spec)
    p = len(columns)
    pairs = list(triangle(p))
    measures: list[Measure] = [Rows()]
    measures += [ExactSum(product(summed[i], summed[j]), scale(("xx", folds[0], i, j)))
                 for i, j in pairs]
    measures += pair_counts(values)
    offset = 0 if folds == [None] else 1

    def assemble(results: Sequence[Result]) -> Computed:
        by_fold = split(results[0], 0) if offset else {0: results[0]}
        out = Computed()
        for position, fold in enumerate(folds):
            part = by_fold.get(position, {})
            n = int(group_sum(part, 0))
            out.rows += n
            out.values[("n", fold)] = n
            for m, (i, j) in enumerate(pairs):
                key = ("xx", fold, i, j)
                out.values[key] = exact(int(group_sum(part, 1 + m)), scale(key))
            smallest = smallest_nonzero(part, 0, 1 + len(pairs), p,
                                        lambda group: cells.indicators(group, offset))
            out.guards[("fold", fold)] = {Guard.ROWS: n, Guard.NONZERO: smallest}
        return out

    aggregation = Aggregation(tuple(measures), tuple(keys), where, columns + centred)
    return Statistic((aggregation,), assemble, frozenset(variables_of(aggregation)))


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    terms = spec.parameters["terms"]
    shifts = _centring(spec, model)
    reach = {v: centring.row_reach(spec, model, v, shifts) for v in shifts}
    columns = _centred_columns(terms, shifts)
    bounds = [reach[t["var"]] if i in columns else term_bound(t, magnitude)
              for i, t in enumerate(terms)]

    def bound(key: Key) -> float:
        if key[0] == "xx":
            return bounds[int(key[2])] * bounds[int(key[3])]
        return 1.0

    return bound


def _summed(spec: QuerySpec, model: ModelView) -> list[str]:
    return [v for v in design_variables(spec.parameters["terms"]) if model.is_numeric(v)]


def _row_cost(spec: QuerySpec, model: ModelView) -> int:
    terms = terms_of(spec, model)
    return 8 * 3 * (len(terms) + cell_count(terms, model))


def _dp_check(spec: QuerySpec, model: ModelView) -> None:
    if folds_of(spec) != [None]:
        raise QueryError("cross-validation does not offer differential privacy yet")
    if any("transform" in t or any("transform" in f for f in t.get("product", []))
           for t in spec.parameters["terms"]):
        raise QueryError("transformed terms have no declared bounds; DP needs raw variables")


def _rows_touch(spec: QuerySpec, model: ModelView) -> int:
    p = len(spec.parameters["terms"])
    return 1 + p * (p + 1) // 2


def _abs_statistic(spec: QuerySpec, model: ModelView) -> Statistic:
    """|X|'|X| over the complete cases of the given rows: bounds every fold's X'X. Entries
    of centred columns are left out: their public row bounds must do, so that no choice of
    scale makes a refusal depend on the rows."""
    columns, values, where, _, _ = _selection(spec, model)
    shifted = _centred_columns(spec.parameters["terms"], _centring(spec, model))
    pairs = [(i, j) for i, j in triangle(len(columns))
             if i not in shifted and j not in shifted]
    absolute = [Func("abs", v) for v in values]
    measures = tuple(FloatSum(product(absolute[i], absolute[j])) for i, j in pairs)

    def assemble(results: Sequence[Result]) -> dict[Key, float]:
        sums = results[0].get((), (0.0,) * len(measures))
        return {("xx", f, i, j): float(sums[m]) for f in folds_of(spec)
                for m, (i, j) in enumerate(pairs)}

    aggregation = Aggregation(measures, (), where, columns)
    return Statistic((aggregation,), assemble, frozenset(variables_of(aggregation)))


def _uncentre(spec: QuerySpec, model: ModelView) -> centring.Uncentre:
    terms = spec.parameters["terms"]
    shifts = _centring(spec, model)
    return centring.crossprod_uncentre(terms, shifts, _intercept(terms) or 0)


def _describe(spec: QuerySpec, model: ModelView, key: Key) -> str:
    if key[0] != "xx":
        return "the count"
    terms = spec.parameters["terms"]
    first, second = term_name(terms[int(key[2])]), term_name(terms[int(key[3])])
    return (f"the sum of squares of {first!r}" if first == second
            else f"the cross-product of {first!r} and {second!r}")


KIND = Kind("crossprod", _layout, None, _row_bound, size=_size, row_cost=_row_cost,
            statistic=_statistic, abs_statistic=_abs_statistic,
            uncentre=_uncentre, describe=_describe,
            summed=_summed, dp=DPProfile(rows_touch=_rows_touch, check=_dp_check))
