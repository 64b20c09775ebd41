"""The node's privacy budget: check and charge in the ledger before anything leaves.

A DP query is charged (atomically, for every dataset of the query this node holds) before
the node computes; the charge is marked released just before the masked input leaves; a
round that fails before that is refunded, since provably nothing left. Exact queries cost
no budget (the policy decides whether they are allowed at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crypto.identity import SigningIdentity
from engine.errors import BudgetExhausted, QueryError
from engine.plans import Layout
from engine.query import QuerySpec
from node.policy import Policy
from privacy import errors as privacy_errors
from privacy.accounting import epsilon_from_rho
from privacy.ledger import ChargeReceipt, Ledger

MECHANISM = "distributed discrete gaussian (zCDP)"


class BudgetKeeper:
    def __init__(self, path: Path | str, identity: SigningIdentity, policy: Policy) -> None:
        self.ledger = Ledger(path, identity, identity.verify_key.raw)
        self.policy = policy

    def charge(self, spec: QuerySpec, plan: Layout, researcher: str, query_id: bytes,
               held: Sequence[str]) -> ChargeReceipt | None:
        """Charge a DP query's rho to every budget it reads here (a dataset's own, or its
        budget group's: datasets sharing patients are charged once); None when nothing is
        charged (exact mode, or no data of ours in the query). Epsilon is what this node
        computes from rho at the request's delta, never a number the request states."""
        noise = plan.noise
        accounts = sorted({self.policy.account_of(d) for d in set(spec.datasets) & set(held)})
        if noise is None or not accounts:
            return None
        delta = spec.privacy.get("delta")
        epsilon = None if delta is None else epsilon_from_rho(noise.rho, delta)
        try:
            return self.ledger.charge(
                researcher, accounts, noise.rho,
                lambda d: self.policy.budget_for(researcher, d),
                query_id=query_id.hex(), method=spec.algorithm, mechanism=MECHANISM,
                sensitivity=noise.sensitivity_l2, noise_scale=noise.sigma_share,
                epsilon=epsilon, delta=delta, policy_hash=self.policy.digest())
        except privacy_errors.BudgetExhausted as exc:
            raise BudgetExhausted(str(exc)) from None
        except privacy_errors.InvalidRequest as exc:
            raise QueryError(str(exc)) from None

    def release(self, receipt: ChargeReceipt | None) -> None:
        if receipt is not None:
            self.ledger.release(receipt)

    def refund(self, receipt: ChargeReceipt | None, why: str) -> None:
        if receipt is not None:
            self.ledger.refund(receipt, why)

    def summary(self, researcher: str) -> list[dict[str, Any]]:
        lines = self.ledger.summary(lambda r, d: self.policy.budget_for(r, d),
                                    researcher=researcher)
        return [{"researcher": line.researcher, "dataset": line.dataset,
                 "spent_rho": line.spent, "limit_rho": line.limit,
                 "remaining_rho": line.remaining} for line in lines]

    def close(self) -> None:
        self.ledger.close()
