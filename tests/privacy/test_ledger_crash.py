"""Crash safety: SIGKILL a node process at random points while it charges and releases.

The child loops forever like a node: charge (durable on return) -> write an acknowledgement
-> release (recorded before "sending") -> write a "sent" marker; every fourth query is
refunded instead. The parent kills it after a random delay between 0.1 ms and ~30 ms, so the
kill lands inside SQLite statements, fsyncs, signing and Python code alike. After each kill
the parent "restarts" (reopens the ledger) and checks: the ledger verifies, every
acknowledged charge is present exactly once, no release or refund exists without its
charge, every "sent" marker has its release, and at most the one in-flight query is
charged without acknowledgement. (A kill between a commit and its checkpoint leaves that
commit in ``ledger.db-wal`` only; the restart recovers it, and its close writes it into
``ledger.db``, which is then verified on its own.)
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import nacl.signing
from ledger_support import dp

from privacy.audit import verify_ledger
from privacy.ledger import Ledger

KILLS = 60
SEED = bytes(range(32))
BUDGET = 10_000.0  # never the limiting factor here: this test is about durability
POLICY = {"budgets": {"alice": {"*": {"rho": BUDGET}}}}


def _node(path: str, acks: str, first: int, ready) -> None:
    key = nacl.signing.SigningKey(SEED)
    ledger = Ledger(path, key, bytes(key.verify_key))
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    ready.set()
    i = first
    while True:
        qid = f"{i:08x}"
        datasets = ["edsd", "ppmi"] if i % 3 == 0 else ["edsd"]
        receipt = dp(ledger, qid, 0.001, datasets).charge
        os.write(fd, f"A {qid}\n".encode())  # one write(2): all or nothing under SIGKILL
        if i % 4 == 3:
            ledger.refund(receipt, "crash test: nothing was sent")
            os.write(fd, f"F {qid}\n".encode())
        else:
            ledger.release(receipt, transcript="ab" * 16)
            os.write(fd, f"S {qid}\n".encode())  # "sent": only after the release returned
        i += 1


def _check(path: Path, acks: Path, public_key: bytes, kills: int) -> dict[str, int]:
    key = nacl.signing.SigningKey(SEED)
    with Ledger(path, key, public_key) as ledger:  # the restart: reopening checks the head
        entries = ledger.entries()
        spent = ledger.spent_nano("alice", "edsd")
    # closing after the restart checkpointed the killed node's -wal: ledger.db alone (what
    # an auditor copies, read immutably) now holds every entry
    summary = verify_ledger(path, public_key)
    marks: dict[str, set[str]] = {"A": set(), "F": set(), "S": set()}
    for line in acks.read_text().splitlines():
        kind, qid = line.split()
        marks[kind].add(qid)
    charges = Counter((e.query_id, e.dataset) for e in entries if e.kind == "charge")
    charged = {q for q, _ in charges}
    by_seq = {e.seq: e for e in entries}
    released = {by_seq[e.ref_seq].query_id for e in entries if e.kind == "release"}
    refunded = {by_seq[e.ref_seq].query_id for e in entries if e.kind == "refund"}
    assert all(n == 1 for n in charges.values()), "a query was charged twice"
    assert marks["A"] <= charged, f"acknowledged charges lost: {marks['A'] - charged}"
    assert released | refunded <= marks["A"], "released or refunded before acknowledgement"
    assert marks["S"] <= released and marks["F"] <= refunded
    assert not released & refunded
    # only the query in flight at each kill may be charged without an acknowledgement
    assert len(charged - marks["A"]) <= kills
    net = sum(1_000_000 for (_, d) in charges if d == "edsd") - sum(
        1_000_000 for e in entries if e.kind == "refund" and e.dataset == "edsd")
    assert spent == net
    assert summary.entries == len(entries)
    settled = marks["S"] | marks["F"]
    return {"charged": charged, "acked": marks["A"], "settled": settled,
            "closed": released | refunded}


def _phase(now: dict[str, set[str]], before: dict[str, set[str]]) -> str:
    """Where the kill landed, judged from what this child left behind."""
    def new(a: str, b: str) -> set[str]:
        return (now[a] - now[b]) - (before[a] - before[b])

    if not now["charged"] - before["charged"]:
        return "in the first charge, before its commit was durable"
    if new("charged", "acked"):
        return "charge durable, charge() not returned or not acknowledged (fsync, ...)"
    if new("acked", "closed"):
        return "charge acknowledged, release/refund not durable"
    if new("closed", "settled"):
        return "release/refund durable, not returned or not marked sent"
    return "between queries, or in a later charge before its commit"


def test_sigkill_during_charging_and_releasing(disk_path: Path) -> None:
    # on disk, not in memory: the kills must land inside commits, which fsync makes wide
    tmp_path = disk_path
    ctx = mp.get_context("forkserver")  # a fresh interpreter per server, cheap forks per kill
    ctx.set_forkserver_preload(["privacy.ledger", "nacl.signing"])
    key = nacl.signing.SigningKey(SEED)
    public_key = bytes(key.verify_key)
    path, acks = tmp_path / "ledger.db", tmp_path / "acks.txt"
    with Ledger(path, key, public_key) as ledger:
        ledger.record_policy(POLICY)
    rng = random.Random(99)
    phases: Counter[str] = Counter()
    state: dict[str, set[str]] = {k: set() for k in ("charged", "acked", "settled", "closed")}
    started = time.monotonic()
    for kill in range(KILLS):
        ready = ctx.Event()
        child = ctx.Process(target=_node, args=(str(path), str(acks), kill * 1_000_000, ready))
        child.start()
        assert ready.wait(60), "the node process did not start"
        time.sleep(10 ** rng.uniform(-3.3, -0.7))  # 0.5 .. 200 ms: lands inside any step
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
        assert child.exitcode == -signal.SIGKILL
        now = _check(path, acks, public_key, kill + 1)
        phases[_phase(now, state)] += 1
        state = now
    print(f"\ncrash test: {KILLS} kills in {time.monotonic() - started:.1f} s, "
          f"{len(state['charged'])} queries charged; kills landed: {dict(phases)}")
    assert len(state["charged"]) > KILLS
    # the kills did land inside the critical windows, not only between queries
    assert sum(n for p, n in phases.items() if "durable," in p) >= 5
