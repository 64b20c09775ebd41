"""The DuckDB node computes what the pandas node computes, integer for integer: every kind of
the catalog, with filters, in exact and DP mode, from CSV and Parquet; the disclosure rules
apply the same way; start-up validation names the problems; a 2M-row node stays small."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from node.datasource import DataSource
from node.rowstore import FrameRows
from node.sql.duckdb_rows import DuckRows
from node.statistics import clipping, dp_encode, dp_scale, local_vector
from node.validation import ValidationFailed, coerce
from stats.datamodel import DataModel, LocalDataError, PlanModel, Variable
from stats.kinds import KINDS
from stats.kinds.base import Guard, exact_scale
from stats.planner import layout
from stats.plans import CELLS_BELOW_THRESHOLD
from stats.query import QuerySpec
from tests.stats.test_kinds import SPECS, _model, _rows

FILTERS = [
    None,
    {"op": "and", "items": [{"op": ">", "var": "age", "value": 30},
                            {"op": "in", "var": "arm", "values": ["A", "B"]}]},
    {"op": "or", "items": [{"op": "is null", "var": "bmi"},
                           {"op": "not", "item": {"op": "==", "var": "sex", "value": "M"}}]},
    {"op": "not in", "var": "age", "values": [20, 21, 22, 40.5]},
    {"op": "!=", "var": "bmi", "value": 25.5},
]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    model, rows = _model(), _rows()
    folder = tmp_path_factory.mktemp("duck")
    csv, parquet = folder / "rows.csv", folder / "rows.parquet"
    rows.to_csv(csv, index=False)
    rows.to_parquet(parquet, index=False)
    out = {"pandas": FrameRows(rows, model),
           "csv": DuckRows.load([DataSource("csv", path=csv)], model),
           "parquet": DuckRows.load([DataSource("parquet", path=parquet)], model)}
    yield out
    out["csv"].close()
    out["parquet"].close()


def _spec(kind: str, filters: object, **privacy: object) -> QuerySpec:
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), **SPECS[kind])
    return dataclasses.replace(spec, filters=filters, **({"privacy": privacy} if privacy else {}))


def _same(a: object, b: object) -> None:
    assert a.values == b.values  # exact: counts are ints, sums Fractions of the same integer
    assert a.guards.keys() == b.guards.keys()
    for family, guards in a.guards.items():
        # counts exactly; an effective sample size is a ratio of float sums that each
        # engine adds in its own order: the last bits may differ (far inside the 1e-9
        # slack it is compared with the threshold under)
        assert guards.keys() == b.guards[family].keys()
        for guard, value in guards.items():
            if guard is Guard.WEIGHTS:
                assert b.guards[family][guard] == pytest.approx(value, rel=1e-12, abs=0)
            else:
                assert b.guards[family][guard] == value, (family, guard)
    assert a.rows == b.rows


@pytest.mark.parametrize("filters", FILTERS, ids=range(len(FILTERS)))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_agrees_exactly(stores: dict, kind: str, filters: object) -> None:
    spec = _spec(kind, filters)
    expected = stores["pandas"].computed(spec, exact_scale, None)
    for name in ("csv", "parquet"):
        _same(expected, stores[name].computed(spec, exact_scale, None))


@pytest.mark.parametrize("datasets", [("d2",), ("d2", "d1", "elsewhere")], ids=["one", "all"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_some_or_every_held_dataset_agrees_exactly(stores: dict, kind: str,
                                                   datasets: tuple[str, ...]) -> None:
    """A query over every dataset the node holds (and others held elsewhere) selects rows
    by ``IS NOT NULL``, one over some of them by their list: both as the pandas store (DP's
    clipped encodings: ``test_dp_encodings_agree_clipped``)."""
    spec = dataclasses.replace(_spec(kind, FILTERS[1]), datasets=datasets)
    expected = stores["pandas"].computed(spec, exact_scale, None)
    for name in ("csv", "parquet"):
        _same(expected, stores[name].computed(spec, exact_scale, None))


def test_every_held_dataset_is_selected_without_a_list(stores: dict) -> None:
    store = stores["parquet"]
    said: list[tuple[str, list]] = []
    run = store._rows
    store._rows = lambda compiler, sql: said.append((sql, list(compiler.params))) or run(
        compiler, sql)
    try:
        counted = {datasets: store.computed(dataclasses.replace(
            _spec("count", None), datasets=datasets), exact_scale, None).rows
            for datasets in (("d1", "d2"), ("d2", "d1", "elsewhere"), ("d2",), ("d2", "x"))}
    finally:
        del store._rows
    # (the first query may also scan the columns' magnitudes, once per store)
    selecting = [(sql, params) for sql, params in said if " FROM node_rows WHERE " in sql]
    # a dataset the node does not hold ("x") is never asked of its rows
    assert [(" IS NOT NULL)" in sql, params) for sql, params in selecting] == [
        (True, []), (True, []), (False, ["d2"]), (False, ["d2"])]
    assert counted[("d1", "d2")] == counted[("d2", "d1", "elsewhere")] == 300
    assert counted[("d2",)] == counted[("d2", "x")] == int((_rows()["dataset"] == "d2").sum())


NEGATIVE = {
    "moments": dict(method="descriptive_stats", variables=("score", "age", "sex"), by="arm"),
    "crossprod": dict(method="linear_regression", parameters={"terms": [
        {"const": 1}, {"var": "score"}, {"var": "age", "transform": "sqrt"},
        {"product": [{"var": "score"}, {"var": "sex", "level": "F"}]}, {"var": "bmi"}]}),
    "counts": dict(method="histogram",
                   parameters={"axes": [{"var": "score", "edges": [-5, -1, 0, 0.5, 4]}]}),
}


@pytest.mark.parametrize("filters", FILTERS[:3], ids=range(3))
@pytest.mark.parametrize("kind", sorted(NEGATIVE))
def test_negative_values_and_transforms_agree_exactly(stores: dict, kind: str,
                                                      filters: object) -> None:
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), filters=filters,
                     **NEGATIVE[kind])
    expected = stores["pandas"].computed(spec, exact_scale, None)
    assert any(v < 0 for v in expected.values.values()) or kind == "counts"
    for name in ("csv", "parquet"):
        _same(expected, stores[name].computed(spec, exact_scale, None))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_declared_kinds_run_in_sql(stores: dict, kind: str) -> None:
    """No row reaches Python for the kinds declared as aggregations."""
    assert stores["csv"].working_rows(_spec(kind, FILTERS[1])) == 0
    assert stores["pandas"].working_rows(_spec(kind, None)) == 300


def test_folds_hash_every_position_as_numpy_does() -> None:
    """splitmix64 in UHUGEINT, masked to 64 bits at each step, against numpy's uint64."""
    import duckdb

    from node.sql.compile import ROW, Compiler
    from stats.aggregates import FoldKey
    from stats.kinds.frame import fold_numbers

    connection = duckdb.connect()
    for seed, folds in [(1, 3), (2**63 + 12345, 10), (2**64 - 1, 7), (987654321987, 2)]:
        compiler = Compiler("t", {}, frozenset())
        key = compiler.key(FoldKey(folds, seed))
        rows = connection.execute(
            f"SELECT {key} FROM (SELECT CAST(i AS BIGINT) AS {ROW} FROM range(3000) AS r(i))"
            f" AS t ORDER BY {ROW}", compiler.params).fetchall()
        assert [int(r[0]) for r in rows] == fold_numbers(pd.RangeIndex(3000), folds,
                                                         seed).tolist()
    connection.close()


