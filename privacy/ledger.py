"""The node's privacy ledger: budget check-and-charge, refunds, releases, refusals.

One SQLite file per node (WAL, ``synchronous=FULL``). Every write is one ``BEGIN IMMEDIATE``
transaction, so concurrent processes serialise on the database's write lock: the budget read
and the charge that depends on it can never interleave with another charge. Entries are only
ever inserted; each is hash-chained to the previous one and signed with the node key, and
the single ``head`` row (the only row ever rewritten) signs the newest entry. See
:mod:`privacy.entry` for the encoding and :mod:`privacy.audit` for verification.

The node's order of operations: ``charge`` (durable when it returns) -> compute ->
``release`` (recorded before sending) -> send. ``refund`` is accepted only for a charge that
has no release, and only with a stated proof that nothing left the node.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from time import monotonic, sleep

import nacl.exceptions
import nacl.signing

from privacy import entry as E
from privacy.errors import BudgetExhausted, InvalidRequest, LedgerCorrupt, RefundRefused
from privacy.schema import BUSY_TIMEOUT_MS, COLUMNS, DDL, connect_writer
from privacy.units import Number, budget_nano, charge_nano, decimal_text, nano_float

#: what a budget look-up may return: a rho, an object with ``.rho`` (the node's ``Budget``),
#: or ``None`` when the researcher has no budget on the dataset (the query is refused)
BudgetFor = Callable[[str], object]

_HEX = re.compile(r"(?:[0-9a-f]{2}){1,128}")
_REASON = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|\+00:00)")
_MAX_NAME = 256
_MAX_TEXT = 1024
#: how long a write waits for another process's transaction before giving up
LOCK_TIMEOUT_S = 60.0

# Reason codes the ledger writes itself.
BUDGET_EXHAUSTED = "budget-exhausted"
OTHER_DATASET_EXHAUSTED = "other-dataset-exhausted"  # this dataset had room, another did not
NO_BUDGET = "no-budget"
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
class BudgetLine:
    """Spending of one researcher on one dataset (``fed.budget()`` rows)."""

    researcher: str
    dataset: str
    spent_nano: int
    limit_nano: int | None  # None: unknown (no budget_for given and none recorded)
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


class Ledger:
    """A node's ledger at ``path``, created (with a signed genesis entry) when absent.

    ``signer.sign(bytes)`` must produce Ed25519 signatures verifiable with ``public_key``
    (checked here). ``clock()`` returns ISO 8601 UTC text; every write also takes an
    explicit ``time=``. Opening a ledger written under another key fails with
    :class:`LedgerCorrupt`.
    """

    def __init__(self, path: str | Path, signer: E.Signer, public_key: bytes, *,
                 clock: Callable[[], str] = utc_now) -> None:
        if not isinstance(public_key, bytes) or len(public_key) != E.PUBLIC_KEY_SIZE:
            raise InvalidRequest("the node's public key must be 32 bytes")
        self.path = Path(path)
        self.public_key = public_key
        self._signer = signer
        self._verify_key = nacl.signing.VerifyKey(public_key)
        self._clock = clock
        probe = E.FORMAT.encode() + b"/key-check\x00"  # domain-separated, never stored
        self._check_signature(probe, E.signature_of(signer, probe), None,
                              "the signer does not match the public key")
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
            with self._read() as conn:
                exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                                      " AND name = 'entries'").fetchone() is not None
                if exists:
                    exists = self._tail(conn) is not None  # fail closed on a foreign ledger
            if not exists:  # create under the write lock: two creators cannot both win
                with self._transaction() as conn:
                    for statement in _statements(DDL):
                        conn.execute(statement)
                    if self._tail(conn) is None:
                        self._append(conn, [self._genesis(clock())])
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
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writes --------------------------------------------------------------------------

    def charge(self, researcher: str, datasets: Sequence[str], rho: Number,
               budget_for: BudgetFor, *, query_id: str, method: str, mechanism: str,
               sensitivity: Number | None = None, noise_scale: Number | None = None,
               epsilon: Number | None = None, delta: Number | None = None,
               policy_hash: str = "", transcript: str = "",
               time: str | None = None) -> ChargeReceipt:
        """Check ``spent + rho <= limit`` for every dataset and charge all, or none.

        On success the charge entries are committed (and fsync'd) before this returns. When
        any dataset lacks room, refusal entries are committed instead and
        :class:`BudgetExhausted` names the remaining budget of each dataset.
        """
        datasets = _datasets(datasets)
        want = charge_nano(rho)
        # Look the limits up before taking the write lock: policy code stays out of it.
        limits = {d: _limit(budget_for(d)) for d in datasets}
        base = self._template(
            E.CHARGE, researcher, query_id, method, time,
            mechanism=_name(mechanism, "mechanism"),
            sensitivity=decimal_text(sensitivity, "sensitivity"),
            noise_scale=decimal_text(noise_scale, "noise_scale"),
            epsilon=decimal_text(epsilon, "epsilon"), delta=decimal_text(delta, "delta"),
            policy_hash=_hex(policy_hash, "policy_hash", empty=True),
            transcript=_hex(transcript, "transcript", empty=True), rho_nano=want,
        )
        with self._transaction() as conn:
            remaining = {d: _remaining(limits[d], _spent(conn, researcher, d)) for d in datasets}
            short = tuple(d for d in datasets if remaining[d] < want)
            if not short:
                rows = [replace(base, dataset=d, budget_nano=_or_zero(limits[d])) for d in datasets]
                seqs = self._append(conn, rows)
                return ChargeReceipt(base.query_id, researcher, datasets, want, tuple(seqs),
                                     base.time)
            refusals = [
                replace(base, kind=E.REFUSAL, dataset=d, budget_nano=_or_zero(limits[d]),
                        reason=(NO_BUDGET if limits[d] is None else BUDGET_EXHAUSTED)
                        if d in short else OTHER_DATASET_EXHAUSTED)
                for d in datasets
            ]
            self._append(conn, refusals)
        raise BudgetExhausted(researcher, want, remaining, short)

    def refuse(self, researcher: str, datasets: Sequence[str], reason: str, *,
               query_id: str, method: str, rho: Number | None = None,
               policy_hash: str = "", time: str | None = None) -> None:
        """Record a query refused for a reason other than budget (policy, row count, ...)."""
        if not isinstance(reason, str) or not _REASON.fullmatch(reason):
            raise InvalidRequest("a reason code is lowercase letters, digits, '-', '_', '.'")
        base = self._template(
            E.REFUSAL, researcher, query_id, method, time, reason=reason,
            rho_nano=0 if rho is None else charge_nano(rho),
            policy_hash=_hex(policy_hash, "policy_hash", empty=True),
        )
        rows = [replace(base, dataset=d) for d in _datasets(datasets)]
        with self._transaction() as conn:
            self._append(conn, rows)

    def release(self, receipt: ChargeReceipt, *, transcript: str = "",
                time: str | None = None) -> None:
        """Record that the contribution charged by ``receipt`` leaves the node.

        Call it before sending: once it returns, the charge can no longer be refunded.
        """
        self._follow_up(receipt, E.RELEASE, time, transcript=_hex(transcript, "transcript",
                                                                   empty=True))

    def refund(self, receipt: ChargeReceipt, proof: str, *, time: str | None = None) -> None:
        """Return a charge; only when ``proof`` states why provably nothing left the node.

        Refused (:class:`RefundRefused`) once the charge was released or already refunded.
        """
        if not isinstance(proof, str) or not proof.strip() or len(proof) > _MAX_TEXT \
                or not proof.isprintable():
            raise InvalidRequest("a refund needs a one-line proof that nothing left the node")
        self._follow_up(receipt, E.REFUND, time, reason=proof.strip())

    # --- reads ---------------------------------------------------------------------------

    def spent_nano(self, researcher: str, dataset: str) -> int:
        with self._read() as conn:
            return _spent(conn, researcher, dataset)

    def spent(self, researcher: str, dataset: str) -> float:
        """Rho spent (charges minus refunds), as a float for people."""
        return nano_float(self.spent_nano(researcher, dataset))

    def summary(self, budget_for: Callable[[str, str], object] | None = None, *,
                researcher: str | None = None,
                include: Iterable[tuple[str, str]] = ()) -> list[BudgetLine]:
        """Spent and remaining per (researcher, dataset), for ``fed.budget()``.

        Limits come from ``budget_for(researcher, dataset)`` when given, else from the limit
        recorded with the latest charge or refusal. ``include`` adds pairs with no entries.
        """
        with self._read() as conn:
            rows = conn.execute(
                "SELECT researcher, dataset,"
                " SUM(CASE kind WHEN 'charge' THEN rho_nano WHEN 'refund' THEN -rho_nano"
                "     ELSE 0 END),"
                " SUM(kind = 'charge'), SUM(kind = 'refund'), SUM(kind = 'refusal'),"
                " (SELECT budget_nano FROM entries AS l WHERE l.researcher = e.researcher"
                "   AND l.dataset = e.dataset AND l.kind IN ('charge', 'refusal')"
                "   AND l.budget_nano >= 0 ORDER BY l.seq DESC LIMIT 1)"
                " FROM entries AS e WHERE kind != 'genesis'"
                " GROUP BY researcher, dataset ORDER BY researcher, dataset"
            ).fetchall()
        seen = {(r[0], r[1]): r for r in rows}
        for pair in include:
            seen.setdefault(pair, (*pair, 0, 0, 0, 0, None))
        out = []
        for (who, what), (_, _, spent, charges, refunds, refusals, recorded) in sorted(
                seen.items()):
            if researcher is not None and who != researcher:
                continue
            limit = _limit(budget_for(who, what)) if budget_for is not None else recorded
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
        latest committed state and no other writer can commit until we do."""
        with self._lock:
            conn = self._conn
            _begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")  # one snapshot for the whole read
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _template(self, kind: str, researcher: str, query_id: str, method: str,
                  time: str | None, **values: object) -> E.Entry:
        fields: dict[str, object] = dict(
            seq=-1, time=_time(self._clock() if time is None else time), kind=kind,
            query_id=_hex(query_id, "query_id"), researcher=_name(researcher, "researcher"),
            dataset="", method=_name(method, "method"), mechanism="", sensitivity="",
            noise_scale="", rho_nano=0, budget_nano=-1, epsilon="", delta="", policy_hash="",
            transcript="", reason="", ref_seq=E.NO_REF,
        )
        fields.update(values)
        return E.Entry(**fields)  # type: ignore[arg-type]

    def _genesis(self, time: str) -> E.Entry:
        return E.Entry(0, _time(time), E.GENESIS, "00", "", "", "", "", "", "", 0, -1, "", "",
                       "", "", self.public_key.hex(), E.NO_REF)

    def _follow_up(self, receipt: ChargeReceipt, kind: str, time: str | None,
                   **values: object) -> None:
        if not isinstance(receipt, ChargeReceipt):
            raise InvalidRequest("a refund or release takes the ChargeReceipt of the charge")
        when = _time(self._clock() if time is None else time)
        with self._transaction() as conn:
            rows = []
            for seq, dataset in zip(receipt.seqs, receipt.datasets, strict=True):
                charge = conn.execute(
                    f"SELECT {', '.join(E.FIELDS)} FROM entries WHERE seq = ?", (seq,)
                ).fetchone()
                if charge is None or E.Entry(*charge).kind != E.CHARGE:
                    raise RefundRefused(f"entry {seq} is not a charge of this ledger")
                c = E.Entry(*charge)
                if (c.query_id, c.researcher, c.dataset, c.rho_nano) != (
                        receipt.query_id, receipt.researcher, dataset, receipt.rho_nano):
                    raise RefundRefused(f"entry {seq} does not match the receipt")
                done = conn.execute(
                    "SELECT kind FROM entries WHERE ref_seq = ? AND kind IN ('refund', 'release')"
                    " LIMIT 1", (seq,)
                ).fetchone()
                if done is not None:
                    raise RefundRefused(f"the charge {seq} was already {_PAST[done[0]]}")
                rows.append(replace(c, seq=-1, time=when, kind=kind, ref_seq=seq,
                                    budget_nano=-1, **values))
            self._append(conn, rows)

    def _tail(self, conn: sqlite3.Connection) -> tuple[int, bytes] | None:
        """The newest entry, checked against the signed head: we never chain onto an
        entry that is not ours (fail closed instead)."""
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
        self._check_signature(E.SIG_DOMAIN + digest, signature, last.seq,
                              "signature does not verify under this node's key")
        if head is None or head[0] != last.seq or head[1] != digest:
            raise LedgerCorrupt("the newest entry is not the signed head", last.seq)
        self._check_signature(E.head_message(head[0], head[1]), head[2], last.seq,
                              "the head signature does not verify under this node's key")
        return last.seq, digest

    def _append(self, conn: sqlite3.Connection, rows: list[E.Entry]) -> list[int]:
        tail = self._tail(conn)
        seq, prev = (-1, E.GENESIS_PREV) if tail is None else tail
        seqs = []
        placeholders = ", ".join("?" * len(COLUMNS))
        for row in rows:
            seq += 1
            stamped = replace(row, seq=seq)
            digest = E.entry_hash(prev, stamped)
            signature = E.signature_of(self._signer, E.SIG_DOMAIN + digest)
            conn.execute(f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({placeholders})",
                         (*_values(stamped), prev, digest, signature))
            seqs.append(seq)
            prev = digest
        head_sig = E.signature_of(self._signer, E.head_message(seq, prev))
        conn.execute(
            "INSERT INTO head (id, seq, hash, signature) VALUES (1, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
            " signature = excluded.signature", (seq, prev, head_sig),
        )
        return seqs

    def _check_signature(self, message: bytes, signature: bytes, seq: int | None,
                         what: str) -> None:
        try:
            self._verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                nacl.exceptions.TypeError) as exc:
            if seq is None:
                raise InvalidRequest(what) from exc
            raise LedgerCorrupt(what, seq) from exc


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


