"""Compiling a kind's aggregations (:mod:`stats.aggregates`) and a query's filter
(:mod:`stats.filters`) to one SQL statement with bound parameters.

A small compiler over two closed, whitelisted trees rather than a general SQL builder: every
node type maps to one fixed SQL fragment written here, so the statement follows the
semantics :mod:`stats.aggregates` states operation by operation (NULL for a missing value,
one IEEE operation per node in the tree's order, rounding half to even per row before an
exact sum in HUGEINT), which is what makes the DuckDB node compute the same integers as the
pandas evaluator. Nothing a researcher writes enters the SQL text: values (filter
literals, levels, bin edges, scales, clipping bounds) are bound parameters, and columns are
named by the node's own identifiers (``c0``, ``c1``, ...) looked up from the data model's
variable codes, so a variable name is never quoted into the statement either.

Dialect: DuckDB (``HUGEINT``, ``UHUGEINT``, ``count(*) FILTER``, ``QUALIFY``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stats import filters as flt
from stats.aggregates import (
    EXP_LIMIT,
    Aggregation,
    All,
    Any_,
    Arith,
    Binary,
    BinKey,
    Compare,
    Cond,
    Const,
    CountIf,
    Defined,
    ExactSum,
    Expr,
    FlagKey,
    FloatSum,
    FoldKey,
    Func,
    IfElse,
    Indicator,
    IsLevel,
    Key,
    LevelKey,
    Measure,
    Present,
    Ref,
    Rows,
    Smallest,
    Var,
)

#: the column holding each row's position in the node's data (folds read it)
ROW = "__row"


class Unsupported(Exception):
    """A node of the tree this compiler does not translate (the node computes that kind on
    the fetched rows instead)."""


@dataclass
class Statement:
    """SQL text with ``$n`` placeholders, and the values bound to them (``$1`` first)."""

    sql: str
    params: list[Any] = field(default_factory=list)


@dataclass
class Compiler:
    """Compiles against one table; ``columns`` maps variable codes to column identifiers."""

    table: str
    columns: Mapping[str, str]
    #: variables that are numbers (DOUBLE columns); the others are text (VARCHAR)
    numeric: frozenset[str]
    #: DP clipping bounds per variable
    clip: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    params: list[Any] = field(default_factory=list)

    # --- values -------------------------------------------------------------------------

    def bind(self, value: Any, cast: str | None = None) -> str:
        self.params.append(value)
        # numbered, so the order fragments are built in need not be the order of the text
        place = f"${len(self.params)}"
        return f"CAST({place} AS {cast})" if cast else place

    def column(self, name: str) -> str:
        if name not in self.columns:
            raise Unsupported(f"no column for variable {name!r}")
        return self.columns[name]

    def value(self, name: str) -> str:
        """A numeric variable's value, clipped in DP mode (NULL stays NULL)."""
        column = self.column(name)
        if name not in self.numeric:
            return f"TRY_CAST({column} AS DOUBLE)"
        if name in self.clip:
            low, high = self.clip[name]
            return (f"(CASE WHEN {column} IS NULL THEN NULL ELSE LEAST(GREATEST({column}, "
                    f"{self.bind(float(low), 'DOUBLE')}), {self.bind(float(high), 'DOUBLE')}) "
                    "END)")
        return column

    def expr(self, node: Expr) -> str:
        if isinstance(node, Var):
            return self.value(node.name)
        if isinstance(node, Const):
            return self.bind(float(node.value), "DOUBLE")
        if isinstance(node, Ref):
            return _ref(node.name)
        if isinstance(node, Arith):
            return f"({self.expr(node.left)} {node.op} {self.expr(node.right)})"
        if isinstance(node, Func):
            x = self.expr(node.arg)
            if node.name == "abs":
                return f"abs({x})"
            if node.name == "sqrt":
                return f"(CASE WHEN {x} >= 0 THEN sqrt({x}) END)"
            if node.name == "log":
                return f"(CASE WHEN {x} > 0 THEN ln({x}) END)"
            return f"(CASE WHEN {x} <= {self.bind(EXP_LIMIT, 'DOUBLE')} THEN exp({x}) END)"
        if isinstance(node, Indicator):
            return f"(CASE WHEN {self.cond(node.cond)} THEN 1.0 ELSE 0.0 END)::DOUBLE"
        if isinstance(node, Binary):
            if node.level is None:
                x = self.value(node.name)
                return f"(CASE WHEN {x} = 0 OR {x} = 1 THEN {x} END)"
            column = self.column(node.name)
            return (f"(CASE WHEN {column} IS NULL THEN NULL WHEN {column} = "
                    f"{self.bind(node.level)} THEN 1.0 ELSE 0.0 END)::DOUBLE")
        if isinstance(node, IfElse):
            return (f"(CASE WHEN {self.cond(node.cond)} THEN {self.expr(node.then)} "
                    f"ELSE {self.expr(node.other)} END)")
        if isinstance(node, Smallest):
            return f"LEAST({', '.join(self.expr(i) for i in node.items)})"
        raise Unsupported(type(node).__name__)

    def cond(self, node: Cond) -> str:
        """SQL's three-valued logic is the declared one: only TRUE counts."""
        if isinstance(node, Present):
            return f"({self.column(node.name)} IS NOT NULL)"
        if isinstance(node, Defined):
            return f"({self.expr(node.expr)} IS NOT NULL)"
        if isinstance(node, Compare):
            return f"({self.expr(node.left)} {node.op} {self.expr(node.right)})"
        if isinstance(node, IsLevel):
            return f"({self.column(node.name)} = {self.bind(node.level)})"
        if isinstance(node, All):
            return "(" + " AND ".join(self.cond(i) for i in node.items) + ")" if node.items \
                else "TRUE"
        if isinstance(node, Any_):
            return "(" + " OR ".join(self.cond(i) for i in node.items) + ")" if node.items \
                else "FALSE"
        raise Unsupported(type(node).__name__)

    def key(self, node: Key) -> str:
        if isinstance(node, LevelKey):
            column = self.column(node.name)
            if not node.levels:
                return "-1"
            cases = " ".join(f"WHEN {self.bind(level)} THEN {i}"
                             for i, level in enumerate(node.levels))
            return f"(CASE {column} {cases} ELSE -1 END)"
        if isinstance(node, BinKey):
            # numpy.histogram's bins: [e_i, e_i+1), the last one closed
            x = self.expr(node.expr)
            edges = [float(e) for e in node.edges]
            first, last = self.bind(edges[0], "DOUBLE"), self.bind(edges[-1], "DOUBLE")
            top = self.bind(edges[-1], "DOUBLE")
            below = " + ".join(f"CAST({x} >= {self.bind(e, 'DOUBLE')} AS INTEGER)"
                               for e in edges)
            return (f"(CASE WHEN {x} IS NULL THEN -1 WHEN {x} < {first} OR {x} > {last} "
                    f"THEN -2 WHEN {x} = {top} THEN {len(edges) - 2} ELSE {below} - 1 END)")
        if isinstance(node, FoldKey):
            return _splitmix(f"(CAST({ROW} AS UHUGEINT) + {self.bind(node.seed, 'UHUGEINT')})",
                             self.bind(node.folds, "UHUGEINT"))
        if isinstance(node, FlagKey):
            return f"(CASE WHEN {self.cond(node.cond)} THEN 1 ELSE 0 END)"
        raise Unsupported(type(node).__name__)

    def measure(self, node: Measure) -> str:
        if isinstance(node, Rows):
            return "count(*)"
        if isinstance(node, CountIf):
            return f"count(*) FILTER (WHERE {self.cond(node.cond)})"
        if isinstance(node, ExactSum):
            # the fixed point per row, then an exact integer sum: DuckDB casts a DOUBLE to
            # HUGEINT rounding half to even (nearbyint), as round_even would, at half the cost
            # (tests/node/test_duckdb_rows.py checks the ties)
            scaled = f"({self.expr(node.expr)} * {self.bind(float(node.scale), 'DOUBLE')})"
            return f"coalesce(sum(CAST({scaled} AS HUGEINT)), 0)"
        if isinstance(node, FloatSum):
            return f"coalesce(sum({self.expr(node.expr)}), 0.0)"
        raise Unsupported(type(node).__name__)

    # --- filters ------------------------------------------------------------------------

    def filter(self, tree: flt.Filter) -> str:
        """A researcher's filter, with :func:`node.filter_rows.evaluate`'s semantics."""
        if isinstance(tree, flt.And):
            return "(" + " AND ".join(self.filter(i) for i in tree.items) + ")" if tree.items \
                else "TRUE"
        if isinstance(tree, flt.Or):
            return "(" + " OR ".join(self.filter(i) for i in tree.items) + ")" if tree.items \
                else "FALSE"
        if isinstance(tree, flt.Not):
            return f"(NOT {self.filter(tree.item)})"
        if tree.variable not in self.columns:  # a variable the data lacks: always missing
            return "FALSE" if isinstance(tree, flt.IsNull) and tree.negated else (
                "TRUE" if isinstance(tree, flt.IsNull) else "NULL")
        column = self.columns[tree.variable]
        if isinstance(tree, flt.IsNull):
            return f"({column} IS {'NOT ' if tree.negated else ''}NULL)"
        if isinstance(tree, flt.Comparison):
            op = "<>" if tree.op == "!=" else "=" if tree.op == "==" else tree.op
            if isinstance(tree.value, str):
                return f"(CAST({column} AS VARCHAR) {op} {self.bind(tree.value)})"
            return f"({self.number(tree.variable)} {op} {self.bind(float(tree.value), 'DOUBLE')})"
        if isinstance(tree, flt.Membership):
            texts = [v for v in tree.values if isinstance(v, str)]
            numbers = [float(v) for v in tree.values if not isinstance(v, str)]
            present, hits = [], []
            if texts:
                present.append(f"{column} IS NOT NULL")
                listed = ", ".join(self.bind(t) for t in texts)
                hits.append(f"coalesce(CAST({column} AS VARCHAR) IN ({listed}), FALSE)")
            if numbers:
                number = self.number(tree.variable)
                present.append(f"{number} IS NOT NULL")
                listed = ", ".join(self.bind(n, "DOUBLE") for n in numbers)
                hits.append(f"coalesce({number} IN ({listed}), FALSE)")
            hit = " OR ".join(hits)
            return (f"(CASE WHEN {' OR '.join(present)} THEN "
                    f"{'NOT ' if tree.negated else ''}({hit}) END)")
        raise Unsupported(type(tree).__name__)

    def number(self, name: str) -> str:
        column = self.columns[name]
        return column if name in self.numeric else f"TRY_CAST({column} AS DOUBLE)"


