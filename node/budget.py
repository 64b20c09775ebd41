"""The node's ledger: every query it receives is an entry, and DP budgets are charged there
before anything leaves.

- At start the node records its policy (an entry whenever it changed).
- A DP query is recorded with its mechanism and charged (atomically, for every budget of
  the query this node holds: a dataset's own, or its budget group's) before any row is
  read; the charge is released just before the contribution leaves; a round that fails
  before that is refunded, since provably nothing left.
- An exact answer is recorded just before its contribution leaves.
- A refused query is recorded with its reason code (a budget refusal by the ledger itself).

Each of these returns the ledger's signed head after the entry, which the node sends out as
a receipt: whoever keeps one can later tell a truncated or rolled-back ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto.identity import SigningIdentity
from node.policy import Policy
from privacy import errors as privacy_errors
from privacy.head import HeadReceipt
from privacy.ledger import ChargeReceipt, Ledger
from privacy.mechanism import MECHANISM, Mechanism, QueryRecord
from protocol.errors import BudgetExhausted, QueryError
from stats.plans import Layout
from stats.query import QuerySpec


@dataclass(frozen=True)
class Asked:
    """A query as the ledger records it: who asked what, under which signed digest."""

    spec: QuerySpec
    researcher: str
    query_id: bytes
    digest: bytes
    #: the datasets of the query this node holds
    held: tuple[str, ...]

    def record(self, decision: str, *, reason: str = "",
               mechanism: Mechanism | None = None) -> QueryRecord:
        return QueryRecord(
            query_id=self.query_id.hex(), researcher=self.researcher,
            method=self.spec.method, datasets=self.spec.datasets, held=self.held,
            decision=decision, query_digest=self.digest.hex(),
            variables=self.spec.variables, filters=self.spec.filters, reason=reason,
            mechanism=mechanism)


def mechanism_of(spec: QuerySpec, plan: Layout) -> Mechanism:
    """The DP mechanism a plan calibrated, as the ledger records it."""
    noise = plan.noise
    assert noise is not None
    return Mechanism(rho=noise.rho, noise_scale=noise.sigma_share, honest_nodes=noise.honest,
                     dimension=noise.dimension, sensitivity=noise.sensitivity_l2,
                     bounds={v: [lo, hi] for v, lo, hi in noise.clipping},
                     delta=spec.privacy.get("delta"), name=MECHANISM)


class BudgetKeeper:
    def __init__(self, path: Path | str, identity: SigningIdentity, policy: Policy, *,
                 previous: SigningIdentity | None = None, manifest_version: int = 0) -> None:
        """``previous``: the node's key before a rotation; when the ledger is under it, the
        ledger records the rotation to ``identity`` (listed by manifest ``manifest_version``)
        and goes on under the new key, its spending kept."""
        self.ledger = Ledger(path, identity, identity.verify_key.raw,
                             previous=None if previous is None
                             else (previous, previous.verify_key.raw),
                             manifest_version=manifest_version)
        self.ledger.record_policy(policy.to_dict())  # budgets are those of the policy entry
        self.policy = policy

    def charge(self, asked: Asked, plan: Layout) -> ChargeReceipt | None:
        """Record a DP query and charge its rho; None for an exact query (recorded when
        answered) or a DP query on no data of ours (recorded now, nothing to charge)."""
        if plan.noise is None:
            return None
        try:
            return self.ledger.record_query(asked.record(
                "answered-dp", mechanism=mechanism_of(asked.spec, plan))).charge
        except privacy_errors.BudgetExhausted as exc:
            raise BudgetExhausted(str(exc)) from None
        except privacy_errors.InvalidRequest as exc:
            raise QueryError(str(exc)) from None

    def answered(self, asked: Asked, charge: ChargeReceipt | None) -> HeadReceipt:
        """Just before the contribution leaves: release a DP charge, or record an exact
        answer; the signed head to send with it."""
        if asked.spec.privacy.get("mode") == "dp":
            return self.ledger.release(charge) if charge is not None \
                else self.ledger.head_receipt()
        return self.ledger.record_query(asked.record("answered-exact")).head

    def refused(self, asked: Asked, code: str) -> None:
        """Record a refusal (not a budget refusal: the ledger recorded that one itself)."""
        if code == BudgetExhausted.code:
            return
        self.ledger.record_query(asked.record("refused", reason=code))

    def refund(self, charge: ChargeReceipt | None, why: str) -> None:
        if charge is not None:
            self.ledger.refund(charge, why)

    def summary(self, researcher: str) -> list[dict[str, Any]]:
        """Spent and remaining per budget of ``researcher``: every budget the policy grants
        them (``"*"`` stands for each dataset not named), spent or not, and every dataset
        they spent on."""
        granted = [(researcher, dataset) for who in (researcher, "*")
                   for dataset in self.policy.budgets.get(who, {})]
        lines = self.ledger.summary(lambda r, d: self.policy.budget_for(r, d),
                                    researcher=researcher, include=granted)
        return [{"researcher": line.researcher, "dataset": line.dataset,
                 "spent_rho": line.spent, "limit_rho": line.limit,
                 "remaining_rho": line.remaining} for line in lines]

    def close(self) -> None:
        self.ledger.close()


def held_of(spec: QuerySpec, held: Sequence[str]) -> tuple[str, ...]:
    """The datasets of a query a node holds, in the query's order."""
    mine = set(held)
    return tuple(d for d in spec.datasets if d in mine)
