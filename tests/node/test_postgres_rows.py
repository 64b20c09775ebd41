"""A node whose rows are a table of the hospital's PostgreSQL database computes there, and
gets what the pandas node gets, integer for integer: every kind of the catalog with
filters, negative values, transforms and centring, folds, DP clipping and rows per
patient. Start-up names the same problems as the pandas store reading the same table; a
wrong URL, a missing table, a wrong password or a missing grant is one readable error
without the password; and the node only reads, as a role granted SELECT alone.

A real server (tests/postgres_support.py): skipped where none can be started, a failure
under CI."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from node.datasource import DataSource
from node.rowstore import FrameRows
from node.sql.postgres_rows import PostgresRows, supports
from node.statistics import clipping, dp_encode, dp_scale
from node.validation import ValidationFailed, check, check_valid, coerce
from protocol.errors import ConfigurationError, QueryError
from stats.datamodel import DataModel, LocalDataError, PlanModel, Variable
from stats.kinds import KINDS
from stats.kinds.base import exact_scale
from stats.planner import layout
from stats.query import QuerySpec
from tests.node.test_duckdb_rows import (
    CELLS,
    CENTRED,
    FILTERS,
    NEGATIVE,
    _same,
    _spec,
    wide_regression,
)
from tests.stats.test_kinds import _model, _rows

READER_PASSWORD = "s3cret-reader-pw"


def _table(server: Any, database: str, name: str, frame: pd.DataFrame,
           types: dict[str, str] | None = None) -> None:
    """The frame as a table, rows in order (its physical order is the frame's)."""
    from sqlalchemy import create_engine

    engine = create_engine(server.url(database))
    try:
        frame.to_sql(name, engine, index=False, dtype=None)
        if types:
            with server.connect(database) as admin:
                for column, kind in types.items():
                    admin.execute(f'ALTER TABLE "{name}" ALTER COLUMN "{column}" TYPE {kind} '
                                  f'USING "{column}"::{kind}')
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def database(postgres: Any) -> dict[str, Any]:
    """The catalog's rows in a table, read by a role that may only SELECT it."""
    name = postgres.database("catalog")
    _table(postgres, name, "kinds", _rows())
    url = postgres.reader(name, "node_reader", READER_PASSWORD, ["kinds"])
    store = PostgresRows.load([DataSource("sql", url=url, table="kinds")], _model())
    yield {"server": postgres, "name": name, "url": url, "store": store,
           "pandas": FrameRows(_rows(), _model())}
    store.close()


def test_a_postgresql_url_is_kept_in_postgresql_and_others_are_not() -> None:
    assert supports([DataSource("sql", url="postgresql://u@h/db", table="t")])
    assert supports([DataSource("sql", url="postgresql+psycopg://u@h/db", table="t"),
                     DataSource("sql", url="postgresql+psycopg://u@h/db", table="u")])
    # one database however its driver is spelt (another spelling had sent both tables to
    # pandas: the whole table copied out, in transactions that were not read-only)
    assert supports([DataSource("sql", url="postgresql://u@h/db", table="t"),
                     DataSource("sql", url="postgresql+psycopg://u@h/db", table="u")])
    assert not supports([DataSource("sql", url="sqlite:///x.db", table="t")])
    # a PostgreSQL table is never read into pandas: two databases, or another database's
    # table beside it, are refused
    for other in ("postgresql://u@h/b", "sqlite:///x.db"):
        with pytest.raises(ConfigurationError, match="PostgreSQL tables"):
            supports([DataSource("sql", url="postgresql://u@h/a", table="t"),
                      DataSource("sql", url=other, table="t")])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_agrees_exactly(database: dict, kind: str) -> None:
    for filters in FILTERS:
        spec = _spec(kind, filters)
        _same(database["pandas"].computed(spec, exact_scale, None),
              database["store"].computed(spec, exact_scale, None))


@pytest.mark.parametrize("kind", sorted(NEGATIVE) + sorted(f"centred-{k}" for k in CENTRED))
def test_negative_values_transforms_and_centring_agree_exactly(database: dict,
                                                                kind: str) -> None:
    declared = CENTRED[kind[8:]] if kind.startswith("centred-") else NEGATIVE[kind]
    for filters in FILTERS[:3]:
        spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), filters=filters,
                         **declared)
        _same(database["pandas"].computed(spec, exact_scale, None),
              database["store"].computed(spec, exact_scale, None))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_declared_kinds_run_in_postgresql(database: dict, kind: str) -> None:
    """No row reaches Python for the kinds declared as aggregations (folds included:
    crossprod's fixture runs three folds)."""
    assert database["store"].working_rows(_spec(kind, FILTERS[1])) == 0


def test_a_histogram_of_thousands_of_edges_is_counted_in_sql(database: dict) -> None:
    """Bin keys are a binary search: one comparison per edge, summed, overflowed
    PostgreSQL's stack from about 5,000 edges (the query failed, after a DP charge)."""
    edges = [18 + 82 * i / 4095 for i in range(4096)]
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), method="histogram",
                     parameters={"axes": [{"var": "age", "edges": edges}]})
    assert database["store"].working_rows(spec) == 0
    _same(database["pandas"].computed(spec, exact_scale, None),
          database["store"].computed(spec, exact_scale, None))


