"""The ledger: every query and policy recorded, budgets of the policy in force, atomic
check-and-charge, refunds, releases, epsilon computed by the ledger, the chain, heads."""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import struct
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import nacl.signing
import pytest
from ledger_support import DIGEST, KEY, POLICY, PUB, dp, exact, mechanism, refuse, ticking

from privacy import entry as E
from privacy.accounting import epsilon_from_rho
from privacy.audit import cli_verify, read_genesis_key, verify_ledger
from privacy.errors import (
    BudgetExhausted,
    InvalidRequest,
    LedgerCorrupt,
    LedgerFormatError,
    LedgerKeyChanged,
    PrivacyError,
    ReceiptInvalid,
    ReceiptMismatch,
    RefundRefused,
)
from privacy.head import HeadReceipt
from privacy.ledger import ChargeReceipt, Ledger
from privacy.mechanism import Mechanism, QueryRecord
from privacy.units import budget_nano, charge_nano, nano_text


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(tmp_path / "ledger.db", KEY, PUB, clock=ticking()) as opened:
        opened.record_policy(POLICY)
        yield opened


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


# --- every query is an entry --------------------------------------------------------------


def test_every_kind_of_query_is_recorded_with_its_decision(ledger: Ledger) -> None:
    answered = exact(ledger, "01", ["edsd", "ppmi"], method="mean")
    refused = refuse(ledger, "02", "algorithm-not-allowed", method="pca")
    charged = dp(ledger, "03", 0.2, ["edsd", "ppmi", "other"], held=["edsd", "ppmi"])
    assert (answered.decision, answered.charge, answered.epsilon) == ("answered-exact", None,
                                                                      None)
    assert refused.decision == "refused" and refused.charge is None
    assert charged.decision == "answered-dp" and charged.charge is not None
    assert charged.charge.datasets == ("edsd", "ppmi") and charged.charge.rho == 0.2
    kinds = [(e.kind, e.decision, e.dataset) for e in ledger.entries()]
    assert kinds == [("genesis", "", ""), ("policy", "", ""), ("query", "answered-exact", ""),
                     ("query", "refused", ""), ("query", "answered-dp", ""),
                     ("charge", "", "edsd"), ("charge", "", "ppmi")]
    query = ledger.entries()[4]
    assert query.datasets == '["edsd","ppmi","other"]' and query.held == '["edsd","ppmi"]'
    assert query.variables == '["age"]'
    assert query.filters == '{"op":">","value":50,"var":"age"}'  # canonical JSON
    assert query.query_digest == DIGEST and query.policy_digest == ledger.policy().digest
    assert (query.honest_nodes, query.dimension) == (2, 3)
    assert query.bounds == '{"age":[0.0,120.0]}'
    assert float(query.sensitivity) == 4096.0 and float(query.noise_scale) > 0
    assert [e.ref_seq for e in ledger.entries()[5:]] == [4, 4]  # charges name their query
    assert ledger.entries()[3].reason == "algorithm-not-allowed"
    summary = verify_ledger(ledger.path, PUB)
    assert summary.decisions == {"answered-exact": 1, "refused": 1, "answered-dp": 1}


def test_the_ledger_computes_epsilon_from_the_rho_it_charges(ledger: Ledger) -> None:
    """No epsilon a request carries can reach the ledger: the record has no epsilon field,
    and the ledger computes it (CKS 2020) from the charged rho and a delta: the request's, or
    the policy's reporting delta, or 1e-6."""
    assert "epsilon" not in {f for f in Mechanism.__dataclass_fields__}
    assert "epsilon" not in {f for f in QueryRecord.__dataclass_fields__}
    with pytest.raises(TypeError):
        Mechanism(rho=2.0, noise_scale=1.0, honest_nodes=1, dimension=1, sensitivity=1.0,
                  epsilon=0.01)  # type: ignore[call-arg]
    ledger.record_policy({"budgets": {"bob": {"*": {"rho": 10}}}})
    # a modified client asked for rho = 2 and claimed epsilon = 0.01 at delta = 1e-6
    receipt = dp(ledger, "01", 2.0, researcher="bob", delta=1e-6)
    entry = ledger.entries()[receipt.seq]
    assert float(entry.epsilon) == receipt.epsilon == epsilon_from_rho(2.0, 1e-6)
    # between rho + 2 sqrt(rho ln(1/delta)) (Bun-Steinke 2016; CKS 2020 is tighter) and 10
    assert 10 < receipt.epsilon < 2 + 2 * math.sqrt(2 * math.log(1e6))
    assert entry.delta == "1e-06"
    # no delta in the request: the default reporting delta
    receipt = dp(ledger, "02", 0.05, researcher="bob")
    assert receipt.delta == 1e-6 and receipt.epsilon == epsilon_from_rho(0.05, 1e-6)
    # a policy naming its reporting delta
    ledger.record_policy({"budgets": {"bob": {"*": {"rho": 10}}}, "reporting_delta": 1e-9})
    receipt = dp(ledger, "03", 0.05, researcher="bob")
    assert receipt.delta == 1e-9 and receipt.epsilon == epsilon_from_rho(0.05, 1e-9)
    verify_ledger(ledger.path, PUB)