def test_interval_keys_search_as_numpy_does() -> None:
    """An interval key (a binary search in CASE) counts the grid points strictly below each
    value, ties and NaN included, as numpy.searchsorted does; a grid too long to bind is
    left to the fetched rows."""
    import duckdb

    from node.sql.compile import MAX_INTERVALS, Compiler, Unsupported, aggregation
    from stats.aggregates import Aggregation, IntervalKey, Rows, Var
    from stats.kinds.evaluate import aggregate

    values = [-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 7.0, 8.0, 100.0, float("nan")]
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t AS SELECT unnest($1::DOUBLE[]) AS c0", [values])
    for size in range(1, 10):
        grid = tuple(float(g) for g in range(size))
        node = Aggregation((Rows(),), (IntervalKey(Var("x"), grid),))
        compiler = Compiler("t", {"x": "c0"}, frozenset({"x"}))
        statement = aggregation(compiler, "SELECT * FROM t", node)
        got = {(int(r[0]),): (int(r[2]),) for r in connection.execute(statement.sql,
                                                                     statement.params).fetchall()}
        assert got == aggregate(node, pd.DataFrame({"x": values}), {}), size
    with pytest.raises(Unsupported):
        too_long = IntervalKey(Var("x"), tuple(float(g) for g in range(MAX_INTERVALS + 1)))
        Compiler("t", {"x": "c0"}, frozenset({"x"})).key(too_long)
    connection.close()


def test_bin_keys_search_as_numpy_histogram_does() -> None:
    """A bin key counts the edges at or below each value by a binary search, as
    numpy.histogram bins (the last bin closed, -2 outside the edges, -1 missing), for a
    few edges and for thousands: one comparison per edge, summed, nested deeper than DuckDB
    allows from 995 edges on (PostgreSQL's stack from about 5,000, Spark's from 500)."""
    import duckdb

    from node.sql.compile import MAX_INTERVALS, Compiler, Unsupported, aggregation
    from stats.aggregates import Aggregation, BinKey, Rows, Var
    from stats.kinds.evaluate import aggregate

    values = [-1.0, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 7.0, 8.0, 100.0, 3999.0,
              3999.5, 4000.0, None]
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t AS SELECT unnest($1::DOUBLE[]) AS c0", [values])
    frame = pd.DataFrame({"x": [float("nan") if v is None else v for v in values]})
    for edges in [(0.0, 1.0), (0.0, 0.5, 1.0), *[tuple(map(float, range(n)))
                                                  for n in (4, 5, 8, 9)],
                  tuple(float(g) / 4 for g in range(MAX_INTERVALS)), tuple(map(float, range(1000)))]:
        node = Aggregation((Rows(),), (BinKey(Var("x"), edges),))
        compiler = Compiler("t", {"x": "c0"}, frozenset({"x"}))
        statement = aggregation(compiler, "SELECT * FROM t", node)
        got = {(int(r[0]),): (int(r[2]),) for r in connection.execute(statement.sql,
                                                                     statement.params).fetchall()}
        assert got == aggregate(node, frame, {}), len(edges)
    with pytest.raises(Unsupported):
        too_many = BinKey(Var("x"), tuple(float(g) for g in range(MAX_INTERVALS + 1)))
        Compiler("t", {"x": "c0"}, frozenset({"x"})).key(too_many)
    connection.close()


@pytest.mark.parametrize("datasets", [("d1", "d2"), ("d2",)], ids=["all", "one"])
@pytest.mark.parametrize("algorithm", ["descriptive_stats", "linear_regression", "histogram",
                                       "kaplan_meier"])
