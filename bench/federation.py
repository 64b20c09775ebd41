"""descriptive_stats of 5 variables on 3 nodes x 100,000 rows through a real local
federation (processes, TLS websockets, secure sum), next to pandas on the pooled rows,
measured in the same run."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fedtally.local import local_federation
from fedtally.synthetic import stroke_registry

ROWS = 100_000
REPEATS = 30
VARIABLES = ["age", "nihss", "onset_to_door_min", "mrs_90d", "days_to_event"]


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return statistics.median(ordered), p95


def run() -> list[str]:
    data = {name: stroke_registry(name, ROWS, 70 + i, 7 + i, 0.2, seed=100 + i)
            for i, name in enumerate(("hosp_a", "hosp_b", "hosp_c"))}
    pooled = pd.concat(data.values(), ignore_index=True)

    def pandas_answer() -> pd.DataFrame:
        grouped = pooled.groupby("dataset")[VARIABLES]
        overall = pooled[VARIABLES].agg(["count", "mean", "std"])
        return pd.concat([grouped.agg(["count", "mean", "std"]), overall.unstack().to_frame().T])

    lines = [f"descriptive_stats, {len(VARIABLES)} variables, 3 nodes x {ROWS:,} rows, "
             f"{REPEATS} repeats (p50 / p95)"]
    with tempfile.TemporaryDirectory() as tmp, \
            local_federation(data, workdir=Path(tmp) / "fed") as fed:
        fed.descriptive_stats(VARIABLES)  # warm-up: connections, imports, caches
        federated, local = [], []
        for _ in range(REPEATS):  # interleaved, so machine noise hits both alike
            start = time.perf_counter()
            result = fed.descriptive_stats(VARIABLES)
            federated.append(time.perf_counter() - start)
            start = time.perf_counter()
            pandas_answer()
            local.append(time.perf_counter() - start)
        expected = pooled["age"].mean()
        assert np.isclose(result.loc[("age", "all"), "mean"], expected, rtol=1e-12, atol=0)
    f50, f95 = _percentiles(federated)
    p50, p95 = _percentiles(local)
    lines.append(f"  federated  p50 {f50 * 1000:7.1f} ms   p95 {f95 * 1000:7.1f} ms")
    lines.append(f"  pandas     p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms  (pooled rows, "
                 "one process)")
    lines.append(f"  ratio      p50 {f50 / p50:7.1f}x    p95 {f95 / p95:7.1f}x")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
