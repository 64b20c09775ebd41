"""A node's CSV and Parquet rows kept in DuckDB, and its statistics computed there.

Start-up reads each file once: every cell is parsed once, as the pandas store parses it,
into typed rows (numbers as DOUBLE, codes as VARCHAR, blank cells as NULL, a numeric cell
that is no number as NaN) in a DuckDB database file in a private temporary directory, whose
buffer manager keeps memory bounded (``memory_limit``) whatever the number of rows. The
checks against the data model (per column: the values that are not numbers, not finite,
not integers, below the minimum, above the maximum, not a code; rows without a dataset)
are then counts over those typed columns, and only the counts are kept; if any is an error
the node refuses to start with the total and the first failing rows (the file is read
again, only then, to show them as written). The directory is removed when the node stops;
one a killed node left behind is removed at the next start of a DuckDB store of this user
on this host (:func:`sweep_stale`).

A query's kind, declared as aggregations (:mod:`stats.aggregates`), runs as one SQL
statement per aggregation (:mod:`node.sql.compile`): no row reaches Python. A kind computed
on a DataFrame (``Kind.frame_compute``: none of the catalog's) or a statement the compiler
does not translate gets only the query's selected rows (datasets, filter and rows per
patient applied in SQL), in their original order.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from node.datasource import DataSource, _Dialect, checked_header, malformed_row
from node.sql.checking import SHOWN, CheckedLoader
from node.sql.compile import ROW, Compiler
from node.sql.store import TABLE, SqlRows, quote_name, sql_literal
from node.validation import Problem
from stats.datamodel import DataModel, LocalDataError
from stats.plans import DATASET

__all__ = ["DuckRows", "supports", "sweep_stale"]

log = logging.getLogger("fedtally.node")

#: the private folders (mode 0700, in the temporary folder: $TMPDIR) a node's typed rows
#: are kept in while it runs, named for this host (see :func:`rows_prefix`)
ROWS_PREFIX = "fedtally-rows-"
#: a folder younger than this is never swept (a node may be starting in it)
STALE_AFTER_S = 60.0
#: this process's own folders, by (device, inode): however the temporary folder is spelt
#: (see :func:`_held`)
_OWN: set[tuple[int, int]] = set()


def rows_prefix() -> str:
    """The start of this host's row folders' names: a temporary folder shared by several
    hosts (over NFS without shared locks, a lock on one host is not seen on another) is
    swept only of this host's folders."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "host"
    return f"{ROWS_PREFIX}{host}-"


def _folder_id(path: Path) -> tuple[int, int]:
    status = path.lstat()
    return status.st_dev, status.st_ino

#: problems named in a refusal to start (all are counted)
#: DuckDB's memory limit for a node: its buffer manager spills beyond it
DEFAULT_MEMORY_LIMIT = "512MB"
#: text the pandas store reads as a number (stats.numbers: Arrow's parser), as an RE2 full
#: match: DuckDB's own cast also takes blanks around a number, '1_000' and '+-1' (a match
#: costs little more than the cast; DuckDB's ltrim() with a set of characters, or a test
#: of the first and last characters, took two to ten times as long)
_NUMBER_TEXT = (r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                r"|(?i:inf|infinity))")
#: a blank cell (missing), as Python's str.strip() sees blanks: its whitespace, every one
_BLANK_TEXT = (r"[\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}"
               r"\x{2029}\x{202f}\x{205f}\x{3000}]*")


def supports(sources: Sequence[DataSource]) -> bool:
    """DuckDB keeps these sources: Parquet files and UTF-8 CSV files (SQL tables, and CSV
    files in other encodings, which DuckDB's reader does not decode, stay in pandas)."""
    return bool(sources) and all(
        s.kind == "parquet" or (s.kind == "csv" and _Dialect(s.delimiter, s.encoding).codec
                                == "utf-8-sig") for s in sources)


