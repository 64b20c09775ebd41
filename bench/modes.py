"""Mask mode against Paillier mode on the same federated queries, side by side in one run.

Two local federations (real processes, TLS websockets) over the same 3 nodes x 100,000
rows: one with pairwise masks, one with a 3072-bit threshold Paillier key (2 of 3 decrypt).
For each query: latency (p50 over interleaved repeats), bytes on the wire per query (the
aggregator's own count of websocket payloads from nodes, to nodes and to the researcher)
and CPU seconds per query in each node process and in the aggregator (from /proc).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedtally.local import local_federation
from fedtally.synthetic import stroke_registry

ROWS = 100_000
REPEATS = 10
VARIABLES = ["age", "nihss", "onset_to_door_min", "mrs_90d", "days_to_event"]
MODES = ("mask", "paillier")
_DONE = re.compile(r"done over \d+ of \d+ nodes in \d+ ms; bytes from nodes (\d+), "
                   r"to nodes (\d+), to the researcher (\d+)")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _queries() -> dict[str, Callable[[Any], Any]]:
    return {
        "count": lambda fed: fed.count(),
        "descriptive_stats (5 variables)": lambda fed: fed.descriptive_stats(VARIABLES),
        "linear_regression (4 covariates)": lambda fed: fed.linear_regression(
            "nihss", ["age", "onset_to_door_min", "mrs_90d", "days_to_event"]),
    }


def run() -> list[str]:
    data = {name: stroke_registry(name, ROWS, 70 + i, 7 + i, 0.2, seed=100 + i)
            for i, name in enumerate(("hosp_a", "hosp_b", "hosp_c"))}
    queries = _queries()
    lines = [f"mask vs paillier (3072-bit, 2 of 3 decrypt), 3 nodes x {ROWS:,} rows, "
             f"{REPEATS} interleaved repeats per query"]
    with tempfile.TemporaryDirectory() as tmp:
        feds = {}
        contexts = []
        try:
            for mode in MODES:
                started = time.perf_counter()
                context = local_federation(data, workdir=Path(tmp) / mode, protection=mode)
                contexts.append(context)
                feds[mode] = context.__enter__()
                lines.append(f"  {mode:8s} federation up in {time.perf_counter() - started:5.1f} s "
                             "(init, key dealing, processes, TLS)")
            table = []
            for label, query in queries.items():
                stats: dict[str, dict[str, float]] = {}
                samples: dict[str, list[float]] = {m: [] for m in MODES}
                results = {}
                for mode in MODES:
                    results[mode] = query(feds[mode])  # warm-up
                cpu_before = {m: _process_cpu(feds[m]) for m in MODES}
                log_before = {m: len(feds[m].local.log("aggregator")) for m in MODES}
                for _ in range(REPEATS):
                    for mode in MODES:
                        start = time.perf_counter()
                        query(feds[mode])
                        samples[mode].append(time.perf_counter() - start)
                for mode in MODES:
                    after = _process_cpu(feds[mode])
                    before = cpu_before[mode]
                    traffic = [tuple(map(int, m.groups())) for m in _DONE.finditer(
                        feds[mode].local.log("aggregator")[log_before[mode]:])]
                    per_query = [sum(t) / len(traffic) for t in zip(*traffic, strict=True)] \
                        if traffic else [0.0, 0.0, 0.0]
                    stats[mode] = {
                        "p50": statistics.median(samples[mode]),
                        "bytes": sum(per_query),
                        "from_nodes": per_query[0],
                        "node_cpu": sum(after[n] - before[n] for n in after if n != "aggregator")
                        / (len(after) - 1) / REPEATS,
                        "agg_cpu": (after["aggregator"] - before["aggregator"]) / REPEATS,
                    }
                table.append((label, stats))
                _check_same(label, results)
        finally:
            for context in reversed(contexts):
                context.__exit__(None, None, None)
    lines.append(f"  {'query':34s} {'mode':8s} {'p50 ms':>8s} {'bytes/query':>12s} "
                 f"{'from nodes':>11s} {'node CPU ms':>12s} {'agg CPU ms':>11s}")
    for label, stats in table:
        for mode in MODES:
            s = stats[mode]
            lines.append(f"  {label:34s} {mode:8s} {s['p50'] * 1000:8.1f} {s['bytes']:12,.0f} "
                         f"{s['from_nodes']:11,.0f} {s['node_cpu'] * 1000:12.1f} "
                         f"{s['agg_cpu'] * 1000:11.1f}")
        m, p = stats["mask"], stats["paillier"]
        lines.append(f"  {'':34s} {'ratio':8s} {p['p50'] / m['p50']:7.2f}x "
                     f"{p['bytes'] / max(m['bytes'], 1):11.2f}x {'':11s} "
                     f"{p['node_cpu'] / max(m['node_cpu'], 1e-9):11.2f}x "
                     f"{p['agg_cpu'] / max(m['agg_cpu'], 1e-9):10.2f}x  (paillier / mask)")
    return lines


def _process_cpu(fed: Any) -> dict[str, float]:
    processes = fed.local
    out = {name: _cpu_seconds(p.pid) for name, p in processes.nodes.items()}
    out["aggregator"] = _cpu_seconds(processes.aggregator.pid)
    return out


def _check_same(label: str, results: dict[str, Any]) -> None:
    """Both modes must give the same answer: a fast wrong result is no result."""
    mask, paillier = results["mask"], results["paillier"]
    if hasattr(mask, "equals"):
        assert mask.equals(paillier), f"{label}: modes disagree"
    elif hasattr(mask, "params"):
        assert mask.params.equals(paillier.params), f"{label}: modes disagree"
    else:
        assert mask == paillier, f"{label}: modes disagree"


if __name__ == "__main__":
    print("\n".join(run()))