def test_a_regression_on_60_terms_is_answered_in_sql(postgres: Any) -> None:
    """3,660 measures: in one statement, PostgreSQL refused more than 1,664 result columns
    (from 45 terms); in statements of at most MAX_MEASURES each it is answered, with the
    pandas store's integers."""
    model, rows, spec = wide_regression()
    name = postgres.database("wide")
    _table(postgres, name, "wide", rows)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="wide")], model)
    assert store.working_rows(spec) == 0
    _same(FrameRows(rows, model).computed(spec, exact_scale, None),
          store.computed(spec, exact_scale, None))
    store.close()


def test_k_means_of_100_centres_is_answered_in_sql(postgres: Any) -> None:
    """100 distances over 8 variables: the guarded products' operands were each made a
    column, twice per variable and centre, past PostgreSQL's 1,664 columns (helper-24);
    only operands holding a product are, once per distinct expression."""
    model, rows, _ = wide_regression()
    name = postgres.database("centres")
    _table(postgres, name, "centres", rows)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="centres")],
                              model)
    variables = tuple(f"v{i}" for i in range(8))
    spec = QuerySpec(data_model="wide:1", datasets=("d1", "d2"), method="kmeans",
                     variables=variables, parameters={"centers": [
                         [((c * 7 + i * 3) % 19) - 9.0 for i in range(8)] for c in range(100)]})
    assert store.working_rows(spec) == 0
    _same(FrameRows(rows, model).computed(spec, exact_scale, None),
          store.computed(spec, exact_scale, None))
    store.close()


def test_product_operands_become_columns_once_and_never_from_a_branch() -> None:
    """pg_operands makes a column of an operand that holds a product (so the guarded
    product reads a column, not a product of products), one per distinct expression, and
    leaves CASE branches alone: hoisted, (1 / x) * x would be computed where x = 0 too, and
    PostgreSQL would raise there."""
    from node.sql.compile import pg_operands
    from stats.aggregates import Aggregation, Arith, Compare, Const, ExactSum, IfElse, Ref, Var

    xy = Arith("*", Var("x"), Var("y"))
    inverse = Arith("*", Arith("/", Const(1.0), Var("x")), Var("x"))
    node = Aggregation((ExactSum(Arith("*", xy, Var("z")), 4.0),
                        ExactSum(Arith("*", xy, Var("w")), 4.0),
                        ExactSum(IfElse(Compare(">", Var("x"), Const(0.0)),
                                        Arith("*", inverse, Const(3.0)), Const(0.0)), 4.0)))
    out = pg_operands(node)
    assert out.derived == (("pg0", xy),)
    assert out.measures[:2] == (ExactSum(Arith("*", Ref("pg0"), Var("z")), 4.0),
                                ExactSum(Arith("*", Ref("pg0"), Var("w")), 4.0))
    assert out.measures[2] == node.measures[2]
    # a name defined again: what read it is made a column again, under a name of its own
    az = Arith("*", Ref("a"), Var("z"))
    again = Aggregation((ExactSum(Ref("c"), 4.0),), derived=(
        ("a", Arith("/", Var("x"), Const(2.0))), ("b", Arith("*", az, Var("w"))),
        ("a", Arith("/", Var("y"), Const(2.0))), ("c", Arith("*", az, Var("w")))))
    assert [name for name, _ in pg_operands(again).derived] == [
        "a", "pg0", "b", "a", "pg1", "c"]


@pytest.mark.parametrize("algorithm", ["descriptive_stats", "linear_regression", "histogram",
                                       "kaplan_meier"])
def test_dp_encodings_agree_clipped(database: dict, algorithm: str) -> None:
    base = {"descriptive_stats": dict(variables=("bmi", "age")),
            "linear_regression": dict(parameters={"terms": [{"const": 1}, {"var": "age"},
                                                            {"var": "bmi"}]}),
            "histogram": dict(parameters={"axes": [{"var": "bmi", "edges": [10, 25, 60]}]}),
            "kaplan_meier": dict(by="arm", parameters={"duration": "time", "event": "event",
                                                       "grid": [10, 50, 90]}),
            }[algorithm]
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), method=algorithm,
                     privacy={"mode": "dp", "rho": 1.0,
                              "bounds": {"age": [20, 80], "bmi": [18, 35]}}, **base)
    plan = layout(spec, PlanModel(_model()), 1 << 20)
    encoded = [dp_encode(plan, database[n].computed(spec, dp_scale(plan), clipping(plan)))
               for n in ("pandas", "store")]
    assert encoded[0] == encoded[1]
    assert any(encoded[0])


def test_node_check_reports_the_table_as_the_pandas_store_does(database: dict) -> None:
    """``fedtally node check`` on a PostgreSQL table: counts from the server, the same
    report as pandas' reading of the same rows."""
    assert database["store"].check_report().text() == check(_rows(), _model()).text()