class DuckRows(SqlRows):
    """Validated rows in a DuckDB database file (see the module doc)."""

    engine = "DuckDB"
    own_copy = True

    def __init__(self, model: DataModel, connection: duckdb.DuckDBPyConnection,
                 directory: Path, warnings: list[Problem], found: tuple[str, ...]) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self.directory = directory
        self._finalizer = weakref.finalize(self, _close, connection, directory,
                                           _folder_id(directory))
        super().__init__(model, warnings, found)

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def load(cls, sources: Sequence[DataSource], model: DataModel, *, strict: bool = False,
             memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int = 2) -> DuckRows:
        """Validate the files in SQL and keep their typed rows (see the module doc)."""
        if not supports(sources):
            raise LocalDataError("DuckDB keeps CSV and Parquet sources only")
        swept = sweep_stale()
        if swept:
            log.info("removed %d copies of rows left by nodes stopped without clean-up "
                     "(killed)", swept)
        directory = Path(tempfile.mkdtemp(prefix=rows_prefix()))
        own = _folder_id(directory)
        _OWN.add(own)
        try:
            connection = duckdb.connect(str(directory / "rows.duckdb"), config={
                "memory_limit": memory_limit, "threads": threads,
                "preserve_insertion_order": True, "temp_directory": str(directory / "spill"),
                "enable_external_access": True})
            # a long query would otherwise draw a progress bar on the node's stdout
            connection.execute("SET enable_progress_bar = false")
            loader = _Loader(connection, model, strict)
            for source in sources:
                loader.add(source)
            loader.finish()
            # files were read; nothing else may be from now on
            connection.execute("SET enable_external_access = false")
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            _OWN.discard(own)
            raise
        return cls(model, connection, directory, loader.warnings, tuple(loader.names))

    def close(self) -> None:
        self._finalizer()

    def interrupt(self) -> bool:
        # DuckDB's interrupt is made for this: called from any thread, the running
        # statement raises InterruptException (the connection stays usable)
        self._connection.interrupt()
        return True

    # --- SQL ----------------------------------------------------------------------------

    def _rows(self, compiler: Compiler, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection.execute(sql, compiler.params).fetchall()

    def _frame(self, compiler: Compiler, sql: str) -> pd.DataFrame:
        with self._lock:
            return self._connection.execute(sql, compiler.params).df()


def _close(connection: duckdb.DuckDBPyConnection, directory: Path,
           own: tuple[int, int]) -> None:
    try:
        connection.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        _OWN.discard(own)


def sweep_stale(root: Path | None = None) -> int:
    """Remove the copies of rows that nodes killed outright (SIGKILL, a power cut: no
    clean-up runs) left in ``root`` (the temporary folder): a folder of ours, of this user,
    older than :data:`STALE_AFTER_S`, whose database no process holds open (DuckDB locks
    its file while a connection is open). Returns how many were removed."""
    root = Path(root or tempfile.gettempdir())
    removed = 0
    for directory in root.glob(rows_prefix() + "*"):
        try:
            status = directory.lstat()
            if ((status.st_dev, status.st_ino) in _OWN or not stat.S_ISDIR(status.st_mode)
                    or status.st_uid != os.getuid()
                    or time.time() - status.st_mtime < STALE_AFTER_S
                    or _held(directory / "rows.duckdb")):
                continue
            shutil.rmtree(directory)
            removed += 1
        except OSError:  # gone meanwhile, or not ours to read: leave it
            log.debug("could not sweep %s", directory, exc_info=True)
    return removed


def _held(database: Path) -> bool:
    """Whether a process holds ``database`` open (its DuckDB lock). Never asked of this
    process's own databases: closing any descriptor of a file drops the POSIX locks this
    process holds on it."""
    try:
        descriptor = os.open(database, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False  # a start that failed before its database was made: nothing to hold
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


# --- start-up: validate in SQL, then write typed rows ------------------------------------


class _Loader(CheckedLoader):
    def __init__(self, connection: duckdb.DuckDBPyConnection, model: DataModel,
                 strict: bool) -> None:
        super().__init__(model, strict)
        self.connection = connection
        #: the rows written so far (each source's are checked by their rowid from here)
        self.rows = 0
        types = ", ".join(f"{c} {'DOUBLE' if model.variables[code].is_numeric else 'VARCHAR'}"
                          for code, c in self.columns.items())
        connection.execute(f"CREATE TABLE {TABLE} ({types})")

    def _raw(self, source: DataSource) -> tuple[str, list[str], dict[str, str]]:
        """The file as a relation (SQL text), its column names, and their DuckDB types."""
        path = str(source.path)
        what = source.describe()
        if source.kind == "csv":
            dialect = _Dialect(source.delimiter, source.encoding)
            header = checked_header(Path(path), what, dialect)
            types = "{" + ", ".join(f"{sql_literal(n)}: 'VARCHAR'" for n in header) + "}"
            relation = (f"read_csv({sql_literal(path)}, header = true, "
                        f"delim = {sql_literal(dialect.delimiter)}, quote = '\"',"
                        f" escape = '\"', columns = {types}, auto_detect = false,"
                        " strict_mode = true, null_padding = false)")
        else:
            if not Path(path).is_file():
                raise LocalDataError(f"{what} does not exist or is not a file")
            relation = f"read_parquet({sql_literal(path)})"
        try:
            described = self.connection.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        except duckdb.Error as exc:
            raise LocalDataError(f"{what} cannot be read ({type(exc).__name__})") from exc
        names_found = [str(r[0]) for r in described]
        return relation, names_found, {str(r[0]): str(r[1]) for r in described}

    def add(self, source: DataSource) -> None:
        relation, names, types = self._raw(source)
        what = source.describe()
        text = {n: types[n] == "VARCHAR" for n in names}

        def blank(n: str) -> str:
            """SQL: the file's cell is blank (missing)."""
            column = quote_name(n)
            if text[n]:
                return (f"({column} IS NULL OR regexp_full_match({column}, "
                        f"{sql_literal(_BLANK_TEXT)}))")
            return f"({column} IS NULL)"

        def number(n: str) -> str:
            """SQL: the file's cell as the pandas store parses it (NULL where no number)."""
            column = quote_name(n)
            if text[n]:
                return (f"(CASE WHEN regexp_full_match({column}, {sql_literal(_NUMBER_TEXT)}) "
                        f"THEN TRY_CAST({column} AS DOUBLE) END)")
            if types[n] == "BOOLEAN":  # not a number to pandas either
                return "CAST(NULL AS DOUBLE)"
            return f"TRY_CAST({column} AS DOUBLE)"

        def code(n: str) -> str:
            column = quote_name(n)
            if text[n]:
                return column
            if types[n] in ("DOUBLE", "FLOAT") or types[n].startswith("DECIMAL"):
                return (f"(CASE WHEN {column} = round({column}) AND abs({column}) < 2^53 THEN "
                        f"CAST(CAST({column} AS BIGINT) AS VARCHAR) ELSE "
                        f"CAST({column} AS VARCHAR) END)")
            return f"CAST({column} AS VARCHAR)"

        self.names.update(dict.fromkeys(names))
        self.check_dataset_column(source, names)
        # One pass over the file: each cell parsed once into the typed rows, where a blank
        # cell is NULL and a numeric cell that is not a number is NaN, so that every check
        # is then a scan of typed columns (the checks of the file's own text are run again
        # only to name the first failing rows of a file that fails)
        typed = []
        for name, variable in self.model.variables.items():
            if name not in names:
                value = sql_literal(source.dataset) if name == DATASET and source.dataset \
                    else "NULL"
            elif variable.is_numeric:
                value = (f"CASE WHEN {quote_name(name)} IS NULL THEN NULL ELSE coalesce("
                         f"{number(name)}, CASE WHEN {blank(name)} THEN NULL ELSE "
                         "CAST('NaN' AS DOUBLE) END) END")
            else:
                value = f"CASE WHEN {blank(name)} THEN NULL ELSE {code(name)} END"
                codes = [c for c in variable.enumerations if c.strip()]
                if text[name] and codes:
                    # a known code is not blank: the common case skips the expression
                    listed = ", ".join(sql_literal(c) for c in codes)
                    value = (f"CASE WHEN {quote_name(name)} IN ({listed}) THEN "
                             f"{quote_name(name)} ELSE {value} END")
            typed.append(value)
        try:
            inserted = self.connection.execute(
                f"INSERT INTO {TABLE} SELECT {', '.join(typed)} FROM {relation}").fetchone()
        except duckdb.Error as exc:
            bad = malformed_row(source)  # the engine's own words name no field counts
            raise LocalDataError(f"{what} is malformed: {bad}" if bad else
                                 f"{what} is malformed or cannot be read "
                                 f"({str(exc).splitlines()[0][:200]})") from exc
        assert inserted is not None
        first, self.rows = self.rows, self.rows + int(inserted[0])

        def stored(column: str) -> tuple[str, str]:  # (value, blank) in the typed rows
            return column, f"({column} IS NULL)"

        def in_file(n: str) -> tuple[str, str]:
            return number(n) if self.model.variables[n].is_numeric else code(n), blank(n)

        checks = [(n, what_fails, stored_sql, file_sql) for n in names
                  if n in self.model.variables  # others are named by header_problems
                  for (what_fails, stored_sql), (_, file_sql) in zip(
                      self.checks(n, source, *stored(self.columns[n])),
                      self.checks(n, source, *in_file(n)), strict=True)]
        if checks:
            # count_if, not count(*) FILTER: DuckDB plans hundreds of them in half the time
            # (it reads NULL, not 0, where no row is true: `if n` below skips both)
            counts = ", ".join(f"count_if({sql})" for _, _, sql, _ in checks)
            found = self.connection.execute(
                f"SELECT {counts} FROM {TABLE} WHERE rowid >= {first}").fetchone()
            assert found is not None
            failing = [(check, int(n)) for check, n in zip(checks, found, strict=True) if n]
            self.total_errors += sum(n for _, n in failing)
            self.errors += self._first_rows(relation, [(c, w, sql) for (c, w, _, sql), _
                                                       in failing])
        if DATASET in names and source.dataset is not None and not self.errors:
            # the source's dataset where the file's column is blank
            self.connection.execute(
                f"UPDATE {TABLE} SET {self.columns[DATASET]} = {sql_literal(source.dataset)} "
                f"WHERE rowid >= {first} AND {self.columns[DATASET]} IS NULL")

    def _first_rows(self, relation: str, failing: list[tuple[str, str, str]]
                    ) -> list[Problem]:
        """The first failing rows (1-based, in the file's order) of each failing check, for
        the operator: read only when the file has problems."""
        found: list[tuple[int, int, str, str, Any]] = []
        for order, (column, what, sql) in enumerate(failing):
            rows = self.connection.execute(
                f"SELECT r, CAST({quote_name(column)} AS VARCHAR) FROM (SELECT row_number() OVER "
                f"() AS r, * FROM {relation}) WHERE {sql} ORDER BY r LIMIT {SHOWN}").fetchall()
            found += [(row, order, column, what, value) for row, value in rows]
        return self.first_failing(found)

    def finish(self) -> None:
        self.finish_checks()
        # each row's position in the node's data, for folds (rowid is the insertion order)
        self.connection.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_typed")
        self.connection.execute(f"CREATE VIEW {TABLE} AS SELECT rowid AS {ROW}, * "
                                f"FROM {TABLE}_typed")
        self.connection.execute("CHECKPOINT")
