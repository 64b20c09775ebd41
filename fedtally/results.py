"""Turning secure-sum totals into the answers researchers read (pandas objects)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from crypto.encoding import RingVector
from fedtally import coverage
from fedtally.coverage import Scope
from protocol.errors import DegenerateInput
from protocol.service_messages import QueryResult
from stats.datamodel import DataModel, PlanModel
from stats.kinds import KINDS
from stats.plans import (
    CELLS_BELOW_THRESHOLD,
    NODES_CONTRIBUTING,
    REAL_FRAC_BITS,
    Key,
    Layout,
    Slot,
    groups,
)
from stats.query import QuerySpec

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
    #: the datasets asked and their online holders when the query was sent
    scope: Scope | None = None

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
        (stats/kinds/centring.py) it is recovered from the released totals exactly, so it
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
        noise = self.layout.noise
        out: dict[str, Any] = {
            "mode": "dp", "rho": noise.rho, "honest_nodes_assumed": noise.honest,
            # std of the noise in any released count (a sum's is this times its row bound)
            "count_noise_std": math.sqrt(len(self.reply.survivors)) * noise.share_std
            / (1 << self.layout.frac_bits)}
        if "delta" in spec:
            from privacy.accounting import epsilon_from_rho

            out["delta"] = spec["delta"]
            out["epsilon"] = epsilon_from_rho(self.layout.noise.rho, spec["delta"])
        return out

    @property
    def view(self) -> PlanModel:
        return PlanModel(self.model)

    @property
    def federation(self) -> dict[str, Any]:
        """Whom the answer covers (:func:`fedtally.coverage.record`): nodes asked, answered
        and contributing, nodes not answering and why, datasets asked, covered and not
        covered (and why), node-level cells that read 0."""
        out = coverage.record(self.scope, self.reply, self.count(NODES_CONTRIBUTING),
                              self.count(CELLS_BELOW_THRESHOLD))
        if self.layout.noise is None and self.scope is not None:
            out["datasets_without_rows"] = self._silent_datasets(
                out["datasets_not_covered"])
            if out["nodes_without_contribution"] == 0:
                out["cells_of_datasets_not_held"] = self._cells_not_held()
        return out

    def _cells_not_held(self) -> int:
        """Of ``cells_below_threshold``, the cells that are empty by construction: each
        contributing node's cells of the asked datasets it does not hold (public: the
        catalog says who holds what). Exact only when every answering holder contributed,
        so that the contributing nodes are known."""
        assert self.scope is not None
        families: dict[str, set[object]] = {}
        for slot in self.layout.slots:
            if len(slot.key) > 1 and slot.key[1] in self.spec.datasets:
                families.setdefault(str(slot.key[1]), set()).add(slot.family)
        survivors = set(self.reply.survivors)
        holding = {n for d in self.spec.datasets for n in self.scope.holders.get(d, ())
                   if n in survivors}
        return sum(len(families.get(d, ())) for n in holding for d in self.spec.datasets
                   if n not in self.scope.holders.get(d, ()))

    def _silent_datasets(self, not_covered: dict[str, str]) -> list[str]:
        """Datasets whose every released slot reads 0 (exact mode, where slots are kept per
        dataset): no row of theirs was released. From the released totals only."""
        per_dataset: dict[str, bool] = {}
        for slot, value in zip(self.layout.slots, self.values, strict=True):
            key = slot.key
            if len(key) > 1 and key[1] in self.spec.datasets and key[1] not in not_covered:
                per_dataset[key[1]] = per_dataset.get(key[1], False) or value != 0
        return [d for d, released in per_dataset.items() if not released]

    @property
    def not_covered(self) -> tuple[str, ...]:
        """Datasets asked that the answer does not cover (their nodes down or silent)."""
        return tuple(self.federation.get("datasets_not_covered", {}))


class Count(int):
    """An exact count: an ``int`` that also says whom it covers (``federation``) and how it
    was made (``privacy``)."""

    federation: dict[str, Any]
    privacy: dict[str, Any]
    noise_std: float = 0.0

    def __new__(cls, value: int, federation: dict[str, Any],
                privacy: dict[str, Any] | None = None) -> Count:
        made = super().__new__(cls, value)
        made.federation = federation
        made.privacy = privacy or {"mode": "exact"}
        return made

    def ci(self, level: float = 0.95) -> tuple[int, int]:
        """An exact count is its own interval."""
        return int(self), int(self)

    def summary(self) -> str:
        from fedtally import display

        return display.count_summary(self)

    def __repr__(self) -> str:
        f = self.federation
        return (f"Count({int(self)}; {f.get('nodes_contributing', 0)} of "
                f"{f.get('nodes_asked', 0)} nodes contributed)")

    def __str__(self) -> str:
        return str(int(self))

    def __format__(self, spec: str) -> str:
        return format(int(self), spec)

    def __reduce__(self) -> tuple[Any, ...]:
        return (int, (int(self),))


@dataclass(frozen=True)
class NoisyValue:
    """A released DP value with the standard deviation of its noise. ``value`` is
    post-processed (a count rounded to an integer and clipped at 0, a mean clamped to its
    declared range); ``raw`` is the released total itself, whose noise is unbiased."""

    value: float
    noise_std: float
    privacy: dict[str, Any]
    federation: dict[str, Any]
    raw: float | None = None

    @classmethod
    def count(cls, raw: float, noise_std: float, privacy: dict[str, Any],
              federation: dict[str, Any]) -> NoisyValue:
        return cls(nonnegative_count(raw), noise_std, privacy, federation, raw)

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Interval for the true value from the noise alone (it is the only randomness),
        around the released value; a count's interval is clipped at 0."""
        from scipy.stats import norm

        centre = self.value if self.raw is None else self.raw
        half = float(norm.ppf(0.5 + level / 2)) * self.noise_std
        low = centre - half
        if isinstance(self.value, int):
            low = max(low, 0.0)
        return low, centre + half

    def __float__(self) -> float:
        return float(self.value)

    def __int__(self) -> int:
        return int(self.value)

    def summary(self) -> str:
        from fedtally import display

        return display.noisy_summary(self)

    def __repr__(self) -> str:
        return (f"NoisyValue({self.value} +- {self.noise_std:.3g} noise std; "
                f"rho={self.privacy.get('rho', float('nan')):.3g})")


