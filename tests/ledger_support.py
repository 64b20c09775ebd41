"""Shared helpers for ledger tests: a node key, a policy, calibrated DP queries, crafting.

``craft`` appends entries with the ledger's real chaining and signing code but none of its
checks: how the tests build the signed-but-wrong ledgers that verification must reject.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import nacl.signing

from privacy import entry as E
from privacy.calibration import share_sigma
from privacy.ledger import Ledger, QueryReceipt
from privacy.mechanism import Mechanism, QueryRecord

KEY = nacl.signing.SigningKey(bytes(range(32)))
PUB = bytes(KEY.verify_key)
DIGEST = "ab" * 32  # a query digest
POLICY = {"budgets": {"alice": {"edsd": {"rho": 1.0}, "ppmi": {"rho": 0.5}},
                      "*": {"*": {"rho": 1.0}}},
          "allowed_algorithms": "*", "allow_exact": True, "min_row_count": 10}
#: the fixed-point sensitivity and shape of a typical DP query (engine.plans._dp_layout)
SENSITIVITY = 4096.0
HONEST = 2
DIMENSION = 3


def ticking(start: str = "2025-02-01", step_s: int = 1) -> Callable[[], str]:
    """A clock that advances ``step_s`` seconds per call, from midnight of ``start``."""
    ticks = iter(range(0, 10**9, step_s))

    def now() -> str:
        t = next(ticks)
        return f"{start}T{t // 3600 % 24:02d}:{t // 60 % 60:02d}:{t % 60:02d}Z"
    return now


def mechanism(rho: float, *, delta: float | None = None, honest: int = HONEST,
              dimension: int = DIMENSION, sensitivity: float = SENSITIVITY) -> Mechanism:
    """A mechanism calibrated as a node calibrates it (the noise gives exactly ``rho``)."""
    sigma = share_sigma(rho, sensitivity, honest, dim=dimension)
    return Mechanism(rho=rho, noise_scale=sigma, honest_nodes=honest, dimension=dimension,
                     sensitivity=sensitivity, bounds={"age": [0, 120]}, delta=delta)


def dp(ledger: Ledger, qid: str, rho: float = 0.1, datasets: Sequence[str] = ("edsd",), *,
       researcher: str = "alice", method: str = "count", held: Sequence[str] | None = None,
       delta: float | None = None, time: str | None = None) -> QueryReceipt:
    return ledger.record_query(QueryRecord(
        query_id=qid, researcher=researcher, method=method, datasets=list(datasets),
        held=held, decision=E.ANSWERED_DP, query_digest=DIGEST, variables=["age"],
        filters={"var": "age", "op": ">", "value": 50},
        mechanism=mechanism(rho, delta=delta)), time=time)


def exact(ledger: Ledger, qid: str, datasets: Sequence[str] = ("edsd",), *,
          researcher: str = "alice", method: str = "count") -> QueryReceipt:
    return ledger.record_query(QueryRecord(
        query_id=qid, researcher=researcher, method=method, datasets=list(datasets),
        decision=E.ANSWERED_EXACT, query_digest=DIGEST))


def refuse(ledger: Ledger, qid: str, reason: str, datasets: Sequence[str] = ("edsd",), *,
           researcher: str = "alice", method: str = "count") -> QueryReceipt:
    return ledger.record_query(QueryRecord(
        query_id=qid, researcher=researcher, method=method, datasets=list(datasets),
        decision=E.REFUSED, reason=reason, query_digest=DIGEST))


def craft(ledger: Ledger, rows: list[E.Entry]) -> None:
    """Append ``rows`` signed with the node key, bypassing every check of the ledger."""
    with ledger._transaction() as conn:
        ledger._append(conn, rows)
