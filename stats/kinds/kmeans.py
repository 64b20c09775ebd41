"""``kmeans``: one Lloyd step from the centres the query carries: per centre, how many
complete rows are nearest to it and their sums; and the inertia (sum of squared distances
to the nearest centre).

Clusters partition the complete rows, each a family; the inertia is a family of its own,
over every complete row. Centres must lie in the data model's declared ranges; a centre
that attracts one patient leaves a cluster below the threshold, and a centre every other
row sits on leaves one non-zero distance: both are withheld. The inertia also carries the
guards of every cluster: moving one centre coordinate c by delta changes it by
n delta^2 - 2 delta sum(x - c) over that cluster, so two inertias give that cluster's sum,
which must be as protected as the sum itself. Distances are computed in
chunks of rows, so memory does not grow with rows x centres x variables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from protocol.errors import QueryError
from stats.kinds.base import Computed, Guard, Kind, Magnitude
from stats.kinds.frame import CHUNK_ROWS, numeric, present, smallest_positive
from stats.kinds.params import MAX_CENTERS, check_in_box, check_numeric, number_list, param
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


def nearest(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest centre and squared distance to it, a chunk of rows at a time."""
    labels = np.zeros(len(points), dtype=np.int64)
    distances = np.zeros(len(points))
    for start in range(0, len(points), CHUNK_ROWS):
        chunk = points[start:start + CHUNK_ROWS]
        squared = ((chunk[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        labels[start:start + CHUNK_ROWS] = squared.argmin(axis=1)
        distances[start:start + CHUNK_ROWS] = squared.min(axis=1)
    return labels, distances


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    mask = present(rows, list(spec.variables))
    complete = rows[mask]
    points = np.column_stack([numeric(complete, v) for v in spec.variables])
    centers = np.asarray(spec.parameters["centers"], dtype=np.float64)
    labels, distances = nearest(points, centers)
    out = Computed(rows=len(points))
    out.values[("inertia",)] = float(distances.sum())
    sizes, nonzeros = [], [np.count_nonzero(distances)]
    for c in range(len(centers)):
        members = points[labels == c]
        out.values[("n", c)] = int(members.shape[0])
        for j, s in enumerate(members.sum(axis=0)):
            out.values[("sum", c, j)] = float(s)
        nonzero = (members != 0).sum(axis=0)
        out.guards[("cluster", c)] = {Guard.ROWS: int(members.shape[0]),
                                      Guard.NONZERO: smallest_positive(nonzero)}
        sizes.append(members.shape[0])
        nonzeros.extend(nonzero)
    out.guards[("inertia",)] = {Guard.ROWS: smallest_positive(np.array(sizes)),
                                Guard.NONZERO: smallest_positive(np.array(nonzeros))}
    return out


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


KIND = Kind("kmeans", _layout, _compute, _row_bound,
            size=lambda spec, model: 1 + len(centers_of(spec, model)) * (1 + len(spec.variables)),
            row_cost=lambda spec, model: 8 * (2 * len(spec.variables) + 4))
