"""k-means clustering by Lloyd's iterations over secure sums.

Each iteration is one ``kmeans`` round: the client sends the current centers, every node
assigns its complete rows to the nearest center and returns, per cluster, the row count
and the sum of each variable (and the total within-cluster sum of squares); the new
centers are the exact ratios ``sum / count``. No row ever leaves a node.

**Initial centers come from public information only.** Exareme2 draws them uniformly
between each variable's exact minimum and maximum, which are single patients' values; other
implementations pick data rows (random rows, k-means++), which publishes patients' rows as
centers. Here one ``moments`` round gives each variable's mean and standard deviation
(secure sums; per variable, over the rows where it is present), and ``k`` points are drawn
uniformly in the box ``mean +/- 2 sd`` from ``numpy.random.default_rng(seed)``: the same
seed and the same totals give the same centers everywhere. ``init=`` accepts explicit
starting centers instead (then no moments round is run).

**Empty clusters** are re-seeded deterministically: an empty cluster's center is moved next
to the center of the most populous cluster, offset by a small seeded random step (a tenth
of the root mean squared distance to the centers, from the round's total inertia), so that
it takes over part of that cluster; an iteration that re-seeded never counts as converged.
A cluster still empty after the last iteration is dropped from the result (``dropped``).

**Stopping** follows Exareme2: stop after ``max_iter`` iterations or once the centers move
by at most ``tol`` (Frobenius norm of the change, not scaled by the data's variance as
scikit-learn's ``tol`` is). With ``tol=0`` the iterations stop when the assignment no longer
changes, which is where ``sklearn.cluster.KMeans(init=centers, n_init=1, tol=0)`` stops too:
both then give the same centers, and ``inertia`` / ``sizes`` (from one last round with the
final centers) equal scikit-learn's ``inertia_`` and label counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import check_privacy
from fedtally.methods.registry import catalog_method, handles
from fedtally.results import moments
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.kinds import MAX_CENTERS

INIT_HALF_WIDTH = 2.0  # initial centers lie in mean +/- 2 sd

SPLIT_STEP = 0.1  # a re-seeded center sits this fraction of the rms spread from its donor


@dataclass(frozen=True)
class KMeansResult:
    """Fitted k-means clusters.

    ``centers``: DataFrame (one row per cluster, one column per variable); ``sizes``: rows
    nearest each center (Series); ``inertia``: sum of squared distances of the rows to their
    nearest center; ``n_iter``: Lloyd iterations run; ``converged``: whether they stopped on
    ``tol`` before ``max_iter``; ``init_centers``: where they started; ``reseeded``: how
    many times an empty cluster was re-seeded; ``dropped``: clusters still empty at the end
    (left out of ``centers``); ``nobs``: complete rows clustered."""

    centers: pd.DataFrame
    sizes: pd.Series
    inertia: float
    n_iter: int
    converged: bool
    init_centers: pd.DataFrame
    reseeded: int
    dropped: int
    nobs: int
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    federation: dict[str, int] = field(default_factory=dict)

    def predict(self, data: pd.DataFrame) -> pd.Series:
        """The nearest center's label for each local row (-1 where a variable is missing)."""
        points = data[list(self.centers.columns)].astype(float).to_numpy()
        centers = self.centers.to_numpy()
        distances = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
        complete = ~np.isnan(points).any(axis=1)
        labels = np.full(len(points), -1, dtype=np.int64)
        if complete.any():
            labels[complete] = np.asarray(self.centers.index)[distances[complete].argmin(axis=1)]
        return pd.Series(labels, index=data.index, name="cluster")


@dataclass(frozen=True)
class _Round:
    sizes: np.ndarray
    sums: list[list[Fraction]]
    inertia: float
    federation: dict[str, int]

    @property
    def n(self) -> int:
        return int(self.sizes.sum())


