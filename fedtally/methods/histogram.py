"""Histograms: counts per category, or per equal-width bin of a public range.

One ``counts`` round: every node counts its rows per cell of a table whose shape depends
only on the query and the data model (the variable's levels, or the bin edges; with
``by``, a second axis of the grouping variable's levels), and only the secure sums leave
the nodes.

**Why a range must be given.** The bins of a numeric histogram are laid over ``range``: the
query's, else the data model's declared ``min``/``max`` of the variable. The usual default,
the data's own minimum and maximum (numpy's, and Exareme2's), is not offered: those are
single patients' values, and publishing them (as the first and last bin edges) would
release them. Declared bounds and researcher-chosen ranges are public. Rows outside the
range, or missing the variable (or the ``by`` variable), are not counted; their number is
in ``attrs["excluded"]``.

**Small cells.** A node zeroes every cell in which it holds fewer rows than its policy's
``small_cell_threshold`` (a node whose whole cohort is below its ``min_row_count`` adds
nothing). Such cells show up as counts that are too low, possibly 0; how many node-level
cells were zeroed is reported in ``attrs["suppressed"]`` (with a note) and in
``attrs["federation"]``. A 0 count therefore means "no row, or only rows that some node
did not release". With no suppression the counts equal ``numpy.histogram`` of the pooled
values (bins ``[a, b)``, the last one ``[a, b]``), or ``value_counts`` per level.

**Differential privacy.** With ``privacy=fedtally.DP(...)`` every cell (and the excluded
count) is released with Gaussian noise and no cell is suppressed (the noise is the
protection). ``count`` is then post-processed: the noisy total rounded and clipped at 0 (a
non-negative integer, as people read counts); ``noisy_count`` keeps the released total
itself (a float, possibly negative), which is unbiased where ``count`` is biased upward in
cells near 0. A numeric variable is clipped to its
clipping bounds (the data model's min/max, or the request's ``bounds``) before binning.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.display import Histogram
from fedtally.dp import privacy_spec
from fedtally.methods.common import complete_cases
from fedtally.methods.registry import catalog_method, handles
from fedtally.results import Statistic, nonnegative_count
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.kinds import MAX_CELLS
from stats.kinds.counts import OUTSIDE
from stats.plans import Key
from stats.suggest import unknown

Bins = int | Sequence[float]

#: two-sided 95% normal quantile, for the noise intervals of DP counts
Z95 = 1.959963984540054


def _finite_pair(value: Any, what: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise QueryError(f"{what} must be two numbers (low, high)") from exc
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise QueryError(f"{what} must be two finite numbers with low <= high")
    return low, high


def histogram_edges(variable: str, bins: Bins, range: tuple[float, float] | None,
                    view: PlanModel) -> list[float]:
    """The bin edges of a numeric histogram, as ``numpy.histogram_bin_edges`` lays them
    (``linspace(low, high, bins + 1)``; an empty range widened by 0.5 each side), over
    ``range`` or the data model's declared bounds; or ``bins`` itself when it lists edges."""
    if not isinstance(bins, int | np.integer) or isinstance(bins, bool):
        edges = [float(e) for e in bins]
        if len(edges) < 2 or not all(math.isfinite(e) for e in edges) or any(
                b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise QueryError("bin edges must be at least two increasing finite numbers")
        return edges
    if not 1 <= int(bins) <= MAX_CELLS:
        raise QueryError(f"bins must be an integer from 1 to {MAX_CELLS}")
    if range is None:
        declared = view.model.variable(variable)
        if declared.min is None or declared.max is None:
            raise QueryError(
                f"histogram of {variable!r}: give range=(low, high). The data model declares "
                "no min/max for it, and the data's exact minimum and maximum are single "
                "patients' values, so they are never computed or released")
        range = (declared.min, declared.max)
    low, high = _finite_pair(range, "range")
    if low == high:  # numpy.histogram's rule for an empty range
        low, high = low - 0.5, high + 0.5
    return [float(e) for e in np.linspace(low, high, int(bins) + 1)]


@catalog_method(kinds=("counts",))
def histogram(fed: Analyses, variable: str, bins: Bins = 20,
              range: tuple[float, float] | None = None, by: str | None = None, *,
              datasets: Sequence[str] | None = None, filters: FilterLike = None,
              data_model: str | None = None, privacy: Any = None) -> pd.DataFrame:
    """Counts of ``variable``: per level of a categorical variable (levels from the data
    model; columns ``category``, ``count``), or per bin of a numeric one (columns
    ``bin_start``, ``bin_end``, ``count``). Numeric bins are ``bins`` equal-width bins over
    ``range``, else over the data model's declared min/max; with neither, a
    :class:`QueryError` asks for ``range``: the data's exact min and max are single
    patients' values and are never used (see the module notes). ``bins`` may also list
    the edges. With ``by`` (categorical), one block of rows per level of ``by``, in a first
    column named after it.

    ``attrs`` holds ``privacy``, ``federation``, ``suppressed`` (``{"cells": number of
    node-level cells zeroed by the small-cell rule, "note": ...}``: such cells read 0 or
    too low), ``excluded`` (rows missing a variable or outside the range) and, for numeric
    bins, ``edges``. No rows at all raise :class:`DegenerateInput`.

    With ``privacy=fedtally.DP(...)``: ``count`` holds the noisy counts rounded and clipped
    at 0, ``noisy_count`` the released totals (floats, possibly negative), ``noise_std`` the standard deviation of each count's noise, and
    ``ci_low``/``ci_high`` a 95% interval for the true count from the noise alone
    (``count +- 1.96 noise_std``: the rows are fixed, the noise is the only randomness);
    ``attrs["excluded"]`` is noisy too (its noise in ``attrs["excluded_noise_std"]``) and
    ``attrs["privacy"]`` says what was spent. No check for "no rows" is made: with noise
    an empty table cannot be told apart from a small one. A numeric variable needs
    clipping bounds (declared min/max, or ``DP(bounds=...)``), else :class:`QueryError`.
    """
    spec = privacy_spec(privacy)
    noisy = spec["mode"] == "dp"
    view = PlanModel(fed.model(data_model))
    for name in (variable, by):
        if name is not None and not view.has_variable(name):
            raise QueryError(unknown("variable", name, view.variable_names()))
    if by is not None and (view.is_numeric(by) or by == variable):
        raise QueryError(f"by must be a categorical variable other than {variable!r}")
    numeric = view.is_numeric(variable)
    if numeric:
        edges: list[float] | None = histogram_edges(variable, bins, range, view)
        axis: dict[str, Any] = {"var": variable, "edges": edges}
        size = len(edges) - 1
    else:
        if range is not None:
            raise QueryError(f"range applies to numeric variables; {variable!r} is categorical")
        edges, axis, size = None, {"var": variable}, len(view.levels(variable))
    if noisy and numeric and variable not in spec.get("bounds", {}) \
            and view.bounds(variable) is None:
        # nodes clip every numeric variable a DP query reads; without bounds they would
        # refuse only after the query was sent, so say it here, before any work
        raise QueryError(f"no bounds for {variable!r}: the data model declares no min/max, "
                         f"so pass bounds={{{variable!r}: (low, high)}} with the DP request")
    axes = ([{"var": by}] if by is not None else []) + [axis]
    stat = fed.statistic("histogram", variables=[variable] + ([by] if by else []),
                         datasets=datasets, filters=filters, data_model=data_model,
                         kind="counts", parameters={"axes": axes}, privacy=privacy)
    # the parameter ``range`` (numpy's name) hides the builtin here
    groups: list[tuple[int, ...]] = ([(i,) for i in builtins.range(len(view.levels(by)))]
                                     if by is not None else [()])
    records = []
    for group in groups:
        for cell in builtins.range(size):
            record: dict[str, Any] = {}
            if by is not None:
                record[by] = view.levels(by)[group[0]]
            if edges is not None:
                record["bin_start"], record["bin_end"] = edges[cell], edges[cell + 1]
            else:
                record["category"] = view.levels(variable)[cell]
            key = ("cell", *group, cell)
            if noisy:
                # ``count`` is post-processed (a non-negative integer); ``noisy_count`` is
                # the released total itself, which noise_std describes (unbiased)
                value, noise = stat.real(key), stat.noise_std(key)
                # a count is never negative: both ends of its interval are clamped to 0
                # (a noisy total far below 0 gave an upper end below the lower one)
                record.update(count=nonnegative_count(value), noisy_count=value,
                              noise_std=noise, ci_low=max(0.0, value - Z95 * noise),
                              ci_high=max(0.0, value + Z95 * noise))
            else:
                record["count"] = stat.count(key)
            records.append(record)
    columns = ([by] if by else []) + (["bin_start", "bin_end"] if numeric else ["category"])
    if noisy:
        frame = pd.DataFrame.from_records(
            records, columns=[*columns, "count", "noisy_count", "noise_std", "ci_low",
                              "ci_high"])
        return Histogram.of(_dp_attrs(frame, stat, edges))
    frame = pd.DataFrame.from_records(records, columns=[*columns, "count"])
    frame["count"] = frame["count"].astype(np.int64)
    federation = stat.federation
    if int(frame["count"].sum()) == 0:
        raise DegenerateInput(
            f"histogram of {variable!r}: no rows to count (the filter matched none, no value "
            f"is in range, every cell was below the nodes' small-cell threshold, or every "
            f"node's cohort was below its minimum: {federation['nodes_contributing']} of "
            f"{federation['nodes_asked']} nodes contributed)")
    suppressed = federation["cells_below_threshold"]
    frame.attrs.update({
        "privacy": spec, "federation": federation, **excluded(stat, lambda key: stat.count(key)),
        "suppressed": {"cells": suppressed, "note": (
            f"{suppressed} node-level cells were empty or below a node's small-cell "
            "threshold and read 0 (the two are not told apart); the affected counts may "
            "read too low" if suppressed else "no cell was suppressed")}})
    if edges is not None:
        frame.attrs["edges"] = edges
    return Histogram.of(frame)


def excluded(stat: Statistic, value: Callable[[Key], float]) -> dict[str, float]:
    """The rows no cell counts: ``missing`` a variable, ``out_of_range`` of the bins, and
    ``excluded`` (both)."""
    missing, outside = (value(key) if stat.has(key) else 0 for key in OUTSIDE)
    return {"excluded": missing + outside, "missing": missing, "out_of_range": outside}


def _dp_attrs(frame: pd.DataFrame, stat: Statistic, edges: list[float] | None) -> pd.DataFrame:
    """The attrs of a DP histogram: what was spent, and the noisy excluded count."""
    frame["count"] = frame["count"].astype(np.int64)
    frame.attrs.update({
        "privacy": stat.privacy, "federation": stat.federation,
        **excluded(stat, lambda key: stat.real(key)),
        "excluded_noise_std": math.sqrt(sum(stat.noise_std(key) ** 2 for key in OUTSIDE
                                            if stat.has(key))),
        "suppressed": {"cells": 0, "note": (
            "no cell is suppressed under differential privacy: every count carries noise "
            "(see noise_std) instead")}})
    if edges is not None:
        frame.attrs["edges"] = edges
    return frame


def _counts(values: Sequence[int]) -> list[int | None]:
    """Exareme2 writes null for a count below its minimum row count."""
    return [int(v) if v >= exareme2.MIN_ROW_COUNT else None for v in values]


@handles("multiple_histograms", method="histogram")
def _multiple_histograms(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Counts of y over the complete cases of y and every x: first over all those rows,
    then one block per level of each (categorical) x; levels as Exareme2 lists them."""
    y = exareme2.single(req.y, "y", "multiple_histograms")
    groupings = [v for v in dict.fromkeys(req.x) if v != y]
    view = exareme2.plan_view(fed, req)
    for name in [y, *groupings]:
        if not view.has_variable(name):
            raise QueryError(unknown("variable", name, view.variable_names()))
    for name in groupings:
        if view.is_numeric(name):
            raise QueryError(f"multiple_histograms groups by categorical x; {name!r} is numeric")
    bins: Any = exareme2.integer(req, "bins", 20)
    labels: list[Any]
    if view.is_numeric(y):
        # the data model's declared range (Exareme2 would take the data's exact min and max)
        bins = histogram_edges(y, bins, None, view)
        labels = list(bins)
    else:
        labels = exareme2.enumerations(fed, req, y)
    scope = exareme2.query_scope(req)
    if groupings:
        scope["filters"] = complete_cases([y, *groupings], req.filters, view)

    def block(rows: pd.DataFrame, grouping: str | None, level: str | None) -> dict[str, Any]:
        counts = (rows["count"] if view.is_numeric(y)
                  else rows.set_index("category")["count"].loc[labels])
        return {"var": y, "grouping_var": grouping, "grouping_enum": level, "bins": labels,
                "counts": _counts(counts.tolist())}

    blocks = [block(histogram(fed, y, bins, **scope), None, None)]
    for grouping in groupings:
        table = histogram(fed, y, bins, by=grouping, **scope)
        blocks += [block(table[table[grouping] == level], grouping, level)
                   for level in exareme2.enumerations(fed, req, grouping)]
    return {"histogram": blocks}
