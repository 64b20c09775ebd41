"""Compiling a kind's aggregations (:mod:`stats.aggregates`) and a query's filter
(:mod:`stats.filters`) to one SQL statement with bound parameters.

A small compiler over two closed, whitelisted trees rather than a general SQL builder: every
node type maps to one fixed SQL fragment written here, so the statement follows the
semantics :mod:`stats.aggregates` states operation by operation (NULL for a missing value,
one IEEE operation per node in the tree's order, rounding half to even per row before an
exact integer sum), which is what makes the DuckDB and PostgreSQL nodes compute the same
integers as the pandas evaluator. Nothing a researcher writes enters the SQL text: values (filter
literals, levels, bin edges, scales, clipping bounds) are bound parameters, and columns are
named by the node's own identifiers (``c0``, ``c1``, ...) looked up from the data model's
variable codes, so a variable name is never quoted into the statement either.

Why not SQLAlchemy Core, ibis or sqlglot: the trees are closed and small (a few dozen node
types), and what matters is not portability but that every node's SQL has one exact meaning
the tests pin down (NULL propagation, rounding, the 64-bit wrap-around of the fold hash);
a general builder would add a layer whose translation of each node we would still have to
check, and would not help with what differs (exact integer sums, bit operations). So each
node's fragment is written here, once per dialect where the dialects differ.

Dialects (:class:`Dialect`): everything is standard SQL both accept (``count(*) FILTER``,
``LEAST``/``GREATEST``, ``CASE``, window functions; no ``QUALIFY``: rows per patient are
limited in a subquery), except

* **DuckDB**: ``$n`` placeholders; exact sums as ``sum(CAST(x AS HUGEINT))`` (the cast
  rounds half to even), or ``BIGINT`` where the columns' magnitudes bound every term below
  2^62 (:meth:`Compiler.bound`; grouped, large terms as high and low bits summed apart);
  counts with ``count(x)``/``count_if``; a level key over a text column grouped by the
  codes themselves (PostgreSQL's too: its typed view's codes compare byte by byte), read as
  level indices by :meth:`Statement.results`; the fold hash in ``UHUGEINT`` with ``xor``;
  text read as a number with ``TRY_CAST``.
* **Spark** (4, SQL with named parameters; :mod:`node.sql.spark_rows`): exact sums as
  ``CAST(rint(x) AS BIGINT)`` per row (Spark's cast to an integer truncates, ``rint``
  rounds half to even, and a DOUBLE cast to DECIMAL keeps 17 digits), summed as its high
  and low 31 bits in BIGINT and joined in ``DECIMAL(38,0)`` (a DECIMAL sum adds BigDecimals);
  ``try_cast`` for text; the fold hash with BIGINT XOR and shifts and DECIMAL products of
  32-bit halves (BIGINT arithmetic raises on overflow in ANSI mode). ``exp`` and ``ln``
  are Java's, which may differ from C's in the last bit: a per-row term can round one unit
  apart, far inside the 1e-12 relative the stores are held to.
* **PostgreSQL** (15 and later, through psycopg's ``RawCursor``, which sends ``$n``
  placeholders to the server as bound parameters): exact sums as ``sum(CAST(x AS
  BIGINT))``, whose cast rounds with ``rint`` (half to even; ``round(numeric)`` would round
  half away from zero) and whose sum is ``numeric`` (exact); a per-row value beyond
  2^63 is an error there, not a wrong sum (the plan keeps every sum below 2^62 anyway). The
  fold hash wraps modulo 2^64 in ``numeric`` and uses ``bit(64)`` for the logical shifts;
  ``exp`` of very negative values is 0 as in C (PostgreSQL would raise an underflow error);
  text is read as a number with Arrow's grammar (as the pandas store reads it), never with
  a cast that could fail. PostgreSQL raises an error where an IEEE operation on finite
  values overflows or underflows (C gives inf or 0). A product that would round to 0 is
  given C's value in SQL (:meth:`Compiler.times`, its operands first made columns by
  :func:`pg_operands`): otherwise one row's value could send a query to the fetched rows,
  whose time would tell it (threat model D11). Where PostgreSQL still raises (an overflow,
  a quotient that underflows: only on values beyond about 1e127 or below about 1e-140),
  :mod:`node.sql.postgres_rows` computes that query on fetched rows, with the same integers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stats import filters as flt
from stats.aggregates import (
    EXP_LIMIT,
    Aggregation,
    All,
    Any_,
    ArgMinKey,
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
    IntervalKey,
    IsLevel,
    Key,
    LevelKey,
    Measure,
    Present,
    Ref,
    Result,
    Rows,
    Smallest,
    Var,
    parts_of,
    refs_of,
)

#: exact sums whose per-row terms are below this in magnitude are taken in BIGINT (half of
#: 2^63: room for the bound's own rounding)
_NARROW = float(2**62)
#: and above this, their high and low bits are summed apart (see ExactSum)
_SPLIT = float(2**40)

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
    #: per key, where the statement groups by a text column's own value rather than by the
    #: level's index: each level's index by its code (None where the key is the index)
    codes: tuple[Mapping[str, int] | None, ...] = ()

    def results(self, rows: Iterable[Sequence[Any]]) -> Result:
        """The measures per key from the statement's rows (keys, the row count, measures):
        codes read as level indices, groups of codes outside the levels (and of none)
        added into the key -1 (every measure is a count or a sum), and no group where no
        row was (an aggregate without keys)."""
        totals: dict[tuple[int, ...], tuple[int | float, ...]] = {}
        width = len(self.codes)
        for row in rows:
            key = tuple(int(value) if codes is None else codes.get(value, -1)
                        for value, codes in zip(row[:width], self.codes, strict=True))
            values = tuple(_number(v) for v in row[width:])
            found = totals.get(key)
            totals[key] = values if found is None else tuple(
                a + b for a, b in zip(found, values, strict=True))
        return {key: values[1:] for key, values in totals.items() if values[0] != 0}


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines (see the module doc)."""

    name: str
    #: the compiler's type names (DuckDB's) as this engine spells them
    types: Mapping[str, str]
    #: the most grid points an interval key, or edges a bin key, is compiled for (each is a
    #: bound parameter, searched in nested CASE; a longer grid is computed on the fetched
    #: rows)
    max_points: int = 4096

    def type(self, name: str) -> str:
        return self.types.get(name, name)


