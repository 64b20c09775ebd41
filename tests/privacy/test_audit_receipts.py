"""Anchored heads: a ledger that does not extend a head the node signed earlier fails.

Each attack below leaves a file that verifies *on its own* (so only the anchors can tell),
and each fails both with the head receipt the node handed out and with the head an auditor
kept (``expected_head``), naming that receipt.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import pytest
from ledger_support import KEY, POLICY, PUB, dp, exact, ticking

from privacy.audit import verify_ledger
from privacy.errors import InvalidRequest, LedgerCorrupt, ReceiptInvalid, ReceiptMismatch
from privacy.head import HeadReceipt, load_receipts, parse_head, write_receipts
from privacy.ledger import Ledger


def _queries(ledger: Ledger, start: int, count: int) -> list[HeadReceipt]:
    heads = []
    for i in range(start, start + count):
        if i % 2:
            heads.append(exact(ledger, f"{i:04x}").head)
        else:
            heads.append(ledger.release(dp(ledger, f"{i:04x}", 0.01).charge))
    return heads


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, Path, tuple[int, bytes, bytes], list[HeadReceipt]]:
    """A ledger, a copy of it taken half-way, the signed head row at that point, and the
    receipts the node handed out afterwards."""
    path = tmp_path / "ledger.db"
    with Ledger(path, KEY, PUB, clock=ticking()) as ledger:
        ledger.record_policy(POLICY)
        _queries(ledger, 0, 6)
        old = ledger.head_receipt()
        shutil.copy(path, tmp_path / "older-copy.db")
        receipts = _queries(ledger, 6, 5)
    return path, tmp_path / "older-copy.db", (old.seq, old.hash, old.signature), receipts


def _truncate_and_restore_old_head(path: Path, old: tuple[int, bytes, bytes]) -> None:
    """An attacker with the file (not the key) cuts the newest entries and puts back the
    head row signed when the ledger ended there (from a backup, or an old WAL)."""
    conn = sqlite3.connect(path)
    for trigger in ("entries_no_delete", "head_no_delete"):
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("DELETE FROM entries WHERE seq > ?", (old[0],))
    conn.execute("UPDATE head SET seq = ?, hash = ?, signature = ?", old)
    conn.commit()
    conn.close()


def _roll_back(path: Path, older: Path) -> None:
    shutil.copy(older, path)


def _roll_back_and_continue(path: Path, older: Path) -> None:
    """The node is started on an older copy and keeps answering: a different history at
    the same sequence numbers, every entry genuinely signed."""
    shutil.copy(older, path)
    with Ledger(path, KEY, PUB, clock=ticking("2025-02-02")) as ledger:
        _queries(ledger, 50, 8)


ATTACKS: dict[str, Callable[[Path, Path, tuple[int, bytes, bytes]], None]] = {
    "truncated, older signed head restored": lambda p, o, h: _truncate_and_restore_old_head(p, h),
    "rolled back to an older copy": lambda p, o, h: _roll_back(p, o),
    "rolled back, then written on": lambda p, o, h: _roll_back_and_continue(p, o),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_each_rollback_verifies_alone_but_fails_against_the_anchors(history, attack) -> None:
    path, older, old_head, receipts = history
    newest = receipts[-1]
    assert verify_ledger(path, PUB, receipts=receipts,
                         expected_head=newest.text).receipts_checked == len(receipts)
    ATTACKS[attack](path, older, old_head)
    verify_ledger(path, PUB)  # the file alone is a consistent, signed ledger
    with pytest.raises(ReceiptMismatch) as caught:
        verify_ledger(path, PUB, receipts=receipts)
    assert caught.value.receipt in receipts  # the error names the receipt it fails
    assert "receipt " in str(caught.value)
    with pytest.raises(ReceiptMismatch, match="expected head"):
        verify_ledger(path, PUB, expected_head=newest.text)
    with pytest.raises(ReceiptMismatch):
        verify_ledger(path, PUB, expected_head=(newest.seq, newest.hash))


def test_plain_truncation_fails_even_without_anchors(history) -> None:
    path, _, old_head, receipts = history
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER entries_no_delete")
    conn.execute("DELETE FROM entries WHERE seq > ?", (old_head[0],))
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorrupt, match="missing"):
        verify_ledger(path, PUB)
    with pytest.raises(LedgerCorrupt):
        verify_ledger(path, PUB, receipts=receipts)


def test_receipts_that_prove_nothing_are_errors_not_passes(history) -> None:
    path, _, _, receipts = history
    good = receipts[-1]
    forged = HeadReceipt(PUB, good.seq + 3, good.hash, good.signature)  # not signed
    with pytest.raises(ReceiptInvalid, match="not signed by the node key"):
        verify_ledger(path, PUB, receipts=[forged])
    other_key = nacl.signing.SigningKey(bytes(range(1, 33)))
    theirs = HeadReceipt(bytes(other_key.verify_key), good.seq, good.hash,
                         other_key.sign(b"x").signature)
    summary = verify_ledger(path, PUB, receipts=[theirs, good])
    assert (summary.receipts_checked, summary.receipts_other) == (1, 1)
    with pytest.raises(InvalidRequest, match="SEQ:HEX"):
        verify_ledger(path, PUB, expected_head="12:abc")


def test_receipts_files_round_trip_and_name_a_bad_line(history, tmp_path: Path) -> None:
    _, _, _, receipts = history
    file = tmp_path / "receipts.jsonl"
    write_receipts(file, receipts[:2])
    write_receipts(file, receipts[2:])
    assert load_receipts(file) == receipts
    assert (file.stat().st_mode & 0o777) == 0o600
    assert parse_head(receipts[0].text) == (receipts[0].seq, receipts[0].hash)
    with file.open("a") as out:
        out.write("\n" + receipts[0].to_json().replace('"seq":', '"seq":-') + "\n")
    with pytest.raises(ReceiptInvalid, match=rf"line {len(receipts) + 2}:"):
        load_receipts(file)
    for bad in ("not json", "[]", '{"format": "x"}'):
        with pytest.raises(ReceiptInvalid):
            HeadReceipt.from_json(bad)
