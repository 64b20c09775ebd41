"""A node's rows in the hospital's own PostgreSQL database, and its statistics computed
there: rows never leave the database for the kinds the compiler translates.

The node reads the table (or view) a ``sql`` source names, through psycopg 3 with
SQLAlchemy's reading of the URL, and only reads: every transaction is ``READ ONLY``, the
session's default is read-only too, and nothing is created in the database (no table, no
temporary table, no function): each statistic is one ``SELECT`` whose typed view of the
table (one column per model variable, numbers as doubles, codes as text, blanks as NULL)
is written into the statement itself as a common table expression. A role granted
``CONNECT`` on the database, ``USAGE`` on the schema and ``SELECT`` on the table is all it
needs (README: "Reading a hospital's PostgreSQL").

Start-up checks the table against the data model in SQL, as the DuckDB store checks a file
(per column, counts of values that are not numbers, not finite, not integers, below the
minimum, above the maximum, not a code, rows without a dataset; the first failing rows
are read only when there are problems), with the pandas store's reading of each type:
text is parsed with Arrow's grammar, blank text is missing, NaN in a float or numeric
column is missing, booleans are not numbers, integral numbers are codes without their
fraction. Only the counts are kept. The table must not change while the node serves
(validation holds for the rows it saw): restart the node after loading new data. The
statements of one query run in one ``REPEATABLE READ`` transaction, so they all read the
table in one state.

Each row's position in the node's data (for folds and rows per patient) is its physical
order (``tableoid, ctid``, the order a plain ``SELECT`` returns a table's rows in, which is
the order the pandas store numbers them in); a view has no such order and gets the
server's scan order.

Fallback, stated: a kind computed on a DataFrame (``Kind.frame_compute``: none of the
catalog's), and the rare statement PostgreSQL refuses where C arithmetic would overflow, or
a quotient underflow (C gives inf or 0, PostgreSQL an error; products that underflow are
computed in SQL, :meth:`node.sql.compile.Compiler.times`), get the query's selected rows fetched
(datasets, filter and rows per patient applied in SQL, only the variables the query
names), as :class:`node.sql.duckdb_rows.DuckRows` does.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import pandas as pd

from node.datasource import DataSource
from node.sql.checking import SHOWN, CheckedLoader
from node.sql.compile import POSTGRES, ROW, Compiler, Unsupported, postgres_float, postgres_number
from node.sql.store import TABLE, SqlRows, fresh_names, quote_name, sql_literal
from node.validation import Problem
from protocol.errors import ConfigurationError, ServiceUnavailable
from stats.datamodel import DataModel, LocalDataError
from stats.plans import DATASET

__all__ = ["PostgresRows", "supports"]

log = logging.getLogger("fedtally.node")

#: problems named in a refusal to start (all are counted)
#: a blank cell (missing), as Python's str.strip() sees blanks (PostgreSQL's ARE syntax)
_BLANK = (r"^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029"
          r"\u202f\u205f\u3000]*$")
#: the code points of those blanks, and 0 (ascii('') is 0): the regular expression runs only
#: on text starting with one of them (a cheap test every query's typed view makes per cell)
_BLANK_START = ("0, 9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 133, 160, 5760, 8192, 8193, 8194, "
                "8195, 8196, 8197, 8198, 8199, 8200, 8201, 8202, 8232, 8233, 8239, 8287, 12288")
_INTEGERS = frozenset({"int2", "int4", "int8"})
_FLOATS = frozenset({"float4", "float8"})
_DRIVER = "postgresql+psycopg"


def supports(sources: Sequence[DataSource]) -> bool:
    """PostgreSQL keeps these sources: tables of one PostgreSQL database (``postgresql://``
    or ``postgresql+psycopg://`` URLs). Other SQL databases stay in pandas."""
    if not sources or any(s.kind != "sql" for s in sources):
        return False
    databases = {_database(s) for s in sources}
    if None in databases:
        if databases != {None}:  # never read a PostgreSQL table into pandas
            raise ConfigurationError("a node's PostgreSQL tables cannot be mixed with other "
                                     "databases' tables")
        return False
    if len(databases) != 1:
        raise ConfigurationError("a node's PostgreSQL tables must be tables of one database "
                                 "(the same host, port, database and role)")
    return True


def _database(source: DataSource) -> str | None:
    """The PostgreSQL database (and role) a source's URL names, however its driver is
    spelt (``postgresql://``, ``postgresql+psycopg://``), or None for another database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(cast(str, source.url))
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"the database URL of {source.describe()} is not "
                                 "valid") from exc
    if url.drivername not in ("postgresql", _DRIVER):
        return None
    return url.set(drivername=_DRIVER).render_as_string(hide_password=False)


def _relation(source: DataSource) -> str:
    table = quote_name(cast(str, source.table))
    return f"{quote_name(source.schema)}.{table}" if source.schema else table


class _Database:
    """One read-only connection, opened again after the server closed it."""

    def __init__(self, source: DataSource) -> None:
        from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        self.what = source.describe()
        try:
            url = make_url(cast(str, source.url)).set(drivername=_DRIVER)
        except (ArgumentError, ValueError) as exc:
            raise LocalDataError(f"cannot read {self.what}: the database URL is not "
                                 "valid") from exc
        _, self._arguments = PGDialect_psycopg().create_connect_args(url)
        self._arguments.setdefault("connect_timeout", 10)
        self._password = str(url.password) if url.password else None
        self._connection: Any = None
        # reentrant: a query's statements run inside its snapshot, which holds it too
        self.lock = threading.RLock()
        #: transactions of ours open on the connection (1: a snapshot or a statement's own)
        self._depth = 0
        #: a statement is executing (what interrupt may cancel)
        self._running = False

    def _open(self) -> Any:
        import psycopg

        connection = psycopg.connect(**self._arguments, autocommit=False,
                                     application_name="fedtally-node")
        # every transaction BEGIN READ ONLY, and the session's default too; REPEATABLE
        # READ, so that the statements of one query (see snapshot) read one state of the
        # table (a read-only transaction never fails to serialize at this level)
        connection.read_only = True
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with connection.transaction():
            for setting in ("default_transaction_read_only = on",
                            "standard_conforming_strings = on", "extra_float_digits = 1"):
                connection.execute(f"SET {setting}")
        return connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A read-only transaction on the connection (a savepoint within a snapshot, so that
        a statement PostgreSQL refuses leaves the snapshot usable). A connection the server
        closed since the last one (a restart) fails as its transaction begins, before
        anything is read: it is opened again, once. A connection lost later is closed and
        the failure raised (the query is refused; the next one connects again). Nesting is
        counted here, not asked of the server: a cancel that lands on a COMMIT leaves the
        server in a failed transaction psycopg does not know of, so a connection found in
        any transaction where none of ours is open is closed and opened again."""
        import psycopg
        from psycopg.pq import TransactionStatus

        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    with self._connection.transaction():
                        yield self._connection
                finally:
                    self._depth -= 1
                return
            if self._connection is not None and not self._connection.closed and \
                    self._connection.info.transaction_status != TransactionStatus.IDLE:
                log.warning("the PostgreSQL connection was left in a transaction (a cancel "
                            "that landed between statements): connecting again")
                self.close()
            for attempt in range(2):
                if self._connection is None or self._connection.closed:
                    self._connection = self._open()
                begun = contextlib.ExitStack()
                try:
                    begun.enter_context(self._connection.transaction())
                except psycopg.OperationalError:
                    self.close()
                    if attempt:
                        raise
                    continue
                break
            self._depth = 1
            try:
                with begun:
                    yield self._connection
            except psycopg.errors.QueryCanceled:
                raise  # interrupted (see interrupt): the connection is fine
            except psycopg.OperationalError:
                self.close()
                raise
            finally:
                self._depth = 0

    def interrupt(self) -> None:
        """From another thread (without the lock, which the running statement holds): the
        server cancels the statement running now, which raises QueryCanceled. Sent only
        while a statement runs (one that lands on a COMMIT anyway is mended by the next
        transaction, see _transaction)."""
        connection = self._connection
        if self._running and connection is not None and not connection.closed:
            connection.cancel_safe(timeout=10)

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One transaction around several statements: they all read the table as it was
        at the first one (REPEATABLE READ)."""
        with self._transaction():
            yield

    def run(self, sql: str, params: Sequence[Any] = (), *, frame: bool = False,
            hashed: bool = False) -> Any:
        """The statement's rows (or a DataFrame), in a read-only transaction; ``hashed``
        groups by hashing rather than sorting (see :meth:`PostgresRows._rows`)."""
        import psycopg

        with self._transaction() as connection:
            cursor = psycopg.RawCursor(connection)
            if hashed:
                # for this statement only: within a snapshot, a SET LOCAL would last to the
                # snapshot's end
                cursor.execute("SELECT current_setting('enable_sort')")
                before = cursor.fetchall()[0][0]
                cursor.execute("SET LOCAL enable_sort = off")
            self._running = True
            try:
                cursor.execute(sql, list(params))
                rows = cursor.fetchall()
            finally:
                self._running = False
            if hashed:
                cursor.execute("SELECT set_config('enable_sort', $1, true)", [before])
            if frame:
                names = [c.name for c in cursor.description or ()]
                return pd.DataFrame.from_records(rows, columns=names)
            return rows

    def columns(self, relation: str) -> list[tuple[str, int]]:
        """The relation's column names and type OIDs (no row is read)."""
        import psycopg

        with self._transaction() as connection:
            cursor = psycopg.RawCursor(connection)
            cursor.execute(f"SELECT * FROM {relation} LIMIT 0")
            return [(c.name, int(c.type_code)) for c in cursor.description or ()]

    def failure(self, exc: BaseException) -> str:
        """What went wrong, for the operator, without the password."""
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        if self._password:
            text = text.replace(self._password, "***")
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass(frozen=True)
class _Column:
    """One column of a source, as the checks and the typed view read it."""

    sql: str  # the expression giving its value
    kind: str  # integer, float, decimal, text, boolean or other

    def blank(self) -> str:
        if self.kind == "text":
            return (f"({self.sql} IS NULL OR (ascii({self.sql}) IN ({_BLANK_START}) AND "
                    f"{self.sql} ~ '{_BLANK}'))")
        if self.kind in ("float", "decimal"):  # NaN is missing to pandas (isna)
            return f"({self.sql} IS NULL OR {self.sql} = 'NaN')"
        return f"({self.sql} IS NULL)"

    def number(self) -> str:
        """The value as the pandas store reads it, NULL where it reads no number."""
        if self.kind in ("integer", "float"):
            return f"CAST({self.sql} AS DOUBLE PRECISION)"
        if self.kind == "decimal":
            return postgres_float(self.sql)
        if self.kind == "text":
            return postgres_number(self.sql)
        return "CAST(NULL AS DOUBLE PRECISION)"  # booleans, dates, ...: not numbers

    def typed_number(self) -> str:
        """The typed rows' value: NULL where blank, else :meth:`number`. A statement copies
        it into every place that reads the column, so the common kinds take one node:
        integers a cast, floats NULLIF (PostgreSQL's NaN equals NaN)."""
        if self.kind == "integer":
            return f"CAST({self.sql} AS DOUBLE PRECISION)"
        if self.kind == "float":
            return f"NULLIF(CAST({self.sql} AS DOUBLE PRECISION), 'NaN')"
        return f"(CASE WHEN {self.blank()} THEN NULL ELSE {self.number()} END)"

    def code(self) -> str:
        """The value as a category code (node.validation.as_codes): text compared byte by
        byte, as pandas compares it, whatever the column's type or collation (``citext``
        or a non-deterministic collation would take 'a' for the code 'A'; a
        ``character(n)`` code is read without its padding, as PostgreSQL compares it)."""
        if self.kind == "text":
            return f'(CAST({self.sql} AS TEXT) COLLATE "C")'
        if self.kind == "integer":
            return f"CAST({self.sql} AS TEXT)"
        if self.kind in ("float", "decimal"):
            x = self.number()
            return (f"(CASE WHEN {x} = round({x}) AND abs({x}) < 2^53 THEN "
                    f"CAST(CAST({x} AS BIGINT) AS TEXT) ELSE CAST({x} AS TEXT) END)")
        if self.kind == "boolean":
            return f"(CASE WHEN {self.sql} THEN 'True' ELSE 'False' END)"
        return f"CAST({self.sql} AS TEXT)"


class PostgresRows(SqlRows):
    """Validated rows in a PostgreSQL table, computed there (see the module doc)."""

    dialect = POSTGRES
    engine = "PostgreSQL"

    def __init__(self, model: DataModel, database: _Database, plain: str, ordered: str,
                 warnings: list[Problem], found: tuple[str, ...]) -> None:
        self._database = database
        #: the typed rows, without and with each row's position (a window over the table:
        #: only statements that read the position pay for it)
        self._plain = plain
        self._ordered = ordered
        super().__init__(model, warnings, found)

    @classmethod
    def load(cls, sources: Sequence[DataSource], model: DataModel, *,
             strict: bool = False) -> PostgresRows:
        """Check the tables in SQL and keep only the counts (see the module doc)."""
        if not supports(sources):
            raise LocalDataError("PostgreSQL keeps tables of one PostgreSQL database only")
        database = _Database(sources[0])
        try:
            loader = _Loader(database, model, strict)
            for number, source in enumerate(sources):
                loader.add(number, source)
            loader.finish()
            return cls(model, database, loader.plain(), loader.ordered(), loader.warnings,
                       tuple(loader.names))
        except LocalDataError:
            database.close()
            raise
        except Exception as exc:
            database.close()
            raise LocalDataError(f"cannot read {sources[0].describe()}: "
                                 f"{_refusal(database, exc)}") from None

    def close(self) -> None:
        self._database.close()

    def interrupt(self) -> bool:
        self._database.interrupt()
        return True

    def _snapshot(self) -> contextlib.AbstractContextManager[None]:
        return self._database.snapshot()

    def check_available(self) -> None:
        import psycopg

        try:  # planned, not run: the connection, and the role's grants on every table
            self._database.run(self._statement(self._compiler(None),
                                               f"SELECT 1 FROM {TABLE} LIMIT 0"))
        except psycopg.Error as exc:
            log.warning("the database cannot be read (%s): refusing queries until it can",
                        self._database.failure(exc))
            raise ServiceUnavailable("this node's database cannot be read right now; try "
                                     "again later (this node charged nothing)") from None

    def _finite(self, column: str) -> str:
        return f"{column} NOT IN ('Infinity', '-Infinity', 'NaN')"

    def _statement(self, compiler: Compiler, sql: str) -> str:
        rows = self._ordered if compiler.uses_row else self._plain
        return f"WITH {TABLE} AS ({rows}) {sql}"

    def _rows(self, compiler: Compiler, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            # a grouped aggregation has few groups, but the planner cannot estimate how many
            # rows the typed view's expressions select, and sorted them to disk (1M rows:
            # 1.0 s, against 0.7 s hashed)
            return cast(list[tuple[Any, ...]],
                        self._database.run(self._statement(compiler, sql), compiler.params,
                                           hashed=compiler.grouped))
        except (psycopg.errors.NumericValueOutOfRange, psycopg.errors.DivisionByZero,
                psycopg.errors.FloatingPointException) as exc:
            # an overflow or underflow C would have made inf or 0 (see the module doc); any
            # other data error (a column whose type changed since start-up) is a failure
            log.warning("PostgreSQL refused a statement (%s): computing it on fetched rows",
                        self._database.failure(exc))
            raise Unsupported("PostgreSQL arithmetic error") from exc

    def _frame(self, compiler: Compiler, sql: str) -> pd.DataFrame:
        return cast(pd.DataFrame, self._database.run(self._statement(compiler, sql),
                                                     compiler.params, frame=True))


def _refusal(database: _Database, exc: BaseException) -> str:
    import psycopg

    if isinstance(exc, psycopg.errors.UndefinedTable):
        return "the table does not exist"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return "the node's database role may not read it (grant it SELECT)"
    return f"the database refused or failed ({database.failure(exc)})"


# --- start-up: validate in SQL ------------------------------------------------------------


class _Loader(CheckedLoader):
    def __init__(self, database: _Database, model: DataModel, strict: bool) -> None:
        super().__init__(model, strict)
        self.database = database
        #: per source: its typed rows, and the keys that order them
        self.typed: list[tuple[str, str]] = []

    def _describe(self, relation: str) -> tuple[list[str], dict[str, str], bool]:
        """The relation's column names, their kinds, and whether it has a physical order."""
        rows = self.database.run(
            "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass($1)", [relation])
        if not rows or rows[0][0] is None:
            import psycopg

            raise psycopg.errors.UndefinedTable(relation)
        ordered = str(rows[0][0]) in ("r", "p", "m")
        columns = self.database.columns(relation)
        found = self.database.run(
            "SELECT CAST(t.oid AS BIGINT), coalesce(b.typname, t.typname), "
            "coalesce(b.typcategory, t.typcategory) FROM pg_type t LEFT JOIN pg_type b "
            "ON t.typtype = 'd' AND b.oid = t.typbasetype "
            "WHERE CAST(t.oid AS BIGINT) = ANY(CAST($1 AS BIGINT[]))",
            [sorted({oid for _, oid in columns})])
        types = {int(oid): (str(name), str(category)) for oid, name, category in found}
        kinds: dict[str, str] = {}
        for name, oid in columns:
            typname, category = types.get(oid, ("", ""))
            kinds[name] = ("integer" if typname in _INTEGERS else "float" if typname in _FLOATS
                           else "decimal" if typname == "numeric" else "text"
                           if category == "S" else "boolean" if category == "B" else "other")
        return [name for name, _ in columns], kinds, ordered

    def add(self, number: int, source: DataSource) -> None:
        relation = _relation(source)
        names, kinds, physical = self._describe(relation)
        self.names.update(dict.fromkeys(names))
        columns = {n: _Column(quote_name(n), kinds[n]) for n in names}
        if source.dataset is not None and DATASET in columns:
            # empty cells take the source's dataset, as the pandas store fills them
            columns[DATASET] = _Column(f"coalesce(NULLIF(CAST({quote_name(DATASET)} AS TEXT),"
                                       f" ''), {sql_literal(source.dataset)})", "text")
        variables = [n for n in names if n in self.model.variables]
        numeric = [n for n in variables if self.model.variables[n].is_numeric]
        taken = dict.fromkeys(names)
        parsed = fresh_names("__number", numeric, taken)
        blanks = fresh_names("__blank", variables, taken)
        order = fresh_names("__order", ["table", "row"], taken)
        keys = {"table": "tableoid" if physical else "CAST(0 AS OID)",
                "row": "ctid" if physical else "CAST(NULL AS TID)"}
        derived = [f"{keys[k]} AS {order[k]}" for k in keys]
        derived += [f"{columns[n].number()} AS {parsed[n]}" for n in numeric]
        derived += [f"{columns[n].blank()} AS {blanks[n]}" for n in variables]
        # OFFSET 0 keeps each cell parsed once, however many checks read it
        annotated = f"(SELECT *, {', '.join(derived)} FROM {relation} OFFSET 0) AS cells"

        checks: list[tuple[str, str, str]] = []  # (column, what a failing value is, SQL)
        for n in variables:
            variable = self.model.variables[n]
            blank, column = blanks[n], columns[n]
            if n == DATASET:
                checks.append((n, "the row has no dataset", blank))
            if variable.is_categorical:
                enums = ", ".join(sql_literal(e) for e in variable.enumerations)
                shown = ", ".join(repr(c) for c in variable.enumerations[:6])
                more = ", ..." if len(variable.enumerations) > 6 else ""
                unknown = f"{column.code()} NOT IN ({enums})" if enums else "TRUE"
                checks.append((n, f"is not a code of ({shown}{more})",
                               f"NOT {blank} AND {unknown}"))
            elif variable.is_numeric:
                value = parsed[n]
                checks.append((n, "is not a number",
                               f"NOT {blank} AND ({value} IS NULL OR {value} = 'NaN')"))
                checks.append((n, "is not finite", f"{value} IN ('Infinity', '-Infinity')"))
                finite = f"{value} NOT IN ('Infinity', '-Infinity', 'NaN')"
                if variable.sql_type == "int":
                    checks.append((n, "is not an integer",
                                   f"{finite} AND {value} <> round({value})"))
                if variable.min is not None:
                    checks.append((n, f"is below the minimum {variable.min:g}",
                                   f"{finite} AND {value} < {_double(variable.min)}"))
                if variable.max is not None:
                    checks.append((n, f"is above the maximum {variable.max:g}",
                                   f"{finite} AND {value} > {_double(variable.max)}"))
        self.check_dataset_column(source, list(names))
        if checks:
            counts = ", ".join(f"count(*) FILTER (WHERE {sql})" for _, _, sql in checks)
            found = self.database.run(f"SELECT {counts} FROM {annotated}")[0]
            failing = [(check, int(n)) for check, n in zip(checks, found, strict=True) if n]
            self.total_errors += sum(n for _, n in failing)
            self.errors += self._first_rows(annotated, order, [c for c, _ in failing])

        items = []
        for code, variable in self.model.variables.items():
            if code not in columns:
                value = sql_literal(source.dataset) if code == DATASET and source.dataset \
                    else f"CAST(NULL AS {'DOUBLE PRECISION' if variable.is_numeric else 'TEXT'})"
            elif variable.is_numeric:
                value = columns[code].typed_number()
            else:
                value = f"(CASE WHEN {columns[code].blank()} THEN NULL ELSE " \
                        f"{columns[code].code()} END)"
            items.append(f"{value} AS {self.columns[code]}")
        self.typed.append((f"SELECT {', '.join(items)} FROM {relation}",
                           f"SELECT {number} AS __source, {keys['table']} AS __table, "
                           f"{keys['row']} AS __position, {', '.join(items)} FROM {relation}"))

    def _first_rows(self, annotated: str, order: dict[str, str],
                    failing: list[tuple[str, str, str]]) -> list[Problem]:
        """The first failing rows (1-based, in the table's order) of each failing check."""
        found: list[tuple[int, int, str, str, Any]] = []
        numbered = (f"(SELECT row_number() OVER (ORDER BY {order['table']}, {order['row']}) "
                    f"AS __position, * FROM {annotated}) AS numbered")
        for rank, (column, what, sql) in enumerate(failing):
            rows = self.database.run(
                f"SELECT __position, {quote_name(column)} FROM {numbered} WHERE {sql} "
                f"ORDER BY __position LIMIT {SHOWN}")
            # pandas' read_sql reads NUMERIC as floats
            found += [(row, rank, column, what,
                       float(value) if isinstance(value, Decimal) else value)
                      for row, value in rows]
        return self.first_failing(found)

    def finish(self) -> None:
        self.finish_checks()

    def plain(self) -> str:
        return " UNION ALL ".join(plain for plain, _ in self.typed)

    def ordered(self) -> str:
        columns = ", ".join(self.columns.values())
        union = " UNION ALL ".join(ordered for _, ordered in self.typed)
        return (f"SELECT CAST(row_number() OVER (ORDER BY __source, __table, __position) - 1 "
                f"AS BIGINT) AS {ROW}, {columns} FROM ({union}) AS sources")


def _double(value: float) -> str:
    return f"CAST('{float(value)!r}' AS DOUBLE PRECISION)"

