"""The ledger's SQLite schema and connections: the node's writer and the auditor's reader.

The writer keeps WAL with ``synchronous=FULL`` (a COMMIT is fsync'd before it returns) and
checkpoints after each commit and on close (see :mod:`privacy.ledger`), so ``ledger.db`` on
its own holds every committed entry whenever the node is stopped. The reader opens the file
read-only *and immutable*: SQLite then takes no lock, reads no ``-wal`` and creates no
``-wal``/``-shm`` beside it, so an auditor's copy (even on a read-only mount) stays as it is.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from privacy.entry import FIELDS, FORMAT, INT_FIELDS, SCHEMA_VERSION
from privacy.errors import LedgerCorrupt, LedgerFormatError

#: every stored column of ``entries``, in order: the hashed fields, then the chain
COLUMNS: tuple[str, ...] = (*FIELDS, "prev_hash", "hash", "signature")

_COLUMN_DDL = ",\n    ".join(
    ["seq INTEGER PRIMARY KEY"]  # the rowid: a sequence number can never be text
    + [f"{name} {'INTEGER' if name in INT_FIELDS else 'TEXT'} NOT NULL"
       for name in FIELDS if name != "seq"]
    + ["prev_hash BLOB NOT NULL", "hash BLOB NOT NULL", "signature BLOB NOT NULL"]
)

DDL = f"""
CREATE TABLE IF NOT EXISTS entries (
    {_COLUMN_DDL}
);
CREATE INDEX IF NOT EXISTS entries_by_budget ON entries (researcher, dataset, kind);
CREATE INDEX IF NOT EXISTS entries_by_kind ON entries (kind, seq);
CREATE INDEX IF NOT EXISTS entries_by_ref ON entries (ref_seq) WHERE ref_seq >= 0;
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    signature BLOB NOT NULL
);
-- Belt and braces: the code has no UPDATE or DELETE of entries; these make SQLite refuse
-- them too. (An attacker with the file can drop the triggers; verification catches that.)
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS head_no_delete BEFORE DELETE ON head
BEGIN SELECT RAISE(ABORT, 'the ledger head is never deleted'); END;
PRAGMA user_version = {SCHEMA_VERSION};
"""

#: SQLite's own wait on a locked database (BEGIN IMMEDIATE retries itself, see ledger.py)
BUSY_TIMEOUT_MS = 30_000
#: ledger files hold who asked what: readable by the node's user only
FILE_MODE = 0o600


def connect_writer(path: str | Path) -> sqlite3.Connection:
    """A connection for appending: WAL, ``synchronous=FULL`` (a COMMIT is fsync'd before it
    returns, so a charge is durable before the node releases anything), explicit
    transactions only (``isolation_level=None``: we issue BEGIN IMMEDIATE ourselves).

    A new file is created 0600 before SQLite opens it; SQLite gives its ``-wal`` and
    ``-shm`` files the database file's permissions.
    """
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)  # Ledger holds a lock around every use
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch the ledger to WAL (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA trusted_schema = OFF")
    except BaseException:
        conn.close()
        raise
    return conn


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """Open a ledger file for verification without ever writing or creating a file.

    ``mode=ro&immutable=1``: no locks, no ``-wal``/``-shm``, works on a read-only copy.
    Verify a copy taken while the node is stopped (or a stopped node's file): an immutable
    reader does not see entries still in a running node's ``-wal``.
    """
    path = Path(path)
    if not path.is_file():
        raise LedgerCorrupt(f"no ledger file at {path}")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1",
                               uri=True, isolation_level=None)
        # the file is untrusted input: no schema-defined functions or side effects
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("PRAGMA cell_size_check = ON")
    except sqlite3.DatabaseError as exc:
        raise LedgerCorrupt(f"cannot open {path} as a ledger database ({exc})") from exc
    return conn


def check_format(conn: sqlite3.Connection, where: str) -> bool:
    """True for a v2 ledger, False for an empty database; :class:`LedgerFormatError` for
    anything else (a v1 ledger is named as such)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version == SCHEMA_VERSION and "entries" in tables:
        return True
    if version == 0 and not tables:
        return False
    columns = {r[1] for r in conn.execute("PRAGMA table_info(entries)")} \
        if "entries" in tables else set()
    if version == 0 and "budget_nano" in columns:
        raise LedgerFormatError(
            f"{where} is a fedtally-ledger-v1 ledger; this version reads and writes "
            f"{FORMAT} only. Keep the v1 file for auditors (the fedtally release that wrote "
            "it verifies it) and give the node a new ledger path")
    raise LedgerFormatError(f"{where} is not a {FORMAT} ledger (user_version {version}, "
                            f"tables {sorted(tables)})")
