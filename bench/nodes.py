"""Federations of many nodes: the simulated secure sum (protocol.simulate) with 10% dropouts,
complete graph against the SecAgg+ graph, side by side in one run.

    python -m bench nodes              # the default set (a few minutes)
    python -m bench.nodes --all        # adds the complete graph at n = 500 and 1,000 (long)
    python -m bench.nodes --one N D complete|secagg+    # one configuration, as JSON

Every configuration runs in a fresh subprocess (its own peak memory). All roles run in one
process; the CPU time of each node's state machine and of the aggregator is measured
separately (time.process_time around each call), so the per-node figure is what one
hospital's node would spend. The thresholds are the manifest's defaults: c = 1 colluding
node, t = the larger of 2n/3 and the collusion bound, and for SecAgg+ the k and t_s that
protocol.collusion chooses for n and c. Per-node work is also counted: the adverts a node
verified, the shares it holds and the signed views it was sent (O(k) on SecAgg+, O(n) on
the complete graph).
"""

from __future__ import annotations

import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np

NODES = (100, 200, 500, 1000)
LENGTHS = (1_000, 100_000)
COLLUDING = 1
DROPOUT = 0.1
#: the complete graph grows ~n^2 per round (each node works for every other node): these
#: take minutes and run only with --all
SLOW = {(500, "complete"), (1000, "complete")}


def one(n: int, d: int, graph: str) -> dict[str, object]:
    from crypto.encoding import RingVector, plan_ring
    from crypto.identity import SigningIdentity
    from crypto.randomness import SeededRandom
    from protocol.collusion import choose_neighbours, min_threshold
    from protocol.messages import KeyRoster, ShareBundle, UnmaskRequest
    from protocol.simulate import make_params, run_round

    rng_inputs = np.random.default_rng(0)  # benchmark inputs only; masks use AES-CTR
    inputs = [rng_inputs.integers(-(2**31), 2**31, size=d) for _ in range(n)]
    threshold = max(min_threshold(n, COLLUDING), math.ceil(2 * n / 3))
    neighbours = choose_neighbours(n, COLLUDING) if graph == "secagg+" else 0
    if graph == "secagg+" and not neighbours:
        raise SystemExit(f"no SecAgg+ graph is cheaper than the complete graph at n={n}")
    bits = plan_ring(-n * 2**31, n * 2**31).bits
    rng = SeededRandom(1)
    params = make_params(n, threshold, d, bits, neighbours, rng, max_colluding=COLLUDING)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(bits, a) for a in inputs]
    dropped = set(range(0, n, round(1 / DROPOUT)))  # spread over the names
    start, cpu = time.perf_counter(), time.process_time()
    t = run_round(values, params, identities=identities, rng=rng,
                  dropouts={"masked_input": dropped}, clock=time.process_time)
    wall, total_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert t.result is not None, t.aggregator.error
    survivors = [i for i, name in enumerate(t.names) if name in t.aggregator.survivors]
    expected = np.sum([inputs[i] for i in survivors], axis=0)
    assert np.array_equal(t.result.to_signed(), expected), "wrong total"
    per_node = list(t.node_seconds.values())

    def sizes(cls: type, field: str) -> float:
        return statistics.mean(len(getattr(m, field)) for _, _, m in t.outbox
                               if isinstance(m, cls))

    return {
        "n": n, "d": d, "graph": graph, "k": neighbours, "t": threshold,
        "t_s": params.shamir_threshold, "survivors": len(survivors),
        "wall_s": wall, "cpu_s": total_cpu,
        "node_cpu_mean_s": statistics.mean(per_node), "node_cpu_max_s": max(per_node),
        "aggregator_cpu_s": t.aggregator_seconds,
        "adverts_per_node": sizes(KeyRoster, "adverts"),
        "shares_per_node": sizes(ShareBundle, "shares"),
        "signatures_per_node": sizes(UnmaskRequest, "signatures"),
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _measure(n: int, d: int, graph: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-m", "bench.nodes", "--one", str(n), str(d), graph],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _cell(r: dict[str, object] | None) -> str:
    if r is None:
        return f"{'(--all)':>44}"
    return (f"{r['wall_s']:7.1f}s {1000 * r['node_cpu_mean_s']:6.1f}ms "
            f"{r['aggregator_cpu_s']:6.1f}s {r['adverts_per_node']:5.0f}/"
            f"{r['signatures_per_node']:<4.0f}{r['peak_mib']:6.0f}M")


def run(include_slow: bool = False) -> Iterator[str]:
    """The table, a line at a time as each configuration is measured (the whole takes
    minutes)."""
    yield from [
        f"simulated secure sum, {DROPOUT:.0%} dropouts at the masked input, c = {COLLUDING} "
        "colluding node; per configuration: wall time, CPU per node (mean), aggregator CPU, "
        "adverts / signatures each node received, peak RSS (all roles in one process)",
        f"{'n':>5} {'d':>8} | {'complete graph':^44} | {'SecAgg+ graph (k, t_s)':^54} | "
        "speed-up",
    ]
    for d in LENGTHS:
        for n in NODES:
            results: dict[str, dict[str, object] | None] = {}
            for graph in ("complete", "secagg+"):
                slow = (n, graph) in SLOW
                results[graph] = _measure(n, d, graph) if include_slow or not slow else None
            full, sparse = results["complete"], results["secagg+"]
            assert sparse is not None
            ratio = (f"{full['wall_s'] / sparse['wall_s']:5.1f}x wall, "  # type: ignore[operator]
                     f"{full['node_cpu_mean_s'] / sparse['node_cpu_mean_s']:4.1f}x per node"
                     if full else "")
            yield (f"{n:5d} {d:8,} | {_cell(full)} | ({sparse['k']:3d}, "
                   f"{sparse['t_s']:3d}) {_cell(sparse)} | {ratio}")
    yield ("per-node CPU on SecAgg+ follows k (k grows ~log n through the liveness "
           "bound), on the complete graph it follows n")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])))
    else:
        for line in run(include_slow="--all" in sys.argv[1:]):
            print(line, flush=True)