DUCKDB = Dialect("duckdb", {})
POSTGRES = Dialect("postgresql", {"DOUBLE": "DOUBLE PRECISION", "VARCHAR": "TEXT",
                                  "UHUGEINT": "NUMERIC", "HUGEINT": "NUMERIC"})
# Spark's optimizer ran out of the JVM's heap on the search over 3,000 edges, and the
# session with it (500 took 5 s)
SPARK = Dialect("spark", {"VARCHAR": "STRING", "HUGEINT": "DECIMAL(38,0)"}, max_points=512)

#: DuckDB's and PostgreSQL's :attr:`Dialect.max_points`
MAX_INTERVALS = DUCKDB.max_points

#: the largest x whose exp(x) is 0.0 in C (and numpy): PostgreSQL raises an underflow error
#: below it instead
EXP_ZERO = -745.1332191019412


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
    dialect: Dialect = DUCKDB
    #: whether the statement reads each row's position (:data:`ROW`): folds, rows per patient
    uses_row: bool = False
    #: the largest magnitude of each numeric variable's finite values over the whole table,
    #: where the store knows it: an exact sum whose per-row terms it bounds below 2^62 is
    #: taken in BIGINT (DuckDB adds BIGINTs into an exact HUGEINT, and casts a DOUBLE to
    #: BIGINT three to four times faster than to HUGEINT)
    magnitudes: Mapping[str, float] = field(default_factory=dict)
    #: the bounds of the derived columns compiled so far (:func:`aggregation`)
    ref_bounds: dict[str, float] = field(default_factory=dict)
    #: derived columns that are a column or a constant, read in place (:func:`aggregation`)
    inlined: dict[str, str] = field(default_factory=dict)
    #: the powers of two PostgreSQL's guarded product compares with, each bound once
    powers: dict[int, str] = field(default_factory=dict)
    #: whether the statement groups its rows by keys (:func:`aggregation`)
    grouped: bool = False

    # --- values -------------------------------------------------------------------------

    def bind(self, value: Any, cast: str | None = None) -> str:
        self.params.append(value)
        # numbered, so the order fragments are built in need not be the order of the text
        place = f"${len(self.params)}"
        return f"CAST({place} AS {self.dialect.type(cast)})" if cast else place

    def double(self, sql: str) -> str:
        return f"CAST({sql} AS {self.dialect.type('DOUBLE')})"

    def text_number(self, column: str) -> str:
        """A text column's value as a number, NULL where it is none."""
        if self.dialect is POSTGRES:
            return postgres_number(column)
        if self.dialect is SPARK:
            return f"try_cast({column} AS DOUBLE)"
        return f"TRY_CAST({column} AS DOUBLE)"

    def row(self) -> str:
        self.uses_row = True
        return ROW

    def column(self, name: str) -> str:
        if name not in self.columns:
            raise Unsupported(f"no column for variable {name!r}")
        return self.columns[name]

    def value(self, name: str) -> str:
        """A numeric variable's value, clipped in DP mode (NULL stays NULL)."""
        column = self.column(name)
        if name not in self.numeric:
            return self.text_number(column)
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
            return self.inlined.get(node.name, _ref(node.name))
        if isinstance(node, Arith):
            if node.op == "*" and self.dialect is POSTGRES:
                return self.times(self.expr(node.left), self.expr(node.right))
            return f"({self.expr(node.left)} {node.op} {self.expr(node.right)})"
        if isinstance(node, Func):
            x = self.expr(node.arg)
            if node.name == "abs":
                return f"abs({x})"
            if node.name == "sqrt":
                return f"(CASE WHEN {x} >= 0 THEN sqrt({x}) END)"
            if node.name == "log":
                return f"(CASE WHEN {x} > 0 THEN ln({x}) END)"
            if self.dialect is POSTGRES:
                return (f"(CASE WHEN {x} <= {self.bind(EXP_ZERO, 'DOUBLE')} THEN 0.0 "
                        f"WHEN {x} <= {self.bind(EXP_LIMIT, 'DOUBLE')} THEN exp({x}) END)")
            return f"(CASE WHEN {x} <= {self.bind(EXP_LIMIT, 'DOUBLE')} THEN exp({x}) END)"
        if isinstance(node, Indicator):
            return self.double(f"(CASE WHEN {self.cond(node.cond)} THEN 1.0 ELSE 0.0 END)")
        if isinstance(node, Binary):
            if node.level is None:
                x = self.value(node.name)
                return f"(CASE WHEN {x} = 0 OR {x} = 1 THEN {x} END)"
            column = self.column(node.name)
            return self.double(f"(CASE WHEN {column} IS NULL THEN NULL WHEN {column} = "
                               f"{self.bind(node.level)} THEN 1.0 ELSE 0.0 END)")
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
            # (the edges at or below x, minus one, found by a binary search: a sum of one
            # comparison per edge nested too deep for every engine from a few hundred edges)
            if len(node.edges) > self.dialect.max_points:
                raise Unsupported(f"{len(node.edges)} bin edges")
            x = self.expr(node.expr)
            edges = [float(e) for e in node.edges]
            first, last = self.bind(edges[0], "DOUBLE"), self.bind(edges[-1], "DOUBLE")
            top = self.bind(edges[-1], "DOUBLE")
            return (f"(CASE WHEN {x} IS NULL THEN -1 WHEN {x} < {first} OR {x} > {last} "
                    f"THEN -2 WHEN {x} = {top} THEN {len(edges) - 2} "
                    f"ELSE {self.interval(x, edges, -1, closed=True)} END)")
        if isinstance(node, FoldKey):
            if self.dialect is SPARK:
                start = (f"(CAST({self.row()} AS DECIMAL(38,0)) + "
                         f"{self.bind(str(node.seed), 'DECIMAL(38,0)')})")
                return _splitmix_spark(start, self.bind(node.folds, "BIGINT"))
            start = f"(CAST({self.row()} AS {self.dialect.type('UHUGEINT')}) + " \
                f"{self.bind(node.seed, 'UHUGEINT')})"
            if self.dialect is POSTGRES:
                return _splitmix_postgres(start, self.bind(node.folds, "UHUGEINT"))
            return _splitmix(start, self.bind(node.folds, "UBIGINT"))
        if isinstance(node, FlagKey):
            return f"(CASE WHEN {self.cond(node.cond)} THEN 1 ELSE 0 END)"
        if isinstance(node, IntervalKey):
            if len(node.grid) > self.dialect.max_points:
                raise Unsupported(f"a grid of {len(node.grid)} points")
            return self.interval(self.expr(node.expr), [float(g) for g in node.grid], 0)
        if isinstance(node, ArgMinKey):
            # numpy.argmin, the first on ties: item i is the answer when no earlier item was
            # (so one of them is smaller than every earlier one) and it is <= every later one
            items = [self.expr(i) for i in node.items]
            cases = " ".join(
                f"WHEN {' AND '.join(f'{a} <= {b}' for b in items[i + 1:])} THEN {i}"
                for i, a in enumerate(items[:-1]))
            last = len(items) - 1
            return f"(CASE {cases} ELSE {last} END)" if cases else "0"
        raise Unsupported(type(node).__name__)

    def interval(self, x: str, grid: list[float], low: int, *, closed: bool = False) -> str:
        """How many of ``grid`` (sorted) lie strictly below x (``closed``: at or below it),
        plus ``low``: a binary search, so a row takes log2(len(grid)) comparisons. NaN
        (SQL's largest value, numpy's last place) lies above every point."""
        if not grid:
            return str(low)
        middle = len(grid) // 2
        above = ">=" if closed else ">"
        return (f"(CASE WHEN {x} {above} {self.bind(grid[middle], 'DOUBLE')} THEN "
                f"{self.interval(x, grid[middle + 1:], low + middle + 1, closed=closed)} ELSE "
                f"{self.interval(x, grid[:middle], low, closed=closed)} END)")

    def measure(self, node: Measure) -> str:
        if isinstance(node, Rows):
            return "count(*)"
        if isinstance(node, CountIf):
            if self.dialect is DUCKDB:
                # DuckDB counts a column's values, or a condition's rows with count_if, in a
                # third of the time of count(*) FILTER (count_if of no true row is NULL)
                if isinstance(node.cond, Present):
                    return f"count({self.column(node.cond.name)})"
                return f"coalesce(count_if({self.cond(node.cond)}), 0)"
            return f"count(*) FILTER (WHERE {self.cond(node.cond)})"
        if isinstance(node, ExactSum):
            # the fixed point per row, then an exact integer sum: DuckDB casts a DOUBLE to
            # HUGEINT rounding half to even (nearbyint), as round_even would, at half the cost
            # (tests/node/test_duckdb_rows.py checks the ties); PostgreSQL's cast to BIGINT
            # rounds with rint too, and its sum of BIGINT is an exact NUMERIC
            scale = self.bind(float(node.scale), "DOUBLE")
            scaled = self.times(self.expr(node.expr), scale) \
                if self.dialect is POSTGRES and abs(float(node.scale)) < 1 \
                else f"({self.expr(node.expr)} * {scale})"
            largest = self.bound(node.expr) * abs(float(node.scale))
            if self.dialect is SPARK:
                # Spark's cast to an integer truncates, rint rounds half to even (beyond
                # 2^63 the cast raises in ANSI mode); a sum in DECIMAL(38,0) adds Java
                # BigDecimals, six to ten times slower than longs, so the high and low 31
                # bits of each term are summed apart in BIGINT (exact below 2^31 rows, and
                # an overflow raises in ANSI mode) and joined in DECIMAL once per group
                term = f"CAST(rint({scaled}) AS BIGINT)"
                return (f"coalesce(CAST(sum(shiftright({term}, 31)) AS DECIMAL(38,0)) * "
                        f"{1 << 31} + sum({term} & {(1 << 31) - 1}), 0)")
            if self.dialect is DUCKDB and self.grouped and _SPLIT <= largest < _NARROW:
                # DuckDB's grouped sum adds large BIGINTs into its HUGEINT state slowly (a
                # carry every few rows; its sum without groups does not): the high and low
                # 31 bits of each term are summed apart (an arithmetic shift, so high * 2^31
                # + low is the term) and joined per group
                term = f"CAST({scaled} AS BIGINT)"
                return (f"coalesce(CAST(sum({term} >> 31) AS HUGEINT) * {1 << 31} + "
                        f"sum({term} & {(1 << 31) - 1}), 0)")
            integer = "BIGINT" if self.dialect is POSTGRES or largest < _NARROW else "HUGEINT"
            return f"coalesce(sum(CAST({scaled} AS {integer})), 0)"
        if isinstance(node, FloatSum):
            return f"coalesce(sum({self.expr(node.expr)}), 0.0)"
        raise Unsupported(type(node).__name__)

    def times(self, a: str, b: str) -> str:
        """PostgreSQL: a * b as C computes it, where PostgreSQL would raise on a product of
        non-zero values that rounds to 0 (C gives 0). Such a product is tested for on the
        operands scaled by 2^600 (exact, and far from either end of the range); a product
        right at half the smallest subnormal (2^-1075 after rounding) reads 0, and a product
        of opposite signs that rounds to 0 reads +0.0 where C gives -0.0 (sums, comparisons
        and casts do not tell them apart). An overflow still raises (see the module doc). ``a`` and ``b`` are read several times:
        :func:`pg_operands` makes them columns or constants first."""
        def p(exponent: int) -> str:
            if exponent not in self.powers:
                self.powers[exponent] = self.bind(2.0 ** exponent, "DOUBLE")
            return self.powers[exponent]

        fast, zero, big, up, least = p(-537), p(-538), p(400), p(600), p(-475)
        if a == b:  # a square: one operand to test
            return (f"(CASE WHEN abs({a}) >= {fast} OR {a} = 0 THEN {a} * {a} "
                    f"WHEN abs({a}) < {zero} THEN 0.0 WHEN abs(({a} * {up}) * {a}) <= "
                    f"{least} THEN 0.0 ELSE {a} * {a} END)")
        return (f"(CASE WHEN abs({a}) >= {fast} AND abs({b}) >= {fast} THEN {a} * {b} "
                f"WHEN {a} = 0 OR {b} = 0 THEN {a} * {b} "
                f"WHEN abs({a}) < {zero} AND abs({b}) < {zero} THEN 0.0 "
                f"WHEN abs({a}) < {fast} AND abs({b}) <= {big} THEN (CASE WHEN "
                f"abs(({a} * {up}) * {b}) <= {least} THEN 0.0 ELSE {a} * {b} END) "
                f"WHEN abs({b}) < {fast} AND abs({a}) <= {big} THEN (CASE WHEN "
                f"abs(({b} * {up}) * {a}) <= {least} THEN 0.0 ELSE {a} * {b} END) "
                f"ELSE {a} * {b} END)")

    def bound(self, node: Expr) -> float:
        """An upper bound of ``|node|`` on every row (inf where none is known): interval
        arithmetic over the tree from :attr:`magnitudes` and the clipping bounds. Only a
        choice of integer width rests on it; a bound that were wrong would make DuckDB's
        cast raise, never give a wrong sum."""
        if isinstance(node, Var):
            if node.name not in self.numeric or node.name not in self.magnitudes:
                return math.inf
            found = self.magnitudes[node.name]
            if node.name in self.clip:
                found = min(found, max(abs(float(b)) for b in self.clip[node.name]))
            return found
        if isinstance(node, Const):
            return abs(float(node.value))
        if isinstance(node, Ref):
            return self.ref_bounds.get(node.name, math.inf)
        if isinstance(node, Arith):
            left, right = self.bound(node.left), self.bound(node.right)
            if node.op in "+-":
                return left + right
            if node.op == "*":
                return left * right if left and right else 0.0
            return math.inf
        if isinstance(node, Func):
            x = self.bound(node.arg)
            if node.name == "abs":
                return x
            if node.name == "sqrt":
                return math.sqrt(x)
            if node.name == "exp":
                return math.exp(x) if x < EXP_LIMIT else math.inf
            return math.inf
        if isinstance(node, Indicator | Binary):
            return 1.0
        if isinstance(node, IfElse):
            return max(self.bound(node.then), self.bound(node.other))
        if isinstance(node, Smallest):
            return max((self.bound(i) for i in node.items), default=math.inf)
        return math.inf

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
                return f"(CAST({column} AS {self.dialect.type('VARCHAR')}) {op} " \
                    f"{self.bind(tree.value)})"
            return f"({self.number(tree.variable)} {op} {self.bind(float(tree.value), 'DOUBLE')})"
        if isinstance(tree, flt.Membership):
            texts = [v for v in tree.values if isinstance(v, str)]
            numbers = [float(v) for v in tree.values if not isinstance(v, str)]
            present, hits = [], []
            if texts:
                present.append(f"{column} IS NOT NULL")
                listed = ", ".join(self.bind(t) for t in texts)
                hits.append(f"coalesce(CAST({column} AS {self.dialect.type('VARCHAR')}) IN "
                            f"({listed}), FALSE)")
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
        return column if name in self.numeric else self.text_number(column)