def test_folds_hash_every_position_as_numpy_does(database: dict) -> None:
    """splitmix64 wrapped modulo 2^64 in NUMERIC and bit(64), against numpy's uint64."""
    from node.sql.compile import POSTGRES, ROW, Compiler
    from stats.aggregates import FoldKey
    from stats.kinds.frame import fold_numbers

    store = database["store"]
    for seed, folds in [(1, 3), (2**63 + 12345, 10), (2**64 - 1, 7), (987654321987, 2)]:
        compiler = Compiler("t", {}, frozenset(), dialect=POSTGRES)
        key = compiler.key(FoldKey(folds, seed))
        rows = store._database.run(
            f"SELECT {key} FROM (SELECT CAST(i AS BIGINT) AS {ROW} FROM "
            f"generate_series(0, 2999) AS i) AS t ORDER BY {ROW}", compiler.params)
        got = [int(r[0]) for r in rows]
        assert got == fold_numbers(pd.RangeIndex(3000), folds, seed).tolist()


def test_exact_sums_round_half_to_even(database: dict) -> None:
    """The cast to BIGINT rounds with rint (round(numeric) would round half away from 0);
    sums are exact NUMERIC; a per-row value beyond BIGINT is computed on fetched rows."""
    from node.sql.compile import POSTGRES, Compiler, aggregation
    from stats.aggregates import Aggregation, ExactSum, Var
    from stats.kinds.evaluate import aggregate

    values = [0.5, 1.5, 2.5, -0.5, -2.5, 3.5, 4503599627370495.5, 2.0**62 - 2.0**10]
    node = Aggregation((ExactSum(Var("x"), 1.0), ExactSum(Var("x"), 0.5)))
    expected = aggregate(node, pd.DataFrame({"x": values}), {})
    compiler = Compiler("t", {"x": "c0"}, frozenset({"x"}), dialect=POSTGRES)
    compiler.params.append(values)
    statement = aggregation(compiler, "SELECT unnest(CAST($1 AS DOUBLE PRECISION[])) AS c0",
                            node)
    row = database["store"]._database.run(statement.sql, statement.params)[0]
    assert (int(row[1]), int(row[2])) == expected[()]
    assert expected[()][0] == sum(round(v) for v in values)


def test_category_codes_compare_byte_by_byte_whatever_the_collation(postgres: Any) -> None:
    """Codes are text compared byte by byte, as pandas compares them: under a
    non-deterministic collation 'a' is not the code 'A' (start-up refuses it, as the pandas
    store does), so no two spellings share a group and no one row can decide where a
    group's rows are counted; a ``character(n)`` code is its level without its padding,
    in the statements and in the rows fetched alike."""
    variables = [Variable("dataset", "dataset", "text", True, ("d1",)),
                 Variable("g", "g", "text", True, ("A", "b")),
                 Variable("h", "h", "text", True, ("a", "b"))]
    model = DataModel("coded", "1", {v.code: v for v in variables})
    name = postgres.database("coded")
    with postgres.connect(name) as admin:
        admin.execute("CREATE COLLATION level_ci (provider = icu, "
                      "locale = 'und-u-ks-level2', deterministic = false)")
    types = {"g": "text COLLATE level_ci", "h": "character(3)"}
    frame = pd.DataFrame({"dataset": "d1", "g": ["A", "b", "A", "A", "b", None] * 3,
                          "h": ["a", "a ", "b", None, "a", "b"] * 3})
    _table(postgres, name, "coded", frame, types)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="coded")],
                              model)
    unpadded = frame.assign(h=frame["h"].str.strip())
    pandas = FrameRows(coerce(unpadded, model), model)
    for spec in (QuerySpec("contingency_table", "coded:1", ("d1",),
                           parameters={"axes": [{"var": "g"}, {"var": "h"}]}),
                 QuerySpec("contingency_table", "coded:1", ("d1",),
                           parameters={"axes": [{"var": "h"}]})):
        _same(pandas.computed(spec, exact_scale, None), store.computed(spec, exact_scale, None))
        assert set(store.fetch(spec)["h"].dropna()) == {"a", "b"}
    store.close()

    lower = frame.assign(g=["A", "b", "a", "A", "b", None] * 3)  # 'a' equals 'A' in level_ci
    _table(postgres, name, "lower", lower, types)
    with pytest.raises(ValidationFailed) as pandas_error:
        check_valid(lower.assign(h=unpadded["h"]), model)
    with pytest.raises(ValidationFailed) as postgres_error:
        PostgresRows.load([DataSource("sql", url=postgres.url(name), table="lower")], model)
    assert "row 3, column 'g': value 'a' is not a code of ('A', 'b')" in str(
        postgres_error.value)
    assert [str(p) for p in postgres_error.value.problems] == [
        str(p) for p in pandas_error.value.problems]


