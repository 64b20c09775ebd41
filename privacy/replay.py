"""The auditor's replay of a ledger's signed entries: every check an auditor can redo.

:mod:`privacy.audit` proves the entries are the node's, unaltered and in order; this module
then checks that what they say holds together, entry by entry, raising the typed finding of
the first that does not (signed nonsense from a key holder, or a bug, is as much a finding
as an outsider's edit):

- shape: each kind sets only its own fields (:data:`privacy.entry.SHAPES`), with valid values;
- :class:`ClockWentBackwards`: no entry is dated before the one it follows;
- :class:`PolicyViolation`: a query comes after a policy entry and names it; the policy
  allows the method, and exact answers when one was given;
- :class:`PrivacyLossMismatch` and :class:`UnderCalibrated`: the recorded epsilon and delta
  follow from the recorded rho, and that rho is at least what the recorded noise scale,
  sensitivity, honest nodes and dimension give (:mod:`privacy.mechanism`);
- an ``answered-dp`` query is directly followed by one charge on each dataset it holds, in
  order (same query, researcher, method, rho), and :class:`OverBudget`: each charge fits the
  budget of the policy entry in force (spending net of refunds, per researcher and dataset);
- :class:`FollowUpOutOfOrder`: every release or refund refers to an earlier charge of the
  same query, dated no earlier, that was neither refunded nor released before.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

from privacy import entry as E
from privacy import fields as F
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
from privacy.mechanism import calibration_error, privacy_loss_error
from privacy.policy_terms import PolicyTerms
from privacy.units import nano_text

_ROTATION_REASON = re.compile(r"manifest-v[1-9][0-9]{0,17}")
_MECHANISM_FIELDS = ("mechanism", "rho_nano", "epsilon", "delta", "noise_scale",
                     "honest_nodes", "dimension", "bounds", "sensitivity")


class Replay:
    """Feed entries in order with :meth:`step`; the state an auditor's report reads."""

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key
        self.last_time: datetime | None = None
        self.policy: PolicyTerms | None = None
        self.spent: Counter[tuple[str, str]] = Counter()
        self.charges: dict[int, E.Entry] = {}
        self.closed: dict[int, str] = {}  # charge seq -> "refunded" / "released"
        self.previous: E.Entry | None = None
        #: the answered-dp query entry whose charges follow it, and the datasets still due
        self.open_query: E.Entry | None = None
        self.due: list[str] = []

    def step(self, e: E.Entry) -> None:
        if self.due and e.kind != E.CHARGE:
            self._missing_charges(e.seq)
        try:
            self._shape(e)
            when = F.moment(e.time)
        except InvalidRequest as exc:
            raise LedgerCorrupt(f"malformed {e.kind[:32]} entry: {exc}", e.seq) from exc
        if e.kind in (E.RELEASE, E.REFUND):
            self._follow_up(e, when)
        if self.last_time is not None and when < self.last_time:
            raise ClockWentBackwards(f"dated {e.time}, before the entry it follows "
                                     f"({self.previous.time if self.previous else ''})", e.seq)
        check = {E.GENESIS: self._genesis, E.POLICY: self._policy, E.QUERY: self._query,
                 E.CHARGE: self._charge, E.KEY_ROTATION: self._key_rotation}.get(e.kind)  # releases and refunds: checked above
        if check is not None:
            check(e)
        self.last_time = when
        self.previous = e

    def finish(self, end: int) -> None:
        """After the last entry: an answered-dp query at the end has all its charges."""
        if self.due:
            self._missing_charges(end)

    def _missing_charges(self, seq: int) -> None:
        assert self.open_query is not None
        raise AccountingError(f"the answered-dp query {self.open_query.seq} has no charge on "
                              f"held datasets {self.due}", seq)

    # --- per kind --------------------------------------------------------------------------

    def _shape(self, e: E.Entry) -> None:
        if e.kind not in E.KINDS:
            raise InvalidRequest(f"unknown kind {e.kind[:32]!r}")
        if (e.seq == 0) != (e.kind == E.GENESIS):
            raise InvalidRequest("the genesis entry must be first, and only first")
        allowed = E.SHAPES[e.kind]
        for name in E.FIELDS:
            if name not in allowed and name not in ("seq", "time", "kind") \
                    and getattr(e, name) != E.empty_value(name):
                raise InvalidRequest(f"field {name} is set on a {e.kind} entry")
        if e.kind in (E.QUERY, E.CHARGE, E.RELEASE, E.REFUND):
            F.hex_text(e.query_id, "query_id")
            F.name(e.researcher, "researcher")
            F.name(e.method, "method")
        if e.kind in (E.CHARGE, E.RELEASE, E.REFUND):
            F.name(e.dataset, "dataset")
            if e.rho_nano <= 0:
                raise InvalidRequest("a charge, release or refund has a positive rho")

    def _genesis(self, e: E.Entry) -> None:
        # which key it names is the key chain's business (privacy.audit); here, its form
        try:
            E.key_of(e)
        except ValueError as exc:
            raise LedgerCorrupt(f"the {e.kind} entry does not name a node key", e.seq) from exc

    def _key_rotation(self, e: E.Entry) -> None:
        self._genesis(e)
        if not _ROTATION_REASON.fullmatch(e.reason):
            raise LedgerCorrupt("a key rotation names the manifest version that lists the new "
                                "key (manifest-v<N>)", e.seq)

    def _policy(self, e: E.Entry) -> None:
        try:
            terms = PolicyTerms.from_text(e.policy_json)
        except InvalidRequest as exc:
            raise PolicyViolation(f"the policy entry is malformed: {exc}", e.seq) from exc
        if terms.digest != e.policy_digest:
            raise PolicyViolation("the policy digest is not the SHA-256 of the policy", e.seq)
        self.policy = terms

    def _query(self, e: E.Entry) -> None:
        def bad(why: str) -> LedgerCorrupt:
            return LedgerCorrupt(f"malformed query entry: {why}", e.seq)

        policy = self.policy
        if policy is None:
            raise PolicyViolation("a query recorded before any policy entry", e.seq)
        if e.policy_digest != policy.digest:
            raise PolicyViolation("the query names a policy other than the one in force",
                                  e.seq)
        try:
            datasets = F.json_value(e.datasets, "datasets")
            held = F.json_value(e.held, "held")
            if not isinstance(datasets, list) or not isinstance(held, list):
                raise InvalidRequest("datasets and held are JSON lists")
            F.names(datasets, "datasets")
            F.names(held, "held", empty=True)
            if not set(held) <= set(datasets):
                raise InvalidRequest("held datasets are datasets of the query")
            variables = F.json_value(e.variables, "variables")
            if not isinstance(variables, list):
                raise InvalidRequest("variables is a JSON list")
            F.names(variables, "variables", empty=True)
            if e.filters:
                F.json_value(e.filters, "filters")
            F.hex_text(e.query_digest, "query_digest")
            if e.decision == E.REFUSED:
                F.reason_code(e.reason)
            elif e.reason:
                raise InvalidRequest("only a refused query has a reason code")
        except InvalidRequest as exc:
            raise bad(str(exc)) from exc
        if e.decision not in E.DECISIONS:
            raise bad(f"unknown decision {e.decision[:32]!r}")
        has_mechanism = [getattr(e, n) != E.empty_value(n) for n in _MECHANISM_FIELDS]
        if any(has_mechanism) and not all(has_mechanism):
            raise bad("the DP mechanism is recorded only in part")
        if e.decision == E.ANSWERED_DP and not all(has_mechanism):
            raise bad("an answered-dp query records its mechanism")
        if e.decision == E.ANSWERED_EXACT:
            if any(has_mechanism):
                raise bad("an exact answer has no DP mechanism")
            if not policy.exact_for(e.researcher):
                raise PolicyViolation("an exact answer while the policy in force does not "
                                      "grant this researcher exact answers", e.seq)
        if e.decision != E.REFUSED and not policy.allows(e.method):
            raise PolicyViolation(f"{e.method[:64]!r} answered while the policy in force "
                                  "does not allow it", e.seq)
        if all(has_mechanism):
            try:
                F.name(e.mechanism, "mechanism")
                F.json_value(e.bounds, "bounds")
            except InvalidRequest as exc:
                raise bad(str(exc)) from exc
            why = privacy_loss_error(e.rho_nano, e.epsilon, e.delta)
            if why is not None:
                raise PrivacyLossMismatch(why, e.seq)
            why = calibration_error(e.rho_nano, e.noise_scale, e.sensitivity, e.honest_nodes,
                                    e.dimension)
            if why is not None:
                raise UnderCalibrated(why, e.seq)
        if e.decision == E.ANSWERED_DP:
            self.open_query, self.due = e, list(policy.accounts([str(d) for d in held]))

    def _charge(self, e: E.Entry) -> None:
        prev, query = self.previous, self.open_query
        if prev is None or query is None or query.seq != e.ref_seq or not (
                prev is query or (prev.kind == E.CHARGE and prev.ref_seq == query.seq)):
            raise AccountingError("a charge must directly follow its answered-dp query entry "
                                  f"(it refers to entry {e.ref_seq})", e.seq)
        if (e.query_id, e.researcher, e.method, e.rho_nano) != (
                query.query_id, query.researcher, query.method, query.rho_nano):
            raise AccountingError(f"the charge does not match its query entry {query.seq}",
                                  e.seq)
        if not self.due or e.dataset != self.due[0]:
            raise AccountingError(f"the charge's dataset is not the next held dataset of "
                                  f"query {query.seq} (due: {self.due})", e.seq)
        self.due.pop(0)
        key = (e.researcher, e.dataset)
        assert self.policy is not None  # a query entry came first, under a policy
        limit = self.policy.budget_nano(*key)
        if limit is None:
            raise OverBudget(f"the policy in force grants {e.researcher!r} no budget on "
                             f"{e.dataset!r}", e.seq)
        if self.spent[key] + e.rho_nano > limit:
            raise OverBudget(f"the charge overspends: spent {nano_text(self.spent[key])} + "
                             f"{nano_text(e.rho_nano)} > budget {nano_text(limit)} of the "
                             "policy in force", e.seq)
        self.spent[key] += e.rho_nano
        self.charges[e.seq] = e

    def _follow_up(self, e: E.Entry, when: datetime) -> None:
        charge = self.charges.get(e.ref_seq)
        if charge is None:
            raise FollowUpOutOfOrder(f"a {e.kind} must refer to an earlier charge (refers to "
                                     f"{e.ref_seq})", e.seq)
        if (charge.query_id, charge.researcher, charge.method, charge.dataset,
                charge.rho_nano) != (e.query_id, e.researcher, e.method, e.dataset,
                                     e.rho_nano):
            raise FollowUpOutOfOrder(f"the {e.kind} does not match the charge {e.ref_seq}",
                                     e.seq)
        if when < F.moment(charge.time):
            raise FollowUpOutOfOrder(f"the {e.kind} is dated {e.time}, before its charge "
                                     f"{e.ref_seq} ({charge.time})", e.seq)
        if e.ref_seq in self.closed:
            raise FollowUpOutOfOrder(f"the charge {e.ref_seq} was already "
                                     f"{self.closed[e.ref_seq]}", e.seq)
        try:
            if e.kind == E.REFUND:
                F.one_line(e.reason, "a refund's proof")
            else:
                F.hex_text(e.transcript, "transcript", empty=True)
        except InvalidRequest as exc:
            raise LedgerCorrupt(f"malformed {e.kind} entry: {exc}", e.seq) from exc
        self.closed[e.ref_seq] = {E.REFUND: "refunded", E.RELEASE: "released"}[e.kind]
        if e.kind == E.REFUND:
            self.spent[(e.researcher, e.dataset)] -= e.rho_nano