def _ref(name: str) -> str:
    # derived columns are named by the kind (t0, t1, ...): only word characters reach SQL
    if not name.isidentifier():
        raise Unsupported(f"derived column name {name!r}")
    return f"d_{name}"


_MASK64 = (1 << 64) - 1


def _splitmix(z: str, folds: str) -> str:
    """splitmix64(z) mod folds, as :func:`stats.kinds.frame.fold_numbers` computes it:
    UHUGEINT holds every 64 x 64-bit product, reduced mod 2^64 after each step."""
    m = f"{_MASK64}::UHUGEINT"
    z = f"(({z} + {0x9E3779B97F4A7C15}::UHUGEINT) % ({m} + 1))"
    z = f"((xor({z}, {z} >> 30) * {0xBF58476D1CE4E5B9}::UHUGEINT) % ({m} + 1))"
    z = f"((xor({z}, {z} >> 27) * {0x94D049BB133111EB}::UHUGEINT) % ({m} + 1))"
    z = f"xor({z}, {z} >> 31)"
    return f"CAST(({z}) % {folds} AS BIGINT)"


def selection(compiler: Compiler, datasets: Sequence[str], tree: flt.Filter | None,
              dataset_column: str, patient: tuple[str, int] | None = None) -> str:
    """The query's rows: its datasets, its filter, and in DP mode at most ``limit`` rows
    per patient (the first ones; rows without an identifier each their own patient)."""
    listed = ", ".join(compiler.bind(d) for d in datasets)
    where = f"{dataset_column} IN ({listed})"
    if tree is not None:
        where += f" AND {compiler.filter(tree)} IS TRUE"
    sql = f"SELECT * FROM {compiler.table} WHERE {where}"
    if patient is not None:
        column, limit = patient
        sql += (f" QUALIFY {column} IS NULL OR row_number() OVER (PARTITION BY {column} "
                f"ORDER BY {ROW}) <= {compiler.bind(int(limit), 'BIGINT')}")
    return sql


def aggregation(compiler: Compiler, source: str, node: Aggregation) -> Statement:
    """One aggregation over the rows ``source`` selects: key columns, then the hidden row
    count, then the measures."""
    inner = source
    for name, expr in node.derived:
        inner = f"SELECT *, {compiler.expr(expr)} AS {_ref(name)} FROM ({inner})"
    keys = [compiler.key(k) for k in node.keys]
    measures = ["count(*)"] + [compiler.measure(m) for m in node.measures]
    where = f" WHERE {compiler.cond(node.where)}" if node.where is not None else ""
    items = [f"{k} AS k{i}" for i, k in enumerate(keys)] + [
        f"{m} AS m{i}" for i, m in enumerate(measures)]
    sql = f"SELECT {', '.join(items)} FROM ({inner}){where}"
    if keys:
        sql += " GROUP BY " + ", ".join(f"k{i}" for i in range(len(keys)))
    return Statement(sql, compiler.params)