def test_an_underflow_is_computed_in_sql_as_c_computes_it(
        postgres: Any, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL raises where a product of non-zero values rounds to 0 (C gives 0): the
    compiler's guarded product gives C's value instead, in SQL (1e-200 squared; the
    subnormal products around 2^-1075, and their halves, are the pandas store's to the
    bit), so no row can send a query to the fetched rows by underflowing."""
    rows = _rows().iloc[:40].copy()
    tiny = [1e-200, -1e-200, 2.0 ** -537, 2.0 ** -537.5, 2.0 ** -538, 3.0 * 2.0 ** -540,
            2.0 ** -1074, 1.0000000000000002 * 2.0 ** -537, 7.5, 0.0]
    rows["score"] = [tiny[i % len(tiny)] for i in range(len(rows))]
    name = postgres.database("tiny")
    _table(postgres, name, "tiny", rows)
    model = _model()
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="tiny")], model)
    pandas = FrameRows(rows, model)
    terms = [{"const": 1}, {"var": "score"}, {"product": [{"var": "score"}, {"var": "score"}]}]
    for spec in (QuerySpec("descriptive_stats", "kinds:1", ("d1", "d2"), ("score",)),
                 QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), method="linear_regression",
                           parameters={"terms": terms})):
        with caplog.at_level(logging.WARNING, logger="fedtally.node"):
            got = store.computed(spec, exact_scale, None)
        assert "computing it on fetched rows" not in caplog.text
        _same(pandas.computed(spec, exact_scale, None), got)
    store.close()


def test_an_overflow_is_computed_on_fetched_rows(
        postgres: Any, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL raises where C overflows to inf ((1e200 - 50)^2 in a naive Bayes score,
    whose class is then another's): that query is computed on the fetched rows, with the
    pandas store's counts."""
    rows = _rows().iloc[:40].copy()
    rows.loc[rows.index[:5], "score"] = 1e200
    name = postgres.database("huge")
    _table(postgres, name, "huge", rows)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="huge")],
                              _model())
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), method="naive_bayes_gaussian",
                     kind="gaussian_nb_predict", variables=("score",),
                     parameters={"classes": ["F", "M"], "theta": [[0.0], [50.0]],
                                 "var": [[1.0], [1.0]], "log_prior": [-0.69, -0.69]})
    with caplog.at_level(logging.WARNING, logger="fedtally.node"):
        got = store.computed(spec, exact_scale, None)
    assert "computing it on fetched rows" in caplog.text
    _same(FrameRows(rows, _model()).computed(spec, exact_scale, None), got)
    store.close()


#: numbers a researcher picks that enter a row's arithmetic, each chosen to underflow at one
#: value only (patient P's: age 50, event 0), with the same query at the extreme numbers
#: planning allows (0, or a magnitude within [2^-126, 2^126])
ROW_LEVERS = {
    "centring": (dict(method="descriptive_stats", variables=("age",)),
                 {"centring": {"age": [50 + 1e-10, 3e152]}},
                 {"centring": {"age": [50 + 1e-10, 2.0 ** 126]}}),
    "class mean and variance": (
        dict(method="naive_bayes_gaussian", kind="gaussian_nb_predict", variables=("age", "bmi")),
        {"classes": ["F", "M"], "theta": [[50 + 1e-9, 25], [60, 28]],
         "var": [[1e308, 9], [120, 10]], "log_prior": [-0.69, -0.69]},
        {"classes": ["F", "M"], "theta": [[50 + 1e-9, 25], [60, 28]],
         "var": [[2.0 ** 126, 9], [120, 10]], "log_prior": [-0.69, -0.69]}),
    "cluster centre": (dict(method="kmeans", variables=("event",)),
                       {"centers": [[1e-300], [1.0]]}, {"centers": [[2.0 ** -126], [1.0]]}),
}


@pytest.mark.parametrize("lever", sorted(ROW_LEVERS))
def test_no_number_a_researcher_picks_makes_one_row_leave_the_double_range(
        postgres: Any, caplog: pytest.LogCaptureFixture, lever: str) -> None:
    """PostgreSQL raises where C underflows to 0, and the node then computes the query on
    fetched rows, which takes longer: a number that underflows at P's value only, with a
    filter selecting P, would tell P's value by the time the answer takes (helper-23's
    review: 0.8 s against 0.13 s at 500,000 rows, in DP mode). Planning refuses such
    numbers before any row is read; at the most extreme it allows, no row of the table
    leaves the double range (no fallback) and the integers are the pandas store's."""
    rows = _rows().iloc[:40].copy()
    rows.loc[rows.index[0], ["age", "event"]] = [50, 0]
    name = postgres.database(f"lever{sorted(ROW_LEVERS).index(lever)}")
    _table(postgres, name, "lever", rows)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="lever")],
                              _model())
    base, attack, extreme = ROW_LEVERS[lever]
    view = PlanModel(_model())
    with pytest.raises(QueryError, match=r"2\^-126"):
        layout(QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), parameters=attack,
                         **base), view, 1 << 20)
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), parameters=extreme, **base)
    layout(spec, view, 1 << 20)
    with caplog.at_level(logging.WARNING, logger="fedtally.node"):
        got = store.computed(spec, exact_scale, None)
    assert "computing it on fetched rows" not in caplog.text
    _same(FrameRows(rows, _model()).computed(spec, exact_scale, None), got)
    store.close()