def test_dp_encodings_agree_clipped(stores: dict, algorithm: str,
                                    datasets: tuple[str, ...]) -> None:
    """DP: each row clipped (LEAST/GREATEST in SQL) and rounded at the slot's DP scale; the
    encoded vectors (before noise) are the same integers, over every dataset the node holds
    and over some of them."""
    base = {"descriptive_stats": dict(variables=("bmi", "age")),
            "linear_regression": dict(parameters={"terms": [{"const": 1}, {"var": "age"},
                                                            {"var": "bmi"}]}),
            "histogram": dict(parameters={"axes": [{"var": "bmi", "edges": [10, 25, 60]}]}),
            "kaplan_meier": dict(by="arm", parameters={"duration": "time", "event": "event",
                                                       "grid": [10, 50, 90]}),
            }[algorithm]
    spec = QuerySpec(data_model="kinds:1", datasets=datasets, method=algorithm,
                     privacy={"mode": "dp", "rho": 1.0,
                              "bounds": {"age": [20, 80], "bmi": [18, 35]}}, **base)
    view = PlanModel(_model())
    plan = layout(spec, view, 1 << 20)
    assert plan.noise is not None
    encoded = [dp_encode(plan, stores[n].computed(spec, dp_scale(plan), clipping(plan)))
               for n in ("pandas", "csv", "parquet")]
    assert encoded[0] == encoded[1] == encoded[2]
    assert any(encoded[0])


def test_a_suppressed_cell_is_suppressed_on_duckdb_too(stores: dict) -> None:
    """The disclosure rules run after the backend: a small cell reads 0 on both, and the
    vectors are identical."""
    spec = _spec("counts", {"op": "<", "var": "age", "value": 24}, mode="exact")
    spec = dataclasses.replace(spec, parameters={"axes": [{"var": "arm"}, {"var": "sex"}]})
    plan = layout(spec, PlanModel(_model()), 1 << 20)
    computed = stores["csv"].computed(spec, exact_scale, None)
    small = [k for k, v in computed.values.items() if 0 < v < 10]
    assert small, "the fixture must hold a small cell"
    vectors = []
    for name in ("pandas", "csv", "parquet"):
        vector, summary = local_vector(spec, plan, stores[name], _model(), min_row_count=1,
                                       small_cell_threshold=10)
        vectors.append([int(v) for v in vector.to_signed()])
        assert summary.cells_below_threshold > 0
    assert vectors[0] == vectors[1] == vectors[2]
    index = plan.index()
    for key in small:
        assert vectors[1][index[key]] == 0
    assert vectors[1][index[CELLS_BELOW_THRESHOLD]] >= len(small)


def test_rows_per_patient_are_limited_in_sql(tmp_path: Path) -> None:
    variables = [Variable("dataset", "dataset", "text", True, ("x",)),
                 Variable("subject", "subject", "text", False),
                 Variable("score", "score", "real", False, min=0, max=10)]
    model = DataModel("visits", "1", {v.code: v for v in variables}, patient_id="subject",
                      max_rows_per_patient=3)
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"dataset": "x", "subject": rng.choice(list("abcdefgh"), 40),
                          "score": rng.uniform(0, 10, 40).round(3)})
    frame.loc[:4, "subject"] = np.nan
    frame.to_csv(tmp_path / "v.csv", index=False)
    duck = DuckRows.load([DataSource("csv", path=tmp_path / "v.csv")], model)
    pandas = FrameRows(coerce(frame, model), model)
    spec = QuerySpec("descriptive_stats", "visits:1", ("x",), ("score",),
                     privacy={"mode": "dp", "rho": 1.0})
    plan = layout(spec, PlanModel(model), 1 << 20)
    got = [s.computed(spec, dp_scale(plan), clipping(plan)) for s in (pandas, duck)]
    _same(*got)
    assert got[0].rows == 8 * 3 + 5
    duck.close()


def test_start_up_names_problems_by_count_and_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("dataset,age,bmi,sex\nd1,30,20,F\nd1,abc,20,M\nd2,40,99,X\n,50,20,F\n")
    with pytest.raises(ValidationFailed) as info:
        DuckRows.load([DataSource("csv", path=path)], _model())
    text = str(info.value)
    assert text.startswith("4 problem(s)")
    for part in ("row 2, column 'age': value 'abc' is not a number",
                 "row 3, column 'bmi': value '99' is above the maximum 60",
                 "row 3, column 'sex': value 'X' is not a code",
                 "row 4, column 'dataset': the row has no dataset"):
        assert part in text
    assert len(list(tmp_path.iterdir())) == 1  # nothing else written there


def test_a_malformed_file_is_a_readable_error(tmp_path: Path) -> None:
    """Named as the pandas store names it: the line and its field count (DuckDB's own words
    were "CSV Error on Line: 3")."""
    path = tmp_path / "short.csv"
    path.write_text("dataset,age\nd1,30\nd1\n")
    with pytest.raises(LocalDataError, match=r"short\.csv is malformed: line 3 has 1 "
                                             r"field\(s\) where the header has 2"):
        DuckRows.load([DataSource("csv", path=path)], _model())
    path.write_text("dataset,age\nd1,30,7\nd1,31\n")
    with pytest.raises(LocalDataError, match=r"line 2 has 3 field\(s\) where the header has 2"):
        DuckRows.load([DataSource("csv", path=path)], _model())