def _ref(name: str) -> str:
    # derived columns are named by the kind (t0, t1, ...): only word characters reach SQL
    if not name.isidentifier():
        raise Unsupported(f"derived column name {name!r}")
    return f"d_{name}"


_MASK64 = (1 << 64) - 1


def _splitmix(z: str, folds: str) -> str:
    """splitmix64(z) mod folds, as :func:`stats.kinds.frame.fold_numbers` computes it:
    UHUGEINT holds every 64 x 64-bit product, reduced mod 2^64 after each step by masking
    (a 128-bit division per step made the hash most of a folded statement's time), and the
    last modulo taken in UBIGINT."""
    m = f"{_MASK64}::UHUGEINT"
    z = f"(({z} + {0x9E3779B97F4A7C15}::UHUGEINT) & {m})"
    z = f"((xor({z}, {z} >> 30) * {0xBF58476D1CE4E5B9}::UHUGEINT) & {m})"
    z = f"((xor({z}, {z} >> 27) * {0x94D049BB133111EB}::UHUGEINT) & {m})"
    z = f"xor({z}, {z} >> 31)"
    return f"CAST(CAST({z} AS UBIGINT) % {folds} AS BIGINT)"


def _splitmix_postgres(z: str, folds: str) -> str:
    """:func:`_splitmix` in PostgreSQL: the state is a signed BIGINT (two's complement of the
    unsigned value); products are taken in NUMERIC and wrapped modulo 2^64 (shifted to be
    non-negative first: NUMERIC's mod keeps the dividend's sign); ``bit(64)`` shifts are
    logical, as the unsigned hash needs."""
    def signed(unsigned: str) -> str:
        return f"CAST(mod({unsigned} + {2**63 + 2**127}, {2**64}) - {2**63} AS BIGINT)"

    def xorshift(s: str, k: int) -> str:
        return f"({s} # CAST(CAST({s} AS bit(64)) >> {k} AS BIGINT))"

    def times(s: str, c: int) -> str:
        return signed(f"CAST({s} AS NUMERIC) * {c}")

    s = _mixed(signed(f"({z} + {0x9E3779B97F4A7C15})"), xorshift, times)
    return f"CAST(mod(CAST({s} AS NUMERIC) + {2**64}, {2**64}) % {folds} AS BIGINT)"


