"""Choosing the public centres and scales of an exact query (see stats/kinds/centring.py).

Sums of squares and cross-products keep their precision only when the nodes sum values
near 0 and of order 1. In exact mode the client therefore centres every numeric variable
the ``moments`` and ``crossprod`` kinds sum, with public values only:

1. the data model's declared range: centre at its midpoint, scale by its half-width (one
   round; enough whenever the range is not much wider than the data's spread);
2. where the first round shows that this loses precision (the data's mean far from the
   midpoint in units of its spread, or a spread far below the range), one or two more
   rounds of the same query, centred at the mean and scaled by the standard deviation the
   researcher just received from the secure sum.

A round is precise enough when the estimated relative error of each variable's centred sum
of squares is below ``2^-36``. Nodes add exactly (stats/aggregates.py: each row's term
rounded to the fixed point, then integers summed), so the error comes from each row alone:
its float64 value ``((x - c) / h)^2`` (a few units of ``2^-53``) and its rounding to the
fixed point (at most ``2^-49``). These are not assumed to cancel: rows with equal values (ages,
scores) round the same way, so the estimate is the bound for one row, the sum's error over
n rows divided by n. Variables without a declared range are summed as they are. DP queries
are not centred by the client (their noise, not rounding, limits them; the kinds do support it).
Each round is the same statistic again: it discloses nothing the first did not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from fractions import Fraction

from fedtally.results import Statistic
from protocol.errors import QueryError
from stats.datamodel import DataModel, PlanModel
from stats.kinds.centring import MAX_REACH, PARAMETER, Centring, centring_of
from stats.kinds.params import ARITHMETIC_MAGNITUDES, folds_of
from stats.plans import Key, groups
from stats.query import QuerySpec

#: relative error of a centred sum of squares accepted without another round
PRECISION = 2.0 ** -36
#: rounds after the first, at most
MAX_REFINEMENTS = 2
#: a new round is worth it only if it gains at least this factor in precision
WORTH = 16.0
_UNIT = 2.0 ** -53
_FIXED = 2.0 ** -49


def precise(spec: QuerySpec, model: DataModel, run: Callable[[QuerySpec], Statistic]
            ) -> Statistic:
    """Run ``spec``, centred and scaled by public values where that helps its precision."""
    view = PlanModel(model)
    if (spec.privacy.get("mode") != "exact" or spec.kind not in ("moments", "crossprod")
            or PARAMETER in spec.parameters):
        return run(spec)
    centring = _declared(spec, view)
    if not centring:
        return run(spec)
    stat = run(_with(spec, centring))
    for _ in range(MAX_REFINEMENTS):
        better = refined(stat)
        if better is None:
            break
        stat = run(_with(spec, better))
    return stat


def _with(spec: QuerySpec, centring: Centring) -> QuerySpec:
    parameters = {**spec.parameters, PARAMETER: {v: [c, h] for v, (c, h) in centring.items()}}
    return dataclasses.replace(spec, parameters=parameters)


def _candidates(spec: QuerySpec, view: PlanModel) -> list[str]:
    if spec.kind == "moments":
        return [v for v in spec.variables if view.is_numeric(v)]
    terms = spec.parameters.get("terms", [])
    if not any("const" in t for t in terms):
        return []
    return list(dict.fromkeys(t["var"] for t in terms
                              if set(t) == {"var"} and view.is_numeric(t["var"])))


def _declared(spec: QuerySpec, view: PlanModel) -> Centring:
    """Midpoint and half-width of every declared range (a range of one value is left), or
    the nearest pair nodes accept where they would refuse those (a centre or scale beyond
    their magnitudes, ARITHMETIC_MAGNITUDES); a variable no pair fits is left as it is."""
    out: Centring = {}
    for variable in _candidates(spec, view):
        pair = view.bounds(variable)
        if pair is None or not pair[1] > pair[0]:
            continue
        low, high = float(pair[0]), float(pair[1])
        centre = _snapped(min(max(low / 2 + high / 2, low), high), low, high)
        scale = max(high - centre, centre - low)
        if not _acceptable(centre, scale):
            centre, scale = _within_magnitudes(low, high, centre, scale)
        if _acceptable(centre, scale) and _nodes_accept(spec, view, variable, centre, scale):
            out[variable] = (centre, scale)
    return out


def _within_magnitudes(low: float, high: float, centre: float, scale: float
                       ) -> tuple[float, float]:
    """The centre moved, and the scale cut or raised, into the magnitudes nodes take (a
    range like [0, 1e40]: centred at 2^126, its values still reach only about 120 scales;
    one like [-1e-39, 1e-39]: scaled by 2^-126, they reach about a tenth of one)."""
    smallest, largest = ARITHMETIC_MAGNITUDES
    centre = min(max(centre, -largest, low), largest, high)
    return centre, min(max(high - centre, centre - low, smallest), largest)


def _nodes_accept(spec: QuerySpec, view: PlanModel, variable: str, centre: float,
                  scale: float) -> bool:
    """Whether nodes' planning takes this centring (stats.kinds.centring.centring_of)."""
    asked = _with(spec, {variable: (centre, scale)})
    try:
        centring_of(asked, view, [variable])
    except QueryError:
        return False
    return True