def test_a_dataset_named_by_the_source(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame({"age": [30, 40, 50]}).to_csv(path, index=False)
    duck = DuckRows.load([DataSource("csv", path=path, dataset="d2")], _model())
    assert duck.count() == 3 and duck.held() == ["d2"]
    duck.close()


WRITE_SCRIPT = textwrap.dedent("""
    import sys
    import duckdb
    duckdb.sql(f'''COPY (SELECT CASE WHEN i % 2 = 0 THEN 'd1' ELSE 'd2' END AS dataset,
        18 + i % 80 AS age, 10 + (i % 500) / 10.0 AS bmi, ((i * 7919) % 1000) / 100.0 AS score,
        CASE WHEN i % 3 = 0 THEN 'F' ELSE 'M' END AS sex,
        CASE WHEN i % 5 = 0 THEN 'A' WHEN i % 5 = 1 THEN 'B' ELSE 'C' END AS arm,
        i % 2 AS event, i % 100 AS time FROM range(2000000) t(i)) TO '{sys.argv[1]}' (HEADER)''')
""")

RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    from stats.kinds.base import Guard, exact_scale
    from stats.query import QuerySpec
    from node.datasource import DataSource
    from node.sql.duckdb_rows import DuckRows
    from tests.stats.test_kinds import _model

    def high_water_kib():
        # VmHWM starts afresh at exec; ru_maxrss does not (a child forked from a big
        # pytest worker starts with the worker's peak)
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

    path = sys.argv[1]
    before = high_water_kib()
    store = DuckRows.load([DataSource("csv", path=path)], _model())
    terms = [{"const": 1}, {"var": "age"}, {"var": "bmi"}, {"var": "score"},
             {"var": "sex", "level": "M"}]
    specs = [QuerySpec("count", "kinds:1", ("d1", "d2")),
             QuerySpec("descriptive_stats", "kinds:1", ("d1", "d2"), ("bmi", "score"),
                       by="arm"),
             QuerySpec("linear_regression", "kinds:1", ("d1", "d2"),
                       parameters={"terms": terms}),
             QuerySpec("contingency_table", "kinds:1", ("d1", "d2"),
                       parameters={"axes": [{"var": "arm"}, {"var": "sex"}]})]
    rows = [store.computed(spec, exact_scale, None).rows for spec in specs]
    peak = high_water_kib()
    print(json.dumps({"rows": store.count(), "computed": rows, "before_kib": before,
                      "peak_kib": peak}))
    store.close()
""")


@pytest.mark.skipif(not Path("/proc/self/status").exists(),
                    reason="reads the peak resident size from /proc (Linux)")
def test_a_two_million_row_node_keeps_its_memory_small(tmp_path: Path) -> None:
    """Peak RSS of a DuckDB node over a 2M-row CSV (start-up and four kinds), measured in
    a fresh process: the pandas node needs ~1.5 GiB for the same file."""
    root = Path(__file__).resolve().parents[2]
    # the file is written in a process of its own: DuckDB's COPY buffers are not the node's
    subprocess.run([sys.executable, "-c", WRITE_SCRIPT, str(tmp_path / "big.csv")],
                   cwd=root, capture_output=True, text=True, timeout=300, check=True)
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(tmp_path / "big.csv")],
                         cwd=root, capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rows"] == 2_000_000
    assert report["computed"][0] == 2_000_000
    assert report["peak_kib"] < 700 * 1024, report


def test_exact_sums_round_half_to_even_on_both_backends() -> None:
    """Ties (x.5 after scaling) round to even per row in SQL as in numpy's rint."""
    import duckdb

    from node.sql.compile import Compiler, aggregation
    from stats.aggregates import Aggregation, ExactSum, Var
    from stats.kinds.evaluate import aggregate

    values = [0.5, 1.5, 2.5, -0.5, -2.5, 3.5, 4503599627370495.5, 2.0**80 + 2.0**28]
    node = Aggregation((ExactSum(Var("x"), 1.0), ExactSum(Var("x"), 0.5)))
    frame = pd.DataFrame({"x": values})
    expected = aggregate(node, frame, {})
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t AS SELECT x AS c0 FROM (SELECT unnest($1::DOUBLE[]) "
                       "AS x)", [values])
    compiler = Compiler("t", {"x": "c0"}, frozenset({"x"}))
    statement = aggregation(compiler, "SELECT * FROM t", node)
    row = connection.execute(statement.sql, statement.params).fetchone()
    assert {(): tuple(row[1:])} == expected
    assert expected[()][0] == sum(round(v) for v in values)  # Python rounds half to even
    connection.close()


def test_exact_sums_are_taken_in_bigint_only_where_the_magnitudes_bound_every_term() -> None:
    """BIGINT where the columns' magnitudes (or the clipping bounds) keep every term below
    2^62, HUGEINT beyond, the same integers either way; a bound understated would make
    DuckDB's cast raise, never give a wrong sum."""
    import duckdb

    from node.sql.compile import Compiler, aggregation
    from stats.aggregates import Aggregation, Arith, Compare, Const, ExactSum, FlagKey, Var
    from stats.kinds.evaluate import aggregate

    node = Aggregation((ExactSum(Var("x"), 2.0**40), ExactSum(Arith("*", Var("x"), Var("x")),
                                                                 2.0**40)))
    connection = duckdb.connect()

    def _statement(node: Aggregation, magnitude: float, clip: dict | None = None
                   ) -> tuple[str, list]:
        compiler = Compiler("t", {"x": "c0"}, frozenset({"x"}), clip or {},
                            magnitudes={"x": magnitude})
        statement = aggregation(compiler, "SELECT * FROM t", node)
        return statement.sql, statement.params

    def run(values: list[float], magnitude: float, clip: dict | None = None
            ) -> tuple[str, tuple]:
        connection.execute("CREATE OR REPLACE TABLE t AS SELECT x AS c0 FROM "
                           "(SELECT unnest($1::DOUBLE[]) AS x)", [values])
        sql, params = _statement(node, magnitude, clip)
        row = connection.execute(sql, params).fetchone()
        return sql, tuple(row[1:])

    small = [0.5, 1.5, -2.5, 3.25, 1e3 / 3, -1e3]
    sql, got = run(small, 1e3)
    assert "AS BIGINT" in sql and "HUGEINT" not in sql
    assert {(): got} == aggregate(node, pd.DataFrame({"x": small}), {})
    large = [*small, 3e5]  # 3e5^2 * 2^40 is beyond 2^63
    sql, got = run(large, 3e5)
    assert "AS HUGEINT" in sql
    assert {(): got} == aggregate(node, pd.DataFrame({"x": large}), {})
    clipped = {"x": (-2.0, 2.0)}
    sql, got = run(large, 3e5, clipped)
    assert "HUGEINT" not in sql
    assert {(): got} == aggregate(node, pd.DataFrame({"x": large}), clipped)
    with pytest.raises(duckdb.ConversionException):
        run(large, 1e3)
    # grouped, terms between 2^40 and 2^62 are summed as high and low bits apart: the same
    # integers, negative terms included (the shift is arithmetic)
    node = Aggregation(node.measures, keys=(FlagKey(Compare(">", Var("x"), Const(0.0))),))
    mixed = [v * s for v in (1.5, 2.5, 1e3 / 3, 999.75) for s in (1, -1)] * 50
    sql, _ = run(mixed, 1e3)
    assert ">> 31" in sql
    got = dict((tuple(r[:1]), tuple(r[2:])) for r in connection.execute(
        *_statement(node, 1e3)).fetchall())
    assert got == aggregate(node, pd.DataFrame({"x": mixed}), {})
    connection.close()


def test_level_keys_group_by_the_codes_and_read_them_as_the_levels_index() -> None:
    """DuckDB groups by a text column's own codes (no CASE per row) and the node reads each
    group's code as its level's index: codes outside the levels and missing ones add up
    into -1 (counts, exact and float sums alike), as the pandas evaluation says."""
    import duckdb

    from node.sql.compile import Compiler, aggregation
    from stats.aggregates import (
        Aggregation,
        Compare,
        Const,
        CountIf,
        ExactSum,
        FlagKey,
        FloatSum,
        LevelKey,
        Rows,
        Var,
    )
    from stats.kinds.evaluate import aggregate

    codes = ["a", "b", "c", None, "a", "c", "b", None, "d", "a"] * 7
    values = [0.5 * i - 3.0 for i in range(len(codes))]
    frame = pd.DataFrame({"g": codes, "x": values})
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t AS SELECT * FROM frame")
    measures = (Rows(), CountIf(Compare(">", Var("x"), Const(0.0))), ExactSum(Var("x"), 4.0),
                FloatSum(Var("x")))
    for levels in (("b", "a"), ("a", "b", "c", "d"), ("z",)):
        node = Aggregation(measures, keys=(LevelKey("g", levels),
                                           FlagKey(Compare(">", Var("x"), Const(5.0)))))
        compiler = Compiler("t", {"g": "g", "x": "x"}, frozenset({"x"}))
        statement = aggregation(compiler, "SELECT * FROM t", node)
        assert "CASE g" not in statement.sql
        got = statement.results(connection.execute(statement.sql, statement.params).fetchall())
        assert got == aggregate(node, frame, {}), levels
        if "c" not in levels:
            assert got[(-1, 0)][0] == sum(c not in levels and v <= 5.0
                                          for c, v in zip(codes, values, strict=True))
    connection.close()


def test_derived_columns_and_constants_are_read_in_place_expressions_computed_once() -> None:
    """A derived column that is a column or a constant is read where it is used (no
    subquery of its own); a clipped value or an expression gets its subquery, computed once
    per row; the sums are the pandas evaluation's either way."""
    import duckdb

    from node.sql.compile import Compiler, aggregation
    from stats.aggregates import Aggregation, Arith, Compare, Const, ExactSum, Present, Ref, Var
    from stats.kinds.evaluate import aggregate

    frame = pd.DataFrame({"x": [0.5, -1.25, 3.0, None, 7.5], "y": [1.0, 2.0, None, 4.0, 8.0]})
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t AS SELECT x AS c0, y AS c1 FROM frame")
    derived = (("a", Var("x")), ("b", Const(2.0)), ("c", Var("y")),
               ("d", Arith("*", Ref("a"), Ref("c"))))
    node = Aggregation((ExactSum(Arith("*", Ref("b"), Ref("d")), 8.0),
                        ExactSum(Ref("a"), 4.0)), where=Present("x"), derived=derived)
    for clip in ({}, {"y": (0.0, 3.0)}):
        compiler = Compiler("t", {"x": "c0", "y": "c1"}, frozenset({"x", "y"}), dict(clip))
        statement = aggregation(compiler, "SELECT * FROM t", node)
        # the outer statement, the source, d, and c where it is clipped
        assert statement.sql.count("SELECT") == 3 + bool(clip)
        assert "AS d_a" not in statement.sql and "AS d_b" not in statement.sql
        row = connection.execute(statement.sql, statement.params).fetchone()
        assert {(): tuple(row[1:])} == aggregate(node, frame, clip), clip
    # a name defined again is read as its last definition, in place or not
    again = Aggregation((ExactSum(Ref("a"), 1.0),), where=Compare(">", Ref("a"), Const(2.5)),
                        derived=(("a", Var("x")), ("a", Arith("*", Var("x"), Const(2.0)))))
    statement = aggregation(Compiler("t", {"x": "c0", "y": "c1"}, frozenset({"x", "y"})),
                            "SELECT * FROM t", again)
    row = connection.execute(statement.sql, statement.params).fetchone()
    assert {(): tuple(row[1:])} == aggregate(again, frame, {}) == {(): (21,)}
    connection.close()


def test_derived_columns_that_read_none_of_each_other_share_one_subquery() -> None:
    """Derived columns are computed in layers by what they read: k-means' 30 distances, each
    reading only the row, in one subquery (one subquery per column nested a hundred deep for
    100 centres, and DuckDB took 40 s to plan it), the next column in a second."""
    import duckdb

    from node.sql.compile import Compiler, aggregation
    from stats.aggregates import Aggregation, ArgMinKey, Arith, Const, Ref, Rows, Var, mul
    from stats.kinds.evaluate import aggregate

    frame = pd.DataFrame({"x": [0.5, -1.25, 3.0, 7.5, 2.0, 11.0]})
    connection = duckdb.connect()
    connection.execute("CREATE TABLE t AS SELECT x AS c0 FROM frame")
    distances = tuple((f"q{c}", mul(Arith("-", Var("x"), Const(float(c) / 3)),
                                    Arith("-", Var("x"), Const(float(c) / 3))))
                      for c in range(30))
    node = Aggregation((Rows(),), (ArgMinKey(tuple(Ref(f"q{c}") for c in range(30))),),
                       derived=(*distances, ("near", Arith("-", Ref("q0"), Ref("q1")))))
    statement = aggregation(Compiler("t", {"x": "c0"}, frozenset({"x"})), "SELECT * FROM t",
                            node)
    assert statement.sql.count("SELECT") == 4  # the outer statement, the source, two layers
    rows = connection.execute(statement.sql, statement.params).fetchall()
    assert {(int(r[0]),): (int(r[2]),) for r in rows} == aggregate(node, frame, {})
    connection.close()


def wide_regression() -> tuple[DataModel, pd.DataFrame, QuerySpec]:
    """60 numeric variables, 80 rows, and a regression on all 60 terms (3,660 measures)."""
    names = [f"v{i}" for i in range(60)]
    variables = [Variable("dataset", "dataset", "text", True, ("d1", "d2"))] + [
        Variable(v, v, "real", False, min=-10, max=10) for v in names]
    model = DataModel("wide", "1", {v.code: v for v in variables})
    rng = np.random.default_rng(5)
    rows = coerce(pd.DataFrame({"dataset": rng.choice(["d1", "d2"], 80), **{
        v: rng.uniform(-10, 10, 80).round(2) for v in names}}), model)
    spec = QuerySpec(data_model="wide:1", datasets=("d1", "d2"), method="linear_regression",
                     parameters={"terms": [{"const": 1}] + [{"var": v} for v in names[:59]]})
    return model, rows, spec


def test_a_wide_query_is_computed_in_statements_of_at_most_max_measures(
        tmp_path: Path) -> None:
    """A regression on 60 terms has 3,660 measures: in one statement DuckDB ran out of its
    512 MB from about 89 terms, PostgreSQL refused more than 1,664 result columns (45
    terms); it is computed in statements of MAX_MEASURES measures, with the pandas store's
    integers."""
    from node.sql import store as sql_store

    model, rows, spec = wide_regression()
    rows.to_parquet(tmp_path / "wide.parquet", index=False)
    duck = DuckRows.load([DataSource("parquet", path=tmp_path / "wide.parquet")], model)
    seen: list[str] = []
    run = duck._rows
    duck._rows = lambda compiler, sql: seen.append(sql) or run(compiler, sql)  # type: ignore
    got = duck.computed(spec, exact_scale, None)
    assert len(seen) >= 4 and all(sql.count(" AS m") <= sql_store.MAX_MEASURES + 1
                                  for sql in seen)
    _same(FrameRows(rows, model).computed(spec, exact_scale, None), got)
    duck.close()


def _session(store: object, tmp_path: Path, max_rows: int = 1 << 24) -> object:
    from crypto.identity import SigningIdentity
    from crypto.randomness import SeededRandom
    from node.budget import BudgetKeeper
    from node.policy import Policy
    from node.session import LoadedData, NodeSession

    policy = Policy.from_dict({"exact_access": "*"})
    identity = SigningIdentity.generate(SeededRandom(7))
    budget = BudgetKeeper(tmp_path / f"ledger-{id(store)}.db", identity, policy)
    return NodeSession("n", LoadedData(_model(), store=store), policy, budget, max_rows)


def test_a_node_above_max_rows_per_node_refuses_naming_the_limit(stores: dict,
                                                                  tmp_path: Path) -> None:
    from protocol.errors import QueryError

    spec = _spec("count", None)
    for name in ("pandas", "csv"):
        session = _session(stores[name], tmp_path, max_rows=299)
        with pytest.raises(QueryError, match=r"max_rows_per_node \(299\)"):
            session.plan(spec, "alice", threshold=1)
        _session(stores[name], tmp_path, max_rows=300).plan(spec, "alice", threshold=1)


def test_sums_that_could_leave_the_ring_are_refused_on_both(tmp_path: Path) -> None:
    """|S| < 2^62 is planned from the node's magnitudes and, where that does not fit, from
    the absolute sums (computed in SQL on DuckDB); the refusal names the bound."""
    from protocol.errors import InternalError, QueryError

    model, rows = _model(), _rows()
    rows.loc[rows.index[:3], "score"] = 3e17  # no declared bounds: the node's own largest
    rows.to_csv(tmp_path / "big.csv", index=False)
    duck = DuckRows.load([DataSource("csv", path=tmp_path / "big.csv")], model)
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"),
                     method="descriptive_stats", variables=("score",))
    for store in (FrameRows(rows, model), duck):
        with pytest.raises(QueryError, match=r"2\^62"):
            _session(store, tmp_path).plan(spec, "alice", threshold=1)
    # the age column is bounded by the model: its sums are planned without any pass
    fine = dataclasses.replace(spec, variables=("age",))
    _session(duck, tmp_path).plan(fine, "alice", threshold=1)
    # the engine failing in that pass (helper-23: out of memory on a 256-term regression)
    # is the generic refusal the lifecycle records, not the engine's exception and text
    duck._connection.close()
    with pytest.raises(InternalError) as failed:
        _session(duck, tmp_path).plan(spec, "alice", threshold=1)
    assert str(failed.value) == str(InternalError())
    duck.close()


