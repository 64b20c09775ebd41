"""A node's CSV and Parquet rows kept in DuckDB, and its statistics computed there.

Start-up reads each file once to check it against the data model *in SQL* (per column: the
values that are not numbers, not finite, not integers, below the minimum, above the
maximum, not a code; rows without a dataset) and keeps only those counts; if any is an
error the node refuses to start with the total and the first failing rows (read again
only then). A second pass writes the
typed rows (numbers as DOUBLE, codes as VARCHAR, blank cells as NULL, each row's position
in the node's data) into a DuckDB database file in a private temporary directory, whose
buffer manager keeps memory bounded (``memory_limit``) whatever the number of rows.

A query's kind, where it is declared as aggregations (:mod:`stats.aggregates`), runs as
one SQL statement per aggregation (:mod:`node.sql.compile`): no row reaches Python. Kinds
still computed on a DataFrame (``Kind.frame_compute``) get only the query's selected rows
(datasets, filter and rows per patient applied in SQL), in their original order.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from node.datasource import DataSource, _Dialect, checked_header
from node.sql.checking import SHOWN, CheckedLoader
from node.sql.compile import ROW, Compiler
from node.sql.store import TABLE, SqlRows, fresh_names, quote_name, sql_literal
from node.validation import Problem
from stats.datamodel import DataModel, LocalDataError
from stats.plans import DATASET

__all__ = ["DuckRows", "supports"]

#: problems named in a refusal to start (all are counted)
#: DuckDB's memory limit for a node: its buffer manager spills beyond it
DEFAULT_MEMORY_LIMIT = "512MB"
#: text the pandas store reads as a number (stats.numbers: Arrow's parser), as an RE2 full
#: match: DuckDB's own cast also takes blanks around a number, '1_000' and '+-1'
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

    def __init__(self, model: DataModel, connection: duckdb.DuckDBPyConnection,
                 directory: Path, warnings: list[Problem], found: tuple[str, ...]) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self.directory = directory
        self._finalizer = weakref.finalize(self, _close, connection, directory)
        super().__init__(model, warnings, found)

    # --- loading ------------------------------------------------------------------------

    @classmethod
    def load(cls, sources: Sequence[DataSource], model: DataModel, *, strict: bool = False,
             memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int = 2) -> DuckRows:
        """Validate the files in SQL and keep their typed rows (see the module doc)."""
        if not supports(sources):
            raise LocalDataError("DuckDB keeps CSV and Parquet sources only")
        directory = Path(tempfile.mkdtemp(prefix="fedtally-rows-"))
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
            raise
        return cls(model, connection, directory, loader.warnings, tuple(loader.names))

    def close(self) -> None:
        self._finalizer()

    # --- SQL ----------------------------------------------------------------------------

    def _rows(self, compiler: Compiler, sql: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._connection.execute(sql, compiler.params).fetchall()

    def _frame(self, compiler: Compiler, sql: str) -> pd.DataFrame:
        with self._lock:
            return self._connection.execute(sql, compiler.params).df()


def _close(connection: duckdb.DuckDBPyConnection, directory: Path) -> None:
    try:
        connection.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# --- start-up: validate in SQL, then write typed rows ------------------------------------


class _Loader(CheckedLoader):
    def __init__(self, connection: duckdb.DuckDBPyConnection, model: DataModel,
                 strict: bool) -> None:
        super().__init__(model, strict)
        self.connection = connection
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

        def blank_text(n: str) -> str:
            column = quote_name(n)
            return (f"({column} IS NULL OR regexp_full_match({column}, "
                    f"{sql_literal(_BLANK_TEXT)}))")

        def parse(n: str) -> str:
            """A cell's value as the pandas store parses it (NULL where it is no number)."""
            column = quote_name(n)
            if text[n]:
                return (f"(CASE WHEN regexp_full_match({column}, {sql_literal(_NUMBER_TEXT)}) "
                        f"THEN TRY_CAST({column} AS DOUBLE) END)")
            if types[n] == "BOOLEAN":  # not a number to pandas either
                return "CAST(NULL AS DOUBLE)"
            return f"TRY_CAST({column} AS DOUBLE)"

        # each numeric cell is parsed once, in a column of its own that every check and the
        # typed copy read (named apart from the file's columns)
        numeric = [n for n in names if n in self.model.variables
                   and self.model.variables[n].is_numeric]
        parsed = fresh_names("__number", numeric, types)
        # likewise each text cell's blankness: one regular expression per column instead of
        # one per check (planning hundreds of them took 0.4 s per file of a wide model)
        blanks = fresh_names("__blank", [n for n in names if text[n] and
                                          n in self.model.variables], types)
        derived = [f"{parse(n)} AS {quote_name(c)}" for n, c in parsed.items()]
        derived += [f"{blank_text(n)} AS {quote_name(c)}" for n, c in blanks.items()]
        if derived:
            relation = f"(SELECT *, {', '.join(derived)} FROM {relation})"

        def number(n: str) -> str:
            return quote_name(parsed[n])

        def blank(n: str) -> str:
            return quote_name(blanks[n]) if n in blanks else f"({quote_name(n)} IS NULL)"

        def code_text(n: str) -> str:
            column = quote_name(n)
            if text[n]:
                return column
            if types[n] in ("DOUBLE", "FLOAT") or types[n].startswith("DECIMAL"):
                return (f"(CASE WHEN {column} = round({column}) AND abs({column}) < 2^53 THEN "
                        f"CAST(CAST({column} AS BIGINT) AS VARCHAR) ELSE "
                        f"CAST({column} AS VARCHAR) END)")
            return f"CAST({column} AS VARCHAR)"

        self.names.update(dict.fromkeys(names))
        checks: list[tuple[str, str, str]] = []  # (column, what a failing value is, SQL)
        for n in names:
            variable = self.model.variables.get(n)
            if variable is None:  # named by header_problems at the end
                continue
            if n == DATASET and source.dataset is None:
                checks.append((n, "the row has no dataset", blank(n)))
            if variable.is_categorical:
                enums = ", ".join(sql_literal(e) for e in variable.enumerations)
                shown = ", ".join(repr(c) for c in variable.enumerations[:6])
                more = ", ..." if len(variable.enumerations) > 6 else ""
                unknown = f"{code_text(n)} NOT IN ({enums})" if enums else "TRUE"
                checks.append((n, f"is not a code of ({shown}{more})",
                               f"NOT {blank(n)} AND {unknown}"))
            elif variable.is_numeric:
                value = number(n)
                checks.append((n, "is not a number",
                               f"NOT {blank(n)} AND ({value} IS NULL OR isnan({value}))"))
                checks.append((n, "is not finite", f"isinf({value})"))
                finite = f"isfinite({value})"
                if variable.sql_type == "int":
                    checks.append((n, "is not an integer",
                                   f"{finite} AND {value} <> round({value})"))
                if variable.min is not None:
                    checks.append((n, f"is below the minimum {variable.min:g}",
                                   f"{finite} AND {value} < {float(variable.min)!r}"))
                if variable.max is not None:
                    checks.append((n, f"is above the maximum {variable.max:g}",
                                   f"{finite} AND {value} > {float(variable.max)!r}"))
        if DATASET not in names and source.dataset is None:
            self.errors.append(Problem(None, DATASET, "the data has no dataset column (give "
                                       "the source a dataset)"))
            self.total_errors += 1
        if checks:
            # count_if, not count(*) FILTER: DuckDB plans hundreds of them in half the time
            # (it reads NULL, not 0, where no row is true: `if n` below skips both)
            counts = ", ".join(f"count_if({sql})" for _, _, sql in checks)
            try:
                found = self.connection.execute(f"SELECT {counts} FROM {relation}").fetchone()
            except duckdb.Error as exc:
                raise LocalDataError(f"{what} is malformed or cannot be read "
                                     f"({str(exc).splitlines()[0][:200]})") from exc
            assert found is not None
            failing = [(check, int(n)) for check, n in zip(checks, found, strict=True) if n]
            self.total_errors += sum(n for _, n in failing)
            self.errors += self._first_rows(relation, [c for c, _ in failing])
        if self.errors:
            return
        # the typed rows, in the file's order (insertion order is kept)
        items = []
        for code, variable in self.model.variables.items():
            if code not in names:
                value = sql_literal(source.dataset) if code == DATASET and source.dataset \
                    else "NULL"
            elif variable.is_numeric:
                value = f"CASE WHEN {blank(code)} THEN NULL ELSE {number(code)} END"
            else:
                value = f"CASE WHEN {blank(code)} THEN NULL ELSE {code_text(code)} END"
                if code == DATASET and source.dataset is not None:
                    value = f"coalesce({value}, {sql_literal(source.dataset)})"
            items.append(value)
        self.connection.execute(f"INSERT INTO {TABLE} SELECT {', '.join(items)} FROM {relation}")

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
