"""Whole secure-sum rounds in memory (all roles in one process): wall time and peak memory.

Each configuration runs in a fresh subprocess so that its peak resident memory is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

CONFIGS = [  # (n nodes, d values, threshold, dropout fraction)
    (10, 1_000_000, 7, 0.1),
    (100, 10_000, 67, 0.1),
]


def one(n: int, d: int, threshold: int, dropout: float) -> dict[str, float]:
    from protocol.simulate import secure_sum

    rng = np.random.default_rng(0)  # benchmark inputs only; masks come from the AES-CTR PRG
    inputs = [rng.integers(-(2**31), 2**31, size=d) for _ in range(n)]
    dropped = set(range(int(n * dropout)))
    start = time.perf_counter()
    result = secure_sum(inputs, threshold=threshold, dropouts={"masked_input": dropped}, seed=1)
    wall = time.perf_counter() - start
    expected = np.sum([inputs[i] for i in result.survivors], axis=0)
    assert np.array_equal(result.total, expected)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": wall, "peak_mib": peak, "survivors": len(result.survivors)}


def run() -> list[str]:
    lines = ["secure_sum in memory, 10% dropouts at the masked-input stage (worst case)"]
    for n, d, t, drop in CONFIGS:
        out = subprocess.run([sys.executable, "-m", "bench.secure_sum", str(n), str(d), str(t),
                              str(drop)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout)
        lines.append(f"  n={n:4d} d={d:>9,} t={t:3d}  wall {r['wall_s']:.2f}s  "
                     f"peak RSS {r['peak_mib']:.0f} MiB  survivors {r['survivors']}")
    return lines


if __name__ == "__main__":
    if len(sys.argv) == 5:
        n, d, t, drop = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        print(json.dumps(one(n, d, t, drop)))
    else:
        print("\n".join(run()))