def _splitmix_spark(z: str, folds: str) -> str:
    """:func:`_splitmix` in ANSI Spark, where BIGINT arithmetic raises on overflow and
    DECIMAL holds 38 digits: the state is a signed BIGINT (XOR and logical shifts), each
    product modulo 2^64 is taken in DECIMAL with the constant cut into 32-bit halves (so
    no product passes 2^97)."""
    two32, two63, two64 = 1 << 32, 1 << 63, 1 << 64

    def signed(value: str) -> str:
        return f"CAST(pmod({value} + {two63}, {two64}) - {two63} AS BIGINT)"

    def unsigned(s: str) -> str:
        return f"pmod(CAST({s} AS DECIMAL(38,0)), {two64})"

    def xorshift(s: str, k: int) -> str:
        return f"({s} ^ shiftrightunsigned({s}, {k}))"

    def times(s: str, c: int) -> str:
        u = unsigned(s)
        return signed(f"({u} * {c & (two32 - 1)} + pmod({u} * {c >> 32}, {two32}) * {two32})")

    s = _mixed(signed(f"({z} + {0x9E3779B97F4A7C15})"), xorshift, times)
    return f"CAST(pmod({unsigned(s)}, {folds}) AS BIGINT)"


def _mixed(s: str, xorshift: Callable[[str, int], str], times: Callable[[str, int], str]
           ) -> str:
    """splitmix64's mixing of a signed 64-bit state, in a dialect's XOR-shift and product
    modulo 2^64."""
    s = times(xorshift(s, 30), 0xBF58476D1CE4E5B9)
    s = times(xorshift(s, 27), 0x94D049BB133111EB)
    return xorshift(s, 31)