def test_rows_per_patient_are_limited_in_sql(postgres: Any) -> None:
    variables = [Variable("dataset", "dataset", "text", True, ("x",)),
                 Variable("subject", "subject", "text", False),
                 Variable("score", "score", "real", False, min=0, max=10)]
    model = DataModel("visits", "1", {v.code: v for v in variables}, patient_id="subject",
                      max_rows_per_patient=3)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"dataset": "x", "subject": rng.choice(list("abcdefgh"), 40),
                          "score": rng.uniform(0, 10, 40).round(3)})
    frame.loc[:4, "subject"] = np.nan
    name = postgres.database("visits")
    _table(postgres, name, "visits", frame)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="visits")],
                              model)
    spec = QuerySpec("descriptive_stats", "visits:1", ("x",), ("score",),
                     privacy={"mode": "dp", "rho": 1.0})
    plan = layout(spec, PlanModel(model), 1 << 20)
    got = [s.computed(spec, dp_scale(plan), clipping(plan))
           for s in (FrameRows(coerce(frame, model), model), store)]
    _same(*got)
    assert got[0].rows == 8 * 3 + 5
    store.close()


def test_a_dataset_written_after_start_up_is_not_selected_unasked(postgres: Any) -> None:
    """The hospital's table is not the node's own copy: a query over every dataset the node
    saw still names them (the DuckDB store selects its own fixed rows by ``IS NOT NULL``),
    so rows of another dataset written later are not counted in it."""
    name = postgres.database("growing")
    _table(postgres, name, "kinds", _rows())
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="kinds")],
                              _model())
    try:
        with postgres.connect(name) as admin:
            admin.execute("INSERT INTO kinds (dataset, age) VALUES ('d3', 50), ('d3', 60)")
        # a regression adds its rows over every dataset it was asked for
        spec = QuerySpec("linear_regression", "kinds:1", ("d1", "d2"),
                         parameters={"terms": [{"const": 1}, {"var": "age"}]})
        assert store.computed(spec, exact_scale, None).rows == 300
    finally:
        store.close()
    # another node's dataset, declared by the model, written into the table later: not
    # this node's, so never counted as that dataset's here (a reviewer found 15 rows of
    # hosp_b counted at hosp_a)
    name = postgres.database("growing_other")
    rows = _rows()
    mine = rows[rows["dataset"] == "d1"]
    _table(postgres, name, "kinds", mine)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(name), table="kinds")],
                              _model())
    try:
        with postgres.connect(name) as admin:
            admin.execute("INSERT INTO kinds (dataset, age) VALUES ('d2', 50), ('d2', 60)")
        spec = QuerySpec("count", "kinds:1", ("d1", "d2"))
        assert store.computed(spec, exact_scale, None).rows == len(mine)
        assert store.held() == ["d1"]
    finally:
        store.close()


