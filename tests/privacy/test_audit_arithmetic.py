"""Every check of the arithmetic an auditor can redo fails on a crafted ledger.

Each case records a genuine history with the real ledger, changes one thing, and writes the
changed entries into a fresh ledger with the node's real chaining and signing code (what a
key holder, or a bug, could produce). The unchanged history verifies; each change raises
its own typed finding, naming the changed entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from ledger_support import KEY, POLICY, PUB, craft, dp, exact, mechanism, refuse, ticking

from privacy import entry as E
from privacy.audit import verify_ledger
from privacy.errors import (
    AccountingError,
    ClockWentBackwards,
    FollowUpOutOfOrder,
    InvalidRequest,
    LedgerCorrupt,
    OverBudget,
    PolicyViolation,
    PrivacyLossMismatch,
    UnderCalibrated,
)
from privacy.ledger import Ledger
from privacy.mechanism import epsilon_for
from privacy.policy_terms import PolicyTerms

Rows = list[E.Entry]
NO_EXACT = {**POLICY, "exact_access": []}
ONLY_MEAN = {**POLICY, "allowed_methods": ["mean"]}
NO_BUDGET = {**POLICY, "budgets": {"bob": {"*": {"rho": 1}}}}


def _history(ledger: Ledger) -> None:
    """seq 2: exact query; 3-5: DP query on two datasets and its charges; 6-7: releases;
    8-9: DP query and charge; 10: refund; 11: refused query."""
    exact(ledger, "01")
    ledger.release(dp(ledger, "02", 0.2, ["edsd", "ppmi"]).charge)
    ledger.refund(dp(ledger, "03", 0.3).charge, "the round failed before anything was sent")
    refuse(ledger, "04", "algorithm-not-allowed", method="pca")


def _crafted(tmp_path: Path, change: Callable[[Rows], Rows], *,
             policy: dict | None = None) -> Path:
    with Ledger(tmp_path / "genuine.db", KEY, PUB, clock=ticking()) as genuine:
        genuine.record_policy(POLICY)
        _history(genuine)
        rows = genuine.entries()[2:]
    path = tmp_path / "crafted.db"
    with Ledger(path, KEY, PUB, clock=ticking()) as ledger:
        ledger.record_policy(POLICY if policy is None else policy)
        craft(ledger, change(rows))
    return path


def _under(policy: dict, rows: Rows) -> Rows:
    """The rows as recorded under ``policy`` (their query entries name its digest)."""
    digest = PolicyTerms.from_mapping(policy).digest
    return [replace(r, policy_digest=digest) if r.kind == E.QUERY else r for r in rows]


def _at(rows: Rows, seq: int, **values: object) -> Rows:
    return [replace(r, **values) if r.seq == seq else r for r in rows]


def test_the_unchanged_history_verifies(tmp_path: Path) -> None:
    summary = verify_ledger(_crafted(tmp_path, lambda rows: rows), PUB)
    assert summary.entries == 12
    assert summary.kinds == {"genesis": 1, "policy": 1, "query": 4, "charge": 3, "release": 2,
                             "refund": 1}


CASES: dict[str, tuple[Callable[[Rows], Rows], type[LedgerCorrupt], int, str]] = {
    "time goes backwards": (
        lambda rows: _at(rows, 8, time="2025-02-01T00:00:03Z"),
        ClockWentBackwards, 8, "before the entry it follows"),
    "release dated before its charge": (
        lambda rows: _at(rows, 6, time="2025-02-01T00:00:00Z"),
        FollowUpOutOfOrder, 6, "before its charge"),
    "release of a charge that does not exist": (
        lambda rows: _at(rows, 6, ref_seq=2),
        FollowUpOutOfOrder, 6, "earlier charge"),
    "release of another query's charge": (
        lambda rows: _at(rows, 6, ref_seq=9),
        FollowUpOutOfOrder, 6, "earlier charge"),
    "a charge released twice": (
        lambda rows: _at(rows, 7, ref_seq=4, dataset="edsd"),
        FollowUpOutOfOrder, 7, "already released"),
    "refund after release": (
        lambda rows: _at(rows, 10, ref_seq=4, dataset="edsd", rho_nano=200_000_000,
                         query_id="02"),
        FollowUpOutOfOrder, 10, "already released"),
    "epsilon that rho does not give (a request's)": (
        lambda rows: _at(rows, 3, epsilon="0.01"),
        PrivacyLossMismatch, 3, "does not follow from rho"),
    "delta changed after the fact": (
        lambda rows: _at(rows, 3, delta="0.5"),
        PrivacyLossMismatch, 3, "does not follow from rho"),
    "rho below what the noise gives": (
        lambda rows: _at(rows, 3, noise_scale=repr(mechanism(0.2).noise_scale / 3)),
        UnderCalibrated, 3, "is less than"),
    "a larger sensitivity than the noise was calibrated to": (
        lambda rows: _at(rows, 3, sensitivity=repr(mechanism(0.2).sensitivity * 1.5)),
        UnderCalibrated, 3, "is less than"),
    "fewer honest nodes than the noise was calibrated to": (
        lambda rows: _at(rows, 3, honest_nodes=1),
        UnderCalibrated, 3, "is less than"),
    "charge beyond the policy's budget": (
        lambda rows: _at(_at(rows, 8, **_mech(0.9)), 9, rho_nano=900_000_000),
        OverBudget, 9, r"spent 0.2 \+ 0.9 > budget 1 of the policy in force"),
    "answered-exact while the policy forbids exact answers": (
        lambda rows: _under(NO_EXACT, rows), PolicyViolation, 2, "not grant this researcher exact"),
    "a method the policy does not allow": (
        lambda rows: _under(ONLY_MEAN, rows), PolicyViolation, 2, "'count' answered"),
    "a charge where the policy grants no budget": (
        lambda rows: _under(NO_BUDGET, rows), OverBudget, 4, "grants 'alice' no budget"),
    "a query naming another policy": (
        lambda rows: _at(rows, 2, policy_digest="00" * 32),
        PolicyViolation, 2, "other than the one in force"),
    "a charge that does not follow its query": (
        lambda rows: [rows[0], rows[2], rows[1], *rows[3:]],
        AccountingError, 3, "directly follow"),
    "an answered-dp query missing a charge": (
        lambda rows: [r for r in rows if r.seq != 5][:3],
        AccountingError, 5, "no charge on held datasets"),
    "a field of another kind set on a charge": (
        lambda rows: _at(rows, 4, epsilon="1.0"),
        LedgerCorrupt, 4, "field epsilon is set on a charge"),
}


def _mech(rho: float) -> dict[str, object]:
    m = mechanism(rho)
    return {"rho_nano": round(rho * 1e9), "noise_scale": repr(m.noise_scale),
            "epsilon": repr(epsilon_for(round(rho * 1e9), 1e-6))}


@pytest.mark.parametrize("case", list(CASES))
def test_each_arithmetic_check_fails_on_a_crafted_ledger(tmp_path: Path, case: str) -> None:
    change, finding, seq, message = CASES[case]
    policy = next((p for p, words in ((NO_EXACT, "forbids exact"), (ONLY_MEAN, "method"),
                                      (NO_BUDGET, "no budget")) if words in case), None)
    path = _crafted(tmp_path, change, policy=policy)
    with pytest.raises(finding, match=message) as caught:
        verify_ledger(path, PUB)
    assert type(caught.value) is finding  # the specific finding, not only its base class
    assert caught.value.entry == seq


def test_a_charge_is_checked_against_the_policy_entry_in_force(tmp_path: Path) -> None:
    """The budget is that of the policy entry in force when charging (not a number in the
    charge): the same genuine charges, recorded after a stricter policy entry, fail."""
    strict = PolicyTerms.from_mapping({"budgets": {"alice": {"*": {"rho": 0.1}}}})

    def after_stricter_policy(rows: Rows) -> Rows:
        policy = E.blank(-1, rows[0].time, E.POLICY, policy_digest=strict.digest,
                         policy_json=strict.text)
        return [policy, *(replace(r, ref_seq=r.ref_seq + 1 if r.ref_seq >= 0 else r.ref_seq)
                          for r in _under(json.loads(strict.text), rows))]

    path = _crafted(tmp_path, after_stricter_policy)
    with pytest.raises(OverBudget, match=r"spent 0 \+ 0.2 > budget 0.1") as caught:
        verify_ledger(path, PUB)
    assert caught.value.entry == 5  # the first charge, now after the policy entry at 2


def test_a_policy_recorded_under_the_old_key_name_is_read_by_its_current_name() -> None:
    """Ledgers written before "allowed_algorithms" became "allowed_methods" still audit:
    the recorded text (and so its digest) is kept, and its terms read the same."""
    old = PolicyTerms.from_mapping({"allowed_algorithms": ["count"]})
    new = PolicyTerms.from_mapping({"allowed_methods": ["count"]})
    assert old.allowed_methods == new.allowed_methods == frozenset({"count"})
    assert old.text != new.text  # what was recorded is what is hashed
    with pytest.raises(InvalidRequest, match="both"):
        PolicyTerms.from_mapping({"allowed_algorithms": ["count"], "allowed_methods": []})
