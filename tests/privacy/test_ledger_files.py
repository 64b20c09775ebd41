"""Copy-safe ledger files: ``ledger.db`` alone is the whole ledger, verification reads it
without creating or changing any file (also on a read-only copy), and ledger files are
0600."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest
from ledger_support import KEY, POLICY, PUB, dp, exact

from privacy.audit import cli_verify, read_genesis_key, verify_ledger
from privacy.errors import ReceiptMismatch
from privacy.ledger import Ledger
from privacy.report import build_report


def _fill(ledger: Ledger, start: int, count: int) -> None:
    for i in range(start, start + count):
        if i % 3:
            exact(ledger, f"{i:04x}")
        else:
            ledger.release(dp(ledger, f"{i:04x}", 0.01).charge)


def _listing(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file in ``folder`` with its size, mode and content hash."""
    return {p.name: (p.stat().st_size, p.stat().st_mode,
                     hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


def test_a_copy_of_ledger_db_alone_verifies_while_open_and_after_close(tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.mkdir()
    path = node / "ledger.db"
    ledger = Ledger(path, KEY, PUB)
    ledger.record_policy(POLICY)
    _fill(ledger, 0, 12)
    # the node is still running: each commit was checkpointed into ledger.db
    alive = tmp_path / "copy-while-open"
    alive.mkdir()
    shutil.copy(path, alive / "ledger.db")  # the file alone, without -wal / -shm
    summary = verify_ledger(alive / "ledger.db", PUB)
    assert summary.entries == len(ledger.entries()) == summary.head.seq + 1
    assert summary.head == ledger.head_receipt()
    _fill(ledger, 100, 5)
    final = ledger.head_receipt()
    ledger.close()
    # after close the WAL is checkpointed and truncated: ledger.db is everything
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    stopped = tmp_path / "copy-after-close"
    stopped.mkdir()
    shutil.copy(path, stopped / "ledger.db")
    summary = verify_ledger(stopped / "ledger.db", PUB, receipts=[final])
    assert summary.head == final and summary.receipts_checked == 1


def test_verify_creates_no_file_and_changes_none(tmp_path: Path, capsys) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, KEY, PUB) as ledger:
        ledger.record_policy(POLICY)
        _fill(ledger, 0, 6)
    before = _listing(tmp_path)
    assert list(before) == ["ledger.db"]
    verify_ledger(path, PUB)
    read_genesis_key(path)
    assert cli_verify(path, PUB) == 0
    assert build_report([("n", path, PUB)]).nodes[0].valid
    assert _listing(tmp_path) == before  # no -wal, no -shm, no journal; bytes unchanged


def test_a_read_only_copy_verifies(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger(path, KEY, PUB) as ledger:
        ledger.record_policy(POLICY)
        _fill(ledger, 0, 6)
    mount = tmp_path / "read-only"
    mount.mkdir()
    copy = mount / "ledger.db"
    shutil.copy(path, copy)
    copy.chmod(0o444)
    mount.chmod(0o555)  # like a read-only mount (root bypasses modes, so also compare below)
    try:
        before = _listing(mount)
        summary = verify_ledger(copy, PUB)
        assert summary.entries == 2 + 6 + 2 * 2  # genesis, policy, 6 queries, 2 DP x 2
        assert _listing(mount) == before
    finally:
        mount.chmod(0o755)


def test_ledger_files_are_created_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        path = tmp_path / "ledger.db"
        with Ledger(path, KEY, PUB) as ledger:
            ledger.record_policy(POLICY)
            dp(ledger, "01")
            created = [p for p in tmp_path.iterdir() if p.name.startswith("ledger.db")]
            assert {p.name for p in created} >= {"ledger.db", "ledger.db-wal"}
            for p in created:
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p.name
    finally:
        os.umask(old)


def test_entries_in_an_unmerged_wal_are_not_lost_by_the_node(tmp_path: Path) -> None:
    """A node killed between a commit and its checkpoint leaves the entry in the -wal: the
    node reopening its folder recovers it (the -wal is part of the live ledger), while an
    auditor's copy of ledger.db alone is a valid, shorter ledger that receipts expose."""
    path = tmp_path / "ledger.db"
    with Ledger(path, KEY, PUB) as ledger:
        ledger.record_policy(POLICY)
        dp(ledger, "01")
    # simulate the kill window: a writer commits without checkpointing, and stays open
    writer = Ledger(path, KEY, PUB)
    writer._conn.execute("PRAGMA wal_autocheckpoint = 0")
    original = writer._transaction

    @contextmanager
    def no_checkpoint():  # the commit of _transaction, without its checkpoint
        with writer._lock:
            conn = writer._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    writer._transaction = no_checkpoint  # type: ignore[method-assign]
    receipt = dp(writer, "02")
    writer._transaction = original  # type: ignore[method-assign]
    copy = tmp_path / "copy.db"
    shutil.copy(path, copy)
    lone = verify_ledger(copy, PUB)
    assert lone.head.seq < receipt.head.seq
    with pytest.raises(ReceiptMismatch):
        verify_ledger(copy, PUB, receipts=[receipt.head])
    # the node's own view (ledger.db + its -wal) has the entry
    reader = sqlite3.connect(path)
    assert reader.execute("SELECT max(seq) FROM entries").fetchone()[0] == receipt.head.seq
    reader.close()
    writer.close()  # and closing merges it into ledger.db
    assert verify_ledger(path, PUB, receipts=[receipt.head]).head == receipt.head