def _snapped(centre: float, low: float, high: float) -> float:
    """0 for a centre too small for nodes to take (ARITHMETIC_MAGNITUDES), where 0 is in
    the range."""
    smallest = ARITHMETIC_MAGNITUDES[0]
    return 0.0 if 0 < abs(centre) < smallest and low <= 0.0 <= high else centre


def _acceptable(centre: float, scale: float) -> bool:
    """Nodes take a centre and a scale of 0 or of magnitude within ARITHMETIC_MAGNITUDES."""
    smallest, largest = ARITHMETIC_MAGNITUDES
    return (centre == 0 or smallest <= abs(centre) <= largest) and \
        smallest <= scale <= largest


def _totals(stat: Statistic, variable: str) -> tuple[Fraction, Fraction, Fraction]:
    """(n, sum z, sum z^2) of a variable's released (centred) values, over every cell."""
    spec = stat.spec
    if spec.kind == "moments":
        cells = [(d, g) for d in spec.datasets for g in groups(spec, stat.view)]
        keys: list[tuple[Key, Key, Key]] = [
            (("count", d, g, variable), ("sum", d, g, variable), ("sumsq", d, g, variable))
            for d, g in cells]
    else:
        terms = spec.parameters["terms"]
        one = next(i for i, t in enumerate(terms) if "const" in t)
        t = next(i for i, term in enumerate(terms) if term == {"var": variable})
        keys = [(("xx", f, one, one), ("xx", f, min(one, t), max(one, t)), ("xx", f, t, t))
                for f in folds_of(spec)]
    n = sum((stat.released(k[0]) for k in keys), Fraction(0))
    s = sum((stat.released(k[1]) for k in keys), Fraction(0))
    q = sum((stat.released(k[2]) for k in keys), Fraction(0))
    return n, s, q


def _error(mean: float, variance: float) -> float:
    """Bound on the error of a variance from n centred values (in their units): each row's
    float64 square (and, through the mean, its value) and its rounding to the fixed point.
    The sums themselves are exact, and equal values round alike, so the rows' errors are
    added, not assumed to cancel: n rows' worth, divided by n."""
    return 4 * (7 * _UNIT * (mean * mean + abs(variance)) + _FIXED * (1 + 2 * abs(mean)))


def refined(stat: Statistic) -> Centring | None:
    """Better centres and scales, from the totals just released, where a round with them
    would be markedly more precise than this one; None where this one is good enough."""
    current: Centring = {v: (float(c), float(h))
                         for v, (c, h) in stat.spec.parameters.get(PARAMETER, {}).items()}
    out = dict(current)
    for variable, (centre, scale) in current.items():
        n, s, q = _totals(stat, variable)
        if n < 2:
            continue
        mean, variance = float(s / n), float((q - s * s / n) / (n - 1))
        error = _error(mean, variance)
        before = error / variance if variance > 0 else math.inf
        if before <= PRECISION:
            continue
        # the spread is at most what this round could not resolve
        spread = max(variance, error)
        pair = stat.view.bounds(variable)
        low, high = (float(pair[0]), float(pair[1])) if pair else (centre, centre)
        new_centre = _snapped(min(max(centre + scale * mean, low), high), low, high)
        floor = max(high - new_centre, new_centre - low) / MAX_REACH * (1 + 2.0 ** -20)
        new_scale = max(scale * math.sqrt(spread), floor, ARITHMETIC_MAGNITUDES[0])
        if not _acceptable(new_centre, new_scale):
            continue
        if new_centre == centre and new_scale >= scale:
            continue  # nothing left to gain from public values
        after_variance = spread * (scale / new_scale) ** 2
        after = _error(0.0, after_variance) / after_variance
        if before < WORTH * after:
            continue
        out[variable] = (new_centre, new_scale)
    return out if out != current else None
