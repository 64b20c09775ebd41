"""Node key rotation: the ledger keeps its history and spending across a new node key.

The ledger's key chain starts at the genesis key; a ``key_rotation`` entry, signed by the key
it replaces, names the next. The auditor follows the chain and requires it to end at the
node's key in the manifest. The attacker here has the file and any key but the old one (the
aggregator, an outsider, or whoever holds the new key), or is the node itself trying to
forget what was spent.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import nacl.signing
import pytest
from ledger_support import KEY, POLICY, PUB, Base, _byte_edit, _detected, dp, ticking

from privacy import entry as E
from privacy.audit import read_ledger_key, verify_connection, verify_ledger
from privacy.errors import (
    BudgetExhausted,
    InvalidRequest,
    LedgerCorrupt,
    LedgerKeyChanged,
    ReceiptInvalid,
    ReceiptMismatch,
)
from privacy.head import HeadReceipt
from privacy.ledger import Ledger
from privacy.report import build_report

NEW = nacl.signing.SigningKey(bytes([1]) * 32)
NEW_PUB = bytes(NEW.verify_key)
STRANGER = nacl.signing.SigningKey(bytes([2]) * 32)
STRANGER_PUB = bytes(STRANGER.verify_key)


def rotated(path: Path, key: nacl.signing.SigningKey = NEW,
            previous: nacl.signing.SigningKey = KEY, version: int = 2) -> Ledger:
    return Ledger(path, key, bytes(key.verify_key), clock=ticking("2025-04-01"),
                  previous=(previous, bytes(previous.verify_key)), manifest_version=version)


def spend_then_rotate(path: Path) -> tuple[list[HeadReceipt], list[HeadReceipt]]:
    """0.4 of alice's 1.0 on edsd under the old key, 0.3 more under the new one."""
    before, after = [], []
    with Ledger(path, KEY, PUB, clock=ticking("2025-03-01")) as ledger:
        ledger.record_policy(POLICY)
        for i in range(2):
            receipt = dp(ledger, f"a{i}", 0.2)
            before.append(ledger.release(receipt.charge, transcript="ef" * 32))
    with rotated(path) as ledger:
        assert ledger.spent("alice", "edsd") == pytest.approx(0.4)  # spending carried over
        ledger.record_policy(POLICY)  # unchanged: no entry
        receipt = dp(ledger, "b0", 0.3)
        after.append(ledger.release(receipt.charge, transcript="ef" * 32))
    return before, after


