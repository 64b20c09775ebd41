"""Verifiable totals: what checking every total against the contributors' commitments costs.

Two local federations in mask mode (real processes, TLS websockets) over the same 3 nodes x
100,000 rows, one with verifiable totals (the default) and one without; for each query the
p50 latency over interleaved repeats and the CPU per query in each node process. Then the
cost per slot of the two operations the check adds: a node's Pedersen commitment to its
vector, and the researcher's opening of the total against the sum of the commitments.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.modes import _process_cpu, _queries
from crypto import commitments as pc
from crypto.randomness import SystemRandom
from fedtally.local import local_federation
from fedtally.synthetic import stroke_registry

ROWS = 100_000
REPEATS = 10
SETTINGS = {"verifiable": True, "plain": False}
SLOTS = (10, 100, 1000)


def run() -> list[str]:
    data = {name: stroke_registry(name, ROWS, 70 + i, 7 + i, 0.2, seed=100 + i)
            for i, name in enumerate(("hosp_a", "hosp_b", "hosp_c"))}
    lines = [f"verifiable totals, mask mode, 3 nodes x {ROWS:,} rows, {REPEATS} interleaved "
             "repeats per query"]
    with tempfile.TemporaryDirectory() as tmp:
        contexts, feds = [], {}
        try:
            for label, verifiable in SETTINGS.items():
                context = local_federation(data, workdir=Path(tmp) / label,
                                           verifiable_totals=verifiable)
                contexts.append(context)
                feds[label] = context.__enter__()
            lines.append(f"  {'query':34s} {'setting':10s} {'p50 ms':>8s} {'node CPU ms':>12s}")
            for name, query in _queries().items():
                samples: dict[str, list[float]] = {s: [] for s in SETTINGS}
                for fed in feds.values():
                    query(fed)  # warm-up
                before = {s: _process_cpu(feds[s]) for s in SETTINGS}
                for _ in range(REPEATS):
                    for setting, fed in feds.items():
                        start = time.perf_counter()
                        query(fed)
                        samples[setting].append(time.perf_counter() - start)
                p50 = {s: statistics.median(v) for s, v in samples.items()}
                for setting in SETTINGS:
                    after = _process_cpu(feds[setting])
                    cpu = sum(after[n] - before[setting][n] for n in after
                              if n != "aggregator") / (len(after) - 1) / REPEATS
                    lines.append(f"  {name:34s} {setting:10s} {p50[setting] * 1000:8.1f} "
                                 f"{cpu * 1000:12.1f}")
                lines.append(f"  {'':34s} {'ratio':10s} "
                             f"{p50['verifiable'] / p50['plain']:7.2f}x  (verifiable / plain)")
        finally:
            for context in reversed(contexts):
                context.__exit__(None, None, None)
    lines += _per_slot()
    return lines


def _per_slot() -> list[str]:
    """A node's commitment and the researcher's check, per slot, at a few vector sizes."""
    rng = SystemRandom()
    lines = ["  per slot (one node's commitment; the researcher's opening of a 3-node sum):"]
    for d in SLOTS:
        values = [int(v) for v in np.arange(d) * 1_000_003 - 7]
        blinding = pc.random_blinding(rng)
        start = time.perf_counter()
        commitments = [pc.commit(values, blinding) for _ in range(3)]
        commit = (time.perf_counter() - start) / 3
        start = time.perf_counter()
        pc.check_opening(pc.combine(commitments), [3 * v for v in values], 3 * blinding)
        check = time.perf_counter() - start
        lines.append(f"    d = {d:5d}: commit {commit / d * 1e6:6.1f} us/slot, "
                     f"check {check / d * 1e6:6.1f} us/slot")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
