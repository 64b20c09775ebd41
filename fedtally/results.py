"""Turning secure-sum totals into the answers researchers read (pandas objects)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

from crypto.encoding import RingVector
from engine.plans import CELLS_SUPPRESSED, NODES_CONTRIBUTING, REAL_FRAC_BITS, Key, Layout
from engine.query import QuerySpec
from engine.service_messages import QueryResult
from node.datamodel import DataModel
from node.kinds import PlanModel

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

    def count(self, key: Key) -> int:
        return self.values[self._index()[key]]

    def exact(self, key: Key) -> Fraction:
        """A real slot's total as an exact fraction (the sum of the nodes' local sums)."""
        return Fraction(self.values[self._index()[key]], SCALE)

    def real(self, key: Key) -> float:
        return float(self.exact(key))

    @property
    def view(self) -> PlanModel:
        return PlanModel(self.model)

    @property
    def federation(self) -> dict[str, int]:
        """How many nodes were asked, answered, contributed; how many cells were suppressed."""
        return {"nodes_asked": len(self.reply.participants),
                "nodes_answered": len(self.reply.survivors),
                "nodes_contributing": self.count(NODES_CONTRIBUTING),
                "cells_suppressed": self.count(CELLS_SUPPRESSED)}


def moments(n: int, s: Fraction, ss: Fraction) -> tuple[float, float]:
    """Mean and sample standard deviation from exact sums (rational arithmetic, so no
    cancellation beyond the nodes' own float64 sums)."""
    if n == 0:
        return math.nan, math.nan
    mean = s / n
    if n < 2:
        return float(mean), math.nan
    variance = (ss - s * s / n) / (n - 1)
    return float(mean), math.sqrt(max(float(variance), 0.0))


def descriptive_stats(stat: Statistic) -> pd.DataFrame:
    spec = stat.spec
    view = stat.view
    levels: tuple[str | None, ...] = (None,) if spec.by is None else (None, *view.levels(spec.by))

    def total(head: str, datasets: list[str], group: str | None, *rest: str) -> int:
        return sum(stat.count((head, d, group, *rest)) for d in datasets)

    def exact(head: str, datasets: list[str], group: str | None, variable: str) -> Fraction:
        return sum((stat.exact((head, d, group, variable)) for d in datasets), Fraction(0))

    records = []
    scopes = [(d, [d]) for d in spec.datasets] + [(ALL, list(spec.datasets))]
    for variable in spec.variables:
        for scope, datasets in scopes:
            for group in levels:
                rows = total("rows", datasets, group)
                n = total("count", datasets, group, variable)
                if view.is_numeric(variable):
                    mean, std = moments(n, exact("sum", datasets, group, variable),
                                        exact("sumsq", datasets, group, variable))
                else:
                    mean, std = math.nan, math.nan
                record = {"variable": variable, "dataset": scope, "count": n,
                          "missing": rows - n, "mean": mean, "std": std}
                if spec.by is not None:
                    record[spec.by] = ALL if group is None else group
                records.append(record)
    keys = ["variable", "dataset"] + ([spec.by] if spec.by else [])
    frame = pd.DataFrame.from_records(records, columns=[*keys, "count", "missing", "mean", "std"])
    frame = frame.set_index(keys)
    frame["count"] = frame["count"].astype(np.int64)
    frame["missing"] = frame["missing"].astype(np.int64)
    frame.attrs["federation"] = stat.federation
    return frame