def test_a_rotated_ledger_verifies_and_keeps_its_spending(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    before, after = spend_then_rotate(path)
    summary = verify_ledger(path, NEW_PUB, receipts=before + after)
    assert summary.keys == (PUB.hex(), NEW_PUB.hex())
    assert summary.receipts_checked == 3  # receipts of the old key still verify
    assert summary.charged_nano == 700_000_000
    assert "1 key rotations" in summary.line()
    rotation = next(e for e in Ledger(path, NEW, NEW_PUB).entries()
                    if e.kind == E.KEY_ROTATION)
    assert (rotation.node_key, rotation.reason) == (NEW_PUB.hex(), "manifest-v2")
    assert read_ledger_key(path) == NEW_PUB
    # the node cannot overspend what it spent under its old key
    with Ledger(path, NEW, NEW_PUB) as ledger, pytest.raises(BudgetExhausted):
        dp(ledger, "c0", 0.31)
    # the chain ends at the new key: the old key from an older manifest no longer fits
    with pytest.raises(LedgerCorrupt, match="key chain ends at"):
        verify_ledger(path, PUB)
    report = build_report([("hosp_a", path, NEW_PUB)], receipts=before + after)
    assert report.nodes[0].valid
    assert [(r.seq, r.old_key, r.new_key, r.manifest) for r in report.rotations] == [
        (rotation.seq, PUB.hex(), NEW_PUB.hex(), "manifest-v2")]
    assert report.to_dict()["key_rotations"][0]["new_key"] == NEW_PUB.hex()
    assert "Key rotations" in report.to_html()


def test_reopening_under_the_new_key_adds_no_second_rotation(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    spend_then_rotate(path)
    with rotated(path) as ledger:  # the previous key given again changes nothing
        kinds = [e.kind for e in ledger.entries()]
    assert kinds.count(E.KEY_ROTATION) == 1


def test_no_rotation_without_the_previous_key(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger(path, KEY, PUB).close()
    with pytest.raises(LedgerKeyChanged) as caught:
        Ledger(path, NEW, NEW_PUB)
    assert caught.value.ledger_key == PUB.hex()
    with pytest.raises(LedgerKeyChanged):  # a stranger's key as "previous" is refused
        rotated(path, previous=STRANGER)
    with pytest.raises(InvalidRequest, match="manifest version"):
        Ledger(path, NEW, NEW_PUB, previous=(KEY, PUB))
    with pytest.raises(InvalidRequest, match="does not match"):  # a key and another's public
        Ledger(path, NEW, NEW_PUB, previous=(STRANGER, PUB), manifest_version=2)
    with Ledger(path, KEY, PUB) as ledger:
        assert [e.kind for e in ledger.entries()] == [E.GENESIS]


def test_a_retired_key_never_returns(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    spend_then_rotate(path)
    with pytest.raises(InvalidRequest, match="retired key"):
        rotated(path, key=KEY, previous=NEW, version=3)
    rotated(path, key=STRANGER, previous=NEW, version=3).close()  # a fresh key is fine
    summary = verify_ledger(path, STRANGER_PUB)
    assert summary.keys == (PUB.hex(), NEW_PUB.hex(), STRANGER_PUB.hex())


def _forge_rotation(path: Path, signer: nacl.signing.SigningKey, names: bytes) -> None:
    """Append a key_rotation entry signed by ``signer`` (not the ledger's key) and a head
    signed by the key it names: what someone without the old key can write."""
    head_signer = {NEW_PUB: NEW, STRANGER_PUB: STRANGER}[names]
    conn = sqlite3.connect(path)
    seq, prev = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
                             ).fetchone()
    entry = E.blank(seq + 1, "2025-03-02T00:00:00Z", E.KEY_ROTATION, node_key=names.hex(),
                    reason="manifest-v9")
    digest = E.entry_hash(prev, entry)
    values = [getattr(entry, name) for name in E.FIELDS]
    conn.execute(f"INSERT INTO entries VALUES ({', '.join('?' * (len(values) + 3))})",
                 (*values, prev, digest, signer.sign(E.SIG_DOMAIN + digest).signature))
    conn.execute("UPDATE head SET seq = ?, hash = ?, signature = ?",
                 (seq + 1, digest, head_signer.sign(E.head_message(seq + 1, digest)).signature))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("signer, names", [(NEW, NEW_PUB), (STRANGER, STRANGER_PUB),
                                           (STRANGER, NEW_PUB)],
                         ids=["signed-by-new-key", "stranger-own-key", "stranger-new-key"])
def test_a_forged_rotation_is_refused(tmp_path: Path, signer: nacl.signing.SigningKey,
                                      names: bytes) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, KEY, PUB, clock=ticking("2025-03-01")) as ledger:
        ledger.record_policy(POLICY)
    _forge_rotation(path, signer, names)
    for key in (names, PUB, NEW_PUB):
        with pytest.raises(LedgerCorrupt, match="ledger entry 2: its signature"):
            verify_ledger(path, key)
    # the node itself refuses to go on from it
    with pytest.raises(LedgerCorrupt):
        rotated(path)


def test_a_rotation_signed_correctly_but_not_in_the_manifest_is_refused(tmp_path: Path) -> None:
    """The node's own old key rotating to a key the manifest does not list (e.g. a thief
    of the old key, or the node 'rotating' on its own): the chain does not end at the
    manifest's key."""
    path = tmp_path / "l.db"
    spend_then_rotate(path)  # to NEW, as the manifest says
    shutil.copy(path, tmp_path / "copy.db")
    rotated(tmp_path / "copy.db", key=STRANGER, previous=NEW, version=3).close()
    with pytest.raises(LedgerCorrupt, match="key chain ends at"):
        verify_ledger(tmp_path / "copy.db", NEW_PUB)


def test_rolling_back_across_a_rotation_is_caught_by_receipts(tmp_path: Path) -> None:
    """The node copies its ledger early, spends, rotates, spends; then restores the copy
    and rotates again (it still has the old key) to forget the spending."""
    path = tmp_path / "l.db"
    with Ledger(path, KEY, PUB, clock=ticking("2025-03-01")) as ledger:
        ledger.record_policy(POLICY)
    shutil.copy(path, tmp_path / "early.db")
    before, after = spend_then_rotate(path)
    shutil.copy(tmp_path / "early.db", path)
    rotated(path).close()
    verify_ledger(path, NEW_PUB)  # alone, a consistent (shorter) history: receipts matter
    with pytest.raises(ReceiptMismatch):
        verify_ledger(path, NEW_PUB, receipts=before)  # heads the old key handed out
    with pytest.raises(ReceiptMismatch):
        verify_ledger(path, NEW_PUB, receipts=after)  # heads the new key handed out


def test_a_retired_key_cannot_sign_later_heads(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    before, after = spend_then_rotate(path)
    late = after[-1]  # a head after the rotation, re-signed by the retired key
    forged = HeadReceipt(PUB, late.seq, late.hash,
                         KEY.sign(E.head_message(late.seq, late.hash)).signature)
    with pytest.raises(ReceiptInvalid, match="signed heads of entries 0.."):
        verify_ledger(path, NEW_PUB, receipts=[forged])
    early = before[0]  # and the new key cannot sign heads from before it
    forged = HeadReceipt(NEW_PUB, early.seq, early.hash,
                         NEW.sign(E.head_message(early.seq, early.hash)).signature)
    with pytest.raises(ReceiptInvalid):
        verify_ledger(path, NEW_PUB, receipts=[forged])


def test_every_single_byte_edit_of_a_rotated_ledger_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    spend_then_rotate(path)
    disk = sqlite3.connect(path)
    mem = sqlite3.connect(":memory:", isolation_level=None)
    disk.backup(mem)
    disk.close()
    for trigger in ("entries_no_update", "entries_no_delete", "head_no_delete"):
        mem.execute(f"DROP TRIGGER {trigger}")
    count = mem.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    base = Base(mem, NEW_PUB, count, [])
    verify_connection(mem, NEW_PUB)
    rng = random.Random(20261204)
    done = 0
    while done < 2000:
        mutate, what = _byte_edit(rng, count)
        result = _detected(base, mutate)
        if result is None:
            continue
        assert result, f"undetected: {what}"
        done += 1
    verify_connection(mem, NEW_PUB)  # every edit was rolled back
    mem.close()