CENTRED = {
    "moments": dict(method="descriptive_stats", variables=("bmi", "age", "sex"), by="arm",
                    parameters={"centring": {"bmi": [31.0, 7.5], "age": [40.0, 3.0]}}),
    "crossprod": dict(method="linear_regression", kind="crossprod", parameters={
        "terms": [{"const": 1}, {"var": "age"}, {"var": "bmi"}, {"var": "sex", "level": "M"},
                  {"var": "bmi", "transform": "log"}],
        "centring": {"bmi": [31.0, 7.5], "age": [40.0, 3.0]}}),
}


@pytest.mark.parametrize("filters", FILTERS[:3], ids=range(3))
@pytest.mark.parametrize("kind", sorted(CENTRED))
def test_centred_sums_agree_exactly(stores: dict, kind: str, filters: object) -> None:
    """Public centring (x - c) / h is part of the declaration: the same integers on every
    store, and the same sums of zeros for a withheld cell."""
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), filters=filters,
                     **CENTRED[kind])
    expected = stores["pandas"].computed(spec, exact_scale, None)
    plain = stores["pandas"].computed(dataclasses.replace(spec, parameters={
        k: v for k, v in spec.parameters.items() if k != "centring"}), exact_scale, None)
    assert expected.values != plain.values and expected.guards == plain.guards
    assert bool(expected.zeros) == (kind == "moments")
    for name in ("csv", "parquet"):
        got = stores[name].computed(spec, exact_scale, None)
        _same(expected, got)
        assert got.zeros == expected.zeros


