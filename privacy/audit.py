"""Verification of a node's ledger, and the functions behind ``fedtally audit``.

:func:`verify_ledger` proves, against the node's public key from the signed federation
manifest, that the ledger is exactly a sequence of entries the node signed, in the order it
wrote them, ending at the signed head: any edited, deleted, reordered or inserted entry, or
one appended without the key, is reported as :class:`LedgerCorrupt` naming the first bad
entry. It then replays what the entries say (:mod:`privacy.replay`: the clock, the policy in
force, the DP arithmetic, the budgets, releases and refunds) and raises the typed finding of
the first entry that does not hold. Finally it checks that the ledger extends every head
receipt the node handed out (and the ``expected_head`` an auditor kept): a truncated,
rolled-back or rewritten ledger raises :class:`ReceiptMismatch` naming the receipt.
Verification raises; it has no bool form.

Key rotation: the ledger's key starts as the genesis entry's key; each ``key_rotation`` entry,
signed by the key it replaces, names the next. Every entry is checked under the key in force
before it, each head under the key in force after it, and the chain must end at the node's
key in the manifest. A receipt signed by an older key of the chain is checked for the
entries that key covered (a retired key signing a later head is refused).

What it cannot detect: a node key holder who rewrites history that no receipt (and no
expected head) covers yet, e.g. the entries after the last receipt anyone kept.
"""

from __future__ import annotations

import sqlite3
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import nacl.bindings
import nacl.exceptions

from privacy import entry as E
from privacy.errors import LedgerCorrupt, PrivacyError, ReceiptInvalid, ReceiptMismatch
from privacy.head import HeadReceipt, parse_head
from privacy.replay import Replay
from privacy.schema import COLUMNS, check_format, open_readonly
from privacy.units import nano_text

_BLOBS = {"prev_hash": E.HASH_SIZE, "hash": E.HASH_SIZE, "signature": E.SIGNATURE_SIZE}
# typeof() and the raw bytes of every column: text is decoded here, strictly, so that an
# edit producing invalid UTF-8 is reported against its entry instead of crashing the read
_SELECT = "SELECT " + ", ".join(
    f"typeof({c}), {c}" if c in E.INT_FIELDS or c in _BLOBS else f"typeof({c}), CAST({c} AS BLOB)"
    for c in COLUMNS
) + " FROM entries ORDER BY seq"
_TYPES = {c: "integer" if c in E.INT_FIELDS else "blob" if c in _BLOBS else "text"
          for c in COLUMNS}

#: what ``expected_head`` may be: ``(seq, hash)`` or the ``SEQ:HEX`` text
ExpectedHead = tuple[int, bytes | str] | str


@dataclass(frozen=True)
class VerifySummary:
    """What a successful verification established."""

    path: str
    public_key: str  # hex
    entries: int
    head: HeadReceipt  # the file's signed head: keep ``head.text`` to check growth later
    kinds: dict[str, int] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    first_time: str = ""
    last_time: str = ""
    charged_nano: int = 0  # net of refunds
    policy_digest: str = ""  # of the policy in force at the end
    receipts_checked: int = 0  # receipts of this node the ledger extends
    receipts_other: int = 0  # receipts given for other nodes (not this ledger's)
    expected_head: str = ""  # the SEQ:HEX checked, if any
    keys: tuple[str, ...] = ()  # the key chain (hex), genesis key first, the node's key last

    @property
    def head_seq(self) -> int:
        return self.head.seq

    @property
    def head_hash(self) -> str:
        return self.head.hash.hex()

    def line(self) -> str:
        """The one-line summary ``fedtally audit verify`` prints; ends with the full head."""
        queries = ", ".join(f"{self.decisions.get(d, 0)} {d}" for d in
                            (E.ANSWERED_EXACT, E.ANSWERED_DP, E.REFUSED))
        others = ", ".join(f"{self.kinds.get(k, 0)} {k}" for k in
                           (E.CHARGE, E.RELEASE, E.REFUND, E.POLICY))
        anchors = f"{self.receipts_checked} receipts checked"
        if self.expected_head:
            anchors += ", expected head found"
        if len(self.keys) > 1:
            anchors += f", {len(self.keys) - 1} key rotations"
        return (f"{self.path}: valid, {self.entries} entries ({self.kinds.get(E.QUERY, 0)} "
                f"queries: {queries}; {others}), net rho charged "
                f"{nano_text(self.charged_nano)}, {self.first_time} .. {self.last_time}, "
                f"{anchors}, head {self.head.text}")


