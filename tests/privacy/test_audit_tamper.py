"""Tamper evidence: every edit, deletion, reordering or insertion of ledger entries is caught.

The attacker has the SQLite file but not the node key. They drop the append-only triggers
and rewrite rows directly. Each mutation is applied inside a transaction on an in-memory
copy of one ledger, verified, and rolled back, so 10,000+ mutations take seconds.
"""

from __future__ import annotations

import random
import sqlite3
import struct
from pathlib import Path

import nacl.signing
import pytest
from ledger_support import (
    KEY,
    PUB,
    Base,
    _byte_edit,
    _detected,
    _edit_bytes,
    _raw,
    craft,
    dp,
    exact,
    refuse,
    ticking,
)

from privacy import entry as E
from privacy.audit import verify_connection, verify_ledger
from privacy.errors import BudgetExhausted, LedgerCorrupt
from privacy.ledger import Ledger
from privacy.schema import COLUMNS

SEED = 20250131
EDITS = 10_000
DELETIONS = 1_000
REORDERINGS = 1_000
INSERTIONS = 300


def build_ledger(path: Path, key: nacl.signing.SigningKey) -> int:
    """A ~23-entry ledger with every kind of entry and decision; returns its length."""
    assert bytes(key.verify_key) == PUB
    with Ledger(path, key, bytes(key.verify_key), clock=ticking("2025-03-01")) as ledger:
        ledger.record_policy({"budgets": {"*": {"edsd": {"rho": 0.6}, "ppmi": {"rho": 0.15}}}})
        for i in range(7):
            who = ("alice", "bob")[i % 2]
            try:
                receipt = dp(ledger, f"{i:08x}", 0.1, ["edsd", "ppmi"] if i % 2 else ["edsd"],
                             researcher=who, delta=1e-6)
            except BudgetExhausted:
                continue
            if i == 2:
                ledger.refund(receipt.charge, "aggregator unreachable before any send")
            else:
                ledger.release(receipt.charge, transcript="ef" * 32)
            if i == 0:
                exact(ledger, "0e", researcher=who)
        refuse(ledger, "ff01", "min-row-count", method="mean", researcher="dave")
        return len(ledger.entries())


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory):
    key = KEY
    path = tmp_path_factory.mktemp("tamper") / "ledger.db"
    count = build_ledger(path, key)
    disk = sqlite3.connect(path)
    mem = sqlite3.connect(":memory:", isolation_level=None)
    disk.backup(mem)
    disk.close()
    for trigger in ("entries_no_update", "entries_no_delete", "head_no_delete"):
        mem.execute(f"DROP TRIGGER {trigger}")  # what an attacker does first
    verify_connection(mem, bytes(key.verify_key))  # the untouched copy verifies
    snapshot = Base(mem, bytes(key.verify_key), count, _raw(mem))
    yield snapshot
    assert _raw(mem) == snapshot.raw  # every mutation was rolled back
    mem.close()


def test_untampered_ledger_verifies(tmp_path: Path) -> None:
    count = build_ledger(tmp_path / "l.db", KEY)
    summary = verify_ledger(tmp_path / "l.db", PUB)
    assert summary.entries == count >= 20
    assert set(summary.kinds) == {"genesis", "policy", "query", "charge", "release", "refund"}
    assert set(summary.decisions) == {"answered-exact", "answered-dp", "refused"}


def test_every_single_byte_edit_is_detected(base: Base) -> None:
    count = base.count
    rng = random.Random(SEED)
    done = 0
    while done < EDITS:
        mutate, what = _byte_edit(rng, count)
        result = _detected(base, mutate)
        if result is None:
            continue
        assert result, f"undetected: {what}"
        done += 1


