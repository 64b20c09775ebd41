"""Timing helpers: repeat, report the median and the spread (the machine is shared)."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float, float]:
    """(median, min, max) wall seconds over ``repeat`` runs, after one warm-up run."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples), max(samples)


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