def verify_ledger(path: str | Path, public_key: bytes, *,
                  receipts: Iterable[HeadReceipt] = (),
                  expected_head: ExpectedHead | None = None) -> VerifySummary:
    """Verify the ledger file at ``path``; raise (a :class:`LedgerCorrupt`) on any finding.

    ``receipts`` are head receipts the node handed out (receipts of other nodes are
    counted and skipped); ``expected_head`` is a head an auditor kept (``(seq, hash)`` or
    ``"SEQ:HEX"``). The ledger must extend each of them.
    """
    return verify_ledger_entries(path, public_key, receipts=receipts,
                                 expected_head=expected_head)[0]


def verify_ledger_entries(path: str | Path, public_key: bytes, *,
                          receipts: Iterable[HeadReceipt] = (),
                          expected_head: ExpectedHead | None = None
                          ) -> tuple[VerifySummary, list[E.Entry]]:
    """:func:`verify_ledger`, also returning the verified entries (for reports)."""
    conn = open_readonly(path)
    try:
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise LedgerCorrupt(f"{path}: the database file is damaged ({check[0][0]})")
            check_format(conn, str(path))
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupt(f"{path} is not a readable ledger database ({exc})") from exc
        return verify_connection(conn, public_key, path=str(path), receipts=receipts,
                                 expected_head=expected_head)
    finally:
        conn.close()


def verify_connection(conn: sqlite3.Connection, public_key: bytes, *, path: str = "<ledger>",
                      receipts: Iterable[HeadReceipt] = (),
                      expected_head: ExpectedHead | None = None
                      ) -> tuple[VerifySummary, list[E.Entry]]:
    """Verify the ledger behind an open connection (for in-memory copies in tests)."""
    if not isinstance(public_key, bytes) or len(public_key) != E.PUBLIC_KEY_SIZE:
        raise ValueError("the node's public key must be 32 bytes")
    expected = _expected(expected_head)
    try:
        # one read snapshot; a SAVEPOINT (not BEGIN) so that a caller's open transaction
        # (a test's uncommitted tampering) is read as it stands
        conn.execute("SAVEPOINT verify")
        try:
            rows = conn.execute(_SELECT).fetchall()
            heads = conn.execute(
                "SELECT typeof(id), id, typeof(seq), seq, typeof(hash), hash,"
                " typeof(signature), signature FROM head"
            ).fetchall()
        finally:
            conn.execute("RELEASE verify")
    except sqlite3.DatabaseError as exc:
        raise LedgerCorrupt(f"{path} is not a readable ledger ({exc})") from exc
    walker = _Walker(public_key)
    for position, row in enumerate(rows):
        walker.step(position, row)
    head = walker.finish(heads)
    checked, other = _check_receipts(walker.hashes, walker.spans, receipts)
    if expected is not None:
        _extends(walker.hashes, expected, f"the expected head {expected[0]}:{expected[1].hex()}",
                 expected)
    entries = walker.entries
    replay = walker.replay
    summary = VerifySummary(
        path=path, public_key=public_key.hex(), entries=len(entries), head=head,
        kinds=dict(Counter(e.kind for e in entries)),
        decisions=dict(Counter(e.decision for e in entries if e.kind == E.QUERY)),
        first_time=entries[0].time, last_time=entries[-1].time,
        charged_nano=sum(replay.spent.values()),
        policy_digest=replay.policy.digest if replay.policy else "",
        receipts_checked=checked, receipts_other=other,
        expected_head="" if expected is None else f"{expected[0]}:{expected[1].hex()}",
        keys=tuple(key.hex() for key in walker.spans),
    )
    return summary, entries


def _expected(expected_head: ExpectedHead | None) -> tuple[int, bytes] | None:
    if expected_head is None:
        return None
    if isinstance(expected_head, str):
        return parse_head(expected_head)
    seq, digest = expected_head
    return parse_head(f"{seq}:{digest.hex() if isinstance(digest, bytes) else digest}")


def _check_receipts(hashes: list[bytes], spans: dict[bytes, tuple[int, int | None]],
                    receipts: Iterable[HeadReceipt]) -> tuple[int, int]:
    """Check each receipt signed by a key of the ledger's chain (``spans``: key -> the
    first and last entry whose head it signs, ``None`` for the key in force)."""
    checked = other = 0
    for receipt in receipts:
        if not isinstance(receipt, HeadReceipt):
            raise TypeError("receipts are HeadReceipt values (see privacy.head.load_receipts)")
        span = spans.get(receipt.node_key)
        if span is None:
            other += 1
            continue
        receipt.check_signature(receipt.node_key)
        # a head the ledger no longer holds is a rollback or rewrite, whoever signed it
        _extends(hashes, (receipt.seq, receipt.hash), f"receipt {receipt.text}", receipt)
        first, last = span
        if receipt.seq < first or (last is not None and receipt.seq > last):
            raise ReceiptInvalid(f"receipt {receipt.text} is signed by a key of this ledger "
                                 f"that signed heads of entries {first}.."
                                 f"{'' if last is None else last} only", receipt)
        checked += 1
    return checked, other


