"""The ledger: integer budgets, atomic check-and-charge, refunds, releases, refusals, chain."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import struct
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import nacl.signing
import pytest

from privacy import entry as E
from privacy.audit import cli_verify, read_genesis_key, verify_ledger
from privacy.errors import (
    BudgetExhausted,
    InvalidRequest,
    LedgerCorrupt,
    PrivacyError,
    RefundRefused,
)
from privacy.ledger import ChargeReceipt, Ledger
from privacy.units import budget_nano, charge_nano, nano_text

KEY = nacl.signing.SigningKey(bytes(range(32)))
PUB = bytes(KEY.verify_key)


def clock():
    ticks = iter(range(10**6))
    return lambda: f"2025-02-01T00:{next(ticks) % 3600 // 60:02d}:{next(ticks) % 60:02d}Z"


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(tmp_path / "ledger.db", KEY, PUB, clock=clock()) as opened:
        yield opened


def charge(ledger: Ledger, qid: str, rho=0.1, datasets=("edsd",), limits=None,
           researcher: str = "alice") -> ChargeReceipt:
    limits = {"edsd": 1.0, "ppmi": 0.5} if limits is None else limits
    return ledger.charge(researcher, list(datasets), rho, limits.get, query_id=qid,
                         method="count", mechanism="distributed discrete gaussian",
                         sensitivity=1, noise_scale=3.2, epsilon=1.0, delta=1e-6,
                         policy_hash="ab" * 32)


# --- units ------------------------------------------------------------------------------


def test_units_round_charges_up_and_budgets_down() -> None:
    assert charge_nano(0.1) == 100_000_000  # the decimal a person wrote, exactly
    assert charge_nano("0.05") == charge_nano(Decimal("0.05")) == 50_000_000
    assert charge_nano(1e-12) == 1  # never rounds a charge down to nothing
    assert charge_nano(Fraction(1, 3)) == 333_333_334
    assert budget_nano(Fraction(1, 3)) == 333_333_333
    assert budget_nano(0) == 0 and budget_nano(2) == 2_000_000_000
    assert nano_text(50_000_000) == "0.05" and nano_text(3 * 10**9) == "3"
    for bad in (0, -0.1, float("nan"), float("inf"), True, "x", None, [0.1]):
        with pytest.raises(InvalidRequest):
            charge_nano(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest):
        budget_nano(-1)


# --- charging ---------------------------------------------------------------------------


def test_charge_is_durable_and_the_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, KEY, PUB) as ledger:
        receipt = charge(ledger, "01")
        assert receipt.rho == 0.1 and receipt.datasets == ("edsd",)
    # a fresh connection (another process, after a restart) sees the charge
    with Ledger(path, KEY, PUB) as again:
        assert again.spent("alice", "edsd") == 0.1
    summary = verify_ledger(path, PUB)
    assert summary.entries == 2 and summary.kinds == {"genesis": 1, "charge": 1}
    assert "valid, 2 entries" in summary.line()


def test_ledger_settings_are_wal_full_and_append_only(ledger: Ledger) -> None:
    conn = ledger._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    charge(ledger, "01")
    raw = sqlite3.connect(ledger.path)
    for sql in ("UPDATE entries SET rho_nano = 1", "DELETE FROM entries",
                "DELETE FROM head"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only|never deleted"):
            raw.execute(sql)
    raw.close()


def test_exact_budget_is_spendable_and_not_one_nano_more(ledger: Ledger) -> None:
    for i in range(10):
        charge(ledger, f"{i:02x}", rho=0.1)  # 10 x 0.1 == 1.0 exactly in nano-rho
    with pytest.raises(BudgetExhausted):
        charge(ledger, "ff", rho=1e-9)
    assert ledger.spent_nano("alice", "edsd") == 10**9


def test_budget_exhausted_names_the_remaining_budget_and_charges_nothing(
        ledger: Ledger) -> None:
    charge(ledger, "01", rho=0.4, datasets=("edsd", "ppmi"))
    with pytest.raises(BudgetExhausted) as caught:
        charge(ledger, "02", rho=0.2, datasets=("edsd", "ppmi"))
    exc = caught.value
    assert isinstance(exc, PrivacyError)
    assert exc.remaining == {"edsd": 0.6, "ppmi": pytest.approx(0.1)}
    assert exc.remaining_nano == {"edsd": 600_000_000, "ppmi": 100_000_000}
    assert exc.datasets == ("ppmi",)
    assert "'ppmi' has rho 0.1 remaining" in str(exc) and "needs rho 0.2" in str(exc)
    # all or nothing: edsd had room but was not charged either
    assert ledger.spent_nano("alice", "edsd") == 400_000_000
    refusals = [e for e in ledger.entries() if e.kind == "refusal"]
    assert [(e.dataset, e.reason) for e in refusals] == [
        ("edsd", "other-dataset-exhausted"), ("ppmi", "budget-exhausted")]
    assert all(e.rho_nano == 200_000_000 and e.query_id == "02" for e in refusals)


def test_no_budget_means_refused(ledger: Ledger) -> None:
    with pytest.raises(BudgetExhausted, match="'other' has rho 0 remaining"):
        charge(ledger, "01", datasets=("other",))
    assert ledger.entries()[-1].reason == "no-budget"


def test_budget_objects_with_a_rho_attribute_are_accepted(ledger: Ledger) -> None:
    @dataclass
    class Budget:  # the node policy's shape
        rho: float

    ledger.charge("bob", ["edsd"], 0.25, lambda d: Budget(0.25), query_id="0a",
                  method="mean", mechanism="m")
    with pytest.raises(BudgetExhausted):
        ledger.charge("bob", ["edsd"], 0.25, lambda d: Budget(0.25), query_id="0b",
                      method="mean", mechanism="m")


def test_budgets_are_per_researcher(ledger: Ledger) -> None:
    charge(ledger, "01", rho=1.0)
    charge(ledger, "02", rho=1.0, researcher="bob")
    assert ledger.spent("alice", "edsd") == ledger.spent("bob", "edsd") == 1.0


@pytest.mark.parametrize("kwargs, match", [
    ({"rho": 0}, "positive"),
    ({"rho": -0.1}, "positive"),
    ({"rho": float("nan")}, "finite"),
    ({"datasets": []}, "at least one"),
    ({"datasets": ["edsd", "edsd"]}, "twice"),
    ({"datasets": "edsd"}, "list"),
    ({"query_id": "xyz"}, "hex"),
    ({"query_id": "abc"}, "hex"),
    ({"researcher": ""}, "researcher"),
    ({"time": "yesterday"}, "ISO 8601"),
    ({"time": "2025-02-30T00:00:00Z"}, "not a valid time"),
    ({"epsilon": float("inf")}, "finite"),
])
def test_bad_requests_fail_before_anything_is_written(ledger: Ledger, kwargs, match) -> None:
    args = dict(researcher="alice", datasets=["edsd"], rho=0.1, budget_for={"edsd": 1}.get,
                query_id="01", method="count", mechanism="m")
    args.update(kwargs)
    before = len(ledger.entries())
    with pytest.raises(InvalidRequest, match=match):
        ledger.charge(**args)
    assert len(ledger.entries()) == before


# --- refunds and releases ---------------------------------------------------------------


def test_refund_returns_the_budget_once(ledger: Ledger) -> None:
    receipt = charge(ledger, "01", rho=0.5, datasets=("edsd", "ppmi"))
    ledger.refund(receipt, "the aggregator rejected the session before any send")
    assert ledger.spent_nano("alice", "edsd") == ledger.spent_nano("alice", "ppmi") == 0
    with pytest.raises(RefundRefused, match="already refunded"):
        ledger.refund(receipt, "again")
    with pytest.raises(RefundRefused, match="already refunded"):
        ledger.release(receipt)
    refund = ledger.entries()[-1]
    assert refund.kind == "refund" and refund.reason.startswith("the aggregator")
    verify_ledger(ledger.path, PUB)


def test_no_refund_after_release(ledger: Ledger) -> None:
    receipt = charge(ledger, "01")
    ledger.release(receipt, transcript="cd" * 32)
    with pytest.raises(RefundRefused, match="already released"):
        ledger.refund(receipt, "too late")
    with pytest.raises(RefundRefused, match="already released"):
        ledger.release(receipt)
    assert ledger.spent("alice", "edsd") == 0.1


def test_refund_needs_a_proof_and_a_genuine_receipt(ledger: Ledger) -> None:
    receipt = charge(ledger, "01")
    with pytest.raises(InvalidRequest, match="proof"):
        ledger.refund(receipt, "  ")
    forged = ChargeReceipt("01", "alice", ("edsd",), 1, receipt.seqs, receipt.time)
    with pytest.raises(RefundRefused, match="does not match"):
        ledger.refund(forged, "nothing sent")
    with pytest.raises(RefundRefused, match="not a charge"):
        ledger.refund(ChargeReceipt("01", "alice", ("edsd",), 1, (0,), ""), "nothing sent")


def test_other_refusals_are_recorded(ledger: Ledger) -> None:
    ledger.refuse("carol", ["edsd", "ppmi"], "min-row-count", query_id="0c", method="mean",
                  rho=0.1)
    assert [(e.kind, e.dataset, e.reason) for e in ledger.entries()[1:]] == [
        ("refusal", "edsd", "min-row-count"), ("refusal", "ppmi", "min-row-count")]
    with pytest.raises(InvalidRequest, match="reason code"):
        ledger.refuse("carol", ["edsd"], "Not A Code", query_id="0d", method="mean")


def test_summary_for_fed_budget(ledger: Ledger) -> None:
    charge(ledger, "01", rho=0.3, datasets=("edsd", "ppmi"))
    r = charge(ledger, "02", rho=0.1)
    ledger.refund(r, "nothing sent")
    with pytest.raises(BudgetExhausted):
        charge(ledger, "03", rho=0.3, datasets=("ppmi",))
    lines = {(b.researcher, b.dataset): b for b in ledger.summary()}
    edsd, ppmi = lines["alice", "edsd"], lines["alice", "ppmi"]
    assert (edsd.spent, edsd.limit, edsd.remaining) == (0.3, 1.0, 0.7)
    assert (edsd.charges, edsd.refunds, edsd.refusals) == (2, 1, 0)
    assert (ppmi.spent_nano, ppmi.remaining_nano, ppmi.refusals) == (
        300_000_000, 200_000_000, 1)
    # current limits from the policy override the recorded ones; extra pairs appear
    override = ledger.summary(lambda who, what: 2.0, include=[("bob", "edsd")])
    assert [(b.researcher, b.dataset, b.remaining) for b in override] == [
        ("alice", "edsd", 1.7), ("alice", "ppmi", 1.7), ("bob", "edsd", 2.0)]
    assert [b.dataset for b in ledger.summary(researcher="bob")] == []


# --- keys, encoding, verification --------------------------------------------------------


def test_signer_must_match_the_public_key(tmp_path: Path) -> None:
    other = nacl.signing.SigningKey(bytes(32))
    with pytest.raises(InvalidRequest, match="does not match"):
        Ledger(tmp_path / "l.db", other, PUB)
    assert not (tmp_path / "l.db").exists()


def test_a_ledger_of_another_key_is_not_appended_to(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.db", KEY, PUB).close()
    other = nacl.signing.SigningKey(bytes(32))
    with pytest.raises(LedgerCorrupt, match="ledger entry 0: signature"):
        Ledger(tmp_path / "l.db", other, bytes(other.verify_key))


def test_a_signer_returning_bare_signatures_works(tmp_path: Path) -> None:
    class Identity:  # like crypto.identity.SigningIdentity
        def sign(self, message: bytes) -> bytes:
            return KEY.sign(message).signature

    with Ledger(tmp_path / "l.db", Identity(), PUB) as ledger:
        charge(ledger, "01")
    verify_ledger(tmp_path / "l.db", PUB)


def _auditor_encoding(prev: bytes, e: E.Entry) -> bytes:
    """The entry encoding as documented, re-implemented independently of privacy.entry."""
    out = b"fedtally-ledger-v1/entry\x00" + prev
    for value in (e.seq, e.time, e.kind, e.query_id, e.researcher, e.dataset, e.method,
                  e.mechanism, e.sensitivity, e.noise_scale, e.rho_nano, e.budget_nano,
                  e.epsilon, e.delta, e.policy_hash, e.transcript, e.reason, e.ref_seq):
        if isinstance(value, int):
            out += b"i" + struct.pack(">I", 8) + struct.pack(">q", value)
        else:
            out += b"s" + struct.pack(">I", len(value.encode())) + value.encode()
    return out


def test_entry_encoding_known_answer() -> None:
    e = E.Entry(1, "2025-01-01T00:00:00Z", "charge", "0a1b", "alice", "edsd", "count",
                "distributed discrete gaussian", "1", "2.5", 50_000_000, 1_000_000_000,
                "1.0", "1e-06", "ab" * 32, "", "", -1)
    assert E.encode(bytes(32), e) == _auditor_encoding(bytes(32), e)
    digest = E.entry_hash(bytes(32), e)
    assert digest == hashlib.sha256(_auditor_encoding(bytes(32), e)).digest()
    assert digest.hex() == "c874bce4b53329425f2b0da437d7bc87abcbbb8d3147c47dee0e4f47c13ef26f"
    assert KEY.sign(E.SIG_DOMAIN + digest).signature.hex() == (
        "2879eea32946a5be4d67306f7580e850a9a9056dbd0f24a1936ad6764e0b2e7c"
        "805f8b3ff7704d3c56fe70de8851159dc0b17e15d106dee4fdbee95a055bfc02")


def test_every_stored_entry_matches_the_documented_encoding(ledger: Ledger) -> None:
    r = charge(ledger, "01", datasets=("edsd", "ppmi"))
    ledger.release(r, transcript="ee" * 32)
    rows = sqlite3.connect(ledger.path).execute(
        "SELECT prev_hash, hash, signature FROM entries ORDER BY seq").fetchall()
    prev = bytes(32)
    for e, (stored_prev, digest, signature) in zip(ledger.entries(), rows, strict=True):
        assert stored_prev == prev
        assert hashlib.sha256(_auditor_encoding(prev, e)).digest() == digest
        KEY.verify_key.verify(E.SIG_DOMAIN + digest, signature)
        prev = digest


def test_expected_head_detects_a_rollback(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, KEY, PUB) as ledger:
        charge(ledger, "01")
    shutil.copy(path, tmp_path / "old.db")  # an insider keeps a copy ...
    with Ledger(path, KEY, PUB) as ledger:
        charge(ledger, "02")
    head = verify_ledger(path, PUB).head_hash  # ... an auditor records the head ...
    assert verify_ledger(path, PUB, expected_head=head).entries == 3
    with pytest.raises(LedgerCorrupt, match="rolled back"):  # ... and the copy is put back
        verify_ledger(tmp_path / "old.db", PUB, expected_head=head)


def test_genesis_names_the_key_and_cli_verify(tmp_path: Path, capsys) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, KEY, PUB) as ledger:
        charge(ledger, "01")
    assert read_genesis_key(path) == PUB
    assert cli_verify(path, PUB) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "valid, 2 entries" in out
    other = bytes(nacl.signing.SigningKey(bytes(32)).verify_key)
    assert cli_verify(path, other) == 1
    assert "INVALID: ledger entry 0" in capsys.readouterr().err


def test_a_garbage_file_is_not_opened_as_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerCorrupt, match="not a ledger database"):
        Ledger(path, KEY, PUB)


def test_threads_sharing_one_ledger_never_overspend(ledger: Ledger) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def attempt(i: int) -> bool:
        try:
            ledger.charge("alice", ["edsd"], 0.1, {"edsd": 0.7}.get, query_id=f"{i:04x}",
                          method="count", mechanism="m")
        except BudgetExhausted:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(attempt, range(24))) == 7
    assert ledger.spent_nano("alice", "edsd") == 700_000_000
    verify_ledger(ledger.path, PUB)