def test_typed_columns_and_text_cells_are_read_as_the_pandas_store_reads_them(
        postgres: Any) -> None:
    """The same table, read whole by pandas (today's path for SQL) and checked in
    PostgreSQL: text cells of every shape, integer, numeric, real and boolean columns,
    NaN, blanks: the same problems in the same order, and the same values once valid."""
    name = postgres.database("cells")
    model = _model()
    _table(postgres, name, "text_cells", pd.DataFrame({"dataset": "d1", "bmi": CELLS}))
    source = DataSource("sql", url=postgres.url(name), table="text_cells")
    with pytest.raises(ValidationFailed) as pandas_error:
        check_valid(source.load(), model)
    with pytest.raises(ValidationFailed) as postgres_error:
        PostgresRows.load([source], model)
    expected = [str(p) for p in pandas_error.value.problems]
    assert "row 11, column 'bmi': value '1e400' is not finite" in expected
    assert [str(p) for p in postgres_error.value.problems] == expected
    assert postgres_error.value.total == pandas_error.value.total == len(expected)

    n = len(CELLS)
    frame = pd.DataFrame({
        "dataset": ["d1"] * (n - 2) + ["", " "], "bmi": CELLS,
        "age": [30, 17, 40, 101] + [50] * (n - 4),
        "score": [1.5, float("nan"), -2.25] + [0.0] * (n - 3),
        "time": [1.25] + [3.0] * (n - 1),
        "sex": ["F", " M", "\t", "X"] + ["M"] * (n - 4),
        "arm": [1, 2, 3] + [1] * (n - 3),
        "event": [True, False] + [None] * (n - 2)})
    _table(postgres, name, "cells", frame, {"age": "integer", "time": "numeric(8,2)",
                                            "score": "real"})
    source = DataSource("sql", url=postgres.url(name), table="cells")
    with pytest.raises(ValidationFailed) as pandas_error:
        check_valid(source.load(), model)
    with pytest.raises(ValidationFailed) as postgres_error:
        PostgresRows.load([source], model)
    expected = [str(p) for p in pandas_error.value.problems]
    for problem in ("row 1, column 'time': value 1.25 is not an integer",
                    "row 1, column 'arm': value 1 is not a code of ('A', 'B', 'C')",
                    "row 1, column 'event': value True is not a number",
                    "row 2, column 'age': value 17 is below the minimum 18"):
        assert problem in expected
    assert [str(p) for p in postgres_error.value.problems] == expected
    assert postgres_error.value.total == pandas_error.value.total > 40

    # a valid table of typed columns: the same values (the 'arm' codes 1, 2, 3 are ints)
    good = ["30.", "+.5e2", "45", "1E+1", "\t", "\xa0 ", "12.25", "5e1", "0045.5"]
    k = len(good)
    valid = pd.DataFrame({"dataset": ["d1"] * k, "bmi": good, "age": list(range(30, 30 + k)),
                          "score": [0.1 * i if i != 4 else float("nan") for i in range(k)],
                          "time": [2.0] * k,
                          "sex": ["F", "M", None] * 3, "event": [0, 1, None] * 3})
    _table(postgres, name, "valid", valid, {"age": "integer", "time": "numeric(8,2)",
                                            "event": "smallint"})
    source = DataSource("sql", url=postgres.url(name), table="valid")
    pandas = FrameRows(coerce(source.load(), model), model)
    store = PostgresRows.load([source], model)
    for spec in (QuerySpec("descriptive_stats", "kinds:1", ("d1",),
                           ("bmi", "age", "score", "time", "sex", "event")),
                 QuerySpec("histogram", "kinds:1", ("d1",), parameters={
                     "axes": [{"var": "sex"}, {"var": "bmi", "edges": [0, 20, 60]}]})):
        _same(pandas.computed(spec, exact_scale, None), store.computed(spec, exact_scale, None))
    assert store.computed(QuerySpec("count", "kinds:1", ("d1",)), exact_scale, None).rows == k
    store.close()


def test_readable_errors_never_show_the_password(database: dict) -> None:
    server, name = database["server"], database["name"]
    wrong = [
        (DataSource("sql", url=database["url"], table="absent"), "the table does not exist"),
        (DataSource("sql", url=server.url(name, "node_reader", "not-the-password"),
                    table="kinds"), "password authentication failed"),
        (DataSource("sql", url=server.url(name, "node_reader", READER_PASSWORD).replace(
            str(server.port), "1"), table="kinds"), "the database refused or failed"),
        (DataSource("sql", url=server.url("no_such_db", "node_reader", READER_PASSWORD),
                    table="kinds"), "no_such_db"),
    ]
    with server.connect(name) as admin:
        admin.execute('CREATE TABLE "secret" (dataset text)')
    wrong.append((DataSource("sql", url=database["url"], table="secret"),
                  "may not read it (grant it SELECT)"))
    for source, expected in wrong:
        with pytest.raises(LocalDataError) as info:
            PostgresRows.load([source], _model())
        text = str(info.value)
        assert expected in text, text
        assert "table" in text and "node_reader@" not in text  # driver://host:port/db only
        assert READER_PASSWORD not in text and "not-the-password" not in text
        assert "Traceback" not in text
    # a password in the query string (libpq reads it), a malformed port: never shown either
    in_query = server.url(name, "node_reader", "").replace(
        "node_reader:@", "node_reader@") + f"?password={READER_PASSWORD}x"
    for url in (in_query, database["url"].replace(str(server.port), "5x432")):
        with pytest.raises((LocalDataError, ConfigurationError)) as info:
            source = DataSource("sql", url=url, table="kinds")
            PostgresRows.load([source], _model()) if supports([source]) else None
        assert READER_PASSWORD not in str(info.value), str(info.value)
    # an '@' in a password that is not percent-encoded would be read as part of the host
    with pytest.raises(ConfigurationError, match="percent-encode it as %40"):
        DataSource.from_config({"kind": "sql", "table": "kinds", "url": server.url(
            name, "node_reader", "Se@cret99")})


def test_the_node_only_reads(database: dict) -> None:
    """Every statement runs in a READ ONLY transaction: even as the database's owner the
    node's connection cannot write, and nothing was created by the queries above."""
    import psycopg

    server, name = database["server"], database["name"]
    store = PostgresRows.load([DataSource("sql", url=server.url(name), table="kinds")],
                              _model())
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        store._database.run("CREATE TABLE written (a integer)")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        store._database.run("DELETE FROM kinds")
    assert store._database.run("SHOW default_transaction_read_only") == [("on",)]
    store.computed(_spec("crossprod", FILTERS[1]), exact_scale, None)
    store.close()
    with server.connect(name) as admin:
        relations = admin.execute(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
            "AND c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')").fetchall()
        assert {r[0] for r in relations} <= {"kinds", "secret"}
        assert admin.execute("SELECT count(*) FROM kinds").fetchone() == (300,)
    assert dataclasses.replace(_spec("count", None)).kind == "count"


