"""Everything a node checks before it computes anything for a query.

Nothing the aggregator says is believed: the researcher's signature is verified against the
manifest, the query must be fresh and new, the node's policy must allow it, the node
recomputes the plan and compares it with the round parameters, and the round's threshold
must be at least what the manifest demands for that many participants.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from crypto.errors import InvalidSignature
from crypto.identity import SigningIdentity
from node.session import NodeSession
from node.time_limit import RoundEnd
from protocol.errors import (
    AuthenticationError,
    ConfigurationError,
    ParameterMismatch,
    QueryError,
    ReplayError,
)
from protocol.manifest import Manifest
from protocol.params import RoundParams
from protocol.signed_query import SignedQuery
from stats.plans import Layout
from stats.query import QuerySpec

#: how far a query's timestamp may be from the node's clock
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000
SEEN_CAPACITY = 100_000


class ReplayGuard:
    """Remembers query ids for the freshness window; a repeat is refused.

    With a ``path`` the ids are also kept in a small SQLite file, durably before the query
    is answered, so a node restarted inside the window still refuses a replay (which, in
    Paillier mode, would also be a second partial decryption of the same round).
    """

    def __init__(self, capacity: int = SEEN_CAPACITY, path: Path | None = None) -> None:
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        if path is not None:
            try:
                # 0600 from the start, as the ledger: it says who asked when
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("CREATE TABLE IF NOT EXISTS seen_queries "
                                 "(query_id BLOB PRIMARY KEY, at_ms INTEGER NOT NULL)")
                # the newest ledger head this node handed out: a ledger found older at
                # start-up was rolled back (or lost), and the node refuses to run on it
                self._db.execute("CREATE TABLE IF NOT EXISTS ledger_head (id INTEGER PRIMARY "
                                 "KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL)")
            except (OSError, sqlite3.Error) as exc:
                raise ConfigurationError(f"cannot open the replay record {path}: {exc}") \
                    from None

    def check_and_remember(self, query_id: bytes, now_ms: int) -> None:
        with self._lock:
            while self._seen and (
                    now_ms - next(iter(self._seen.values())) > 2 * MAX_CLOCK_SKEW_MS
                    or len(self._seen) >= self._capacity):
                self._seen.popitem(last=False)
            if query_id in self._seen:
                raise ReplayError("this query was already answered")
            if self._db is not None:
                self._remember_durably(query_id, now_ms)
            self._seen[query_id] = now_ms

    def remember_head(self, seq: int, digest: bytes) -> None:
        """Keep the newest ledger head the node handed out (durably, before it leaves)."""
        if self._db is None:
            return
        with self._lock:
            self._db.execute("INSERT INTO ledger_head VALUES (1, ?, ?) ON CONFLICT (id) DO "
                             "UPDATE SET seq = excluded.seq, hash = excluded.hash "
                             "WHERE excluded.seq > ledger_head.seq", (seq, digest))

    def last_head(self) -> tuple[int, bytes] | None:
        """The newest ledger head the node handed out, or None."""
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT seq, hash FROM ledger_head WHERE id = 1").fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def _remember_durably(self, query_id: bytes, now_ms: int) -> None:
        assert self._db is not None
        try:
            self._db.execute("DELETE FROM seen_queries WHERE at_ms < ?",
                             (now_ms - 2 * MAX_CLOCK_SKEW_MS,))
            self._db.execute("INSERT INTO seen_queries VALUES (?, ?)", (query_id, now_ms))
        except sqlite3.IntegrityError:
            raise ReplayError("this query was already answered") from None


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    identity: SigningIdentity
    manifest: Manifest


@dataclass(frozen=True)
class Admitted:
    spec: QuerySpec
    layout: Layout


def authenticate(me: NodeIdentity, query: SignedQuery, now_ms: int) -> QuerySpec:
    """The query's specification, once its researcher's signature verifies against the
    manifest and it is fresh; what a node records about a query starts here."""
    manifest = me.manifest
    if query.federation_id != manifest.federation_id:
        raise AuthenticationError("the query belongs to another federation")
    researcher = manifest.member(query.researcher)
    if researcher.role != "researcher":
        raise AuthenticationError(f"{query.researcher} is not a researcher of this federation")
    try:
        researcher.verify_key.verify(query.statement(), query.signature)
    except InvalidSignature as exc:
        raise AuthenticationError("the query signature does not verify") from exc
    if abs(now_ms - query.issued_at_ms) > MAX_CLOCK_SKEW_MS:
        raise ReplayError("the query is too old (or from the future)")
    return QuerySpec.from_bytes(query.spec)


def admit(me: NodeIdentity, query: SignedQuery, params: RoundParams, session: NodeSession,
          guard: ReplayGuard, now_ms: int | None = None, *,
          spec: QuerySpec | None = None, stop: RoundEnd | None = None) -> Admitted:
    """Authenticate the query (unless ``spec`` says it was) and its round, remember it (a
    replay is refused from here on, whatever happens to this one), then plan it
    (:meth:`NodeSession.plan`: every check that needs no row, though an exact query's
    range check may sum over the rows, which ``stop`` interrupts)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if spec is None:
        spec = authenticate(me, query, now_ms)
    if params.federation_id != me.manifest.federation_id:
        raise AuthenticationError("the round belongs to another federation")
    # before planning: a replay costs no pass over the rows, and a query refused, stopped
    # or answered has its one ledger entry and is never computed again
    guard.check_and_remember(query.query_id, now_ms)
    if me.manifest.paillier_key is not None and query.reply_key == bytes(32):
        raise QueryError("a query to a Paillier federation must carry the researcher's "
                         "reply key")
    plan = session.plan(spec, query.researcher, threshold=params.threshold, stop=stop)
    _check_params(me, query, params, plan)
    return Admitted(spec, plan)


def _check_params(me: NodeIdentity, query: SignedQuery, params: RoundParams, plan: Layout) -> None:
    manifest = me.manifest
    n = len(params.participants)
    if me.name not in params.participants:
        raise ParameterMismatch("this node is not among the round's participants")
    strangers = sorted(p for p in params.participants if p not in manifest.members)
    if strangers:  # most likely a manifest the aggregator has and this node not yet
        raise ParameterMismatch(
            f"the round names {', '.join(strangers)}, which this node's federation.json "
            f"(version {manifest.version}) does not list: if the federation changed, this "
            "node needs the newest federation.json, and a restart")
    unknown = [p for p in params.participants if manifest.member(p).role != "node"]
    if unknown:
        raise ParameterMismatch(f"non-node participants {unknown}")
    if n < manifest.min_participants:
        raise ParameterMismatch(f"a round needs at least {manifest.min_participants} nodes")
    if params.threshold < manifest.threshold_for(n):
        raise ParameterMismatch("the round's threshold is below what the manifest demands")
    if params.query_id != query.query_id or params.query_digest != query.digest:
        raise ParameterMismatch("the round is not bound to this query")
    if (plan.length, plan.ring_bits) != (query.vector_length, query.ring_bits) or \
            (params.vector_length, params.ring_bits) != (plan.length, plan.ring_bits):
        raise ParameterMismatch("the plan of the query differs from this node's plan")
    # the collusion bound c, the threshold derived from it, and a SecAgg+ graph only when
    # the manifest enables it and it holds against c (the graph is re-derived from params)
    manifest.check_round(params)
