"""Turning secure-sum totals into the answers researchers read (pandas objects)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from crypto.encoding import RingVector
from engine.kinds import KINDS
from engine.plans import (
    CELLS_BELOW_THRESHOLD,
    NODES_CONTRIBUTING,
    REAL_FRAC_BITS,
    Key,
    Layout,
    Slot,
    groups,
)
from engine.query import QuerySpec
from engine.service_messages import QueryResult
from node.datamodel import DataModel, PlanModel

ALL = "all"
SCALE = 1 << REAL_FRAC_BITS


def totals(result: QueryResult) -> list[int]:
    """The exact signed totals of a result, one Python int per slot."""
    vector = RingVector.from_bytes(result.ring_bits, result.vector_length, result.total)
    return [int(x) for x in vector.to_signed()]


@dataclass(frozen=True)
class Statistic:
    """The totals of one query, addressed by the slot keys of its layout."""

    spec: QuerySpec
    layout: Layout
    values: list[int]
    model: DataModel
    reply: QueryResult

    def _index(self) -> dict[Key, int]:
        cached = self.__dict__.get("_cached_index")
        if cached is None:
            cached = self.layout.index()
            object.__setattr__(self, "_cached_index", cached)
        return cached

    def _slot(self, key: Key) -> tuple[int, Slot]:
        i = self._index()[key]
        return i, self.layout.slots[i]

    def has(self, key: Key) -> bool:
        """Whether the layout holds this slot."""
        return key in self._index()

    def count(self, key: Key) -> int:
        """An exact count; with DP, the noisy count rounded (post-processing)."""
        i, slot = self._slot(key)
        if not self.layout.noisy(slot):
            return self.values[i]
        return round(self.exact(key))

    def released(self, key: Key) -> Fraction:
        """A slot's total as released, an exact fraction: the sum of the nodes' local values
        (with DP, of their noisy values). Where the query centred a variable, this is the
        total of its centred values (see :meth:`exact`)."""
        i, slot = self._slot(key)
        if self.layout.noisy(slot):
            return Fraction(self.values[i]) * Fraction(slot.bound) / (1 << self.layout.frac_bits)
        if not slot.real:
            return Fraction(self.values[i])
        return Fraction(self.values[i], 1 << self.layout.frac_bits)

    def _uncentre(self, key: Key) -> dict[Key, Fraction] | None:
        combine = self.__dict__.get("_cached_uncentre", False)
        if combine is False:
            kind = KINDS[self.spec.kind]
            combine = kind.uncentre(self.spec, self.view) if kind.uncentre else None
            object.__setattr__(self, "_cached_uncentre", combine)
        return None if combine is None else combine(key)

    def exact(self, key: Key) -> Fraction:
        """A slot's plain total as an exact fraction. Where the nodes summed centred values
        (engine/kinds/centring.py) it is recovered from the released totals exactly, so it
        keeps their precision whatever the data's location and scale."""
        combination = self._uncentre(key)
        if combination is None:
            return self.released(key)
        return sum((c * self.released(k) for k, c in combination.items()), Fraction(0))

    def about_centre(self, key: Key) -> Fraction:
        """The total about the centres the nodes used (a sum of squares: sum (x - c)^2);
        the plain total where nothing was centred. Rounding in the nodes' sums is relative
        to it, so tolerances for "constant" or "collinear" are taken against it."""
        combination = self._uncentre(key)
        if combination is None:
            return self.exact(key)
        return combination[key] * self.released(key)

    def real(self, key: Key) -> float:
        return float(self.exact(key))

    def noise_std(self, key: Key) -> float:
        """Standard deviation of the noise in this slot's plain total (0 in exact mode):
        every surviving node added one discrete Gaussian share to each released slot."""
        combination = self._uncentre(key)
        if combination is not None:
            return math.sqrt(sum(float(c) ** 2 * self._released_noise(k) ** 2
                                 for k, c in combination.items()))
        return self._released_noise(key)

    def _released_noise(self, key: Key) -> float:
        noise = self.layout.noise
        i, slot = self._slot(key)
        if noise is None or not self.layout.noisy(slot):
            return 0.0
        shares = len(self.reply.survivors)
        return math.sqrt(shares) * noise.share_std * slot.bound / (1 << self.layout.frac_bits)

    @property
    def privacy(self) -> dict[str, Any]:
        """What this query spent at each node (rho, and epsilon at the request's delta)."""
        spec = dict(self.spec.privacy)
        if self.layout.noise is None:
            return {"mode": "exact"}
        out: dict[str, Any] = {"mode": "dp", "rho": self.layout.noise.rho,
                               "honest_nodes_assumed": self.layout.noise.honest}
        if "delta" in spec:
            from privacy.accounting import epsilon_from_rho

            out["delta"] = spec["delta"]
            out["epsilon"] = epsilon_from_rho(self.layout.noise.rho, spec["delta"])
        return out

    @property
    def view(self) -> PlanModel:
        return PlanModel(self.model)

    @property
    def federation(self) -> dict[str, int]:
        """How many nodes were asked, answered, contributed; how many cells were suppressed."""
        return {"nodes_asked": len(self.reply.participants),
                "nodes_answered": len(self.reply.survivors),
                "nodes_contributing": self.count(NODES_CONTRIBUTING),
                "cells_below_threshold": self.count(CELLS_BELOW_THRESHOLD)}