#: text PostgreSQL reads as a number as the pandas store does (Arrow's grammar): a finite
#: decimal, or inf / infinity in any case, with an optional sign
_PG_FINITE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_PG_INFINITE = r"^[+-]?(inf|infinity)$"
#: decimals whose exponent has more than four digits: NUMERIC would not take them
_PG_HUGE_EXPONENT = r"[eE][+-]?0*[0-9]{5,}$"
_PG_ZERO = r"^[+-]?[0.]*([eE]|$)"


def _exact_decimal(numerator: int, power_of_two: int) -> str:
    """numerator * 2^power_of_two written out exactly as a decimal."""
    if power_of_two >= 0:
        return str(numerator << power_of_two)
    digits = str(numerator * 5 ** -power_of_two).rjust(-power_of_two + 1, "0")
    return f"{digits[:power_of_two]}.{digits[power_of_two:]}"


#: the magnitudes from which a decimal rounds to infinity, and up to which it rounds to 0
#: (half of DBL_MAX's last step above it; half the smallest subnormal, a tie to even 0)
_PG_OVERFLOW = _exact_decimal(2**54 - 1, 970)
_PG_UNDERFLOW = _exact_decimal(1, -1075)


def postgres_float(value: str) -> str:
    """A NUMERIC as the nearest double (what Arrow and C give), never an error: PostgreSQL's
    own cast refuses values that round to infinity or to 0. NaN stays NaN."""
    return (f"(CASE WHEN {value} = 'NaN' THEN CAST('NaN' AS DOUBLE PRECISION) "
            f"WHEN abs({value}) >= {_PG_OVERFLOW} THEN CAST(sign({value}) AS DOUBLE PRECISION)"
            f" * CAST('Infinity' AS DOUBLE PRECISION) WHEN abs({value}) <= {_PG_UNDERFLOW} "
            f"THEN 0.0 ELSE CAST({value} AS DOUBLE PRECISION) END)")


