"""What the SQL row stores share: a query's kind run as one compiled statement per
aggregation (:mod:`node.sql.compile`), and the query's selected rows fetched for the kinds
the compiler does not translate. A store says only how it runs a statement and how a
variable's column is found; :class:`node.sql.duckdb_rows.DuckRows` and
:class:`node.sql.postgres_rows.PostgresRows` build on it."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from node.rowstore import frame_computed
from node.sql.compile import DUCKDB, ROW, Compiler, Dialect, Unsupported, aggregation, selection
from node.validation import CheckReport, Problem, counted_report
from stats import filters
from stats.aggregates import Aggregation, Result
from stats.datamodel import DataModel, PlanModel
from stats.kinds import KINDS
from stats.kinds.base import Clipping, Computed
from stats.plans import DATASET, Key
from stats.query import QuerySpec

__all__ = ["SqlRows", "named_variables"]

#: the name statements read the node's typed rows under
TABLE = "node_rows"


#: the most measures one statement computes: a wide query (a regression on 89 terms has
#: about 8,000) ran DuckDB out of its memory limit, passed PostgreSQL's 1,664 result columns
#: and took Spark minutes to compile; split, each part is an ordinary statement
MAX_MEASURES = 1000


class SqlRows:
    """A row store whose rows are a SQL relation named :data:`TABLE` with one column per
    model variable (``c0``, ``c1``, ...: numbers as doubles, the rest as text, NULL where
    missing) and each row's position (:data:`~node.sql.compile.ROW`)."""

    dialect: Dialect = DUCKDB
    #: where the rows are kept, for the node's log
    engine = "SQL"
    #: the rows are the node's own copy, read-only once start-up has written them (not a
    #: table others may write to, nor rows an engine may read again from their source): a
    #: query over every dataset they hold then selects rows by ``IS NOT NULL``, where
    #: comparing each row's dataset with a list cost DuckDB 40% of a count (5M rows: a
    #: count 14.3 -> 8.4 ms)
    own_copy = False

    def __init__(self, model: DataModel, warnings: list[Problem],
                 found: tuple[str, ...]) -> None:
        self.model = model
        #: the column problems that are not errors (unknown columns): counts only
        self.warnings = warnings
        #: the columns the sources had, in order of first appearance
        self.found = found
        self.columns = {code: f"c{i}" for i, code in enumerate(model.variables)}
        self.numeric = frozenset(c for c, v in model.variables.items() if v.is_numeric)
        self._magnitudes: dict[str, float] | None = None
        self._count = int(self._rows(self._compiler(None), f"SELECT count(*) FROM {TABLE}")
                          [0][0])
        dataset = self.columns[DATASET]
        self._held = sorted(str(r[0]) for r in self._rows(
            self._compiler(None),
            f"SELECT DISTINCT {dataset} FROM {TABLE} WHERE {dataset} IS NOT NULL"))

    # --- what each engine says ----------------------------------------------------------

    def _rows(self, compiler: Compiler, sql: str) -> list[tuple[Any, ...]]:
        """Run ``sql`` with the compiler's parameters; its rows."""
        raise NotImplementedError

    def _frame(self, compiler: Compiler, sql: str) -> pd.DataFrame:
        """Run ``sql`` with the compiler's parameters; its rows as a DataFrame."""
        raise NotImplementedError

    def close(self) -> None:
        """Let the engine go (a DuckDB file is removed, a PostgreSQL connection closed)."""
        raise NotImplementedError

    def interrupt(self) -> bool:
        """From another thread: stop the engine's statement running now (it raises in the
        thread that runs it); True."""
        raise NotImplementedError

    def check_available(self) -> None:
        """The node's own copy (DuckDB) or cache (Spark) is always there; PostgreSQL asks
        its server."""

    def _snapshot(self) -> contextlib.AbstractContextManager[None]:
        """The statements run within it read one state of the rows. Nothing to do where the rows
        are the node's own copy (DuckDB) or read once into a cache (Spark); PostgreSQL
        runs them in one transaction."""
        return contextlib.nullcontext()

    def _finite(self, column: str) -> str:
        """SQL: the column's value is finite."""
        return f"isfinite({column})"

    # --- the store ----------------------------------------------------------------------

    def count(self) -> int:
        return self._count

    def held(self) -> list[str]:
        return list(self._held)

    def largest_magnitude(self, code: str) -> float:
        if code not in self.numeric:
            return 0.0
        return self._all_magnitudes()[code]

    def _all_magnitudes(self) -> dict[str, float]:
        """Each numeric variable's largest magnitude of a finite value."""
        if self._magnitudes is None:
            # every numeric column in one scan: asked one by one, a wide model (140 numeric
            # columns) made 140 scans at start-up
            codes = sorted(self.numeric)
            found = self._rows(self._compiler(None), "SELECT " + ", ".join(
                f"max(CASE WHEN {self._finite(self.columns[c])} THEN abs({self.columns[c]}) "
                "END)" for c in codes) + f" FROM {TABLE}")[0]
            self._magnitudes = {c: float(v) if v is not None else 0.0
                                for c, v in zip(codes, found, strict=True)}
        return self._magnitudes

    def check_report(self) -> CheckReport:
        """What ``fedtally node check`` shows for rows that passed every check: each
        variable's count of values, in one statement over the typed rows."""
        codes = list(self.columns)
        counts = self._rows(self._compiler(None), "SELECT " + ", ".join(
            f"count({self.columns[c]})" for c in codes) + f" FROM {TABLE}")[0]
        found = set(self.found)
        values = {c: int(n) for c, n in zip(codes, counts, strict=True)
                  if c in found or (c == DATASET and n)}
        return counted_report(self.model, self._count, self._held, values,
                              [n for n in self.found if n not in self.model.variables],
                              self.warnings)

    def working_rows(self, spec: QuerySpec) -> int:
        kind = KINDS[spec.kind]
        if kind.statistic is None or not self._compiles(spec):
            return self._count
        return 0

    def computed(self, spec: QuerySpec, scale: Any, clip: Clipping | None) -> Computed:
        kind = KINDS[spec.kind]
        # a query's statements (its aggregations, parts of a wide one, rows fetched where
        # the engine refused) all read the same rows
        with self._snapshot():
            if kind.statistic is not None:
                statistic = kind.statistic(spec, PlanModel(self.model), scale)
                try:
                    results = [self._aggregate(spec, a, clip, filtered=True)
                               for a in statistic.aggregations]
                except Unsupported:
                    pass
                else:
                    return statistic.assemble(results)  # type: ignore[return-value]
            return frame_computed(spec, self.fetch(spec), self.model, scale, clip)

    def abs_sums(self, spec: QuerySpec) -> dict[Key, float]:
        kind = KINDS[spec.kind]
        if kind.abs_statistic is None:
            return {}
        statistic = kind.abs_statistic(spec, PlanModel(self.model))
        with self._snapshot():
            results = [self._aggregate(spec, a, None, filtered=False)
                       for a in statistic.aggregations]
        return statistic.assemble(results)  # type: ignore[return-value]

    def fetch(self, spec: QuerySpec) -> pd.DataFrame:
        """The query's selected rows, and only the variables it names, as a DataFrame indexed
        by their position in the node's data (what :func:`node.rowstore.select_rows` gives
        on the same rows)."""
        compiler = self._compiler(None)
        source = self._selection(compiler, spec, filtered=True)
        codes = [code for code in self.columns if code in named_variables(spec, self.model)]
        items = ", ".join(f"{self.columns[code]} AS c_{i}" for i, code in enumerate(codes))
        sql = f"SELECT {compiler.row()}, {items} FROM ({source}) AS q ORDER BY {ROW}"
        frame = self._frame(compiler, sql)
        frame.index = pd.Index(frame.pop(ROW).to_numpy(dtype="int64"))
        frame.columns = codes
        for code in codes:
            variable = self.model.variables[code]
            if variable.sql_type == "int":
                frame[code] = frame[code].astype("float64").astype("Int64")
            elif variable.is_numeric:
                frame[code] = frame[code].astype("float64")
            else:
                frame[code] = frame[code].astype(object).where(frame[code].notna(), None)
        return frame

    # --- SQL ----------------------------------------------------------------------------

    def _compiler(self, clip: Clipping | None, *, sums: bool = False) -> Compiler:
        """A compiler for one statement; ``sums``: one with exact sums, which DuckDB takes
        in BIGINT where the columns' magnitudes bound every term."""
        magnitudes = self._all_magnitudes() if sums and self.dialect is DUCKDB else {}
        return Compiler(TABLE, self.columns, self.numeric, dict(clip or {}),
                        dialect=self.dialect, magnitudes=magnitudes)

    def _selection(self, compiler: Compiler, spec: QuerySpec, *, filtered: bool) -> str:
        tree = filters.from_json(spec.filters) if filtered and spec.filters is not None \
            else None
        patient = None
        limit, identifier = self.model.max_rows_per_patient, self.model.patient_id
        if filtered and spec.privacy.get("mode") == "dp" and limit is not None \
                and identifier is not None:
            patient = (self.columns[identifier], int(limit))
        # only the datasets this node held when it checked its rows: in a table that others
        # write (PostgreSQL), rows given another node's dataset later must not be counted
        # as that dataset's here
        datasets: Sequence[str] | None = [d for d in spec.datasets if d in self._held]
        if self.own_copy and set(self._held) <= set(spec.datasets):
            datasets = None  # every row with a dataset: no other can appear
        return selection(compiler, datasets, tree, self.columns[DATASET], patient)

    def _compiles(self, spec: QuerySpec) -> bool:
        kind = KINDS[spec.kind]
        assert kind.statistic is not None
        statistic = kind.statistic(spec, PlanModel(self.model), lambda key: 1.0)
        try:
            for a in statistic.aggregations:
                compiler = self._compiler(None)
                aggregation(compiler, self._selection(compiler, spec, filtered=True), a)
        except Unsupported:
            return False
        return True

    def _aggregate(self, spec: QuerySpec, node: Aggregation, clip: Clipping | None, *,
                   filtered: bool) -> Result:
        """The aggregation's results, in one statement per :data:`MAX_MEASURES` measures
        (within the caller's snapshot, every statement reads the same rows; that the groups
        agree is checked all the same)."""
        parts = []
        for start in range(0, max(len(node.measures), 1), MAX_MEASURES):
            compiler = self._compiler(clip, sums=True)
            part = dataclasses.replace(node, measures=node.measures[start:start + MAX_MEASURES])
            statement = aggregation(compiler, self._selection(compiler, spec,
                                                              filtered=filtered), part)
            parts.append(statement.results(self._rows(compiler, statement.sql)))
        if any(part.keys() != parts[0].keys() for part in parts[1:]):
            raise RuntimeError(f"the {self.engine} rows changed while a query ran")
        return {key: sum((part[key] for part in parts[1:]), parts[0][key])
                for key in parts[0]}


def named_variables(spec: QuerySpec, model: DataModel) -> set[str]:
    """The variables a query can read: the dataset, its variables and ``by``, the patient
    identifier, and every model variable its parameters name (terms, axes, outcomes)."""
    out = {DATASET, *spec.variables}
    if spec.by:
        out.add(spec.by)
    if model.patient_id:
        out.add(model.patient_id)
    stack: list[Any] = [dict(spec.parameters)]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, str) and item in model.variables:
            out.add(item)
    return out


def quote_name(name: str) -> str:
    """A source's own column or table name (the operator's, never a researcher's text)."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    """A text the operator configured (a path, a dataset name) as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def fresh_names(prefix: str, columns: Sequence[str], taken: Any) -> dict[str, str]:
    """A column name for something derived from each of ``columns``, clear of the source's
    own names (``taken``)."""
    out: dict[str, str] = {}
    for i, n in enumerate(columns):
        name = f"{prefix}_{i}"
        while name in taken:
            name = "_" + name
        out[n] = name
    return out