def test_every_deletion_is_detected(base: Base) -> None:
    count = base.count
    rng = random.Random(SEED + 1)
    cases = [[count - 1], [0], [count // 2]]  # the last, the genesis, one in the middle
    while len(cases) < DELETIONS:
        k = rng.choice((1, 1, 1, 2, 3))
        if rng.random() < 0.3:  # a run at the end: only the signed head can tell
            cases.append(list(range(count - k, count)))
        else:
            cases.append(rng.sample(range(count), k))
    for seqs in cases:
        def mutate(mem: sqlite3.Connection, seqs=seqs) -> None:
            mem.executemany("DELETE FROM entries WHERE seq = ?", [(s,) for s in seqs])
        assert _detected(base, mutate), f"undetected deletion of {seqs}"
    # and the whole ledger, with or without its head
    for sql in (["DELETE FROM entries"], ["DELETE FROM entries", "DELETE FROM head"]):
        assert _detected(base, lambda m, sql=sql: [m.execute(s) for s in sql])


def test_every_reordering_is_detected(base: Base) -> None:
    count = base.count
    rng = random.Random(SEED + 2)
    for i in range(REORDERINGS):
        if i % 3 == 2:  # reverse a run
            a = rng.randrange(count - 1)
            b = rng.randrange(a + 1, count)
            order = list(range(a, b + 1))
            perm = dict(zip(order, reversed(order), strict=True))
        else:  # swap two
            a, b = rng.sample(range(count), 2)
            perm = {a: b, b: a}

        def mutate(mem: sqlite3.Connection, perm=perm) -> None:
            # move rows out of the way, then into their new places (rowids are unique)
            for old in perm:
                mem.execute("UPDATE entries SET seq = ? WHERE seq = ?", (-1 - old, old))
            for old, new in perm.items():
                mem.execute("UPDATE entries SET seq = ? WHERE seq = ?", (new, -1 - old))
        assert _detected(base, mutate), f"undetected reordering {perm}"


def test_every_insertion_and_foreign_append_is_detected(base: Base) -> None:
    count = base.count
    rng = random.Random(SEED + 3)
    intruder = nacl.signing.SigningKey(bytes(range(1, 33)))
    cols = ", ".join(COLUMNS)
    for i in range(INSERTIONS):
        source = rng.randrange(count)
        if i % 3 == 0:  # a replayed copy of a genuine entry, appended at the end
            def mutate(mem: sqlite3.Connection, source=source) -> None:
                row = mem.execute(f"SELECT {cols} FROM entries WHERE seq = ?",
                                  (source,)).fetchone()
                mem.execute(f"INSERT INTO entries ({cols}) VALUES "
                            f"({', '.join('?' * len(COLUMNS))})", (count, *row[1:]))
        elif i % 3 == 1:  # a copy inserted in the middle, later entries shifted up
            def mutate(mem: sqlite3.Connection, source=source) -> None:
                row = mem.execute(f"SELECT {cols} FROM entries WHERE seq = ?",
                                  (source,)).fetchone()
                for s in range(count - 1, source, -1):
                    mem.execute("UPDATE entries SET seq = ? WHERE seq = ?", (s + 1, s))
                mem.execute(f"INSERT INTO entries ({cols}) VALUES "
                            f"({', '.join('?' * len(COLUMNS))})", (source + 1, *row[1:]))
        else:  # a well-formed, chained charge appended and signed with another key
            def mutate(mem: sqlite3.Connection, source=source) -> None:
                prev = mem.execute("SELECT hash FROM entries WHERE seq = ?",
                                   (count - 1,)).fetchone()[0]
                forged = E.blank(count, "2025-03-02T00:00:00Z", "query", query_id="aa",
                                 researcher="mallory", method="count", datasets='["edsd"]',
                                 held='["edsd"]', variables="[]", query_digest="aa",
                                 decision="answered-exact")
                digest = E.entry_hash(prev, forged)
                sig = intruder.sign(E.SIG_DOMAIN + digest).signature
                mem.execute(f"INSERT INTO entries ({cols}) VALUES "
                            f"({', '.join('?' * len(COLUMNS))})",
                            (*(getattr(forged, f) for f in E.FIELDS), prev, digest, sig))
                mem.execute("UPDATE head SET seq = ?, hash = ?, signature = ?",
                            (count, digest,
                             intruder.sign(E.head_message(count, digest)).signature))
        assert _detected(base, mutate), f"undetected insertion #{i}"


def test_head_edits_are_detected(base: Base) -> None:
    rng = random.Random(SEED + 4)
    for _ in range(200):
        column = rng.choice(("seq", "hash", "signature"))

        def mutate(mem: sqlite3.Connection, column=column) -> None:
            value = mem.execute(f"SELECT {column} FROM head").fetchone()[0]
            if isinstance(value, int):
                value = struct.unpack(">q", _edit_bytes(struct.pack(">q", value), rng))[0]
            else:
                value = _edit_bytes(value, rng)
            mem.execute(f"UPDATE head SET {column} = ?", (value,))
        assert _detected(base, mutate)


def test_first_bad_entry_is_named(base: Base) -> None:
    mem, public_key, count = base.mem, base.public_key, base.count
    mem.execute("BEGIN")
    try:
        mem.execute("UPDATE entries SET researcher = 'eve' WHERE seq = 7")
        mem.execute("UPDATE entries SET researcher = 'eve' WHERE seq = 12")
        with pytest.raises(LedgerCorrupt, match=r"ledger entry 7: .*edited") as caught:
            verify_connection(mem, public_key)
        assert caught.value.entry == 7
    finally:
        mem.execute("ROLLBACK")
    mem.execute("BEGIN")
    try:
        mem.execute("DELETE FROM entries WHERE seq = 5")
        with pytest.raises(LedgerCorrupt, match=r"ledger entry 5: missing"):
            verify_connection(mem, public_key)
    finally:
        mem.execute("ROLLBACK")
    mem.execute("BEGIN")
    try:
        mem.execute("DELETE FROM entries WHERE seq = ?", (count - 1,))
        with pytest.raises(LedgerCorrupt, match=f"ledger entry {count - 1}: missing"):
            verify_connection(mem, public_key)
    finally:
        mem.execute("ROLLBACK")


def test_verifying_under_another_key_fails(base: Base) -> None:
    mem = base.mem
    other = bytes(nacl.signing.SigningKey(bytes(32)).verify_key)
    with pytest.raises(LedgerCorrupt, match="ledger entry 0"):
        verify_connection(mem, other)


def test_truncated_and_garbage_files_are_rejected(tmp_path: Path) -> None:
    key = KEY
    good = tmp_path / "good.db"
    build_ledger(good, key)
    data = good.read_bytes()
    rng = random.Random(SEED + 5)
    bad = tmp_path / "bad.db"
    cuts = sorted({0, 1, 99, 100, 4096, len(data) - 1, len(data) - 4096}
                  | {rng.randrange(1, len(data)) for _ in range(40)})
    for cut in cuts:
        bad.write_bytes(data[:cut])
        with pytest.raises(LedgerCorrupt):
            verify_ledger(bad, bytes(key.verify_key))
    for blob in (rng.randbytes(len(data)), b"SQLite format 3\x00" + rng.randbytes(8192),
                 b"not a ledger\n"):
        bad.write_bytes(blob)
        with pytest.raises(LedgerCorrupt):
            verify_ledger(bad, bytes(key.verify_key))
    with pytest.raises(LedgerCorrupt, match="no ledger file"):
        verify_ledger(tmp_path / "absent.db", bytes(key.verify_key))
    assert not (tmp_path / "absent.db").exists()  # verification never creates a file


def test_signed_but_impossible_entries_are_findings(tmp_path: Path) -> None:
    """The key holder (or a bug) cannot write a second genesis or an unknown kind unnoticed
    either (the arithmetic findings are in test_audit_arithmetic.py)."""
    cases = {
        "genesis entry must be first": E.blank(-1, "2025-03-01T00:00:00Z", E.GENESIS,
                                               node_key=PUB.hex()),
        "unknown kind": E.blank(-1, "2025-03-01T00:00:00Z", "mint"),
    }
    for i, (finding, row) in enumerate(cases.items()):
        path = tmp_path / f"l{i}.db"
        with Ledger(path, KEY, PUB) as ledger:
            craft(ledger, [row])
        with pytest.raises(LedgerCorrupt, match=finding) as caught:
            verify_ledger(path, PUB)
        assert caught.value.entry == 1