@pytest.mark.parametrize("kind", sorted(CENTRED))
def test_centred_dp_encodings_agree(stores: dict, kind: str) -> None:
    """DP: clipped, centred, rounded at the slot's scale (its reach): the same integers."""
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"),
                     privacy={"mode": "dp", "rho": 1.0,
                              "bounds": {"age": [20, 80], "bmi": [18, 35]}},
                     **{**CENTRED[kind], "parameters": {
                         **CENTRED[kind]["parameters"],
                         "centring": {"bmi": [33.0, 2.0], "age": [75.0, 10.0]}}})
    if kind == "crossprod":
        terms = spec.parameters["terms"][:4]
        spec = dataclasses.replace(spec, parameters={**spec.parameters, "terms": terms})
    plan = layout(spec, PlanModel(_model()), 1 << 20)
    encoded = [dp_encode(plan, stores[n].computed(spec, dp_scale(plan), clipping(plan)))
               for n in ("pandas", "csv", "parquet")]
    assert encoded[0] == encoded[1] == encoded[2]
    assert any(v < 0 for v in encoded[0])  # centred: below the centre counts negative


def test_a_centred_sum_withheld_reads_as_zeros_on_duckdb(tmp_path: Path) -> None:
    """One non-zero value in a cell: its centred sums are withheld and read as the centred
    sums of zeros, on both stores alike."""
    model, rows = _model(), _rows()
    rows["time"] = 0
    rows.loc[rows.index[5], "time"] = 12
    rows = rows.assign(dataset="d1")
    rows.to_parquet(tmp_path / "z.parquet", index=False)
    duck = DuckRows.load([DataSource("parquet", path=tmp_path / "z.parquet")], model)
    spec = QuerySpec("descriptive_stats", "kinds:1", ("d1",), ("time",),
                     parameters={"centring": {"time": [31.0, 7.5]}})
    plan = layout(spec, PlanModel(model), 1 << 20)
    vectors = []
    for store in (FrameRows(rows, model), duck):
        vector, summary = local_vector(spec, plan, store, model, min_row_count=1,
                                       small_cell_threshold=10)
        vectors.append([int(v) for v in vector.to_signed()])
        assert summary.cells_withheld == 1
    assert vectors[0] == vectors[1]
    zero = round((0.0 - 31.0) / 7.5 * 2.0**48)
    assert vectors[0][plan.index()[("sum", "d1", None, "time")]] == len(rows) * zero
    duck.close()


