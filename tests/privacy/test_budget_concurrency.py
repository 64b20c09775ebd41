"""Concurrency: 16 processes race to charge one budget; 50 runs; never overspent, and exactly
as many charges succeed as the budget allows (the check and the charge are one
``BEGIN IMMEDIATE`` transaction, so no two processes can both see the same headroom)."""

from __future__ import annotations

import multiprocessing as mp
import random
from pathlib import Path

import nacl.signing
from ledger_support import dp

from privacy.audit import verify_ledger
from privacy.errors import BudgetExhausted
from privacy.ledger import Ledger

WORKERS = 16
RUNS = 50
ATTEMPTS = 2  # charges per worker per run
RHO = 0.1  # exactly 100_000_000 nano-rho: k charges fit a budget of k * 0.1 exactly
SEED = bytes(range(32))


def _worker(index: int, jobs, results, barrier) -> None:
    """One racing process: for each run, open the ledger, wait for all, charge ATTEMPTS times."""
    key = nacl.signing.SigningKey(SEED)
    while (job := jobs.get()) is not None:
        run, path = job
        ok = refused = 0
        with Ledger(path, key, bytes(key.verify_key)) as ledger:
            barrier.wait()
            for attempt in range(ATTEMPTS):
                try:
                    dp(ledger, f"{run:04x}{index:02x}{attempt:02x}", RHO)
                    ok += 1
                except BudgetExhausted:
                    refused += 1
        results.put((run, index, ok, refused))


def test_sixteen_processes_never_overspend(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    jobs = [ctx.Queue() for _ in range(WORKERS)]
    results = ctx.Queue()
    barrier = ctx.Barrier(WORKERS)
    procs = [ctx.Process(target=_worker, args=(i, jobs[i], results, barrier), daemon=True)
             for i in range(WORKERS)]
    for p in procs:
        p.start()
    key = nacl.signing.SigningKey(SEED)
    rng = random.Random(7)
    total = WORKERS * ATTEMPTS
    # the edges (no budget, one charge, one short of all, exactly all, more than all) + random
    allowed = [0, 1, total - 1, total, total + 5] + [rng.randrange(total + 1)
                                                    for _ in range(RUNS - 5)]
    try:
        for run, k in enumerate(allowed):
            path = tmp_path / f"run{run}.db"
            limit = k * RHO  # e.g. 0.30000000000000004 for k = 3: read as its decimal repr
            with Ledger(path, key, bytes(key.verify_key)) as ledger:  # before the race
                ledger.record_policy({"budgets": {"alice": {"edsd": {"rho": limit}}}})
            for q in jobs:
                q.put((run, str(path)))
            outcomes = [results.get(timeout=120) for _ in range(WORKERS)]
            assert {o[0] for o in outcomes} == {run}
            ok = sum(o[2] for o in outcomes)
            refused = sum(o[3] for o in outcomes)
            assert ok == min(k, total), f"run {run}: {ok} charges succeeded, budget allows {k}"
            assert ok + refused == total
            with Ledger(path, key, bytes(key.verify_key)) as ledger:
                assert ledger.spent_nano("alice", "edsd") == ok * 100_000_000
                assert ledger.spent_nano("alice", "edsd") <= round(k * 1e8)
                (line,) = ledger.summary()
                assert (line.charges, line.refusals) == (ok, refused)
            summary = verify_ledger(path, bytes(key.verify_key))  # replays the budget too
            assert summary.kinds.get("charge", 0) == ok
    finally:
        for q in jobs:
            q.put(None)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
