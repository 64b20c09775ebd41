"""Verification of a node's ledger, and the functions behind ``fedtally audit``.

:func:`verify_ledger` proves, against the node's public key from the signed federation
manifest, that the ledger is exactly a sequence of entries the node signed, in the order it
wrote them, ending at the signed head: any edited, deleted, reordered or inserted entry, or
one appended without the key, is reported as :class:`LedgerCorrupt` naming the first bad
entry. It also replays the budget arithmetic: no charge exceeded the limit recorded with it,
and every refund or release refers to an earlier charge that was neither refunded nor
released before. Verification raises; it has no bool form.

What it cannot prove alone: that the file is the *newest* one (a complete earlier copy of
a ledger verifies). Auditors who keep the ``head`` of each verification (``VerifySummary.
head_hash``) pass it back as ``expected_head`` to prove the ledger only grew since.
"""

from __future__ import annotations

import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

import nacl.bindings
import nacl.exceptions

from privacy import entry as E
from privacy.errors import LedgerCorrupt
from privacy.schema import COLUMNS
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


@dataclass(frozen=True)
class VerifySummary:
    """What a successful verification established."""

    path: str
    public_key: str  # hex
    entries: int
    head_seq: int
    head_hash: str  # hex: keep it to check later that the ledger only grew
    kinds: dict[str, int] = field(default_factory=dict)
    first_time: str = ""
    last_time: str = ""
    charged_nano: int = 0  # net of refunds

    def line(self) -> str:
        """The one-line summary ``fedtally audit verify`` prints."""
        kinds = ", ".join(f"{self.kinds.get(k, 0)} {k}" for k in
                          (E.CHARGE, E.RELEASE, E.REFUND, E.REFUSAL))
        return (f"{self.path}: valid, {self.entries} entries ({kinds}), net rho charged "
                f"{nano_text(self.charged_nano)}, {self.first_time} .. {self.last_time}, "
                f"head {self.head_seq}:{self.head_hash[:16]}, key {self.public_key[:16]}")


def verify_ledger(path: str | Path, public_key: bytes, *,
                  expected_head: str | None = None) -> VerifySummary:
    """Verify the ledger file at ``path``; :class:`LedgerCorrupt` naming the first bad entry.

    ``expected_head`` is an earlier ``VerifySummary.head_hash``: the ledger must contain it.
    """
    return verify_ledger_entries(path, public_key, expected_head=expected_head)[0]


def verify_ledger_entries(path: str | Path, public_key: bytes, *,
                          expected_head: str | None = None
                          ) -> tuple[VerifySummary, list[E.Entry]]:
    """:func:`verify_ledger`, also returning the verified entries (for reports)."""
    conn = open_readonly(path)
    try:
        try:
            check = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupt(f"{path} is not a readable ledger database ({exc})") from exc
        if check != [("ok",)]:
            raise LedgerCorrupt(f"{path}: the database file is damaged ({check[0][0]})")
        return verify_connection(conn, public_key, path=str(path), expected_head=expected_head)
    finally:
        conn.close()


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """Open without ever creating or writing the file (an auditor's copy stays as it is)."""
    path = Path(path)
    if not path.is_file():
        raise LedgerCorrupt(f"no ledger file at {path}")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True,
                               isolation_level=None)
        # the file is untrusted input: no schema-defined functions or side effects
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("PRAGMA cell_size_check = ON")
    except sqlite3.DatabaseError as exc:
        raise LedgerCorrupt(f"cannot open {path} as a ledger database ({exc})") from exc
    return conn


def verify_connection(conn: sqlite3.Connection, public_key: bytes, *, path: str = "<ledger>",
                      expected_head: str | None = None) -> tuple[VerifySummary, list[E.Entry]]:
    """Verify the ledger behind an open connection (for in-memory copies in tests)."""
    if not isinstance(public_key, bytes) or len(public_key) != E.PUBLIC_KEY_SIZE:
        raise ValueError("the node's public key must be 32 bytes")
    try:
        # one read snapshot even while the node appends; a SAVEPOINT (not BEGIN) so that a
        # caller's open transaction (a test's uncommitted tampering) is read as it stands
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
    walker.finish(heads)
    entries = walker.entries
    if expected_head is not None and expected_head.lower() not in walker.hashes:
        raise LedgerCorrupt(f"the ledger does not contain the expected head {expected_head} "
                            "(it was rolled back or replaced)")
    summary = VerifySummary(
        path=path, public_key=public_key.hex(), entries=len(entries),
        head_seq=entries[-1].seq, head_hash=walker.prev.hex(),
        kinds=dict(Counter(e.kind for e in entries)), first_time=entries[0].time,
        last_time=entries[-1].time, charged_nano=sum(walker.spent.values()),
    )
    return summary, entries


