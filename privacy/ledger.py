"""The node's privacy ledger: every query and policy, budget check-and-charge, releases.

One SQLite file per node (WAL, ``synchronous=FULL``). Every write is one ``BEGIN IMMEDIATE``
transaction, so concurrent processes serialise on the database's write lock: the budget read
and the charge that depends on it can never interleave with another charge. After each
commit the WAL is checkpointed into ``ledger.db`` (passively: it never waits for a reader),
and on close fully (``wal_checkpoint(TRUNCATE)``), so the file alone is the whole ledger
whenever the node is stopped. Entries are only ever inserted; each is hash-chained to the
previous one and signed with the node key, and the single ``head`` row (the only row ever
rewritten) signs the newest entry. See :mod:`privacy.entry` for the encoding and
:mod:`privacy.audit` for verification.

The node's order of operations:

1. at start-up, :meth:`Ledger.record_policy` (appends a ``policy`` entry when the policy
   differs from the one in force);
2. for every query received, :meth:`Ledger.record_query` once: an ``answered-exact`` or
   ``refused`` query is one ``query`` entry; an ``answered-dp`` query is its ``query`` entry
   plus one ``charge`` per dataset it reads here, in one transaction, durable when it returns
   (or, when a budget lacks room, a ``refused`` query entry and :class:`BudgetExhausted`);
3. compute; then :meth:`Ledger.release` (recorded before sending) and send, or
   :meth:`Ledger.refund` when provably nothing left the node.

Each of these returns the signed head after its entries (:class:`privacy.head.HeadReceipt`),
which the node sends with its contribution so that others can later check the ledger.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic, sleep
from typing import Any

import nacl.exceptions
import nacl.signing

from privacy import entry as E
from privacy import fields as F
from privacy.errors import (
    BudgetExhausted,
    InvalidRequest,
    LedgerCorrupt,
    LedgerKeyChanged,
    ReceiptMismatch,
    RefundRefused,
)
from privacy.head import HeadReceipt
from privacy.mechanism import QueryRecord, calibration_error, check_record, epsilon_for
from privacy.policy_terms import PolicyTerms
from privacy.schema import BUSY_TIMEOUT_MS, COLUMNS, DDL, check_format, connect_writer
from privacy.units import budget_nano, charge_nano, nano_float

#: what a budget look-up may return: a rho, an object with ``.rho`` (the node's ``Budget``),
#: or ``None`` when the researcher has no budget on the dataset
BudgetFor = Callable[[str, str], object]

#: how long a write waits for another process's transaction before giving up
LOCK_TIMEOUT_S = 60.0
#: how long closing waits for other connections before leaving the last checkpoint to them
CLOSE_CHECKPOINT_MS = 100

# Reason codes the ledger writes itself.
BUDGET_EXHAUSTED = "budget-exhausted"
NO_BUDGET = "no-budget"  # a dataset of the query has no budget for this researcher at all
_PAST = {E.REFUND: "refunded", E.RELEASE: "released"}


def utc_now() -> str:
    """The default clock: ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class ChargeReceipt:
    """Proof of a durable charge; hand it back to :meth:`Ledger.release` or ``refund``."""

    query_id: str
    researcher: str
    datasets: tuple[str, ...]
    rho_nano: int
    seqs: tuple[int, ...]  # the charge entries, one per dataset, in ``datasets`` order
    time: str

    @property
    def rho(self) -> float:
        return nano_float(self.rho_nano)


@dataclass(frozen=True)
class QueryReceipt:
    """What :meth:`Ledger.record_query` recorded.

    ``charge`` is set for an ``answered-dp`` query that charged at least one dataset: hand it
    to :meth:`Ledger.release` before sending, or to :meth:`Ledger.refund`. ``epsilon`` and
    ``delta`` are what the ledger computed from the charged rho (``None`` for exact answers).
    ``head`` is the signed head right after this query's entries.
    """

    query_id: str
    seq: int  # the query entry
    decision: str
    rho_nano: int
    epsilon: float | None
    delta: float | None
    charge: ChargeReceipt | None
    head: HeadReceipt