def _extends(hashes: list[bytes], head: tuple[int, bytes], what: str, receipt: object) -> None:
    seq, digest = head
    if seq >= len(hashes):
        raise ReceiptMismatch(f"the ledger ends here, but {what} names a later entry: it "
                              "was truncated or rolled back to an older copy",
                              receipt, len(hashes) - 1)
    if hashes[seq] != digest:
        raise ReceiptMismatch(f"entry {seq} is not the entry {what} names: the history was "
                              "rewritten or an older copy restored", receipt, seq)


class _Walker:
    """Checks the chain in order, and replays each entry; the first failure raises."""

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key  # the node's key in the manifest: the chain's end
        self.key: bytes | None = None  # the ledger's key in force
        #: each key of the chain -> first and last entry whose head it signs (None: open)
        self.spans: dict[bytes, tuple[int, int | None]] = {}
        self.prev = E.GENESIS_PREV
        self.entries: list[E.Entry] = []
        self.hashes: list[bytes] = []
        self.replay = Replay(public_key)

    def step(self, position: int, row: tuple[object, ...]) -> None:
        values = self._decode(position, row)
        entry = E.Entry(*values[: len(E.FIELDS)])
        prev, digest, signature = values[len(E.FIELDS):]
        seq = entry.seq
        if seq != position:
            # rows come sorted by seq, so a gap means entries are missing before this one
            raise LedgerCorrupt(f"missing (deleted): the next entry present is {seq}", position)
        assert isinstance(digest, bytes) and isinstance(signature, bytes)
        if E.entry_hash(prev, entry) != digest:  # type: ignore[arg-type]
            raise LedgerCorrupt("its hash does not match its contents (edited)", seq)
        if self.key is None:  # the genesis entry is signed by the key it names
            if entry.kind != E.GENESIS:
                raise LedgerCorrupt("the genesis entry must be first, and only first", seq)
            self.key = _named_key(entry)
            self.spans[self.key] = (0, None)
        if not _signed(self.key, E.SIG_DOMAIN + digest, signature):
            raise LedgerCorrupt("its signature does not verify under the node key (edited, "
                                "or written without the key)", seq)
        if prev != self.prev:
            raise LedgerCorrupt("it does not follow the previous entry (entries were "
                                "reordered, inserted or replaced)", seq)
        self.replay.step(entry)
        if entry.kind == E.KEY_ROTATION:  # signed by the key it replaces (checked above)
            new = _named_key(entry)
            if new in self.spans:
                raise LedgerCorrupt("the key rotation names a key this ledger already had "
                                    "(a retired key never returns)", seq)
            self.spans[self.key] = (self.spans[self.key][0], seq - 1)
            self.spans[new] = (seq, None)
            self.key = new
        self.entries.append(entry)
        self.hashes.append(digest)
        self.prev = digest

    def finish(self, heads: list[tuple[object, ...]]) -> HeadReceipt:
        if not self.entries:
            raise LedgerCorrupt("the ledger has no entries: every ledger starts with a signed "
                                "genesis entry (it was emptied or replaced)", 0)
        last = self.entries[-1].seq
        self.replay.finish(last + 1)
        if len(heads) != 1 or heads[0][:8:2] != ("integer", "integer", "blob", "blob"):
            raise LedgerCorrupt("the signed head is missing or malformed", last)
        _, head_id, _, head_seq, _, head_hash, _, head_sig = heads[0]
        assert isinstance(head_seq, int) and isinstance(head_hash, bytes)
        assert isinstance(head_sig, bytes)
        assert self.key is not None
        if head_id != 1 or not _signed(self.key, E.head_message(head_seq, head_hash),
                                       head_sig):
            raise LedgerCorrupt("the head signature does not verify (the head was edited)",
                                last)
        if head_seq > last:
            raise LedgerCorrupt(f"missing (deleted): the signed head names entry {head_seq} "
                                f"but the ledger ends at {last}", last + 1)
        if head_seq < last:
            raise LedgerCorrupt("appended after the signed head (written without the key)",
                                head_seq + 1)
        if head_hash != self.prev:
            raise LedgerCorrupt("it is not the entry the signed head names (replaced)", last)
        if self.key != self.public_key:  # named at the entry that put that key in force
            raise LedgerCorrupt(f"the ledger's key chain ends at key {self.key.hex()[:16]}..., "
                                "not the node's key in the manifest (another node's ledger, "
                                "an older copy, or a rotation the manifest does not list)",
                                self.spans[self.key][0])
        return HeadReceipt(self.key, head_seq, head_hash, head_sig)

    def _decode(self, position: int, row: tuple[object, ...]) -> list[object]:
        out: list[object] = []
        for i, name in enumerate(COLUMNS):
            kind, value = row[2 * i], row[2 * i + 1]
            if kind != _TYPES[name]:
                raise LedgerCorrupt(f"field {name} holds {kind}, not {_TYPES[name]} (edited)",
                                    _seq_of(row, position))
            if _TYPES[name] == "text":
                assert isinstance(value, bytes)
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise LedgerCorrupt(f"field {name} is not UTF-8 text (edited)",
                                        _seq_of(row, position)) from exc
            elif name in _BLOBS and len(value) != _BLOBS[name]:  # type: ignore[arg-type]
                raise LedgerCorrupt(f"field {name} has the wrong length (edited)",
                                    _seq_of(row, position))
            out.append(value)
        return out


