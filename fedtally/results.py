"""Turning secure-sum totals into the answers researchers read (pandas objects)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pandas as pd

from crypto.encoding import RingVector
from engine.plans import CELLS_SUPPRESSED, NODES_CONTRIBUTING, REAL_FRAC_BITS, Layout, groups
from engine.query import QuerySpec
from engine.service_messages import QueryResult

ALL = "all"
SCALE = 1 << REAL_FRAC_BITS


def totals(result: QueryResult) -> list[int]:
    """The exact signed totals of a result, one Python int per slot."""
    vector = RingVector.from_bytes(result.ring_bits, result.vector_length, result.total)
    return [int(x) for x in vector.to_signed()]


def federation_info(layout: Layout, values: list[int], result: QueryResult) -> dict[str, object]:
    index = layout.index()
    return {"nodes_asked": len(result.participants), "nodes_answered": len(result.survivors),
            "nodes_contributing": values[index[NODES_CONTRIBUTING]],
            "cells_suppressed": values[index[CELLS_SUPPRESSED]]}


def count(spec: QuerySpec, layout: Layout, values: list[int]) -> int:
    index = layout.index()
    return sum(values[index[("rows", d)]] for d in spec.datasets)


def _moments(n: int, s: int, ss: int) -> tuple[float, float]:
    """Mean and sample standard deviation from exact scaled sums (rational arithmetic, so
    no cancellation beyond the nodes' own float64 sums)."""
    if n == 0:
        return math.nan, math.nan
    total = Fraction(s, SCALE)
    mean = total / n
    if n < 2:
        return float(mean), math.nan
    variance = (Fraction(ss, SCALE) - total * total / n) / (n - 1)
    return float(mean), math.sqrt(max(float(variance), 0.0))


def descriptive_stats(spec: QuerySpec, layout: Layout, values: list[int],
                      numeric: dict[str, bool], levels: tuple[str | None, ...]) -> pd.DataFrame:
    index = layout.index()

    def total(key_head: str, datasets: list[str], group: str | None, *rest: str) -> int:
        return sum(values[index[(key_head, d, group, *rest)]] for d in datasets)

    records = []
    scopes = [(d, [d]) for d in spec.datasets] + [(ALL, list(spec.datasets))]
    for variable in spec.variables:
        for scope, datasets in scopes:
            for group in levels:
                rows = total("rows", datasets, group)
                n = total("count", datasets, group, variable)
                if numeric[variable]:
                    mean, std = _moments(n, total("sum", datasets, group, variable),
                                         total("sumsq", datasets, group, variable))
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
    return frame


__all__ = ["ALL", "count", "descriptive_stats", "federation_info", "groups", "totals"]