def test_a_mechanism_that_does_not_give_its_rho_is_refused(ledger: Ledger) -> None:
    """The node cannot charge less than its noise spends: the ledger recomputes rho from
    sigma (KLS 2021) and refuses the record before writing anything."""
    honest = mechanism(0.1)
    weak = Mechanism(rho=0.1, noise_scale=honest.noise_scale / 2, honest_nodes=2,
                     dimension=3, sensitivity=honest.sensitivity)
    before = len(ledger.entries())
    wider = Mechanism(rho=0.1, noise_scale=honest.noise_scale, honest_nodes=2, dimension=3,
                      sensitivity=honest.sensitivity * 2)
    for bad in (weak, wider):
        with pytest.raises(InvalidRequest, match="does not give the rho charged"):
            ledger.record_query(QueryRecord("01", "alice", "count", ["edsd"], "answered-dp",
                                            DIGEST, mechanism=bad))
    assert len(ledger.entries()) == before


def test_policy_entries_are_recorded_when_they_change(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.db", KEY, PUB) as ledger:
        with pytest.raises(InvalidRequest, match="policy"):
            exact(ledger, "01")  # nothing is answered before a policy is in force
        first = ledger.record_policy(POLICY)
        assert first is not None and first.seq == 1
        assert ledger.record_policy(dict(reversed(list(POLICY.items())))) is None  # same
        assert ledger.policy().digest == hashlib.sha256(
            ledger.entries()[1].policy_json.encode()).hexdigest()
        tighter = {**POLICY, "budgets": {"alice": {"*": {"rho": 0.15}}}}
        assert ledger.record_policy(tighter).seq == 2
        dp(ledger, "02", 0.1)
        with pytest.raises(BudgetExhausted):  # the budget is the one of the policy in force
            dp(ledger, "03", 0.1)
        for bad in ({"budgets": {"alice": {"edsd": 1.0}}}, {"exact_access": "yes"},
                    {"budgets": {"alice": {"edsd": {"rho": -1}}}}, {"x": float("nan")},
                    {"reporting_delta": 2}):
            with pytest.raises(InvalidRequest):
                ledger.record_policy(bad)
    verify_ledger(tmp_path / "l.db", PUB)


def test_the_policy_decides_exact_answers_and_methods(ledger: Ledger) -> None:
    ledger.record_policy({**POLICY, "exact_access": [], "allowed_methods": ["mean"]})
    with pytest.raises(InvalidRequest, match="exact"):
        exact(ledger, "01", method="mean")
    with pytest.raises(InvalidRequest, match="'count'"):
        dp(ledger, "02", method="count")
    dp(ledger, "03", method="mean")
    refuse(ledger, "04", "exact-not-allowed", method="count")  # refusals are always recorded


# --- charging ---------------------------------------------------------------------------


def test_charge_is_durable_and_the_chain_verifies(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, KEY, PUB) as ledger:
        ledger.record_policy(POLICY)
        receipt = dp(ledger, "01")
        assert receipt.charge.rho == 0.1 and receipt.charge.datasets == ("edsd",)
    # a fresh connection (another process, after a restart) sees the charge
    with Ledger(path, KEY, PUB) as again:
        assert again.spent("alice", "edsd") == 0.1
    summary = verify_ledger(path, PUB)
    assert summary.entries == 4
    assert summary.kinds == {"genesis": 1, "policy": 1, "query": 1, "charge": 1}
    assert "valid, 4 entries" in summary.line()


def test_ledger_settings_are_wal_full_and_append_only(ledger: Ledger) -> None:
    conn = ledger._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == E.SCHEMA_VERSION
    dp(ledger, "01")
    raw = sqlite3.connect(ledger.path)
    for sql in ("UPDATE entries SET rho_nano = 1", "DELETE FROM entries",
                "DELETE FROM head"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only|never deleted"):
            raw.execute(sql)
    raw.close()


def test_exact_budget_is_spendable_and_not_one_nano_more(ledger: Ledger) -> None:
    for i in range(10):
        dp(ledger, f"{i:02x}", rho=0.1)  # 10 x 0.1 == 1.0 exactly in nano-rho
    with pytest.raises(BudgetExhausted):
        dp(ledger, "ff", rho=1e-9)
    assert ledger.spent_nano("alice", "edsd") == 10**9
    verify_ledger(ledger.path, PUB)


def test_budget_exhausted_names_the_remaining_budget_and_charges_nothing(
        ledger: Ledger) -> None:
    dp(ledger, "01", rho=0.4, datasets=("edsd", "ppmi"))
    with pytest.raises(BudgetExhausted) as caught:
        dp(ledger, "02", rho=0.2, datasets=("edsd", "ppmi"))
    exc = caught.value
    assert isinstance(exc, PrivacyError)
    assert exc.remaining == {"edsd": 0.6, "ppmi": pytest.approx(0.1)}
    assert exc.remaining_nano == {"edsd": 600_000_000, "ppmi": 100_000_000}
    assert exc.datasets == ("ppmi",)
    assert "'ppmi' has rho 0.1 remaining" in str(exc) and "needs rho 0.2" in str(exc)
    # all or nothing: edsd had room but was not charged either
    assert ledger.spent_nano("alice", "edsd") == 400_000_000
    refused = ledger.entries()[-1]
    assert (refused.kind, refused.decision, refused.reason) == ("query", "refused",
                                                                "budget-exhausted")
    assert refused.rho_nano == 200_000_000 and refused.query_id == "02"
    assert isinstance(exc.head, HeadReceipt) and exc.head.seq == refused.seq
    verify_ledger(ledger.path, PUB)


def test_no_budget_means_refused(ledger: Ledger) -> None:
    ledger.record_policy({"budgets": {"alice": {"edsd": {"rho": 1}}}})
    # said as such: "rho 0 remaining" read as a budget already spent
    with pytest.raises(BudgetExhausted, match=r"'other' has no budget granted \(the node's "
                                              r"policy names none for this researcher\)"):
        dp(ledger, "01", datasets=("other",))
    assert ledger.entries()[-1].reason == "no-budget"


def test_budgets_are_per_researcher(ledger: Ledger) -> None:
    dp(ledger, "01", rho=1.0)
    dp(ledger, "02", rho=1.0, researcher="bob")
    assert ledger.spent("alice", "edsd") == ledger.spent("bob", "edsd") == 1.0


@pytest.mark.parametrize("change, match", [
    ({"datasets": []}, "at least one"),
    ({"datasets": ["edsd", "edsd"]}, "twice"),
    ({"datasets": "edsd"}, "list"),
    ({"held": ["ppmi"]}, "held datasets"),
    ({"query_id": "xyz"}, "hex"),
    ({"query_id": "abc"}, "hex"),
    ({"query_digest": ""}, "hex"),
    ({"researcher": ""}, "researcher"),
    ({"decision": "answered"}, "decision"),
    ({"reason": "x"}, "only a refused"),
    ({"filters": "{not json"}, "JSON"),
    ({"filters": {"x": float("nan")}}, "JSON"),
    ({"mechanism": None}, "needs its mechanism"),
    ({"mechanism": Mechanism(0, 1.0, 1, 1, 1.0)}, "positive"),
    ({"mechanism": Mechanism(0.1, float("inf"), 1, 1, 1.0)}, "noise_scale"),
    ({"mechanism": Mechanism(0.1, 1.0, 0, 1, 1.0)}, "honest_nodes"),
    ({"mechanism": Mechanism(0.1, 1.0, 1, 1, 1.0, delta=1.0)}, "delta"),
    ({"mechanism": Mechanism(0.1, 1.0, 1, 1, 1.0, bounds={"age": [5, 1]})}, "low <= high"),
])
def test_bad_records_fail_before_anything_is_written(ledger: Ledger, change, match) -> None:
    args = dict(query_id="01", researcher="alice", method="count", datasets=["edsd"],
                decision="answered-dp", query_digest=DIGEST, mechanism=mechanism(0.1))
    args.update(change)
    before = len(ledger.entries())
    with pytest.raises(InvalidRequest, match=match):
        ledger.record_query(QueryRecord(**args))
    assert len(ledger.entries()) == before


@pytest.mark.parametrize("time, match", [("yesterday", "ISO 8601"),
                                         ("2025-02-30T00:00:00Z", "not a valid time")])
def test_bad_times_fail_before_anything_is_written(ledger: Ledger, time, match) -> None:
    before = len(ledger.entries())
    with pytest.raises(InvalidRequest, match=match):
        dp(ledger, "01", time=time)
    assert len(ledger.entries()) == before


def test_times_never_go_backwards(ledger: Ledger) -> None:
    dp(ledger, "01", time="2025-02-01T12:00:00Z")
    receipt = dp(ledger, "02", time="2025-02-01T11:00:00Z")  # the clock stepped back
    assert ledger.entries()[receipt.seq].time == "2025-02-01T12:00:00Z"
    verify_ledger(ledger.path, PUB)


# --- refunds and releases ---------------------------------------------------------------


def test_refund_returns_the_budget_once(ledger: Ledger) -> None:
    receipt = dp(ledger, "01", rho=0.5, datasets=("edsd", "ppmi")).charge
    head = ledger.refund(receipt, "the aggregator rejected the session before any send")
    assert isinstance(head, HeadReceipt) and head == ledger.head_receipt()
    assert ledger.spent_nano("alice", "edsd") == ledger.spent_nano("alice", "ppmi") == 0
    with pytest.raises(RefundRefused, match="already refunded"):
        ledger.refund(receipt, "again")
    with pytest.raises(RefundRefused, match="already refunded"):
        ledger.release(receipt)
    refund = ledger.entries()[-1]
    assert refund.kind == "refund" and refund.reason.startswith("the aggregator")
    verify_ledger(ledger.path, PUB)


def test_no_refund_after_release(ledger: Ledger) -> None:
    receipt = dp(ledger, "01").charge
    head = ledger.release(receipt, transcript="cd" * 32)
    assert head.seq == len(ledger.entries()) - 1
    with pytest.raises(RefundRefused, match="already released"):
        ledger.refund(receipt, "too late")
    with pytest.raises(RefundRefused, match="already released"):
        ledger.release(receipt)
    assert ledger.spent("alice", "edsd") == 0.1


def test_refund_needs_a_proof_and_a_genuine_receipt(ledger: Ledger) -> None:
    receipt = dp(ledger, "01").charge
    with pytest.raises(InvalidRequest, match="proof"):
        ledger.refund(receipt, "  ")
    forged = ChargeReceipt("01", "alice", ("edsd",), 1, receipt.seqs, receipt.time)
    with pytest.raises(RefundRefused, match="does not match"):
        ledger.refund(forged, "nothing sent")
    with pytest.raises(RefundRefused, match="not a charge"):
        ledger.refund(ChargeReceipt("01", "alice", ("edsd",), 1, (0,), ""), "nothing sent")


def test_summary_for_fed_budget(ledger: Ledger) -> None:
    dp(ledger, "01", rho=0.3, datasets=("edsd", "ppmi"))
    r = dp(ledger, "02", rho=0.1).charge
    ledger.refund(r, "nothing sent")
    with pytest.raises(BudgetExhausted):
        dp(ledger, "03", rho=0.3, datasets=("ppmi",))
    lines = {(b.researcher, b.dataset): b for b in ledger.summary()}
    edsd, ppmi = lines["alice", "edsd"], lines["alice", "ppmi"]
    assert (edsd.spent, edsd.limit, edsd.remaining) == (0.3, 1.0, 0.7)
    assert (edsd.charges, edsd.refunds, edsd.refusals) == (2, 1, 0)
    assert (ppmi.spent_nano, ppmi.remaining_nano, ppmi.refusals) == (
        300_000_000, 200_000_000, 1)
    # limits given by the caller override the policy's; extra pairs appear
    override = ledger.summary(lambda who, what: 2.0, include=[("bob", "edsd")])
    assert [(b.researcher, b.dataset, b.remaining) for b in override] == [
        ("alice", "edsd", 1.7), ("alice", "ppmi", 1.7), ("bob", "edsd", 2.0)]
    assert [b.dataset for b in ledger.summary(researcher="bob")] == []


# --- keys, heads, formats ------------------------------------------------------------------


def test_signer_must_match_the_public_key(tmp_path: Path) -> None:
    other = nacl.signing.SigningKey(bytes(32))
    with pytest.raises(InvalidRequest, match="does not match"):
        Ledger(tmp_path / "l.db", other, PUB)
    assert not (tmp_path / "l.db").exists()


def test_a_ledger_of_another_key_is_not_appended_to(tmp_path: Path) -> None:
    Ledger(tmp_path / "l.db", KEY, PUB).close()
    other = nacl.signing.SigningKey(bytes(32))
    # without the previous key no rotation is recorded: the node is told what it lacks
    with pytest.raises(LedgerKeyChanged, match="give the node that previous key"):
        Ledger(tmp_path / "l.db", other, bytes(other.verify_key))
    # a wrong "previous" key (a stranger's) does not unlock it either
    stranger = nacl.signing.SigningKey(bytes([7]) * 32)
    with pytest.raises(LedgerKeyChanged, match="another one"):
        Ledger(tmp_path / "l.db", other, bytes(other.verify_key),
               previous=(stranger, bytes(stranger.verify_key)), manifest_version=2)
    with Ledger(tmp_path / "l.db", KEY, PUB) as ledger:
        assert [e.kind for e in ledger.entries()] == ["genesis"]


def test_a_signer_returning_bare_signatures_works(tmp_path: Path) -> None:
    class Identity:  # like crypto.identity.SigningIdentity
        def sign(self, message: bytes) -> bytes:
            return KEY.sign(message).signature

    with Ledger(tmp_path / "l.db", Identity(), PUB) as ledger:
        ledger.record_policy(POLICY)
        dp(ledger, "01")
    verify_ledger(tmp_path / "l.db", PUB)


def test_head_receipts_are_signed_and_check_the_ledger(ledger: Ledger) -> None:
    receipt = dp(ledger, "01")
    head = receipt.head
    assert head == ledger.head_receipt() and head.seq == receipt.charge.seqs[-1]
    head.check_signature(PUB)
    assert HeadReceipt.from_json(head.to_json()) == head and "\n" not in head.to_json()
    assert head.text == f"{head.seq}:{head.hash.hex()}" and len(head.text.split(":")[1]) == 64
    ledger.check_extends(head)
    ledger.check_extends((head.seq, head.hash))
    ledger.release(receipt.charge)
    ledger.check_extends(head)  # it still extends it
    with pytest.raises(ReceiptMismatch, match="truncated or rolled back"):
        ledger.check_extends((head.seq + 5, head.hash))
    with pytest.raises(ReceiptMismatch, match="rewritten"):
        ledger.check_extends((head.seq, bytes(32)))
    forged = HeadReceipt(PUB, head.seq, head.hash, bytes(64))
    with pytest.raises(ReceiptInvalid, match="not signed by the node key"):
        ledger.check_extends(forged)
    # the head message is domain-separated: an entry signature is not a head signature
    entry_sig = KEY.sign(E.SIG_DOMAIN + head.hash).signature
    with pytest.raises(ReceiptInvalid):
        HeadReceipt(PUB, head.seq, head.hash, entry_sig).check_signature(PUB)


@pytest.mark.parametrize("tamper", [
    "UPDATE head SET signature = zeroblob(64)",
    # the append-only trigger is the file's own: whoever edits the file can drop it
    "DROP TRIGGER entries_no_update; "
    "UPDATE entries SET signature = zeroblob(64) WHERE seq = (SELECT max(seq) FROM entries)",
])
def test_an_open_ledger_never_chains_onto_a_tail_it_did_not_sign(ledger: Ledger, tamper: str
                                                                 ) -> None:
    """The ledger remembers the signatures it made and checked (the tail is checked before
    every write); a signature swapped in the file afterwards is checked afresh, and fails."""
    dp(ledger, "01")
    dp(ledger, "02")  # the tail it wrote is now known good
    conn = sqlite3.connect(ledger.path)
    conn.executescript(tamper)
    conn.close()
    with pytest.raises(LedgerCorrupt, match="signature does not verify"):
        dp(ledger, "03")


def test_a_v1_ledger_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    conn = sqlite3.connect(path)  # the v1 layout (entries with budget_nano; user_version 0)
    conn.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY, kind TEXT, budget_nano "
                 "INTEGER)")
    conn.execute("CREATE TABLE head (id INTEGER PRIMARY KEY, seq INTEGER, hash BLOB, "
                 "signature BLOB)")
    conn.commit()
    conn.close()
    for attempt in (lambda: Ledger(path, KEY, PUB), lambda: verify_ledger(path, PUB)):
        with pytest.raises(LedgerFormatError, match="fedtally-ledger-v1 ledger.*new ledger"):
            attempt()


def _auditor_encoding(prev: bytes, e: E.Entry) -> bytes:
    """The entry encoding as documented, re-implemented independently of privacy.entry."""
    out = b"fedtally-ledger-v2/entry\x00" + prev
    for value in (e.seq, e.time, e.kind, e.query_id, e.researcher, e.method, e.datasets,
                  e.held, e.dataset, e.variables, e.filters, e.query_digest, e.decision,
                  e.reason, e.mechanism, e.rho_nano, e.epsilon, e.delta, e.noise_scale,
                  e.honest_nodes, e.dimension, e.bounds, e.sensitivity, e.policy_digest,
                  e.policy_json, e.transcript, e.node_key, e.ref_seq):
        if isinstance(value, int):
            out += b"i" + struct.pack(">I", 8) + struct.pack(">q", value)
        else:
            out += b"s" + struct.pack(">I", len(value.encode())) + value.encode()
    return out


def test_entry_encoding_known_answer() -> None:
    e = E.blank(1, "2025-01-01T00:00:00Z", "charge", query_id="0a1b", researcher="alice",
                method="count", dataset="edsd", rho_nano=50_000_000, ref_seq=0)
    assert E.encode(bytes(32), e) == _auditor_encoding(bytes(32), e)
    digest = E.entry_hash(bytes(32), e)
    assert digest == hashlib.sha256(_auditor_encoding(bytes(32), e)).digest()
    assert digest.hex() == "5a65c2f5748222da56d0f9a88241ffca72bbd53cccf34655fc5be6fdcf19403c"
    assert KEY.sign(E.SIG_DOMAIN + digest).signature.hex() == (
        "b7e5a438ad786c55f8678bce4ebdeb37642d1f5d71497fa8df50d716fd6acdbf"
        "44d125c088b4e51820d252e47e8a8ef58840f548f9df1bca75666f48cdaaf802")


def test_every_stored_entry_matches_the_documented_encoding(ledger: Ledger) -> None:
    r = dp(ledger, "01", datasets=("edsd", "ppmi"))
    ledger.release(r.charge, transcript="ee" * 32)
    exact(ledger, "02")
    rows = sqlite3.connect(ledger.path).execute(
        "SELECT prev_hash, hash, signature FROM entries ORDER BY seq").fetchall()
    prev = bytes(32)
    for e, (stored_prev, digest, signature) in zip(ledger.entries(), rows, strict=True):
        assert stored_prev == prev
        assert hashlib.sha256(_auditor_encoding(prev, e)).digest() == digest
        KEY.verify_key.verify(E.SIG_DOMAIN + digest, signature)
        prev = digest


def test_genesis_names_the_key_and_cli_verify(tmp_path: Path, capsys) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, KEY, PUB) as ledger:
        ledger.record_policy(POLICY)
        dp(ledger, "01")
        head = ledger.head_receipt()
    assert read_genesis_key(path) == PUB
    assert cli_verify(path, PUB) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "valid, 4 entries" in out
    assert out.rstrip().endswith(f"head {head.text}")  # the full SEQ:HEX
    other = bytes(nacl.signing.SigningKey(bytes(32)).verify_key)
    assert cli_verify(path, other) == 1
    assert "INVALID: LedgerCorrupt: ledger entry 0" in capsys.readouterr().err


def test_a_garbage_file_is_not_opened_as_a_ledger(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerCorrupt, match="not a ledger database"):
        Ledger(path, KEY, PUB)


def test_threads_sharing_one_ledger_never_overspend(ledger: Ledger) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ledger.record_policy({"budgets": {"alice": {"edsd": {"rho": 0.7}}}})

    def attempt(i: int) -> bool:
        try:
            dp(ledger, f"{i:04x}", 0.1)
        except BudgetExhausted:
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(attempt, range(24))) == 7
    assert ledger.spent_nano("alice", "edsd") == 700_000_000
    verify_ledger(ledger.path, PUB)


def test_the_auditors_reference_lists_the_fields_in_hash_order() -> None:
    from support import PROJECT_ROOT

    text = (PROJECT_ROOT / "privacy" / "AUDITORS.md").read_text()
    table = text[text.index("| field | type |"):text.index("Canonical JSON:")]
    listed = [name for row in table.splitlines()[2:] if row.startswith("| `")
              for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert tuple(listed) == E.FIELDS
    assert f"f(field_{len(E.FIELDS)})" in text and E.FORMAT in text
