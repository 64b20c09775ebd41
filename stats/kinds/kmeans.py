"""``kmeans``: one Lloyd step from the centres the query carries: per centre, how many
complete rows are nearest to it and their sums; and the inertia (sum of squared distances
to the nearest centre).

Clusters partition the complete rows, each a family; the inertia is a family of its own,
over every complete row. Centres must lie in the data model's declared ranges; a centre
that attracts one patient leaves a cluster below the threshold, and a centre every other
row sits on leaves one non-zero distance: both are withheld. The inertia also carries the
guards of every cluster: moving one centre coordinate c by delta changes it by
n delta^2 - 2 delta sum(x - c) over that cluster, so two inertias give that cluster's sum,
which must be as protected as the sum itself. Declared as aggregations: every backend
computes each row's distances in the statement, so memory does not grow with rows x
centres x variables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from protocol.errors import QueryError
from stats.aggregates import (
    Aggregation,
    All,
    ArgMinKey,
    Arith,
    Const,
    CountIf,
    ExactSum,
    Measure,
    Present,
    Ref,
    Result,
    Rows,
    Smallest,
    Statistic,
    Var,
    add,
    mul,
    nonzero,
)
from stats.kinds.base import Computed, Guard, Kind, Magnitude, Scale
from stats.kinds.columns import exact
from stats.kinds.frame import smallest_positive
from stats.kinds.params import (
    MAX_CENTERS,
    check_in_box,
    check_magnitudes,
    check_numeric,
    number_list,
    param,
)
from stats.plans import Disclosure, Key, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


def centers_of(spec: QuerySpec, model: ModelView) -> list[list[float]]:
    check_numeric(model, spec.variables, "kmeans")
    centers = param(spec, "centers")
    if not isinstance(centers, list) or not 0 < len(centers) <= MAX_CENTERS:
        raise QueryError(f"centers must be a list of 1 to {MAX_CENTERS} points")
    out = [number_list(c, "a center", len(spec.variables)) for c in centers]
    for point in out:
        check_magnitudes(point, "a center")
        check_in_box(model, spec.variables, point, "a center")
    return out


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    centers = centers_of(spec, model)
    slots = [Slot(("inertia",), True, Disclosure.SUM, ("inertia",))]
    for c in range(len(centers)):
        family = ("cluster", c)
        slots.append(Slot(("n", c), False, Disclosure.ROWS, family))
        slots += [Slot(("sum", c, j), True, Disclosure.SUM, family)
                  for j in range(len(spec.variables))]
    return slots


def _statistic(spec: QuerySpec, model: ModelView, scale: Scale) -> Statistic:
    """The complete rows grouped by their nearest centre (the first on ties, as numpy's
    argmin), each centre's squared distance a derived column and the nearest one's too:
    per centre the rows, the sums and the non-zero values of each variable, and the
    inertia's exact sum with its non-zero terms."""
    centers = spec.parameters["centers"]
    columns = [Var(v) for v in spec.variables]
    p = len(columns)
    distances = tuple(
        (f"q{c}", add(*(mul(Arith("-", x, Const(float(m))), Arith("-", x, Const(float(m))))
                        for x, m in zip(columns, center, strict=True))))
        for c, center in enumerate(centers))
    nearest = ("m", Smallest(tuple(Ref(n) for n, _ in distances)))
    measures: list[Measure] = [Rows()]
    # one measure serves every centre: a sum's scale (its row bound's) is the variable's
    scales = [scale(("sum", 0, j)) for j in range(p)]
    if any(scale(("sum", c, j)) != scales[j] for c in range(len(centers)) for j in range(p)):
        raise ValueError("kmeans sums are scaled per variable, never per centre")
    measures += [ExactSum(x, scales[j]) for j, x in enumerate(columns)]
    measures += [CountIf(nonzero(x)) for x in columns]
    measures += [ExactSum(Ref("m"), scale(("inertia",))), CountIf(nonzero(Ref("m")))]
    aggregation = Aggregation(tuple(measures), (ArgMinKey(tuple(Ref(n) for n, _ in distances)),),
                              All(tuple(Present(v) for v in spec.variables)),
                              (*distances, nearest))

    def assemble(results: Sequence[Result]) -> Computed:
        groups = results[0]
        out = Computed()
        inertia, sizes, nonzeros = 0, [], [0]
        for c in range(len(centers)):
            found = groups.get((c,), (0,) * len(measures))
            n = int(found[0])
            out.rows += n
            out.values[("n", c)] = n
            for j in range(p):
                out.values[("sum", c, j)] = exact(int(found[1 + j]), scales[j])
            nonzero_counts = [int(v) for v in found[1 + p:1 + 2 * p]]
            out.guards[("cluster", c)] = {
                Guard.ROWS: n, Guard.NONZERO: smallest_positive(np.array(nonzero_counts))}
            inertia += int(found[1 + 2 * p])
            nonzeros[0] += int(found[2 + 2 * p])
            sizes.append(n)
            nonzeros.extend(nonzero_counts)
        out.values[("inertia",)] = exact(inertia, scale(("inertia",)))
        out.guards[("inertia",)] = {Guard.ROWS: smallest_positive(np.array(sizes)),
                                    Guard.NONZERO: smallest_positive(np.array(nonzeros))}
        return out

    return Statistic((aggregation,), assemble, frozenset(spec.variables))


def _row_bound(spec: QuerySpec, model: ModelView, magnitude: Magnitude
               ) -> Callable[[Key], float]:
    centers = np.abs(np.asarray(spec.parameters["centers"], dtype=np.float64)).max(axis=0)
    reach = [magnitude(v) for v in spec.variables]
    inertia = float(sum((m + c) ** 2 for m, c in zip(reach, centers, strict=True)))

    def bound(key: Key) -> float:
        if key[0] == "inertia":
            return inertia
        if key[0] == "sum":
            return reach[int(key[2])]
        return 1.0

    return bound


KIND = Kind("kmeans", _layout, None, _row_bound, statistic=_statistic,
            size=lambda spec, model: 1 + len(centers_of(spec, model)) * (1 + len(spec.variables)),
            row_cost=lambda spec, model: 8 * (2 * len(spec.variables) + 4))