@dataclass(frozen=True)
class BudgetLine:
    """Spending of one researcher on one dataset (``fed.budget()`` rows)."""

    researcher: str
    dataset: str
    spent_nano: int
    limit_nano: int | None  # None: no budget granted
    charges: int
    refunds: int
    refusals: int

    @property
    def remaining_nano(self) -> int | None:
        return None if self.limit_nano is None else max(self.limit_nano - self.spent_nano, 0)

    @property
    def spent(self) -> float:
        return nano_float(self.spent_nano)

    @property
    def limit(self) -> float | None:
        return None if self.limit_nano is None else nano_float(self.limit_nano)

    @property
    def remaining(self) -> float | None:
        r = self.remaining_nano
        return None if r is None else nano_float(r)


@dataclass(frozen=True)
class _Tail:
    seq: int
    hash: bytes
    time: str


class Ledger:
    """A node's ledger at ``path``, created (0600, with a signed genesis entry) when absent.

    ``signer.sign(bytes)`` must produce Ed25519 signatures verifiable with ``public_key``
    (checked here). ``clock()`` returns ISO 8601 UTC text; every write also takes an
    explicit ``time=``. Times never go backwards: a time earlier than the newest entry's
    (a clock stepped back) is recorded as that entry's time. Opening a ledger of another
    format fails with :class:`LedgerFormatError`.

    Key rotation: a ledger under another key than ``public_key`` is opened only when
    ``previous`` is ``(signer, public key)`` of the key the ledger is under (its genesis key,
    or the newest ``key_rotation`` entry's); a ``key_rotation`` entry naming ``public_key``
    and ``manifest_version`` (the manifest that lists it) is then appended, signed with the
    previous key, and everything after is signed with the new one. Without it, opening
    fails with :class:`LedgerKeyChanged` (a :class:`LedgerCorrupt`): spending is never
    forgotten by starting over.
    """

    def __init__(self, path: str | Path, signer: E.Signer, public_key: bytes, *,
                 clock: Callable[[], str] = utc_now,
                 previous: tuple[E.Signer, bytes] | None = None,
                 manifest_version: int = 0) -> None:
        if not isinstance(public_key, bytes) or len(public_key) != E.PUBLIC_KEY_SIZE:
            raise InvalidRequest("the node's public key must be 32 bytes")
        self.path = Path(path)
        self.public_key = public_key
        self._signer = signer
        self._verify_key = nacl.signing.VerifyKey(public_key)
        self._clock = clock
        self._policy_cache: tuple[int, PolicyTerms] | None = None
        #: (key, message, signature) triples this process signed or already verified: the
        #: newest entry and the head are checked before every write, and re-verifying the
        #: same bytes under the same key can only give the same answer (a few per query)
        self._known_good: dict[tuple[bytes, bytes, bytes], None] = {}
        probe = E.FORMAT.encode() + b"/key-check\x00"  # domain-separated, never stored
        self._check_signature(probe, E.signature_of(signer, probe), None,
                              "the signer does not match the public key")
        if previous is not None:
            old_signer, old_key = previous
            if not isinstance(old_key, bytes) or len(old_key) != E.PUBLIC_KEY_SIZE \
                    or old_key == public_key:
                raise InvalidRequest("the previous public key is 32 bytes, not the new key")
            self._check_signature(probe, E.signature_of(old_signer, probe), None,
                                  "the previous signer does not match its public key",
                                  old_key)
            if isinstance(manifest_version, bool) or not isinstance(manifest_version, int) \
                    or manifest_version < 1:
                raise InvalidRequest("a key rotation names the manifest version (>= 1) that "
                                     "lists the new key")
        # one connection, shared by threads (a node may charge from a worker thread so the
        # fsync does not block its event loop); the lock serialises them in this process,
        # BEGIN IMMEDIATE serialises processes
        self._lock = threading.Lock()
        try:
            self._conn = connect_writer(self.path)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupt(f"{self.path} is not a ledger database ({exc})") from exc
        try:
            under: bytes | None = None
            with self._read() as conn:
                exists = check_format(conn, str(self.path))
                if exists:
                    keys = _key_chain_end(conn)
                    under = keys[0][1] if keys else None
                    # fail closed on a foreign or damaged ledger
                    exists = self._tail(conn, under) is not None
            if exists and under != public_key:
                self._adopt(under, previous, manifest_version)
            if not exists:  # create under the write lock: two creators cannot both win
                with self._transaction() as conn:
                    if not check_format(conn, str(self.path)):
                        for statement in _statements(DDL):
                            conn.execute(statement)
                    if self._tail(conn) is None:
                        when = F.time_text(clock())
                        self._append(conn, [E.blank(-1, when, E.GENESIS,
                                                    node_key=public_key.hex())])
            # after a crash between a commit and its checkpoint, merge that commit into the
            # file now rather than at the next write
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError:
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LedgerCorrupt(f"{self.path} is not a ledger database ({exc})") from exc
        except BaseException:
            self._conn.close()
            raise

    # --- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint the WAL into the file and truncate it, then close. Another process
        still writing keeps its WAL; the last one to close leaves the file complete."""
        with self._lock:
            try:
                self._conn.execute(f"PRAGMA busy_timeout = {CLOSE_CHECKPOINT_MS}")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error:
                pass  # closing must not fail: the entries are durable in the WAL already
            finally:
                self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes --------------------------------------------------------------------------

    def record_policy(self, policy: Mapping[str, Any], *,
                      time: str | None = None) -> HeadReceipt | None:
        """Record the node's policy (its plain JSON form, e.g. ``Policy.to_dict()``) when it
        differs from the policy in force; the head after it, or ``None`` when unchanged.

        Budgets are checked against the policy in force, so call this at start-up, before
        the first :meth:`record_query`.
        """
        terms = PolicyTerms.from_mapping(policy)
        with self._transaction() as conn:
            current = self._policy(conn)
            if current is not None and current.digest == terms.digest:
                return None
            row = E.blank(-1, self._now(self._tail(conn), time), E.POLICY,
                          policy_digest=terms.digest, policy_json=terms.text)
            _, head = self._append(conn, [row])
        return head

    def record_query(self, record: QueryRecord, *, time: str | None = None) -> QueryReceipt:
        """Record one query this node received, with its decision; charge a DP answer.

        ``answered-dp``: checks ``spent + rho <= budget`` (the budget of the policy in force)
        for every held dataset and charges all, or none; on success the query entry and its
        charges are committed (and fsync'd) before this returns. When a budget lacks room, a
        ``refused`` query entry (reason ``budget-exhausted`` or ``no-budget``) is committed
        instead and :class:`BudgetExhausted` (with ``.head``) names what remains.

        The ledger computes epsilon from the charged rho, at the request's delta or else the
        policy's reporting delta; it refuses (:class:`InvalidRequest`, nothing written) a
        mechanism whose noise does not give the rho it charges, an exact answer the policy
        forbids, and any query before a policy is recorded.
        """
        checked = check_record(record)
        values = dict(checked.values)
        decision = values["decision"]
        rho_nano = 0 if checked.rho is None else charge_nano(checked.rho)
        if checked.rho is not None:  # before taking the write lock: no policy needed
            why = calibration_error(rho_nano, str(values["noise_scale"]),
                                    str(values["sensitivity"]), int(values["honest_nodes"]),
                                    int(values["dimension"]))
            if why is not None:
                raise InvalidRequest(f"the mechanism does not give the rho charged: {why}")
        refusal: BudgetExhausted | None = None
        with self._transaction() as conn:
            policy = self._policy(conn)
            if policy is None:
                raise InvalidRequest("record the node's policy (record_policy) before any "
                                     "query")
            if decision == E.ANSWERED_EXACT and not policy.exact_for(str(values["researcher"])):
                raise InvalidRequest("the policy in force does not grant this researcher "
                                     "exact answers")
            if decision != E.REFUSED and not policy.allows(str(values["method"])):
                raise InvalidRequest(f"the policy in force does not allow {values['method']!r}")
            values["policy_digest"] = policy.digest
            epsilon = delta = None
            if checked.rho is not None:
                delta = policy.reporting_delta if checked.delta is None else checked.delta
                epsilon = epsilon_for(rho_nano, delta)
                values.update(rho_nano=rho_nano, epsilon=repr(epsilon), delta=repr(delta))
            tail = self._tail(conn)
            assert tail is not None  # the genesis entry exists from creation on
            when = self._now(tail, time)
            query_seq = tail.seq + 1
            researcher = str(values["researcher"])
            rows = []
            charge: ChargeReceipt | None = None
            accounts = policy.accounts(checked.charged)
            if accounts:
                want = int(values["rho_nano"])
                limits = {d: policy.budget_nano(researcher, d) for d in accounts}
                remaining = {d: _remaining(limits[d], _spent(conn, researcher, d))
                             for d in accounts}
                short = tuple(d for d in accounts if remaining[d] < want)
                if short:
                    values.update(decision=E.REFUSED, reason=NO_BUDGET if any(
                        limits[d] is None for d in short) else BUDGET_EXHAUSTED)
                    refusal = BudgetExhausted(researcher, want, remaining, short, tuple(
                        d for d in short if limits[d] is None))
                else:
                    rows = [E.blank(-1, when, E.CHARGE, query_id=values["query_id"],
                                    researcher=researcher, method=values["method"],
                                    dataset=d, rho_nano=want, ref_seq=query_seq)
                            for d in accounts]
                    charge = ChargeReceipt(str(values["query_id"]), researcher,
                                           accounts, want,
                                           tuple(range(query_seq + 1, query_seq + 1 + len(rows))),
                                           when)
            _, head = self._append(conn, [E.blank(-1, when, E.QUERY, **values), *rows])
        if refusal is not None:
            refusal.head = head
            raise refusal
        return QueryReceipt(str(values["query_id"]), query_seq, str(values["decision"]),
                            int(values.get("rho_nano", 0)), epsilon, delta, charge, head)

    def release(self, receipt: ChargeReceipt, *, transcript: str = "",
                time: str | None = None) -> HeadReceipt:
        """Record that the contribution charged by ``receipt`` leaves the node; the head
        after it (send it with the contribution).

        Call it before sending: once it returns, the charge can no longer be refunded.
        """
        return self._follow_up(receipt, E.RELEASE, time,
                               transcript=F.hex_text(transcript, "transcript", empty=True))

    def refund(self, receipt: ChargeReceipt, proof: str, *,
               time: str | None = None) -> HeadReceipt:
        """Return a charge; only when ``proof`` states why provably nothing left the node.

        Refused (:class:`RefundRefused`) once the charge was released or already refunded.
        """
        try:
            reason = F.one_line(proof, "a refund's proof that nothing left the node")
        except InvalidRequest as exc:
            raise InvalidRequest("a refund needs a one-line proof that nothing left the "
                                 "node") from exc
        return self._follow_up(receipt, E.REFUND, time, reason=reason)

    # --- reads ---------------------------------------------------------------------------

    def head_receipt(self) -> HeadReceipt:
        """The signed head of the ledger as it stands (checked against the newest entry)."""
        with self._read() as conn:
            tail = self._tail(conn)
            row = conn.execute("SELECT signature FROM head WHERE id = 1").fetchone()
        assert tail is not None and row is not None
        return HeadReceipt(self.public_key, tail.seq, tail.hash, row[0])

    def check_extends(self, receipt: HeadReceipt | tuple[int, bytes]) -> None:
        """Raise unless this ledger still holds the entry a receipt (or ``(seq, hash)``)
        names: :class:`ReceiptMismatch` when it was truncated, rolled back or rewritten,
        :class:`ReceiptInvalid` when the receipt is not this node's. For a node's start-up
        check against the last head it stored elsewhere."""
        if isinstance(receipt, HeadReceipt):
            receipt.check_signature(self.public_key)
            seq, digest = receipt.seq, receipt.hash
        else:
            seq, digest = receipt
        with self._read() as conn:
            row = conn.execute("SELECT hash FROM entries WHERE seq = ?", (seq,)).fetchone()
            tail = self._tail(conn)
        assert tail is not None
        if row is None:
            raise ReceiptMismatch(f"the ledger ends here, but a head at entry {seq} was "
                                  "signed: it was truncated or rolled back", receipt, tail.seq)
        if row[0] != digest:
            raise ReceiptMismatch(f"entry {seq} is not the one the head names: the history "
                                  "was rewritten", receipt, seq)

    def policy(self) -> PolicyTerms | None:
        """The policy in force (the newest policy entry), or ``None`` before the first."""
        with self._read() as conn:
            return self._policy(conn)

    def spent_nano(self, researcher: str, dataset: str) -> int:
        with self._read() as conn:
            return _spent(conn, researcher, dataset)

    def spent(self, researcher: str, dataset: str) -> float:
        """Rho spent (charges minus refunds), as a float for people."""
        return nano_float(self.spent_nano(researcher, dataset))

    def summary(self, budget_for: BudgetFor | None = None, *,
                researcher: str | None = None,
                include: Iterable[tuple[str, str]] = ()) -> list[BudgetLine]:
        """Spent and remaining per (researcher, dataset), for ``fed.budget()``.

        Limits come from ``budget_for(researcher, dataset)`` when given, else from the policy
        in force. ``include`` adds pairs with no entries. ``refusals`` counts refused queries
        of a dataset this node holds.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT researcher, dataset,"
                " SUM(CASE kind WHEN 'charge' THEN rho_nano ELSE -rho_nano END),"
                " SUM(kind = 'charge'), SUM(kind = 'refund')"
                " FROM entries WHERE kind IN ('charge', 'refund')"
                " GROUP BY researcher, dataset"
            ).fetchall()
            refused = conn.execute(
                "SELECT researcher, held FROM entries WHERE kind = 'query'"
                " AND decision = 'refused'").fetchall()
            policy = self._policy(conn)
        tally: dict[tuple[str, str], list[int]] = {
            (who, what): [spent, charges, refunds, 0]
            for who, what, spent, charges, refunds in rows}
        for who, held in refused:
            datasets = [str(d) for d in F.json_value(held, "held")]  # type: ignore[union-attr]
            for what in (datasets if policy is None else policy.accounts(datasets)):
                tally.setdefault((who, what), [0, 0, 0, 0])[3] += 1
        for pair in include:
            tally.setdefault(pair, [0, 0, 0, 0])
        out = []
        for (who, what), (spent, charges, refunds, refusals) in sorted(tally.items()):
            if researcher is not None and who != researcher:
                continue
            if budget_for is not None:
                limit = _limit(budget_for(who, what))
            else:
                limit = None if policy is None else policy.budget_nano(who, what)
            out.append(BudgetLine(who, what, spent, limit, charges, refunds, refusals))
        return out

    def entries(self) -> list[E.Entry]:
        """Every entry in order (no verification: use :func:`privacy.audit.verify_ledger`)."""
        with self._read() as conn:
            rows = conn.execute(f"SELECT {', '.join(E.FIELDS)} FROM entries ORDER BY seq")
            return [E.Entry(*row) for row in rows]

    # --- internals -----------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` takes the write lock first, so the reads inside see the
        latest committed state and no other writer can commit until we do. After the
        (fsync'd) commit, a passive checkpoint copies the WAL into the file without waiting
        for readers (a later commit or the close catches up what it could not)."""
        with self._lock:
            conn = self._conn
            _begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")  # one snapshot for the whole read
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _now(self, tail: _Tail | None, time: str | None) -> str:
        """The time for new entries: the given or clock time, never before the newest."""
        when = F.time_text(self._clock() if time is None else time)
        if tail is not None and F.moment(when) < F.moment(tail.time):
            return tail.time
        return when

    def _policy(self, conn: sqlite3.Connection) -> PolicyTerms | None:
        row = conn.execute("SELECT seq, policy_json FROM entries WHERE kind = 'policy'"
                           " ORDER BY seq DESC LIMIT 1").fetchone()
        if row is None:
            return None
        if self._policy_cache is None or self._policy_cache[0] != row[0]:
            try:
                self._policy_cache = (row[0], PolicyTerms.from_text(row[1]))
            except InvalidRequest as exc:
                raise LedgerCorrupt(f"the policy entry is unreadable ({exc})", row[0]) from exc
        return self._policy_cache[1]

    def _follow_up(self, receipt: ChargeReceipt, kind: str, time: str | None,
                   **values: object) -> HeadReceipt:
        if not isinstance(receipt, ChargeReceipt):
            raise InvalidRequest("a refund or release takes the ChargeReceipt of the charge")
        with self._transaction() as conn:
            when = self._now(self._tail(conn), time)
            rows = []
            for seq, dataset in zip(receipt.seqs, receipt.datasets, strict=True):
                found = conn.execute(
                    f"SELECT {', '.join(E.FIELDS)} FROM entries WHERE seq = ?", (seq,)
                ).fetchone()
                if found is None or E.Entry(*found).kind != E.CHARGE:
                    raise RefundRefused(f"entry {seq} is not a charge of this ledger")
                c = E.Entry(*found)
                if (c.query_id, c.researcher, c.dataset, c.rho_nano) != (
                        receipt.query_id, receipt.researcher, dataset, receipt.rho_nano):
                    raise RefundRefused(f"entry {seq} does not match the receipt")
                done = conn.execute(
                    "SELECT kind FROM entries WHERE ref_seq = ? AND kind IN ('refund', 'release')"
                    " LIMIT 1", (seq,)
                ).fetchone()
                if done is not None:
                    raise RefundRefused(f"the charge {seq} was already {_PAST[done[0]]}")
                rows.append(E.blank(-1, when, kind, query_id=c.query_id,
                                    researcher=c.researcher, method=c.method,
                                    dataset=c.dataset, rho_nano=c.rho_nano, ref_seq=seq,
                                    **values))
            _, head = self._append(conn, rows)
        return head

    def _adopt(self, under: bytes | None, previous: tuple[E.Signer, bytes] | None,
               manifest_version: int) -> None:
        """Rotate the ledger from the key it is under to ours, with the previous key."""
        assert under is not None  # a ledger with entries has a genesis key
        if previous is None or previous[1] != under:
            raise LedgerKeyChanged(
                f"{self.path} is signed under the node key {under.hex()[:16]}..., not this "
                "node's key: give the node that previous key to record the rotation"
                + ("" if previous is None else " (the previous key given is another one)"),
                under.hex())
        old_signer, old_key = previous
        with self._transaction() as conn:
            if _key_chain_end(conn)[0][1] != old_key:  # another process rotated meanwhile
                return
            again = conn.execute("SELECT seq FROM entries WHERE kind IN ('genesis', "
                                 "'key_rotation') AND node_key = ?",
                                 (self.public_key.hex(),)).fetchone()
            if again is not None:
                raise InvalidRequest(f"the new key was already this ledger's key (entry "
                                     f"{again[0]}): a retired key never returns")
            tail = self._tail(conn, old_key)
            row = E.blank(-1, self._now(tail, None), E.KEY_ROTATION,
                          node_key=self.public_key.hex(),
                          reason=E.rotation_reason(manifest_version))
            self._append(conn, [row], tail_key=old_key, entry_signer=old_signer)

    def _tail(self, conn: sqlite3.Connection, key: bytes | None = None) -> _Tail | None:
        """The newest entry, checked against the signed head under ``key`` (default ours):
        we never chain onto an entry that is not ours (fail closed instead). The newest
        entry is signed by the key it follows when it is a key rotation, else by ``key``."""
        key = self.public_key if key is None else key
        row = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        head = conn.execute("SELECT seq, hash, signature FROM head WHERE id = 1").fetchone()
        if row is None:
            if head is not None:
                raise LedgerCorrupt("the ledger has a head but no entries")
            return None
        last = E.Entry(*row[: len(E.FIELDS)])
        prev, digest, signature = row[len(E.FIELDS):]
        if E.entry_hash(prev, last) != digest:
            raise LedgerCorrupt("hash does not match its contents", last.seq)
        keys = _key_chain_end(conn)
        if not keys:
            raise LedgerCorrupt("the ledger has no genesis entry naming its key", 0)
        if keys[0][1] != key:
            raise LedgerKeyChanged(f"{self.path} is signed under another node key",
                                   keys[0][1].hex())
        signed_by = keys[1][1] if (last.kind == E.KEY_ROTATION and keys[0][0] == last.seq
                                   and len(keys) > 1) else key
        self._check_signature(E.SIG_DOMAIN + digest, signature, last.seq,
                              "signature does not verify under this node's key", signed_by)
        if head is None or head[0] != last.seq or head[1] != digest:
            raise LedgerCorrupt("the newest entry is not the signed head", last.seq)
        self._check_signature(E.head_message(head[0], head[1]), head[2], last.seq,
                              "the head signature does not verify under this node's key", key)
        return _Tail(last.seq, digest, last.time)

    def _append(self, conn: sqlite3.Connection, rows: list[E.Entry], *,
                tail_key: bytes | None = None, entry_signer: E.Signer | None = None
                ) -> tuple[list[int], HeadReceipt]:
        """Chain, sign (with ``entry_signer``, default ours) and insert ``rows`` (their
        ``seq`` is assigned here) and re-sign the head with our key; no checks of their
        content (the public methods make them)."""
        tail = self._tail(conn, tail_key)
        signer = self._signer if entry_signer is None else entry_signer
        seq, prev = (-1, E.GENESIS_PREV) if tail is None else (tail.seq, tail.hash)
        seqs = []
        placeholders = ", ".join("?" * len(COLUMNS))
        for row in rows:
            seq += 1
            stamped = E.Entry(**{**_as_dict(row), "seq": seq})
            digest = E.entry_hash(prev, stamped)
            signature = E.signature_of(signer, E.SIG_DOMAIN + digest)
            if entry_signer is None:  # ours: the probe at start-up matched it to our key
                self._remember(self.public_key, E.SIG_DOMAIN + digest, signature)
            conn.execute(f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                         (*_values(stamped), prev, digest, signature))
            seqs.append(seq)
            prev = digest
        head_sig = E.signature_of(self._signer, E.head_message(seq, prev))
        self._remember(self.public_key, E.head_message(seq, prev), head_sig)
        conn.execute(
            "INSERT INTO head (id, seq, hash, signature) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
            " signature = excluded.signature", (seq, prev, head_sig),
        )
        return seqs, HeadReceipt(self.public_key, seq, prev, head_sig)

    def _check_signature(self, message: bytes, signature: bytes, seq: int | None,
                         what: str, key: bytes | None = None) -> None:
        key = self.public_key if key is None else key
        if (key, message, signature) in self._known_good:
            return
        verify_key = self._verify_key if key == self.public_key else nacl.signing.VerifyKey(key)
        try:
            verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                nacl.exceptions.TypeError) as exc:
            if seq is None:
                raise InvalidRequest(what) from exc
            raise LedgerCorrupt(what, seq) from exc
        self._remember(key, message, signature)

    def _remember(self, key: bytes, message: bytes, signature: bytes) -> None:
        if len(self._known_good) >= 64:  # the newest few are all that is asked again
            self._known_good.clear()
        self._known_good[(key, message, signature)] = None


def _key_chain_end(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
    """``(seq, key)`` of the newest key entry (genesis or key_rotation) and the one before."""
    rows = conn.execute("SELECT seq, node_key FROM entries WHERE kind IN ('genesis', "
                        "'key_rotation') ORDER BY seq DESC LIMIT 2").fetchall()
    out = []
    for seq, text in rows:
        try:
            out.append((seq, E.key_of(E.blank(seq, "", E.GENESIS, node_key=text))))
        except (TypeError, ValueError) as exc:
            raise LedgerCorrupt("the entry does not name a node key", seq) from exc
    return out


def _begin_immediate(conn: sqlite3.Connection) -> None:
    """Take the write lock, retrying briefly with jitter while another process holds it.

    SQLite's own busy handler sleeps in coarse steps (up to 100 ms) and leaves the lock idle
    between holders; a charge holds it for about one fsync, so short jittered retries keep
    16 racing processes moving. Other statements keep SQLite's handler (``BUSY_TIMEOUT_MS``).
    """
    deadline = monotonic() + LOCK_TIMEOUT_S
    pause = 0.0002
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or monotonic() > deadline:
                    raise
            sleep(pause * (0.5 + secrets.randbelow(1024) / 1024))
            pause = min(pause * 2, 0.004)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


def _as_dict(entry: E.Entry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in E.FIELDS}


def _values(entry: E.Entry) -> tuple[object, ...]:
    return tuple(getattr(entry, name) for name in E.FIELDS)


def _statements(script: str) -> list[str]:
    """Split the DDL into statements (``executescript`` would COMMIT our transaction)."""
    out, buf = [], []
    for line in script.splitlines():
        if line.strip().startswith("--"):
            continue
        buf.append(line)
        joined = "\n".join(buf).strip()
        if joined and sqlite3.complete_statement(joined):
            out.append(joined)
            buf = []
    return out


def _spent(conn: sqlite3.Connection, researcher: str, dataset: str) -> int:
    row = conn.execute(
        "SELECT COALESCE(SUM(CASE kind WHEN 'charge' THEN rho_nano ELSE -rho_nano END), 0)"
        " FROM entries WHERE researcher = ? AND dataset = ? AND kind IN ('charge', 'refund')",
        (researcher, dataset),
    ).fetchone()
    return int(row[0])


def _limit(value: object) -> int | None:
    if value is None:
        return None
    value = getattr(value, "rho", value)  # the node's Budget, or a bare number
    return budget_nano(value)  # type: ignore[arg-type]


def _remaining(limit: int | None, spent: int) -> int:
    return 0 if limit is None else max(limit - spent, 0)