def test_a_node_serves_a_postgresql_table(postgres: Any, tmp_path: Any) -> None:
    """A whole federation on loopback whose node hosp_a serves a PostgreSQL table, read as
    a SELECT-only role: the totals are the rows' own."""
    import fedtally
    from fedtally.synthetic import stroke_model, three_hospitals

    hospitals = three_hospitals(scale=0.05)
    name = postgres.database("hospital_a")
    _table(postgres, name, "stroke_registry", hospitals["hosp_a"])
    url = postgres.reader(name, "hosp_a_node", READER_PASSWORD, ["stroke_registry"])
    data = {"hosp_a": {"kind": "sql", "url": url, "table": "stroke_registry"},
            "hosp_b": hospitals["hosp_b"]}
    with fedtally.local_federation(data, stroke_model(), workdir=tmp_path,
                                   max_colluding_nodes=0) as fed:
        stats = fed.descriptive_stats(["age", "nihss"], datasets=["hosp_a", "hosp_b"],
                                      filters={"op": ">", "var": "age", "value": 60})
        log = fed.local.log("hosp_a")
    for variable in ("age", "nihss"):
        for dataset in ("hosp_a", "hosp_b"):
            frame = hospitals[dataset]
            values = frame.loc[frame["age"] > 60, variable].dropna()
            assert stats.loc[(variable, dataset), "count"] == len(values)
            assert stats.loc[(variable, dataset), "mean"] == pytest.approx(values.mean(),
                                                                           rel=1e-12)
    assert "kept in PostgreSQL" in log and READER_PASSWORD not in log


def test_filter_values_are_bound_never_pasted(database: dict) -> None:
    """A researcher's text reaches PostgreSQL as a parameter: SQL in a filter value is a
    value that matches nothing, and the table is untouched."""
    attack = "M' OR '1'='1'); DROP TABLE kinds; --"
    for filters in ({"op": "==", "var": "sex", "value": attack},
                    {"op": "in", "var": "arm", "values": [attack, "A"]}):
        spec = _spec("moments", filters)
        _same(database["pandas"].computed(spec, exact_scale, None),
              database["store"].computed(spec, exact_scale, None))
    none = _spec("count", {"op": "==", "var": "sex", "value": attack})
    assert database["store"].computed(none, exact_scale, None).rows == 0
    with database["server"].connect(database["name"]) as admin:
        assert admin.execute("SELECT count(*) FROM kinds").fetchone() == (300,)


def _writable(postgres: Any, name: str) -> tuple[PostgresRows, pd.DataFrame]:
    """The catalog's rows in a table of their own, and a store reading it."""
    rows = _rows()
    database = postgres.database(name)
    _table(postgres, database, "kinds", rows)
    store = PostgresRows.load([DataSource("sql", url=postgres.url(database), table="kinds")],
                              _model())
    return store, rows


