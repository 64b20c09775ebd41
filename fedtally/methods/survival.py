"""Counts of events and censorings on a declared time grid: what Kaplan-Meier curves and the
log-rank test share.

Nodes never release an individual's time. Each node counts, per group, the events and
the censorings that fall in each interval of a public grid ``t_0 < t_1 < ... < t_m``
(interval ``j`` is ``(t_{j-1}, t_j]``, interval 0 is everything up to ``t_0``, and one more
interval holds the times past ``t_m``); only the secure sums of those counts leave the
nodes. Everything below is computed from them:

* at risk at ``t_j``: everyone whose time is past ``t_{j-1}``, i.e. the cohort minus the
  events and censorings of the earlier intervals (a censoring tied with an event counts as
  at risk, the usual convention and lifelines');
* events at ``t_j``: the events in ``(t_{j-1}, t_j]``.

**What the grid means.** Where the grid resolves every time (integer durations and the
default whole-unit grid) each interval holds a single possible time, and the curve is the
ordinary Kaplan-Meier estimate of the pooled rows, equal to lifelines' at every grid time.
A coarser grid merges the times inside each interval: the estimate becomes the grouped
(life-table-like) Kaplan-Meier at the grid points, a step of ``1 - d_j / n_j`` per
interval, where ``n_j`` counts everyone still in follow-up at the start of the interval
(those censored inside the interval count as at risk for all of it; there is no actuarial
half-interval correction). It then differs from the fine estimate by at most the effect of
the censorings inside each interval. Coarser grids are a privacy lever: fewer, larger
counts, and no event time is known more precisely than its interval. Times past the last
grid point count as at risk up to it and are never events (censored at the horizon).

Every (group, interval) count of events, and of censorings, is a cell: a node releases it
only if it is 0 or at least its ``small_cell_threshold`` (``federation
["cells_below_threshold"]`` counts the node-level cells that read 0, empty ones included);
a node whose whole cohort is smaller than its ``min_row_count`` contributes nothing
(``federation["nodes_contributing"]``). A fine grid on a small cohort therefore loses the
intervals with few events: that is the grid's privacy cost, and why coarser grids are the
lever. The curve of all groups is the client's sum of the groups' cells, never a node's.

**Differential privacy** (``kaplan_meier(..., privacy=fedtally.DP(...))``): every interval's
event and censoring count is released with independent noise (no suppression); one row
changes one count per group it belongs to, so no clipping bounds are needed. Everything
else is post-processing of the noisy counts: see :func:`kaplan_meier`. A coarser grid means
fewer noisy counts per at-risk number, hence less noise in the curve. The log-rank test is
exact-only for now.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedtally.analyses import Analyses, FilterLike, filter_tree
from fedtally.coverage import cells_read_zero
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats import filters as filter_trees
from stats.datamodel import DataModel, PlanModel
from stats.filters import Filter
from stats.kinds import MAX_GRID
from stats.plans import check_variable
from stats.suggest import did_you_mean

TOO_NOISY = ("the noisy count is too small for this privacy level: ask with a larger epsilon "
             "or a coarser query")


def time_grid(model: DataModel, duration: str, times: Any = None,
              horizon: float | None = None) -> list[float]:
    """The public time grid: ``times`` (increasing numbers) if given; else, for an ``int``
    duration, every whole unit from the model's min (or 0) to its max, or to
    ``ceil(horizon)`` when ``horizon`` is given. A ``real`` duration needs ``times``."""
    check_variable(PlanModel(model), duration, numeric=True)
    if times is not None:
        if horizon is not None:
            raise QueryError("give times= or horizon=, not both")
        return _explicit_grid(times)
    variable = model.variable(duration)
    if variable.sql_type != "int":
        raise QueryError(f"{duration!r} is a real-valued duration: give the time grid "
                         "(times=[...]), it has no whole-unit resolution")
    start = math.floor(variable.min) if variable.min is not None else 0
    if horizon is not None:
        if isinstance(horizon, bool) or not isinstance(horizon, int | float) \
                or not math.isfinite(horizon):
            raise QueryError("horizon must be a finite number")
        stop = math.ceil(horizon)
    elif variable.max is None:
        raise QueryError(f"the data model gives no maximum for {duration!r}: pass the time "
                         "grid (times=[...]) or horizon= (the last time of interest)")
    else:
        stop = math.floor(variable.max)
    if stop < start:
        raise QueryError(f"the grid for {duration!r} would be empty ({start} to {stop})")
    if stop - start + 1 > MAX_GRID:
        raise QueryError(f"{duration!r} spans {stop - start + 1} whole units; at most "
                         f"{MAX_GRID} grid points: pass a coarser times=[...]")
    return [float(t) for t in range(start, stop + 1)]


def _explicit_grid(times: Any) -> list[float]:
    try:
        values = np.asarray(times, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise QueryError("times must be increasing numbers") from exc
    if values.size == 0 or values.size > MAX_GRID or not np.all(np.isfinite(values)) \
            or np.any(np.diff(values) <= 0):
        raise QueryError(f"times must be 1 to {MAX_GRID} finite, strictly increasing numbers")
    return [float(v) for v in values]


@dataclass(frozen=True)
class Counts:
    """Pooled counts of one group: per grid interval (plus the one past the grid). With DP
    the counts are the noisy released values (floats, possibly negative) and
    ``events_var`` / ``censored_var`` hold each count's noise variance."""

    events: np.ndarray
    censored: np.ndarray
    events_var: np.ndarray | None = None
    censored_var: np.ndarray | None = None

    @property
    def noisy(self) -> bool:
        return self.events_var is not None

    @property
    def rows(self) -> int | float:
        total = self.events.sum() + self.censored.sum()
        return float(total) if self.noisy else int(total)

    def at_risk(self) -> np.ndarray:
        """At risk at each grid time: the rows not yet out in an earlier interval."""
        gone = np.concatenate([[0], np.cumsum(self.events + self.censored)[:-2]])
        return self.rows - gone


