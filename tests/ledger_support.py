"""Shared helpers for ledger tests: a node key, a policy, calibrated DP queries, crafting.

``craft`` appends entries with the ledger's real chaining and signing code but none of its
checks: how the tests build the signed-but-wrong ledgers that verification must reject.
"""

from __future__ import annotations

import random
import sqlite3
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nacl.signing

from privacy import entry as E
from privacy.audit import verify_connection
from privacy.calibration import share_sigma
from privacy.errors import LedgerCorrupt
from privacy.ledger import Ledger, QueryReceipt
from privacy.mechanism import Mechanism, QueryRecord
from privacy.schema import COLUMNS

KEY = nacl.signing.SigningKey(bytes(range(32)))
PUB = bytes(KEY.verify_key)
DIGEST = "ab" * 32  # a query digest
POLICY = {"budgets": {"alice": {"edsd": {"rho": 1.0}, "ppmi": {"rho": 0.5}},
                      "*": {"*": {"rho": 1.0}}},
          "allowed_methods": "*", "allow_exact": True, "min_row_count": 10}
#: the fixed-point sensitivity and shape of a typical DP query (stats.plans._dp_layout)
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


# --- tampering (the attacker has the file, not the key) ---------------------------------


@dataclass
class Base:
    mem: sqlite3.Connection
    public_key: bytes
    count: int
    raw: list[tuple[object, ...]]


def _detected(base: Base, mutate) -> bool | None:
    """Apply ``mutate`` in a transaction, verify, roll back. None if it changed nothing."""
    mem = base.mem
    mem.execute("BEGIN")
    try:
        changes = mem.total_changes
        try:
            mutate(mem)
        except sqlite3.IntegrityError:
            return None  # e.g. a seq edit colliding with another rowid: not a mutation
        # every mutation below changes stored bytes by construction (an edited byte differs,
        # a moved row carries another seq); the fixture checks that rollbacks restored all
        assert mem.total_changes > changes
        try:
            verify_connection(mem, base.public_key)
        except LedgerCorrupt:
            return True
        return False
    finally:
        mem.execute("ROLLBACK")


def _raw(mem: sqlite3.Connection) -> list[tuple[object, ...]]:
    """Every stored value with its storage class and raw bytes (text compared as bytes)."""
    cols = ", ".join(f"typeof({c}), CAST({c} AS BLOB)" for c in COLUMNS)
    rows = mem.execute(f"SELECT seq, {cols} FROM entries ORDER BY seq").fetchall()
    return rows + mem.execute("SELECT * FROM head").fetchall()


def _edit_bytes(raw: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(raw))
    new = rng.choice([b for b in range(256) if b != raw[i]])
    return raw[:i] + bytes([new]) + raw[i + 1:]


def _byte_edit(rng: random.Random, count: int):
    seq = rng.randrange(count)
    column = rng.choice(COLUMNS)

    def mutate(mem: sqlite3.Connection) -> None:
        value = mem.execute(f"SELECT {column} FROM entries WHERE seq = ?", (seq,)).fetchone()[0]
        if isinstance(value, int):
            # one byte of the integer's 8-byte two's-complement form, as on disk
            raw = _edit_bytes(struct.pack(">q", value), rng)
            mem.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?",
                        (struct.unpack(">q", raw)[0], seq))
        elif isinstance(value, str):
            raw = value.encode("utf-8") or b" "
            edited = _edit_bytes(raw, rng) if value else raw  # "" -> one byte inserted
            # CAST keeps the storage class TEXT even when the bytes are not UTF-8
            mem.execute(f"UPDATE entries SET {column} = CAST(? AS TEXT) WHERE seq = ?",
                        (edited, seq))
        else:
            mem.execute(f"UPDATE entries SET {column} = ? WHERE seq = ?",
                        (_edit_bytes(value, rng), seq))
    return mutate, f"byte edit of {column} in entry {seq}"