def _named_key(entry: E.Entry) -> bytes:
    try:
        return E.key_of(entry)
    except ValueError as exc:
        raise LedgerCorrupt(f"the {entry.kind} entry does not name a node key", entry.seq
                            ) from exc


def _seq_of(row: tuple[object, ...], position: int) -> int:
    seq = row[1]  # seq is the rowid: SQLite keeps it an integer whatever an attacker writes
    return seq if isinstance(seq, int) else position


def _signed(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True


def read_ledger_key(path: str | Path) -> bytes:
    """The public key a ledger *claims* it is under now (unverified): its newest
    key_rotation entry's, else its genesis key. Lets the CLI find the node in the manifest;
    :func:`verify_ledger` then checks the whole key chain ends at that node's key."""
    conn = open_readonly(path)
    try:
        check_format(conn, str(path))
        row = conn.execute("SELECT node_key FROM entries WHERE kind = 'key_rotation'"
                           " ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise LedgerCorrupt(f"{path} is not a readable ledger database ({exc})") from exc
    finally:
        conn.close()
    if row is None:
        return read_genesis_key(path)
    try:
        key = bytes.fromhex(row[0])
    except (TypeError, ValueError):
        key = b""
    if len(key) != E.PUBLIC_KEY_SIZE:
        raise LedgerCorrupt(f"{path}: its newest key rotation names no node key")
    return key


def read_genesis_key(path: str | Path) -> bytes:
    """The public key a ledger's genesis entry *claims* (unverified): lets the CLI find the
    node in the federation manifest; :func:`verify_ledger` then checks it against that key."""
    conn = open_readonly(path)
    try:
        check_format(conn, str(path))
        row = conn.execute("SELECT node_key FROM entries WHERE seq = 0 AND kind = 'genesis'"
                           ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise LedgerCorrupt(f"{path} is not a readable ledger database ({exc})") from exc
    finally:
        conn.close()
    try:
        key = bytes.fromhex(row[0]) if row is not None else b""
    except (TypeError, ValueError):
        key = b""
    if len(key) != E.PUBLIC_KEY_SIZE:
        raise LedgerCorrupt(f"{path} has no genesis entry naming a node key", 0)
    return key


def wal_beside(path: str | Path) -> bool:
    """Whether a non-empty ``-wal`` lies beside the file: its node runs, or was killed
    before checkpointing; an immutable reader sees only what was checkpointed."""
    wal = Path(f"{path}-wal")
    try:
        return wal.is_file() and wal.stat().st_size > 0
    except OSError:
        return False


# --- the CLI (``fedtally audit ...`` calls these; they print and return the exit code) -----


def cli_verify(ledger: str | Path, public_key: bytes, *,
               receipts: Iterable[HeadReceipt] = (), expected_head: str | None = None,
               out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``fedtally audit verify``: 0 and a one-line summary ending with the full head
    ``SEQ:HEX``, or 1 and one line naming the first finding."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        summary = verify_ledger(ledger, public_key, receipts=receipts,
                                expected_head=expected_head)
    except PrivacyError as exc:
        hint = (" (a non-empty -wal lies beside it: the node may be running; verify a copy "
                "taken while it is stopped)") if wal_beside(ledger) else ""
        print(f"{ledger}: INVALID: {type(exc).__name__}: {exc}{hint}", file=err)
        return 1
    line = summary.line()
    if summary.receipts_other:
        line += f" ({summary.receipts_other} receipts of other nodes skipped)"
    if wal_beside(ledger):
        line += " (a non-empty -wal lies beside it: this verified the checkpointed file only)"
    print(line, file=out)
    return 0