def _round(fed: Analyses, variables: tuple[str, ...], centers: np.ndarray,
           scope: dict[str, Any]) -> _Round:
    stat = fed.statistic("kmeans", variables=variables, kind="kmeans",
                         parameters={"centers": centers.tolist()}, **scope)
    k, d = centers.shape
    sizes = np.array([stat.count(("n", c)) for c in range(k)], dtype=np.int64)
    sums = [[stat.exact(("sum", c, j)) for j in range(d)] for c in range(k)]
    return _Round(sizes, sums, stat.real(("inertia",)), stat.federation)


def _initial_centers(fed: Analyses, variables: tuple[str, ...], k: int, seed: int,
                     scope: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Seeded uniform points in mean +/- 2 sd of each variable (one moments round), and the
    standard deviations."""
    stat = fed.statistic("kmeans", variables=variables, kind="moments", **scope)
    means, stds = [], []
    for v in variables:
        n = sum(stat.count(("count", d, None, v)) for d in stat.spec.datasets)
        if n < k:
            raise DegenerateInput(f"k = {k} clusters need at least {k} rows; {v!r} is present "
                                  f"in {n} (after the filter and the nodes' minimums)")
        s = sum((stat.exact(("sum", d, None, v)) for d in stat.spec.datasets), Fraction(0))
        ss = sum((stat.exact(("sumsq", d, None, v)) for d in stat.spec.datasets), Fraction(0))
        mean, std = moments(n, s, ss)
        means.append(mean)
        stds.append(0.0 if math.isnan(std) else std)
    rng = np.random.default_rng(seed)
    unit = rng.uniform(-INIT_HALF_WIDTH, INIT_HALF_WIDTH, size=(k, len(variables)))
    return np.asarray(means) + unit * np.asarray(stds), np.asarray(stds)


def _update(current: np.ndarray, result: _Round, rng: np.random.Generator
            ) -> tuple[np.ndarray, int]:
    """New centers (exact means of the clusters); empty clusters re-seeded next to the
    most populous one. Returns the centers and how many were re-seeded."""
    new = current.copy()
    sizes = result.sizes.astype(float)
    for c, size in enumerate(result.sizes):
        if size:
            new[c] = [float(s / int(size)) for s in result.sums[c]]
    empty = [c for c in range(len(new)) if result.sizes[c] == 0]
    spread = math.sqrt(max(result.inertia, 0.0) / max(result.n * new.shape[1], 1))
    for c in empty:
        donor = int(np.argmax(sizes))
        direction = rng.standard_normal(new.shape[1])
        direction /= np.linalg.norm(direction) or 1.0
        step = SPLIT_STEP * (spread if spread > 0 else 1.0)
        new[c] = new[donor] + step * direction
        sizes[c] = sizes[donor] = sizes[donor] / 2  # a second empty cluster splits another
    return new, len(empty)


def _into_box(centers: np.ndarray, view: PlanModel, variables: tuple[str, ...]) -> np.ndarray:
    """Centres moved into the data model's declared ranges, where nodes require them (a
    centre outside them could only serve to single out an extreme row)."""
    out = centers.copy()
    for j, variable in enumerate(variables):
        pair = view.bounds(variable)
        if pair is not None:
            out[:, j] = np.clip(out[:, j], pair[0], pair[1])
    return out


def _check_init(init: Any, k: int, variables: tuple[str, ...]) -> np.ndarray:
    if isinstance(init, pd.DataFrame):
        init = init[list(variables)]
    centers = np.asarray(init, dtype=np.float64)
    if centers.shape != (k, len(variables)) or not np.all(np.isfinite(centers)):
        raise QueryError(f"init must be {k} finite centers of {len(variables)} coordinates")
    return centers


@catalog_method(kinds=("kmeans", "moments"))
def kmeans(fed: Analyses, variables: Sequence[str], k: int, max_iter: int = 100,
           tol: float = 1e-4, seed: int = 0, *, init: Any = None,
           datasets: Sequence[str] | None = None, filters: FilterLike = None,
           data_model: str | None = None, privacy: Any = None) -> KMeansResult:
    """k-means (Lloyd) of the complete rows of numeric ``variables`` into ``k`` clusters.

    Initial centers are seeded points around each variable's mean (see the module notes:
    no row is ever used as a center), or ``init`` (k x variables). Stops after ``max_iter``
    iterations or when the centers move by at most ``tol`` (Frobenius norm, unscaled, as
    Exareme2's ``tol``). ``k`` larger than the number of complete rows, or no rows at all,
    raise :class:`DegenerateInput`.
    """
    mode = check_privacy(privacy, "kmeans")
    if isinstance(variables, str):
        variables = [variables]
    names = tuple(variables)
    view = PlanModel(Analyses.model(fed, data_model))  # SimulatedFederation shadows .model
    if not names or len(set(names)) != len(names):
        raise QueryError("kmeans needs distinct variables")
    for v in names:
        if not view.has_variable(v) or not view.is_numeric(v):
            raise QueryError(f"kmeans needs known numeric variables; {v!r} is not one")
    if not _integer(k) or not 1 <= k <= MAX_CENTERS:
        raise QueryError(f"k must be an integer from 1 to {MAX_CENTERS}")
    if not _integer(max_iter) or max_iter < 1:
        raise QueryError("max_iter must be a positive integer")
    if not (isinstance(tol, int | float) and tol >= 0 and math.isfinite(tol)):
        raise QueryError("tol must be a finite number >= 0")
    if not _integer(seed) or seed < 0:
        raise QueryError("seed must be a non-negative integer")
    k, max_iter, seed = int(k), int(max_iter), int(seed)
    scope = {"datasets": datasets, "filters": filters, "data_model": data_model}
    if init is None:
        centers = _into_box(_initial_centers(fed, names, k, seed, scope)[0], view, names)
    else:
        centers = _check_init(init, k, names)
    start = centers.copy()
    rng = np.random.default_rng([seed, 1])  # re-seeding draws, apart from the init's
    reseeded, converged, n_iter, shift = 0, False, 0, math.inf
    last: _Round | None = None
    for n_iter in range(1, max_iter + 1):
        last = _round(fed, names, centers, scope)
        if n_iter == 1:
            _check_rows(last.n, k, last.federation)
        new, empty = _update(centers, last, rng)
        new = _into_box(new, view, names)
        reseeded += empty
        shift = float(np.linalg.norm(new - centers))
        centers = new
        if not empty and shift <= tol:
            converged = True
            break
    assert last is not None
    # the totals of the last round belong to the centers before its update; unless nothing
    # moved, one more round gives inertia and sizes for the final centers
    final = last if converged and shift == 0 else _round(fed, names, centers, scope)
    keep = final.sizes > 0
    labels = np.arange(k)[keep]
    return KMeansResult(
        centers=pd.DataFrame(centers[keep], index=pd.Index(labels, name="cluster"),
                             columns=list(names)),
        sizes=pd.Series(final.sizes[keep], index=pd.Index(labels, name="cluster"),
                        name="size"),
        inertia=final.inertia, n_iter=n_iter, converged=converged,
        init_centers=pd.DataFrame(start, index=pd.Index(np.arange(k), name="cluster"),
                                  columns=list(names)),
        reseeded=reseeded, dropped=int((~keep).sum()), nobs=final.n, privacy=mode,
        federation=final.federation)


def _integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_rows(n: int, k: int, federation: dict[str, int]) -> None:
    if n == 0:
        raise DegenerateInput(
            "kmeans: no complete rows (the filter matched none, or every node's cohort was "
            f"below its minimum: {federation['nodes_contributing']} of "
            f"{federation['nodes_asked']} nodes contributed)")
    if k > n:
        raise DegenerateInput(f"k = {k} clusters but only {n} complete rows")


@handles("kmeans", method="kmeans")
def _kmeans(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Exareme2's defaults: k = 4, maxiter = 1, tol = 0.01. Clusters left empty are
    dropped (Exareme2 reports them at the origin)."""
    result = kmeans(fed, req.y, exareme2.integer(req, "k", 4),
                    max_iter=exareme2.integer(req, "maxiter", 1),
                    tol=exareme2.real(req, "tol", 0.01), seed=0, **exareme2.query_scope(req))
    return {"title": "K-Means Centers",
            "centers": [exareme2.numbers(row) for row in result.centers.to_numpy()]}