def _or_zero(limit: int | None) -> int:
    return 0 if limit is None else limit


def _remaining(limit: int | None, spent: int) -> int:
    return 0 if limit is None else max(limit - spent, 0)


def _datasets(datasets: Sequence[str]) -> tuple[str, ...]:
    if isinstance(datasets, str) or not isinstance(datasets, Sequence):
        raise InvalidRequest("datasets must be a list of names")
    names = tuple(_name(d, "dataset") for d in datasets)
    if not names:
        raise InvalidRequest("a query charges at least one dataset")
    if len(set(names)) != len(names):
        raise InvalidRequest("a dataset is listed twice")
    return names


def _name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME \
            or not value.isprintable():
        raise InvalidRequest(f"{what} must be a non-empty printable name of at most "
                             f"{_MAX_NAME} characters")
    return value


def _hex(value: str, what: str, *, empty: bool = False) -> str:
    if empty and value == "":
        return ""
    if not isinstance(value, str) or not _HEX.fullmatch(value.lower()):
        raise InvalidRequest(f"{what} must be hex (at most 128 bytes)")
    return value.lower()


def _time(value: str) -> str:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise InvalidRequest("times are ISO 8601 UTC, e.g. 2025-01-31T12:00:00.000000Z")
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"{value!r} is not a valid time") from exc
    return value