def test_a_query_reads_one_state_of_the_table(postgres: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A query of several statements (a wide aggregation in parts, here of 2 measures)
    runs them in one REPEATABLE READ transaction: a value changed and committed between
    two of them (within a group, so the parts' groups still agree) is not seen. In a
    transaction each, the parts had mixed two states of the table (helper-24)."""
    from node.sql import store as sql_store

    store, rows = _writable(postgres, "snapshot")
    monkeypatch.setattr(sql_store, "MAX_MEASURES", 2)
    statements = []
    run = store._database.run

    def run_then_write(sql: str, *args: Any, **kwargs: Any) -> Any:
        out = run(sql, *args, **kwargs)
        statements.append(sql)
        if len(statements) == 1:
            with postgres.connect(store._database._arguments["dbname"]) as other:
                other.execute('UPDATE kinds SET bmi = bmi + 1, age = age + 1')
        return out

    monkeypatch.setattr(store._database, "run", run_then_write)
    spec = _spec("moments", None)
    got = store.computed(spec, exact_scale, None)
    assert len(statements) >= 3
    _same(FrameRows(rows, _model()).computed(spec, exact_scale, None), got)
    # and the next query reads the table as it is now
    monkeypatch.setattr(store._database, "run", run)
    changed = rows.copy()
    changed["bmi"] += 1
    changed["age"] += 1
    _same(FrameRows(changed, _model()).computed(spec, exact_scale, None),
          store.computed(spec, exact_scale, None))
    store.close()


def test_a_server_restart_between_queries_is_not_seen_and_one_during_a_query_refuses_it(
        postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server closing the node's connection between two queries (a restart, an idle
    timeout): the next query connects again, before it reads anything. Closed during a
    query, that query fails (the node refuses it as internal) and the next one connects."""
    import psycopg

    store, rows = _writable(postgres, "restart")
    spec = _spec("moments", None)
    expected = FrameRows(rows, _model()).computed(spec, exact_scale, None)

    def terminate() -> None:
        with postgres.connect() as admin:
            ended = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE application_name = 'fedtally-node' AND datname = %s",
                                  [store._database._arguments["dbname"]]).fetchall()
        assert ended == [(True,)]

    _same(expected, store.computed(spec, exact_scale, None))
    terminate()
    _same(expected, store.computed(spec, exact_scale, None))

    run = store._database.run

    def terminate_then_run(sql: str, *args: Any, **kwargs: Any) -> Any:
        terminate()
        return run(sql, *args, **kwargs)

    monkeypatch.setattr(store._database, "run", terminate_then_run)
    with pytest.raises(psycopg.OperationalError):
        store.computed(spec, exact_scale, None)
    monkeypatch.setattr(store._database, "run", run)
    _same(expected, store.computed(spec, exact_scale, None))
    store.close()


def test_past_its_time_limit_a_statement_is_cancelled_and_the_connection_kept(
        postgres: Any) -> None:
    """The policy's max_query_seconds (node.time_limit): the server cancels the running
    statement; the connection serves the next one."""
    import psycopg

    from node.time_limit import TimeLimit

    store, rows = _writable(postgres, "interrupted")
    connection = store._database._connection
    with pytest.raises(psycopg.errors.QueryCanceled), TimeLimit(store, 0.2) as limit:
        store._database.run("SELECT pg_sleep(60)")
    assert limit.reached
    assert store._database._connection is connection and not connection.closed
    assert store._database.run("SELECT count(*) FROM kinds") == [(len(rows),)]
    store.close()


def test_a_connection_left_in_a_failed_transaction_is_opened_again(
        postgres: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A cancel (max_query_seconds, a round's end) that lands on a COMMIT leaves the server
    in a failed transaction psycopg does not know of (helper-25: after 1,270 cancelled
    queries every later one failed until the node restarted). Here a failed statement
    outside the store's transactions leaves the connection so: the next query connects
    again and is answered."""
    import psycopg

    store, rows = _writable(postgres, "failed")
    connection = store._database._connection
    with pytest.raises(psycopg.errors.DivisionByZero):
        connection.execute("SELECT 1 / 0")
    assert connection.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
    spec = _spec("moments", None)
    with caplog.at_level(logging.WARNING, logger="fedtally.node"):
        got = store.computed(spec, exact_scale, None)
    assert "left in a transaction" in caplog.text
    _same(FrameRows(rows, _model()).computed(spec, exact_scale, None), got)
    assert store._database._connection is not connection
    store.close()


def test_a_database_that_cannot_be_read_refuses_queries_before_they_are_charged(
        postgres: Any, tmp_path: Path) -> None:
    """The hospital's database down (or the node's role without its grant): every DP
    query was charged, then failed as internal; a reviewer watched an outage spend a
    researcher's budget query by query. The node now asks the server while planning, before
    any charge, and refuses as unavailable; once the database is back, it answers."""
    from crypto.identity import SigningIdentity
    from crypto.randomness import SeededRandom
    from node.budget import BudgetKeeper
    from node.policy import Policy
    from node.session import LoadedData, NodeSession
    from protocol.errors import ServiceUnavailable

    store, _ = _writable(postgres, "outage")
    policy = Policy.from_dict({"exact_access": "*"})
    budget = BudgetKeeper(tmp_path / "ledger.db", SigningIdentity.generate(SeededRandom(3)),
                          policy)
    session = NodeSession("n", LoadedData(_model(), store=store), policy, budget, 1 << 24)
    spec = QuerySpec("count", "kinds:1", ("d1",))
    database = store._database._arguments["dbname"]
    session.plan(spec, "alice", threshold=1)
    with postgres.connect() as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                      "application_name = 'fedtally-node' AND datname = %s", [database])
    try:
        with pytest.raises(ServiceUnavailable,
                           match="cannot be read right now.*this node charged nothing"):
            session.plan(spec, "alice", threshold=1)
    finally:
        with postgres.connect() as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    session.plan(spec, "alice", threshold=1)
    assert store.computed(spec, exact_scale, None).rows == int((_rows()["dataset"] == "d1").sum())
    budget.close()
    store.close()


def test_a_column_changed_since_start_up_fails_rather_than_fetching_rows(
        postgres: Any) -> None:
    """Only an arithmetic range error (what C makes inf or 0) sends a statement to the
    fetched rows; a column whose type changed after start-up, its text no number, fails
    (it had fetched the query's rows into the node)."""
    import psycopg

    store, _ = _writable(postgres, "altered")
    spec = _spec("moments", None)
    store.computed(spec, exact_scale, None)
    with postgres.connect(store._database._arguments["dbname"]) as admin:
        admin.execute("ALTER TABLE kinds ALTER COLUMN bmi TYPE text")
        admin.execute("UPDATE kinds SET bmi = 'unknown' WHERE bmi IS NOT NULL")
    fetched = []
    store.fetch = lambda *args: fetched.append(args)  # type: ignore[method-assign]
    with pytest.raises(psycopg.DataError):
        store.computed(spec, exact_scale, None)
    assert fetched == []
    store.close()
