"""A node's rows where Spark reads them (a data lake's Parquet, ORC, CSV or JSON, or a table
of Spark's catalog), checked and computed in Spark SQL.

Start-up reads each source through Spark: every cell is parsed as the pandas store parses
it (Arrow's number grammar, Python's blanks; the regular expressions are bound as
parameters) into typed rows (numbers as DOUBLE, codes as STRING, blank cells as NULL, a
numeric cell that is no number as NaN), cached from that one read (on the executors'
disks). Over the cached rows, per reading partition, the rows and the data model's checks'
failures are counted, as for the DuckDB store (:mod:`node.sql.checking`); only counts
reach the node, and a failing source is read again only to name its first failing rows.
The rows are then kept with their positions (the sources in order, each in Spark's reading
order), placed from those partitions' sizes as ``RDD.zipWithIndex`` places them, so no
step gathers the data in one partition, and kept in memory, then on the executors' disks
(``MEMORY_AND_DISK``); the first read's cache is released.

A query's declared kind runs as one Spark SQL statement per aggregation
(:mod:`node.sql.compile`, dialect ``SPARK``): values are bound as named parameters, never
pasted. A statement the compiler does not translate (an interval grid or bin edges above
``SPARK.max_points``, 512) gets only the query's selected rows.

Where Spark runs is Spark's configuration: the source's ``master`` (``local[4]``,
``spark://host:7077``, ``yarn``, ``k8s://...``), else ``spark.master`` from
``$SPARK_CONF_DIR/spark-defaults.conf``, else ``local[*]``; object-store credentials and
executor sizes belong there too, never in the node's configuration. A local master binds
the driver to 127.0.0.1. ANSI mode is set on the node's session so that an integer
overflow raises instead of wrapping.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from node.sql.checking import SHOWN, CheckedLoader
from node.sql.compile import ROW, SPARK, Compiler
from node.sql.store import TABLE, SqlRows
from node.validation import Problem
from protocol.errors import ConfigurationError
from stats.datamodel import DataModel, LocalDataError
from stats.plans import DATASET

if TYPE_CHECKING:
    from node.datasource import DataSource

__all__ = ["SparkRows", "supports", "spark_session"]

#: Arrow's number grammar (node.sql.duckdb_rows), as a Java full match
_NUMBER = (r"^(?:[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
           r"|(?i:inf|infinity)))\z")
#: a blank cell, as Python's str.strip() sees blanks
_BLANK = (r"^[\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}"
          r"\x{2029}\x{202f}\x{205f}\x{3000}]*\z")
_PLACE = re.compile(r"\$(\d+)")
#: monotonically_increasing_id: the partition in the high bits, the place in it below
_LOCAL_BITS = 33
_LOCAL_MASK = (1 << _LOCAL_BITS) - 1
_REREAD = ("the spark sources' rows could not be placed (their positions did not come out "
           "as 0..n-1 once each): start the node again")
_LOCK = threading.Lock()


def supports(sources: Sequence[DataSource]) -> bool:
    return bool(sources) and all(s.kind == "spark" for s in sources)


def spark_session(master: str | None) -> Any:
    """A session of this process's Spark application (one per process, as Spark allows),
    with its own temporary views and ANSI mode on."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigurationError("a spark data source needs pyspark (pip install "
                                 "'fedtally[spark]') and Java 17 or later") from exc
    # py4j narrates every connection at INFO, down to its destructors at interpreter exit
    logging.getLogger("py4j").setLevel(logging.WARNING)
    with _LOCK:
        builder = SparkSession.builder.appName("fedtally-node").config(
            "spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        if master is not None:
            builder = builder.master(master)
        if master is None or master.startswith("local"):
            builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config(
                "spark.driver.host", "127.0.0.1")
        try:
            shared = builder.getOrCreate()
        except Exception as exc:  # the JVM's reasons are many: say which kind it was
            raise LocalDataError(f"Spark could not start ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") \
                from exc
        shared.sparkContext.setLogLevel("ERROR")
        session = shared.newSession()
    session.conf.set("spark.sql.ansi.enabled", "true")
    return session


def _named(sql: str, params: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """``$n`` placeholders as Spark's named parameters ``:pn``."""
    return _PLACE.sub(lambda m: f":p{m.group(1)}", sql), {
        f"p{i + 1}": v for i, v in enumerate(params)}


class SparkRows(SqlRows):
    """Checked, typed rows persisted in Spark (see the module doc)."""

    dialect = SPARK
    engine = "Spark"

    def __init__(self, model: DataModel, session: Any, typed: Any, warnings: list[Problem],
                 found: tuple[str, ...]) -> None:
        self._session = session
        self._typed = typed
        self._lock = threading.Lock()
        super().__init__(model, warnings, found)

    @classmethod
    def load(cls, sources: Sequence[DataSource], model: DataModel, *,
             strict: bool = False) -> SparkRows:
        if not supports(sources):
            raise LocalDataError("Spark keeps spark sources only")
        masters = {s.master for s in sources}
        if len(masters) > 1:
            raise ConfigurationError("every spark source of a node names the same 'master'")
        session = spark_session(next(iter(masters)))
        loader = _Loader(session, model, strict)
        try:
            for index, source in enumerate(sources):
                loader.add(index, source)
            loader.finish_checks()
            return cls(model, session, loader.store(), loader.warnings, tuple(loader.names))
        finally:
            loader.release()

    def close(self) -> None:
        try:
            self._typed.unpersist()
            self._session.catalog.dropTempView(TABLE)
        except Exception:  # a stopped JVM has nothing left to free
            pass

    def interrupt(self) -> bool:
        # this session's jobs only (other nodes in this process share the Spark context)
        self._session.interruptAll()
        return True

    def _run(self, compiler: Compiler, sql: str) -> Any:
        text, args = _named(sql, compiler.params)
        with self._lock:
            return self._session.sql(text, args=args)

    def _rows(self, compiler: Compiler, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._run(compiler, sql).collect()]

    def _frame(self, compiler: Compiler, sql: str) -> pd.DataFrame:
        rows = self._run(compiler, sql)
        return pd.DataFrame([tuple(r) for r in rows.collect()], columns=rows.columns)

    def _finite(self, column: str) -> str:
        return _finite(column)


def _read(session: Any, source: DataSource) -> Any:
    """The source as a Spark DataFrame (a CSV file's cells all as text)."""
    what = source.describe()
    try:
        if source.table is not None:
            return session.table(source.table)
        reader = session.read.format(source.format or "parquet")
        if (source.format or "parquet") == "csv":
            # every cell as text (checked as the pandas store reads it), RFC 4180 quoting,
            # and a malformed line an error rather than a dropped row
            reader = reader.options(header="true", inferSchema="false", mode="FAILFAST",
                                    quote='"', escape='"', multiLine="true")
        return reader.load(source.url)
    except Exception as exc:
        raise LocalDataError(f"{what} cannot be read ({type(exc).__name__})") from exc


def read_frame(source: DataSource) -> pd.DataFrame:
    """Every row of a spark source in memory, for the pandas store (``"row_store":
    "pandas"``) and for inferring a data model from it."""
    frame = _read(spark_session(source.master), source)
    try:
        return frame.toPandas()
    except Exception as exc:
        raise LocalDataError(f"{source.describe()} cannot be read ({type(exc).__name__})") \
            from exc


def _quote(name: str) -> str:
    """A source's own column name (the operator's) as a Spark identifier."""
    return "`" + name.replace("`", "``") + "`"


def _storage(first_read: bool = False) -> Any:
    """Where Spark keeps a node's rows: memory, then the executors' disks; a source's first
    read on disk only, as the placed rows are built from it beside it (both in memory ran
    a local driver's default 1 GiB heap out at 5M rows)."""
    from pyspark import StorageLevel

    return StorageLevel.DISK_ONLY if first_read else StorageLevel.MEMORY_AND_DISK


def _firsts(sizes: list[int]) -> tuple[list[int], int]:
    """Each partition's first position, given the partitions' sizes in order, and the
    total."""
    firsts, total = [], 0
    for size in sizes:
        firsts.append(total)
        total += size
    return firsts, total


def _finite(value: str) -> str:
    return f"(NOT isnan({value}) AND abs({value}) < double('inf'))"


class _Loader(CheckedLoader):
    def __init__(self, session: Any, model: DataModel, strict: bool) -> None:
        super().__init__(model, strict)
        self.session = session
        self.params: dict[str, Any] = {"number": _NUMBER, "blank": _BLANK}
        self.typed: Any = None
        #: the sources' first reads, kept until their rows are placed
        self.cached: list[Any] = []
        #: (source, reading partition, rows) in reading order
        self.partitions: list[tuple[int, int, int]] = []

    def literal(self, text: str) -> str:
        # one parameter per distinct text: every check of a variable names its codes again
        name = next((k for k, v in self.params.items() if v == text and k.startswith("code")),
                    f"code{len(self.params)}")
        self.params[name] = text
        return f":{name}"

    @staticmethod
    def infinite(value: str) -> str:
        return f"(abs({value}) = double('inf'))"

    @staticmethod
    def finite(value: str) -> str:
        return _finite(value)

    def _sql(self, sql: str) -> Any:
        # whole names only: ':code1' is not used where only ':code12' is
        used = {k: v for k, v in self.params.items() if re.search(rf":{k}\b", sql)}
        return self.session.sql(sql, args=used)

    def add(self, index: int, source: DataSource) -> None:
        what = source.describe()
        frame = _read(self.session, source)
        raw = f"__source_{index}"
        frame.createOrReplaceTempView(raw)
        names = list(frame.columns)
        types = dict(frame.dtypes)
        text = {n: types[n] == "string" for n in names}
        self.names.update(dict.fromkeys(names))

        def blank(n: str) -> str:
            column = _quote(n)
            if text[n]:
                return f"({column} IS NULL OR {column} RLIKE :blank)"
            return f"({column} IS NULL)"

        def number(n: str) -> str:
            column = _quote(n)
            if text[n]:
                return f"(CASE WHEN {column} RLIKE :number THEN try_cast({column} AS DOUBLE) END)"
            if types[n] == "boolean":
                return "CAST(NULL AS DOUBLE)"
            return f"try_cast({column} AS DOUBLE)"

        def code(n: str) -> str:
            column = _quote(n)
            if text[n]:
                return column
            if types[n] in ("double", "float") or types[n].startswith("decimal"):
                return (f"(CASE WHEN {column} = round({column}) AND abs({column}) < "
                        f"9007199254740992 THEN CAST(CAST({column} AS BIGINT) AS STRING) "
                        f"ELSE CAST({column} AS STRING) END)")
            return f"CAST({column} AS STRING)"

        self.check_dataset_column(source, names)
        items = []
        for variable_code, variable in self.model.variables.items():
            column = self.columns[variable_code]
            if variable_code not in names:
                value = self.literal(source.dataset) if variable_code == DATASET and \
                    source.dataset else ("CAST(NULL AS DOUBLE)" if variable.is_numeric
                                         else "CAST(NULL AS STRING)")
            elif variable.is_numeric:
                value = (f"CASE WHEN {blank(variable_code)} THEN CAST(NULL AS DOUBLE) ELSE "
                         f"coalesce({number(variable_code)}, double('NaN')) END")
            else:
                value = f"CASE WHEN {blank(variable_code)} THEN NULL ELSE {code(variable_code)} END"
            items.append(f"{value} AS {column}")
        order = f"monotonically_increasing_id() AS {ROW}_in_source"
        try:
            typed = self._sql(f"SELECT {index} AS __source, {order}, {', '.join(items)} "
                              f"FROM {raw}")
        except Exception as exc:
            raise LocalDataError(f"{what} cannot be read ({type(exc).__name__})") from exc
        # kept from its first read on: the checks, the partitions' sizes and the positions
        # all come from these rows (a second read could be split differently, e.g. on a
        # cluster whose executors are still registering, and a file could change between)
        typed.persist(_storage(first_read=True))
        self.cached.append(typed)
        checks = [(n, fails, stored_sql, file_sql) for n in names if n in self.model.variables
                  for (fails, stored_sql), (_, file_sql) in zip(
                      self.checks(n, source, self.columns[n], f"({self.columns[n]} IS NULL)"),
                      self.checks(n, source, number(n) if self.model.variables[n].is_numeric
                                  else code(n), blank(n)), strict=True)]
        typed.createOrReplaceTempView("__typed")
        # the checks' counts per reading partition (this reads the source into the cache):
        # the partitions' sizes place each row (see store) without ordering the whole data
        # in one partition
        counts = "".join(f", count_if({sql})" for _, _, sql, _ in checks)
        try:
            found = self._sql(f"SELECT shiftright({ROW}_in_source, {_LOCAL_BITS}), count(*)"
                              f"{counts} FROM __typed GROUP BY 1").collect()
        except Exception as exc:
            raise LocalDataError(f"{what} is malformed or cannot be read "
                                 f"({type(exc).__name__})") from exc
        sizes = {int(r[0]): int(r[1]) for r in found}
        self.partitions += [(index, part, sizes[part]) for part in sorted(sizes)]
        failing = [(check, n) for check, n in zip(
            checks, (sum(int(r[2 + i]) for r in found) for i in range(len(checks))),
            strict=True) if n]
        if failing:
            self.total_errors += sum(n for _, n in failing)
            self.errors += self._first_rows(raw, [(c, w, sql) for (c, w, _, sql), _ in failing])
        if DATASET in names and source.dataset is not None:
            dataset = self.columns[DATASET]
            typed = self._sql(f"SELECT * EXCEPT ({dataset}), coalesce({dataset}, "
                              f"{self.literal(source.dataset)}) AS {dataset} FROM __typed")
        typed = typed.select("__source", f"{ROW}_in_source", *self.columns.values())
        self.typed = typed if self.typed is None else self.typed.unionByName(typed)

    def store(self) -> Any:
        """Each row's position over all sources, then the rows persisted and named
        :data:`~node.sql.store.TABLE` (once every source passed its checks).

        A row's position is its source's first position, plus the sizes of the source's
        earlier reading partitions, plus its place in its own partition (the low bits of
        ``monotonically_increasing_id``), as RDD.zipWithIndex counts: the sizes were counted
        over the same cached rows and reach them through a broadcast join, so no step
        gathers the data in one partition. Count, least, largest and total of the positions
        are then checked as a sanity check. Once the placed rows are kept, the first read's
        cache is released: a block of them lost with an executor is recomputed from the
        source, which Spark assumes reads the same (as RDD.zipWithIndex does)."""

        firsts, total = _firsts([size for _, _, size in self.partitions])
        starts = [(source, part, first) for (source, part, _), first in
                  zip(self.partitions, firsts, strict=True)]
        offsets = self.session.createDataFrame(
            starts or [(0, 0, 0)], "source INT, part BIGINT, start BIGINT")
        offsets.createOrReplaceTempView("__offsets")
        self.typed.createOrReplaceTempView("__all")
        rows = self.session.sql(
            f"SELECT /*+ BROADCAST(o) */ o.start + (a.{ROW}_in_source & {_LOCAL_MASK}) AS {ROW},"
            f" {', '.join('a.' + c for c in self.columns.values())} FROM __all AS a JOIN "
            f"__offsets AS o ON o.source = a.__source AND o.part = "
            f"shiftright(a.{ROW}_in_source, {_LOCAL_BITS})")
        rows.persist(_storage())
        rows.createOrReplaceTempView(TABLE)
        found = self.session.sql(
            f"SELECT count(*), coalesce(min({ROW}), 0), coalesce(max({ROW}), -1), "
            f"coalesce(sum(CAST({ROW} AS DECIMAL(38,0))), 0) FROM {TABLE}").collect()[0]
        if (int(found[0]), int(found[1]), int(found[2]), int(found[3])) != (
                total, 0, total - 1, total * (total - 1) // 2):
            rows.unpersist()
            self.session.catalog.dropTempView(TABLE)
            raise LocalDataError(_REREAD)
        self.release()
        return rows

    def release(self) -> None:
        """The first reads' caches, once placed rows are kept or start-up failed."""
        for cached in self.cached:
            cached.unpersist()
        self.cached.clear()

    def _first_rows(self, raw: str, failing: list[tuple[str, str, str]]) -> list[Problem]:
        """The first failing cells of a source, each with its row's number in the source
        (from 1, placed as :meth:`store` places rows), from one cached read of its text."""
        numbered = self._sql(f"SELECT monotonically_increasing_id() AS {ROW}_at, * FROM {raw}")
        numbered.persist(_storage(first_read=True))
        try:
            numbered.createOrReplaceTempView("__numbered")
            sizes = dict(self._sql(f"SELECT shiftright({ROW}_at, {_LOCAL_BITS}), count(*) "
                                   "FROM __numbered GROUP BY 1").collect())
            parts = sorted(sizes)
            starts = dict(zip(parts, _firsts([sizes[p] for p in parts])[0], strict=True))
            found: list[tuple[int, int, str, str, Any]] = []
            for order, (column, what, sql) in enumerate(failing):
                rows = self._sql(f"SELECT {ROW}_at, CAST({_quote(column)} AS STRING) FROM "
                                 f"__numbered WHERE {sql} ORDER BY {ROW}_at LIMIT {SHOWN}"
                                 ).collect()
                found += [(starts[int(at) >> _LOCAL_BITS] + (int(at) & _LOCAL_MASK) + 1, order,
                           column, what, value) for at, value in rows]
        finally:
            numbered.unpersist()
        return self.first_failing(found)