def nonnegative_count(raw: float | Fraction) -> int:
    """A noisy count as people read it: the nearest integer, and never below 0
    (post-processing, so it spends no privacy)."""
    return max(0, round(raw))


def warn_if_noisy(what: str, value: float, noise_std: float) -> None:
    """Warn (:class:`fedtally.NoiseDominates`) when the noise std exceeds the stated fraction
    of the released value: computed from the released value and the public noise scale."""
    from fedtally.dp import NOISE_WARNING_FRACTION

    if noise_std <= 0 or math.isnan(value):
        return
    if noise_std > NOISE_WARNING_FRACTION * abs(value):
        warnings.warn(f"{what}: the noise std ({noise_std:.3g}) exceeds "
                      f"{NOISE_WARNING_FRACTION:.0%} of the value ({value:.3g}); read it as "
                      "noise, or ask with a larger epsilon or a coarser query",
                      coverage.NoiseDominates, stacklevel=coverage.user_stacklevel())


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
    """count, missing, mean, std per variable, dataset (and ``all``) and group. Datasets the
    answer does not cover (their node left or timed out) get no rows: they are named in
    ``attrs["federation"]["datasets_not_covered"]``, never shown as 0 rows. Under DP the
    values are post-processed: counts non-negative integers, means and interval ends
    clamped to the clipping bounds, standard deviations within [0, the largest the bounds
    allow]."""
    spec = stat.spec
    view = stat.view
    noisy = stat.layout.noise is not None
    clipping = {v: (lo, hi) for v, lo, hi in stat.layout.noise.clipping} if noisy else {}
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
    covered = [d for d in spec.datasets if d not in stat.not_covered]
    scopes = [(d, [d]) for d in covered] + [(ALL, covered)]
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
                                          "count": int(n), "missing": int(missing),
                                          "mean": mean, "std": std}
                if noisy:
                    record.update(_dp_columns(n, mean, std, noise("count", datasets, group,
                                                                    variable),
                                              noise("sum", datasets, group, variable)
                                              if view.is_numeric(variable) else 0.0))
                    record.update(_dp_post(record, n, missing, clipping.get(variable)))
                    if scope == ALL and group is None:
                        warn_if_noisy(f"count of {variable!r}", record["count"],
                                      record["count_noise_std"])
                        if not math.isnan(record["mean"]):
                            warn_if_noisy(f"mean of {variable!r}", record["mean"],
                                          _mean_noise(n, mean, record["count_noise_std"],
                                                      noise("sum", datasets, group, variable)))
                if spec.by is not None:
                    record[spec.by] = ALL if group is None else group
                records.append(record)
    keys = ["variable", "dataset"] + ([spec.by] if spec.by else [])
    columns = [*keys, "count", "missing", "mean", "std"]
    if noisy:
        columns += ["count_noise_std", "mean_ci_low", "mean_ci_high"]
    frame = pd.DataFrame.from_records(records, columns=columns).set_index(keys)
    frame["count"] = frame["count"].astype(np.int64)
    frame["missing"] = frame["missing"].astype(np.int64)
    federation = stat.federation
    if not noisy and covered and not (frame["count"].any() or frame["missing"].any()):
        # the README's promise: an empty filter result is an error, never a NaN-filled table
        # (computed from the released totals only: all of them read 0)
        raise DegenerateInput(
            "no rows: the filters leave none, or every node's cohort is below its minimum "
            f"row count ({federation['nodes_contributing']} of {federation['nodes_asked']} "
            "nodes contributed)")
    frame.attrs["federation"] = federation
    frame.attrs["privacy"] = stat.privacy
    return frame


def _dp_post(record: dict[str, Any], n: Fraction, missing: Fraction,
             bounds: tuple[float, float] | None) -> dict[str, Any]:
    """Post-processing of one DP row (it spends no privacy): counts are non-negative
    integers; a mean and its interval lie within the clipping bounds; a standard deviation
    lies within [0, (high - low) / 2 * sqrt(n / (n - 1))], the largest values in the bounds
    allow."""
    out: dict[str, Any] = {"count": nonnegative_count(n), "missing": nonnegative_count(missing)}
    if bounds is None:
        return out
    low, high = bounds

    def clamp(value: float) -> float:
        return value if math.isnan(value) else min(max(value, low), high)

    out.update(mean=clamp(record["mean"]), mean_ci_low=clamp(record["mean_ci_low"]),
               mean_ci_high=clamp(record["mean_ci_high"]))
    std = record["std"]
    if not math.isnan(std):
        size = float(n)
        widest = (high - low) / 2 * math.sqrt(size / (size - 1)) if size > 1 else 0.0
        out["std"] = min(max(std, 0.0), widest)
    return out


def _mean_noise(n: Fraction, mean: float, count_noise: float, sum_noise: float) -> float:
    """The noise part of a noisy mean's standard deviation (delta method)."""
    size = float(n)
    if size <= 0 or math.isnan(mean):
        return math.inf
    return math.sqrt(sum_noise ** 2 + mean * mean * count_noise ** 2) / size


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