@dataclass(frozen=True)
class NoisyValue:
    """A released DP value with the standard deviation of its noise."""

    value: float
    noise_std: float
    privacy: dict[str, Any]
    federation: dict[str, int]

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Interval for the true value from the noise alone (it is the only randomness)."""
        from scipy.stats import norm

        half = float(norm.ppf(0.5 + level / 2)) * self.noise_std
        return self.value - half, self.value + half

    def __float__(self) -> float:
        return self.value


def moments(n: int | Fraction, s: Fraction, ss: Fraction) -> tuple[float, float]:
    """Mean and sample standard deviation from exact sums (rational arithmetic, so no
    cancellation beyond the nodes' own float64 sums)."""
    if n <= 0:
        return math.nan, math.nan
    mean = s / n
    if n < 2:
        return float(mean), math.nan
    variance = (ss - s * s / n) / (n - 1)
    return float(mean), math.sqrt(max(float(variance), 0.0))


def descriptive_stats(stat: Statistic) -> pd.DataFrame:
    spec = stat.spec
    view = stat.view
    noisy = stat.layout.noise is not None
    levels: tuple[str | None, ...] = (None,) if spec.by is None else (None, *view.levels(spec.by))
    # nodes release disjoint groups only; the "all" group is their sum here (the rows whose
    # `by` is missing included), so no margin ever left a node
    def cells(group: str | None) -> tuple[object, ...]:
        return groups(spec, view) if group is None and spec.by is not None else (group,)

    def total(head: str, datasets: list[str], group: str | None, *rest: str) -> Fraction:
        return sum((stat.exact((head, d, g, *rest)) for d in datasets for g in cells(group)),
                   Fraction(0))

    def noise(head: str, datasets: list[str], group: str | None, *rest: str) -> float:
        return math.sqrt(sum(stat.noise_std((head, d, g, *rest)) ** 2
                             for d in datasets for g in cells(group)))

    records = []
    scopes = [(d, [d]) for d in spec.datasets] + [(ALL, list(spec.datasets))]
    for variable in spec.variables:
        for scope, datasets in scopes:
            for group in levels:
                missing = total("missing", datasets, group, variable)
                n = total("count", datasets, group, variable)
                mean = std = math.nan
                if view.is_numeric(variable):
                    s, ss = total("sum", datasets, group, variable), \
                        total("sumsq", datasets, group, variable)
                    mean, std = moments(n, s, ss)
                record: dict[str, Any] = {"variable": variable, "dataset": scope,
                                          "count": float(n) if noisy else int(n),
                                          "missing": float(missing) if noisy else int(missing),
                                          "mean": mean, "std": std}
                if noisy:
                    record.update(_dp_columns(n, mean, std, noise("count", datasets, group,
                                                                    variable),
                                              noise("sum", datasets, group, variable)
                                              if view.is_numeric(variable) else 0.0))
                if spec.by is not None:
                    record[spec.by] = ALL if group is None else group
                records.append(record)
    keys = ["variable", "dataset"] + ([spec.by] if spec.by else [])
    columns = [*keys, "count", "missing", "mean", "std"]
    if noisy:
        columns += ["count_noise_std", "mean_ci_low", "mean_ci_high"]
    frame = pd.DataFrame.from_records(records, columns=columns).set_index(keys)
    if not noisy:
        frame["count"] = frame["count"].astype(np.int64)
        frame["missing"] = frame["missing"].astype(np.int64)
    frame.attrs["federation"] = stat.federation
    frame.attrs["privacy"] = stat.privacy
    return frame


def _dp_columns(n: Fraction, mean: float, std: float, count_noise: float,
                sum_noise: float) -> dict[str, float]:
    """95% interval of a mean whose numerator and denominator are both noisy: the delta
    method's variance (sampling + noise), std^2/n + (sd(S)^2 + mean^2 sd(N)^2) / n^2."""
    out = {"count_noise_std": count_noise, "mean_ci_low": math.nan, "mean_ci_high": math.nan}
    size = float(n)
    if size <= 1 or math.isnan(mean):
        return out
    sampling = 0.0 if math.isnan(std) else std * std / size
    variance = sampling + (sum_noise ** 2 + mean * mean * count_noise ** 2) / (size * size)
    half = 1.959963984540054 * math.sqrt(variance)
    out["mean_ci_low"], out["mean_ci_high"] = mean - half, mean + half
    return out