def grid_counts(fed: Analyses, algorithm: str, duration: str, event: str, by: str | None,
                times: Any, horizon: float | None, event_level: str | None,
                datasets: Sequence[str] | None, filters: FilterLike, data_model: str | None,
                privacy: Any = None) -> tuple[list[float], Statistic, dict[str | None, Counts]]:
    # Analyses.model, not fed.model: SimulatedFederation shadows the method with an attribute
    model = Analyses.model(fed, data_model)
    view = PlanModel(model)
    check_variable(view, event)
    if by is not None:
        check_variable(view, by, numeric=False)
    if view.is_numeric(event):
        if event_level not in (None, 1):
            raise QueryError(f"the numeric event {event!r} holds 0/1: event_level must be "
                             "None (or 1)")
        event_level = None
    elif event_level is None or str(event_level) not in view.levels(event):
        raise QueryError(f"name the event_level of the categorical {event!r} "
                         f"(one of {list(view.levels(event))})"
                         + ("" if event_level is None
                            else did_you_mean(event_level, view.levels(event))))
    grid = time_grid(model, duration, times, horizon)
    parameters: dict[str, Any] = {"duration": duration, "event": event, "grid": grid}
    if event_level is not None:
        parameters["event_level"] = str(event_level)
    if not view.is_numeric(event):
        filters = _and_present(filters, event, view.levels(event))
    stat = fed.statistic(algorithm, by=by, datasets=datasets, filters=filters,
                         data_model=data_model, kind="survival", parameters=parameters,
                         privacy=privacy)
    groups: tuple[str | None, ...] = (None,) if by is None else view.levels(by)
    size = len(grid) + 1
    noisy = stat.layout.noise is not None
    counts = {}
    for g in groups:
        if noisy:
            block = _noisy_counts(stat, g, size)
        else:
            block = Counts(
                np.array([stat.count(("events", g, j)) for j in range(size)], np.int64),
                np.array([stat.count(("censored", g, j)) for j in range(size)], np.int64))
        # levels without rows (or suppressed everywhere) are left out; with DP, levels whose
        # noisy size is not positive (the noise hides whether they have rows at all)
        if block.rows > 0:
            counts[g] = block
    if not counts:
        if noisy:
            raise DegenerateInput(f"{algorithm}: {TOO_NOISY} (no group has a positive noisy "
                                  "number of rows)")
        raise DegenerateInput(f"no rows with {duration!r} and {event!r} present were "
                              f"released ({who(stat)})")
    return grid, stat, counts


def _noisy_counts(stat: Statistic, group: str | None, size: int) -> Counts:
    """The released noisy counts as floats (never rounded: rounding would bias the sums
    that make the at-risk numbers) with their noise variances."""
    def values(head: str) -> np.ndarray:
        return np.array([float(stat.exact((head, group, j))) for j in range(size)])

    def variances(head: str) -> np.ndarray:
        return np.array([stat.noise_std((head, group, j)) ** 2 for j in range(size)])

    return Counts(values("events"), values("censored"), variances("events"),
                  variances("censored"))


def _and_present(filters: FilterLike, variable: str, levels: Sequence[str]) -> Filter:
    """``filters`` and "``variable`` holds one of its levels": rows whose categorical event
    is missing (or a code the data model does not know) are left out explicitly."""
    present = filter_trees.Membership(variable, tuple(levels))
    tree = filter_tree(filters)
    return present if tree is None else filter_trees.And((tree, present))


def who(stat: Statistic) -> str:
    f = stat.federation
    return (f"{f['nodes_contributing']} of {f['nodes_answered']} nodes contributed, "
            f"{f['cells_below_threshold']} node-level cells read 0 (empty or below the "
            "small-cell threshold)")


def no_events_released(stat: Statistic, what: str) -> DegenerateInput:
    """The error for an exact survival query whose released event counts are all 0: either
    there were no events, or every interval's count at every node fell below the small-cell
    threshold (the two are not told apart), and a curve or test from it would say "no
    events" of a cohort that had them."""
    suppressed = cells_read_zero(stat.federation)
    if suppressed > 0:
        return DegenerateInput(
            f"{what} released no event: {suppressed} node-level cell(s) read 0, which a "
            "count below a node's small-cell threshold reads alike; pass a coarser time grid "
            "(times=[...]) so that each interval holds more events")
    return DegenerateInput(f"{what} needs events; there are none on the grid")