def postgres_number(text: str) -> str:
    """A text's number as the pandas store reads it (NULL where it reads none)."""
    exact = f"CAST({text} AS NUMERIC)"
    return (f"(CASE WHEN {text} ~ '{_PG_FINITE}' THEN (CASE WHEN {text} ~ '{_PG_HUGE_EXPONENT}'"
            f" THEN (CASE WHEN {text} ~ '{_PG_ZERO}' OR {text} ~ '[eE]-' THEN 0.0 WHEN "
            f"{text} ~ '^-' THEN CAST('-Infinity' AS DOUBLE PRECISION) ELSE "
            f"CAST('Infinity' AS DOUBLE PRECISION) END) ELSE {postgres_float(exact)} END) "
            f"WHEN {text} ~* '{_PG_INFINITE}' THEN CAST({text} AS DOUBLE PRECISION) END)")


def selection(compiler: Compiler, datasets: Sequence[str] | None, tree: flt.Filter | None,
              dataset_column: str, patient: tuple[str, int] | None = None) -> str:
    """The query's rows: its datasets (``None``: every row with a dataset), its filter, and
    in DP mode at most ``limit`` rows per patient (the first ones; rows without an
    identifier each their own patient)."""
    if datasets is None:
        where = f"{dataset_column} IS NOT NULL"
    elif not datasets:  # none of the asked datasets is held here: no row
        where = "FALSE"
    else:
        listed = ", ".join(compiler.bind(d) for d in datasets)
        where = f"{dataset_column} IN ({listed})"
    if tree is not None:
        where += f" AND {compiler.filter(tree)} IS TRUE"
    sql = f"SELECT * FROM {compiler.table} WHERE {where}"
    if patient is not None:
        column, limit = patient
        # a subquery rather than QUALIFY (which PostgreSQL lacks)
        sql = (f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {column} ORDER BY "
               f"{compiler.row()}) AS __rank FROM ({sql}) AS selected) AS ranked WHERE "
               f"{column} IS NULL OR __rank <= {compiler.bind(int(limit), 'BIGINT')}")
    return sql