class _Walker:
    """Checks entries in order; the first failure raises, naming that entry."""

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key
        self.prev = E.GENESIS_PREV
        self.entries: list[E.Entry] = []
        self.hashes: set[str] = set()
        self.spent: Counter[tuple[str, str]] = Counter()
        self.charges: dict[int, E.Entry] = {}
        self.closed: dict[int, str] = {}  # charge seq -> "refund" / "release"

    def step(self, position: int, row: tuple[object, ...]) -> None:
        values = self._decode(position, row)
        entry = E.Entry(*values[: len(E.FIELDS)])
        prev, digest, signature = values[len(E.FIELDS):]
        seq = entry.seq
        if seq != position:
            # rows come sorted by seq, so a gap means entries are missing before this one
            raise LedgerCorrupt(f"missing (deleted): the next entry present is {seq}", position)
        if E.entry_hash(prev, entry) != digest:
            raise LedgerCorrupt("its hash does not match its contents (edited)", seq)
        if not _signed(self.public_key, E.SIG_DOMAIN + digest, signature):
            raise LedgerCorrupt("its signature does not verify under the node key (edited, "
                                "or written without the key)", seq)
        if prev != self.prev:
            raise LedgerCorrupt("it does not follow the previous entry (entries were "
                                "reordered, inserted or replaced)", seq)
        self._semantics(entry)
        self.entries.append(entry)
        self.hashes.add(digest.hex())
        self.prev = digest

    def finish(self, heads: list[tuple[object, ...]]) -> None:
        if not self.entries:
            raise LedgerCorrupt("the ledger has no entries: every ledger starts with a signed "
                                "genesis entry (it was emptied or replaced)", 0)
        last = self.entries[-1].seq
        if len(heads) != 1 or heads[0][:8:2] != ("integer", "integer", "blob", "blob"):
            raise LedgerCorrupt("the signed head is missing or malformed", last)
        _, head_id, _, head_seq, _, head_hash, _, head_sig = heads[0]
        assert isinstance(head_seq, int) and isinstance(head_hash, bytes)
        assert isinstance(head_sig, bytes)
        if head_id != 1 or not _signed(self.public_key, E.head_message(head_seq, head_hash),
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

    def _semantics(self, e: E.Entry) -> None:
        """Signed entries must also make sense: a key holder's (or a bug's) overspending or
        double refund is as much a finding as an outsider's edit."""
        def bad(why: str) -> LedgerCorrupt:
            return LedgerCorrupt(why, e.seq)

        if e.kind not in E.KINDS:
            raise bad(f"unknown kind {e.kind[:32]!r}")
        if (e.seq == 0) != (e.kind == E.GENESIS):
            raise bad("the genesis entry must be first, and only first")
        if e.kind == E.GENESIS:
            if e.reason != self.public_key.hex():
                raise bad("the genesis entry names another node key")
            return
        key = (e.researcher, e.dataset)
        if e.kind == E.CHARGE:
            if e.rho_nano <= 0 or e.ref_seq != E.NO_REF:
                raise bad("a charge must be positive and refer to nothing")
            if self.spent[key] + e.rho_nano > e.budget_nano:
                raise bad(f"the charge overspends: spent {nano_text(self.spent[key])} + "
                          f"{nano_text(e.rho_nano)} > budget {nano_text(e.budget_nano)}")
            self.spent[key] += e.rho_nano
            self.charges[e.seq] = e
        elif e.kind in (E.REFUND, E.RELEASE):
            charge = self.charges.get(e.ref_seq)
            if charge is None:
                raise bad(f"a {e.kind} must refer to an earlier charge (refers to {e.ref_seq})")
            if (charge.query_id, charge.researcher, charge.dataset, charge.rho_nano) != (
                    e.query_id, e.researcher, e.dataset, e.rho_nano):
                raise bad(f"the {e.kind} does not match the charge {e.ref_seq}")
            if e.ref_seq in self.closed:
                raise bad(f"the charge {e.ref_seq} was already {self.closed[e.ref_seq]}")
            self.closed[e.ref_seq] = {E.REFUND: "refunded", E.RELEASE: "released"}[e.kind]
            if e.kind == E.REFUND:
                self.spent[key] -= e.rho_nano
        elif e.ref_seq != E.NO_REF:  # refusal
            raise bad("a refusal refers to nothing")


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


def read_genesis_key(path: str | Path) -> bytes:
    """The public key a ledger's genesis entry *claims* (unverified): lets the CLI find the
    node in the federation manifest; :func:`verify_ledger` then checks it against that key."""
    conn = open_readonly(path)
    try:
        row = conn.execute("SELECT reason FROM entries WHERE seq = 0 AND kind = 'genesis'"
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


# --- the CLI (``fedtally audit ...`` calls these; they print and return the exit code) -----


def cli_verify(ledger: str | Path, public_key: bytes, *, out: TextIO | None = None,
               err: TextIO | None = None) -> int:
    """``fedtally audit verify``: 0 and a one-line summary, or 1 naming the first bad entry."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        summary = verify_ledger(ledger, public_key)
    except LedgerCorrupt as exc:
        print(f"{ledger}: INVALID: {exc}", file=err)
        return 1
    print(summary.line(), file=out)
    return 0


def cli_report(ledgers: list[tuple[str, str | Path, bytes]], *,
               html: str | Path | None = None, json: str | Path | None = None,
               csv: str | Path | None = None, budgets: dict | None = None,
               out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``fedtally audit report``: writes the files; 1 if any ledger failed verification
    (the report still shows it, with its error, and leaves its entries out)."""
    from privacy.report import build_report  # the report is heavier; verify needs none of it

    out, err = out or sys.stdout, err or sys.stderr
    report = build_report(ledgers, budgets)
    for path, text in ((html, report.to_html), (json, report.to_json), (csv, report.to_csv)):
        if path is not None:
            Path(path).write_text(text(), encoding="utf-8")
    for node in report.nodes:
        if node.valid:
            print(f"{node.node}: valid, {node.entries} entries", file=out)
        else:
            print(f"{node.node}: INVALID: {node.error}", file=err)
    return 0 if all(node.valid for node in report.nodes) else 1


def __getattr__(name: str) -> object:
    # ``privacy.audit.build_report`` as the brief names it, loaded lazily
    if name in ("build_report", "Report"):
        from privacy import report

        return getattr(report, name)
    raise AttributeError(name)