def test_renamed_headers_and_a_missing_patient_column_are_refused_as_on_pandas(
        tmp_path: Path) -> None:
    """The column checks are the pandas store's (node.validation.header_problems)."""
    model, rows = _model(), _rows()
    rows.rename(columns={"sex": "gender"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(ValidationFailed, match=r"'gender'.*renamed header"):
        DuckRows.load([DataSource("csv", path=tmp_path / "renamed.csv")], model)
    rows.assign(note="x").to_csv(tmp_path / "extra.csv", index=False)
    duck = DuckRows.load([DataSource("csv", path=tmp_path / "extra.csv")], model)
    assert [str(p) for p in duck.warnings] == [
        "column 'note': not a variable of data model kinds:1 (warning)"]
    duck.close()
    with_patient = dataclasses.replace(model, patient_id="age", max_rows_per_patient=2)
    rows.drop(columns="age").to_csv(tmp_path / "nopatient.csv", index=False)
    with pytest.raises(ValidationFailed, match="patient identifier"):
        DuckRows.load([DataSource("csv", path=tmp_path / "nopatient.csv")], with_patient)


def test_a_declared_delimiter_is_read_and_an_undeclared_one_refused(tmp_path: Path) -> None:
    model, rows = _model(), _rows()
    rows.to_csv(tmp_path / "semi.csv", index=False, sep=";")
    with pytest.raises(Exception, match="separated by ';'"):
        DuckRows.load([DataSource("csv", path=tmp_path / "semi.csv")], model)
    duck = DuckRows.load([DataSource("csv", path=tmp_path / "semi.csv", delimiter=";")], model)
    spec = _spec("moments", None)
    _same(FrameRows(rows, model).computed(spec, exact_scale, None),
          duck.computed(spec, exact_scale, None))
    duck.close()


#: cells of a numeric column and what the pandas store makes of them (stats.numbers)
CELLS = [" 1.5", "1.5 ", "\t20", "1_000", "+-30", "1,5", "0x10", "inf", "-Infinity", "nan",
         "1e400", "1d5", "２０", "\t", "\xa0 ", "30.", "+.5e2", "45", "1E+1", "-0"]


def test_numbers_and_blanks_are_read_exactly_as_the_pandas_store_reads_them(
        tmp_path: Path) -> None:
    """DuckDB's cast takes ' 1.5', '1_000' and '+-30' for numbers, and its trim() leaves a
    tab: the node reads cells as the pandas store does (Arrow's grammar, Python's blanks),
    so the same file is refused with the same problems, and accepted with the same values."""
    from node.validation import check_valid

    n = len(CELLS)
    frame = pd.DataFrame({"dataset": ["d1"] * n, "bmi": CELLS, "age": ["30"] * n,
                          "sex": ["F", " M", "\t"] + ["M"] * (n - 3)})
    path = tmp_path / "cells.csv"
    frame.to_csv(path, index=False)
    read = DataSource("csv", path=path).load()
    with pytest.raises(ValidationFailed) as pandas_error:
        check_valid(read, _model())
    with pytest.raises(ValidationFailed) as duck_error:
        DuckRows.load([DataSource("csv", path=path)], _model())
    expected = [str(p) for p in pandas_error.value.problems]
    assert "row 1, column 'bmi': value ' 1.5' is not a number (blanks around it)" in expected
    assert [str(p) for p in duck_error.value.problems] == expected
    assert duck_error.value.total == pandas_error.value.total

    # cells both read as numbers or as missing (blank): the same typed values
    good = ["30.", "+.5e2", "45", "1E+1", "\t", "\xa0 ", "12.25", "5e1", "0045.5"]
    pd.DataFrame({"dataset": "d1", "bmi": good}).to_csv(path, index=False)
    pandas = FrameRows(coerce(DataSource("csv", path=path).load(), _model()), _model())
    duck = DuckRows.load([DataSource("csv", path=path)], _model())
    spec = QuerySpec("descriptive_stats", "kinds:1", ("d1",), ("bmi",))
    got = [store.computed(spec, exact_scale, None) for store in (pandas, duck)]
    _same(*got)
    assert got[1].values[("missing", "d1", None, "bmi")] == 2
    assert got[1].values[("sum", "d1", None, "bmi")] == 30 + 50 + 45 + 10 + 12.25 + 50 + 45.5
    duck.close()


def test_random_cells_are_refused_and_read_alike(tmp_path: Path) -> None:
    """Random text of digits, signs, points, exponents, letters and blanks: the pandas and
    DuckDB stores count the same problems, and keep the same values of the others."""
    from node.validation import validate

    rng = np.random.default_rng(11)
    alphabet = list("0123456789" * 3 + ".+-eE" * 2 + "infatyINFATY _,\t\xa0x")
    cells = ["".join(rng.choice(alphabet, rng.integers(1, 7))) for _ in range(4000)]
    cells += [f"{v:.17g}" for v in rng.uniform(10, 60, 1000)]
    path = tmp_path / "random.csv"
    pd.DataFrame({"dataset": "d1", "bmi": cells}).to_csv(path, index=False)
    read = DataSource("csv", path=path).load()
    problems = validate(read, _model())
    with pytest.raises(ValidationFailed) as error:
        DuckRows.load([DataSource("csv", path=path)], _model())
    assert error.value.total == len(problems) > 100
    bad = {p.row for p in problems}
    kept = read[[i + 1 not in bad for i in range(len(read))]]
    kept.to_csv(path, index=False)
    duck = DuckRows.load([DataSource("csv", path=path)], _model())
    pandas = FrameRows(coerce(kept, _model()), _model())
    spec = QuerySpec("descriptive_stats", "kinds:1", ("d1",), ("bmi",))
    _same(pandas.computed(spec, exact_scale, None), duck.computed(spec, exact_scale, None))
    duck.close()


def test_rows_a_killed_node_left_are_swept_at_the_next_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGKILL runs no clean-up: the node's typed copy of its rows stayed in the temporary
    folder for good (a reviewer found 240 on one host). The next start removes a copy no
    process holds, and leaves one a running node holds, its own (however the folder is
    spelt) and another host's (a shared temporary folder may not share locks)."""
    import os
    import signal
    import time

    from node.sql.duckdb_rows import ROWS_PREFIX, STALE_AFTER_S, rows_prefix, sweep_stale

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    prefix = rows_prefix()
    hold = textwrap.dedent("""
        import sys, time, duckdb
        connection = duckdb.connect(sys.argv[1])
        connection.execute("CREATE TABLE node_rows AS SELECT 42 AS patient")
        print("holding", flush=True)
        time.sleep(600)
    """)
    holders = {}
    for name in ("killed", "running"):
        folder = tmp_path / f"{prefix}{name}"
        folder.mkdir(mode=0o700)
        holders[name] = subprocess.Popen([sys.executable, "-c", hold,
                                          str(folder / "rows.duckdb")],
                                         stdout=subprocess.PIPE, text=True)
        assert holders[name].stdout.readline().strip() == "holding"  # type: ignore[union-attr]
    holders["killed"].send_signal(signal.SIGKILL)
    holders["killed"].wait(30)
    for name in ("crashed-at-start", "starting"):  # young: a node may be starting in it
        (tmp_path / f"{prefix}{name}").mkdir()
    (tmp_path / f"{ROWS_PREFIX}otherhost-killed").mkdir()
    old = time.time() - 2 * STALE_AFTER_S
    for name in (f"{prefix}killed", f"{prefix}running", f"{prefix}crashed-at-start",
                 f"{ROWS_PREFIX}otherhost-killed"):
        os.utime(tmp_path / name, (old, old))
    try:
        path = tmp_path / "rows.csv"
        _rows().to_csv(path, index=False)
        first = DuckRows.load([DataSource("csv", path=path)], _model())
        os.utime(first.directory, (old, old))
        (tmp_path / "alias").symlink_to(tmp_path)
        assert sweep_stale(tmp_path / "alias" / ".." / tmp_path.name) == 0  # own, by inode
        second = DuckRows.load([DataSource("csv", path=path)], _model())
        left = sorted(p.name for p in tmp_path.glob(ROWS_PREFIX + "*"))
        assert left == sorted([f"{prefix}running", f"{prefix}starting",
                               f"{ROWS_PREFIX}otherhost-killed",
                               first.directory.name, second.directory.name])
        assert first.count() == second.count() == len(_rows())  # its own: untouched
        first.close()
        second.close()
    finally:
        holders["running"].kill()
        holders["running"].wait(30)
    assert sorted(p.name for p in tmp_path.glob(ROWS_PREFIX + "*")) == sorted([
        f"{prefix}running", f"{prefix}starting", f"{ROWS_PREFIX}otherhost-killed"])