def pg_operands(node: Aggregation) -> Aggregation:
    """The aggregation with every operand of a product that is itself a product (or holds
    one), and every exact sum's term that holds one where the sum is scaled by less than 1,
    a derived column, one per distinct expression: PostgreSQL's guarded product
    (:meth:`Compiler.times`) reads its operands several times, and a product of products
    would otherwise grow the statement exponentially. Values are unchanged (the same IEEE
    operations, computed once per row). Nothing is hoisted out of a CASE branch
    (:class:`IfElse`), where it would be computed on rows the branch does not take; an
    operand is computed on rows the aggregation's ``where`` leaves out."""
    derived: list[tuple[str, Expr]] = []
    names: dict[Expr, str] = {}
    made = [0]  # columns made so far (a name is never reused, though ``names`` forgets)

    def holds_product(expr: Expr) -> bool:
        return any(isinstance(part, Arith) and part.op == "*" for part in parts_of(expr))

    def simple(expr: Expr, hoist: bool) -> Expr:
        expr = rewrite(expr, hoist)
        if not hoist or not holds_product(expr):
            return expr
        if expr not in names:
            names[expr] = f"pg{made[0]}"
            made[0] += 1
            derived.append((names[expr], expr))
        return Ref(names[expr])

    def rewrite(item: Any, hoist: bool = True) -> Any:
        if isinstance(item, Arith) and item.op == "*":
            return Arith("*", simple(item.left, hoist), simple(item.right, hoist))
        if isinstance(item, ExactSum) and abs(float(item.scale)) < 1:
            return dataclasses.replace(item, expr=simple(item.expr, hoist))
        if isinstance(item, IfElse):
            return IfElse(rewrite(item.cond, hoist), rewrite(item.then, False),
                          rewrite(item.other, False))
        if isinstance(item, tuple):
            return tuple(rewrite(i, hoist) for i in item)
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return dataclasses.replace(item, **{f.name: rewrite(getattr(item, f.name), hoist)
                                                for f in dataclasses.fields(item)})
        return item

    for name, expr in node.derived:
        derived.append((name, rewrite(expr)))
        for stale in [e for e in names if name in refs_of(e)]:
            del names[stale]  # a name defined again: what read it reads another column
    measures, keys = rewrite(node.measures), rewrite(node.keys)
    where = rewrite(node.where)
    return Aggregation(measures, keys, where, tuple(derived))


