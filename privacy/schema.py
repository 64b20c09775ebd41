"""The ledger's SQLite schema and connection settings (shared by writer and verifier)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from privacy.entry import FIELDS, INT_FIELDS

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
"""

#: SQLite's own wait on a locked database (BEGIN IMMEDIATE retries itself, see ledger.py)
BUSY_TIMEOUT_MS = 30_000


def connect_writer(path: str | Path) -> sqlite3.Connection:
    """A connection for appending: WAL, ``synchronous=FULL`` (a COMMIT is fsync'd before it
    returns, so a charge is durable before the node releases anything), explicit
    transactions only (``isolation_level=None``: we issue BEGIN IMMEDIATE ourselves)."""
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
