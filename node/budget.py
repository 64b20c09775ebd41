"""The node's privacy budget: check and charge in the ledger before anything leaves.

A DP query is charged (atomically, for every dataset of the query this node holds) before
the node computes; the charge is marked released just before the masked input leaves; a
round that fails before that is refunded, since provably nothing left. Exact queries cost
no budget (the policy decides whether they are allowed at all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crypto.identity import SigningIdentity
from engine.errors import BudgetExhausted, QueryError
from engine.plans import Layout
from engine.query import QuerySpec
from node.policy import Policy
from privacy import errors as privacy_errors
from privacy.ledger import ChargeReceipt, Ledger
from privacy.mechanism import MECHANISM, Mechanism, QueryRecord


class BudgetKeeper:
    def __init__(self, path: Path | str, identity: SigningIdentity, policy: Policy) -> None:
        self.ledger = Ledger(path, identity, identity.verify_key.raw)
        self.ledger.record_policy(policy.to_dict())  # budgets are those of the policy entry
        self.policy = policy

    def charge(self, spec: QuerySpec, plan: Layout, researcher: str, query_id: bytes,
               held: Sequence[str]) -> ChargeReceipt | None:
        """Charge a DP query's rho to every dataset it reads here; None when nothing is
        charged (exact mode, or no data of ours in the query)."""
        noise = plan.noise
        datasets = sorted(set(spec.datasets) & set(held))
        if noise is None or not datasets:
            return None
        mechanism = Mechanism(
            rho=noise.rho, noise_scale=noise.sigma_share, honest_nodes=noise.honest,
            dimension=sum(1 for slot in plan.slots if plan.noisy(slot)),
            sensitivity=noise.sensitivity_l2, bounds=spec.privacy.get("bounds", {}),
            delta=spec.privacy.get("delta"), name=MECHANISM)
        try:
            return self.ledger.record_query(QueryRecord(
                query_id=query_id.hex(), researcher=researcher, method=spec.algorithm,
                datasets=spec.datasets, held=datasets, decision="answered-dp",
                query_digest=hashlib.sha256(spec.canonical()).hexdigest(),
                variables=spec.variables, filters=spec.filters, mechanism=mechanism)).charge
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