def aggregation(compiler: Compiler, source: str, node: Aggregation) -> Statement:
    """One aggregation over the rows ``source`` selects: key columns, then the hidden row
    count, then the measures."""
    if compiler.dialect is POSTGRES:
        node = pg_operands(node)
    inner = source
    # Derived columns in layers, each one SELECT over the one before: a column goes in the
    # first layer after every derived column it reads (a subquery per column nested a
    # hundred deep for k-means of 100 centres, and DuckDB took 40 s to plan it). A name
    # defined again keeps the old order, a layer per column.
    names = [name for name, _ in node.derived]
    layered = len(set(names)) == len(names)
    layers: list[list[tuple[str, str, Expr]]] = []
    depth: dict[str, int] = {}
    for name, expr in node.derived:
        compiler.ref_bounds[name] = compiler.bound(expr)
        value = compiler.expr(expr)
        if isinstance(expr, Const) or (isinstance(expr, Var)
                                       and value == compiler.columns.get(expr.name)):
            # a column or a constant costs nothing to read in place, where a subquery per
            # derived column (seven in a regression on six terms) cost DuckDB a tenth of
            # the statement's time (a clipped value is an expression: computed once)
            compiler.inlined[name] = value
            continue
        compiler.inlined.pop(name, None)  # a name defined again is its new expression
        level = max((depth[r] + 1 for r in refs_of(expr) if r in depth), default=0) \
            if layered else len(layers)
        depth[name] = level
        layers.extend([] for _ in range(level + 1 - len(layers)))
        layers[level].append((name, value, expr))
    for level, columns in enumerate(layers):
        items = ", ".join(f"{value} AS {_ref(name)}" for name, value, _ in columns)
        inner = f"SELECT *, {items} FROM ({inner}) AS q_{level}"
        if compiler.dialect is POSTGRES and not all(isinstance(e, Var) for _, _, e in columns):
            # computed once per row: PostgreSQL would otherwise pull the subquery up and
            # copy the expression into every place that reads it (a subquery kept apart
            # stops the plan from aggregating in parallel workers, so a clipped value,
            # cheap to copy, is not kept apart)
            inner += " OFFSET 0"
    codes = tuple(_own_codes(compiler, k) for k in node.keys)
    keys = [compiler.column(k.name) if isinstance(k, LevelKey) and c is not None
            else compiler.key(k) for k, c in zip(node.keys, codes, strict=True)]
    compiler.grouped = bool(keys)
    measures = ["count(*)"] + [compiler.measure(m) for m in node.measures]
    where = f" WHERE {compiler.cond(node.where)}" if node.where is not None else ""
    items = [f"{k} AS k{i}" for i, k in enumerate(keys)] + [
        f"{m} AS m{i}" for i, m in enumerate(measures)]
    sql = f"SELECT {', '.join(items)} FROM ({inner}) AS q{where}"
    if keys:
        sql += " GROUP BY " + ", ".join(f"k{i}" for i in range(len(keys)))
    return Statement(sql, compiler.params, codes)


def _number(value: Any) -> int | float:
    """A measure as Python gives it: counts and exact sums as int (PostgreSQL's NUMERIC
    sums arrive as integral Decimals), float sums as float."""
    if isinstance(value, int | float):
        return value
    if hasattr(value, "as_integer_ratio") and not isinstance(value, float):
        numerator, denominator = value.as_integer_ratio()
        if denominator == 1:
            return int(numerator)
    return float(value)


def _own_codes(compiler: Compiler, key: Key) -> dict[str, int] | None:
    """Where the statement groups by a text column's own codes (the node maps the few
    groups to level indices, :meth:`Statement.results`): a level key over a text column in
    DuckDB (VARCHAR) or PostgreSQL (its typed view's codes are text in the "C" collation),
    whose codes compare byte by byte as the lookup does. Grouping 5M rows by two codes
    takes a third (DuckDB) or 70% (PostgreSQL) of the time of a CASE over their levels.

    Codes that compared equal without being the same bytes (``citext``, a
    non-deterministic collation) would make GROUP BY return one row's spelling for the
    whole group, and that one row would decide where all of the group's rows are counted;
    hence byte-wise codes only. Spark keeps the CASE (columns may carry collations)."""
    if compiler.dialect is SPARK or not isinstance(key, LevelKey) or not key.levels \
            or key.name in compiler.numeric:
        return None
    index: dict[str, int] = {}
    for i, level in enumerate(key.levels):
        index.setdefault(level, i)  # the CASE's first match
    return index
