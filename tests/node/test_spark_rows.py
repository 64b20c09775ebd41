"""The Spark node (node.sql.spark_rows) computes what the pandas node computes, integer for
integer, on a representative part of the catalog: declared kinds compiled to Spark SQL
(filters, DP clipping, rows per patient), folds on fetched rows; start-up names the same
problems; errors are readable. Spark runs in local mode on this machine (one JVM per test
process); the tests skip where pyspark or Java is missing, and fail under CI=true."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from node.datasource import DataSource
from node.rowstore import FrameRows
from node.validation import ValidationFailed, check_valid
from protocol.errors import ConfigurationError
from stats.datamodel import LocalDataError
from stats.kinds import KINDS
from stats.kinds.base import exact_scale
from stats.query import QuerySpec
from tests.node.test_duckdb_rows import FILTERS, _same, _spec
from tests.stats.test_kinds import _model, _rows


def _missing() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed"
    if shutil.which("java") is None:
        return "no Java runtime (Debian: openjdk-17-jre-headless)"
    return None


MISSING = _missing()
if MISSING and os.environ.get("CI"):
    pytest.fail(f"Spark tests must run in CI: {MISSING}", pytrace=False)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"Spark: {MISSING}")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from node.sql.spark_rows import SparkRows

    model, rows = _model(), _rows()
    folder = tmp_path_factory.mktemp("spark")
    rows.to_parquet(folder / "rows.parquet", index=False)
    rows.to_csv(folder / "rows.csv", index=False)
    out = {"pandas": FrameRows(rows, model),
           "parquet": SparkRows.load([DataSource("spark", url=str(folder / "rows.parquet"))],
                                     model, ),
           "csv": SparkRows.load([DataSource("spark", url=str(folder / "rows.csv"),
                                             format="csv")], model)}
    yield out
    out["parquet"].close()
    out["csv"].close()


KINDS_HERE = sorted(KINDS)


def _agree(expected: object, got: object) -> None:
    """Counts and guards equal; sums equal but for a transformed term (Java's log and exp may
    differ from C's in the last bit, so a row's fixed-point term can round one unit apart),
    within the 1e-12 relative the stores are held to."""
    assert expected.rows == got.rows and expected.guards.keys() == got.guards.keys()
    for family, guards in expected.guards.items():
        assert guards.keys() == got.guards[family].keys()
        for guard, value in guards.items():  # counts exactly, effective sample sizes closely
            assert got.guards[family][guard] == pytest.approx(value, rel=1e-12, abs=0), family
    assert expected.values.keys() == got.values.keys()
    for key, value in expected.values.items():
        if isinstance(value, int):
            assert got.values[key] == value, key
        else:
            assert abs(got.values[key] - value) <= 1e-12 * max(abs(value), 1), key


@pytest.mark.parametrize("filters", [FILTERS[0], FILTERS[1], FILTERS[2]], ids=range(3))
@pytest.mark.parametrize("kind", KINDS_HERE)
def test_kinds_agree_with_pandas(stores: dict, kind: str, filters: object) -> None:
    spec = _spec(kind, filters)
    expected = stores["pandas"].computed(spec, exact_scale, None)
    for name in ("parquet", "csv"):
        _agree(expected, stores[name].computed(spec, exact_scale, None))


def test_a_histogram_of_hundreds_of_edges_is_counted_in_spark_sql(stores: dict) -> None:
    """Bin keys are a binary search: one comparison per edge, summed, overflowed the JVM's
    stack from 500 edges (the query failed, after a DP charge). Beyond 512 edges the rows
    are fetched (the search over 3,000 edges ran Spark's optimizer out of heap)."""
    for count, in_sql in ((512, True), (3000, False)):
        edges = [18 + 82 * i / (count - 1) for i in range(count)]
        spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), method="histogram",
                         parameters={"axes": [{"var": "age", "edges": edges}]})
        assert (stores["parquet"].working_rows(spec) == 0) == in_sql
        _agree(stores["pandas"].computed(spec, exact_scale, None),
               stores["parquet"].computed(spec, exact_scale, None))


def test_declared_kinds_run_in_spark_sql(stores: dict) -> None:
    for kind in sorted(KINDS):
        assert stores["parquet"].working_rows(_spec(kind, None)) == 0


def test_start_up_names_the_problems_pandas_names(tmp_path: Path) -> None:
    from node.sql.spark_rows import SparkRows

    model = _model()
    rows = _rows().astype(object)
    rows.loc[3, "bmi"] = " 1.5"
    rows.loc[7, "bmi"] = "1_000"
    rows.loc[9, "sex"] = "X"
    path = tmp_path / "bad.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(ValidationFailed) as pandas_error:
        check_valid(DataSource("csv", path=path).load(), model)
    with pytest.raises(ValidationFailed) as spark_error:
        SparkRows.load([DataSource("spark", url=str(path), format="csv")], model)
    assert [str(p) for p in spark_error.value.problems] == \
        [str(p) for p in pandas_error.value.problems]
    assert spark_error.value.total == pandas_error.value.total


def test_a_missing_location_is_a_readable_error(tmp_path: Path) -> None:
    from node.sql.spark_rows import SparkRows

    with pytest.raises(LocalDataError, match="cannot be read"):
        SparkRows.load([DataSource("spark", url=str(tmp_path / "nowhere"))], _model())


def test_spark_sources_are_configured_with_a_location_or_a_table() -> None:
    with pytest.raises(ConfigurationError, match="needs 'url'"):
        DataSource("spark")
    with pytest.raises(ConfigurationError, match="format"):
        DataSource("spark", url="s3a://bucket/rows", format="xlsx")
    with pytest.raises(ConfigurationError, match="spark sources only"):
        DataSource("csv", path=Path("x.csv"), master="local[1]")
    source = DataSource.from_config({"url": "s3a://key:secret@bucket/rows", "format": "csv"})
    assert source.kind == "spark" and "secret" not in source.describe()


@pytest.mark.parametrize("algorithm", ["descriptive_stats", "linear_regression"])
def test_dp_encodings_agree_clipped(stores: dict, algorithm: str) -> None:
    """DP: each row clipped in Spark SQL and rounded at the slot's DP scale; the encoded
    vectors (before noise) are the pandas store's integers."""
    from node.statistics import clipping, dp_encode, dp_scale
    from stats.datamodel import PlanModel
    from stats.planner import layout

    base = {"descriptive_stats": dict(variables=("bmi", "age")),
            "linear_regression": dict(parameters={"terms": [{"const": 1}, {"var": "age"},
                                                            {"var": "bmi"}]})}[algorithm]
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), method=algorithm,
                     privacy={"mode": "dp", "rho": 1.0,
                              "bounds": {"age": [20, 80], "bmi": [18, 35]}}, **base)
    plan = layout(spec, PlanModel(_model()), 1 << 20)
    encoded = [dp_encode(plan, stores[n].computed(spec, dp_scale(plan), clipping(plan)))
               for n in ("pandas", "parquet")]
    assert encoded[0] == encoded[1]
    assert any(encoded[0])


def test_a_filter_on_a_text_value_and_the_largest_magnitudes(stores: dict) -> None:
    spec = dataclasses.replace(_spec("moments", None),
                               filters={"op": "==", "var": "sex", "value": "F"})
    _same(stores["pandas"].computed(spec, exact_scale, None),
          stores["parquet"].computed(spec, exact_scale, None))
    for code in ("bmi", "age"):
        assert math.isclose(stores["parquet"].largest_magnitude(code),
                            stores["pandas"].largest_magnitude(code), rel_tol=0)


def test_filter_values_are_bound_never_pasted(stores: dict) -> None:
    """A researcher's text is a named parameter: quotes, backslashes and SQL in it are a
    value to compare, as on pandas (no row has it)."""
    for text in ("F' OR '1'='1", "F\\' OR 1=1 --", "`c0`"):
        spec = dataclasses.replace(_spec("count", None),
                                   filters={"op": "==", "var": "sex", "value": text})
        got = stores["parquet"].computed(spec, exact_scale, None)
        _same(stores["pandas"].computed(spec, exact_scale, None), got)
        assert got.rows == 0


def test_exact_sums_round_half_to_even(stores: dict) -> None:
    """Spark's cast truncates: the compiled sum rounds with rint (half to even) and keeps
    every digit up to 2^62 (a DOUBLE cast straight to DECIMAL would keep 17), negative
    terms and terms at the 31-bit split included."""
    from node.sql.compile import SPARK, Compiler, aggregation
    from node.sql.spark_rows import _named
    from stats.aggregates import Aggregation, ExactSum, Var
    from stats.kinds.evaluate import aggregate

    values = [0.5, 1.5, 2.5, -0.5, -2.5, 3.5, 4503599627370495.5, 2.0**62 - 2.0**10,
              364791569817010180.0, -(2.0**62) + 2.0**11, -3.0, 2.0**31 - 0.5, -(2.0**31)]
    node = Aggregation((ExactSum(Var("x"), 1.0), ExactSum(Var("x"), 0.5)))
    expected = aggregate(node, pd.DataFrame({"x": values}), {})
    compiler = Compiler("t", {"x": "c0"}, frozenset({"x"}), dialect=SPARK)
    compiler.params.append(values)
    statement = aggregation(compiler, "SELECT explode(CAST($1 AS ARRAY<DOUBLE>)) AS c0", node)
    session = stores["parquet"]._session
    row = session.sql(*_named(statement.sql, statement.params)).collect()[0]
    assert (int(row[1]), int(row[2])) == expected[()]
    assert expected[()][0] == sum(round(v) for v in values)


def test_a_node_serves_rows_spark_reads(tmp_path: Path) -> None:
    """A whole federation on loopback whose node hosp_a reads its rows through Spark (local
    mode, in the node's own process): the totals are the rows' own."""
    import fedtally
    from fedtally.synthetic import stroke_model, three_hospitals

    hospitals = three_hospitals(scale=0.05)
    location = tmp_path / "lake" / "stroke.parquet"
    location.parent.mkdir()
    hospitals["hosp_a"].to_parquet(location, index=False)
    data = {"hosp_a": {"kind": "spark", "url": str(location), "format": "parquet",
                       "master": "local[1]"},
            "hosp_b": hospitals["hosp_b"]}
    with fedtally.local_federation(data, stroke_model(), workdir=tmp_path / "fed",
                                   max_colluding_nodes=0) as fed:
        stats = fed.descriptive_stats(["age", "nihss"], datasets=["hosp_a", "hosp_b"],
                                      filters={"op": ">", "var": "age", "value": 60})
        log = fed.local.log("hosp_a")
    assert "kept in Spark" in log
    for variable in ("age", "nihss"):
        for dataset in ("hosp_a", "hosp_b"):
            frame = hospitals[dataset]
            values = frame.loc[frame["age"] > 60, variable].dropna()
            assert stats.loc[(variable, dataset), "count"] == len(values)
            assert stats.loc[(variable, dataset), "mean"] == pytest.approx(values.mean(),
                                                                           rel=1e-12)


def test_folds_hash_every_position_as_numpy_does(stores: dict) -> None:
    """splitmix64 in ANSI Spark (signed BIGINT XOR and shifts, DECIMAL products of 32-bit
    halves) against numpy's uint64, seeds up to 2^64 - 1 included."""
    from node.sql.compile import ROW, SPARK, Compiler
    from node.sql.spark_rows import _named
    from stats.aggregates import FoldKey
    from stats.kinds.frame import fold_numbers

    session = stores["parquet"]._session
    for seed, folds in [(1, 3), (2**63 + 12345, 10), (2**64 - 1, 7), (987654321987, 2)]:
        compiler = Compiler("t", {}, frozenset(), dialect=SPARK)
        key = compiler.key(FoldKey(folds, seed))
        rows = session.sql(*_named(f"SELECT {key} FROM (SELECT id AS {ROW} FROM range(3000)) "
                                   f"AS t ORDER BY {ROW}", compiler.params)).collect()
        assert [int(r[0]) for r in rows] == fold_numbers(pd.RangeIndex(3000), folds,
                                                         seed).tolist()


def test_kinds_with_folds_run_in_spark_sql(stores: dict) -> None:
    for kind in ("crossprod", "regression_eval"):
        spec = _spec(kind, None)
        assert "folds" in spec.parameters
        assert stores["parquet"].working_rows(spec) == 0


def test_rows_read_in_many_partitions_keep_the_files_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file Spark reads in many partitions (row groups in small splits): each row's
    position is its place in the file and a failing cell's row number is pandas', and no
    step of the start-up gathers every row in one partition (no global window or sort)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from node.sql import spark_rows
    from node.sql.compile import ROW
    from node.sql.spark_rows import SparkRows

    opened = spark_rows.spark_session

    def small_splits(master: str | None) -> object:
        session = opened(master)
        session.conf.set("spark.sql.files.maxPartitionBytes", "1024")
        session.conf.set("spark.sql.files.openCostInBytes", "0")
        return session

    monkeypatch.setattr(spark_rows, "spark_session", small_splits)
    model, rows = _model(), _rows()
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=20)
    kept = opened(None).sparkContext._jsc.getPersistentRDDs
    before = kept().size()
    store = SparkRows.load([DataSource("spark", url=str(path))], model)
    assert kept().size() == before + 1  # the placed rows only: the first read's cache is freed
    try:
        session = store._session
        assert session.read.parquet(str(path)).rdd.getNumPartitions() > 5
        age, score = store.columns["age"], store.columns["score"]
        placed = session.sql(f"SELECT {ROW}, {age}, {score} FROM node_rows ORDER BY {ROW}"
                             ).toPandas()
        assert placed[ROW].tolist() == list(range(len(rows)))
        assert placed[age].tolist() == rows["age"].astype(float).tolist()
        assert placed[score].tolist() == rows["score"].tolist()
        plan = store._typed._jdf.queryExecution().executedPlan().toString()
        assert "Window" not in plan and "SinglePartition" not in plan
    finally:
        store.close()
    assert kept().size() == before

    bad = rows.astype({"bmi": object})
    bad.loc[[3, 161, 287], "bmi"] = ["1_000", " 2.5", "+-1"]
    bad["bmi"] = bad["bmi"].map(lambda v: None if v is None or v != v else str(v))
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), path, row_group_size=20)
    with pytest.raises(ValidationFailed) as pandas_error:
        check_valid(DataSource("parquet", path=path).load(), model)
    with pytest.raises(ValidationFailed) as spark_error:
        SparkRows.load([DataSource("spark", url=str(path))], model)
    assert [str(p) for p in spark_error.value.problems] == \
        [str(p) for p in pandas_error.value.problems]
    assert len(spark_error.value.problems) == 3  # rows 3, 161, 287: three partitions
    assert kept().size() == before  # nothing left cached by a start-up that failed


#: rows counted by another session while one is interrupted: about 3 s in local mode on 2 cores
OTHER_ROWS = 10_000_000_000


def test_past_its_time_limit_this_node_s_spark_jobs_are_interrupted(stores: dict) -> None:
    """The policy's max_query_seconds (node.time_limit): the session's running job is
    interrupted (other sessions sharing the Spark context are not), and the store serves
    the next query."""
    import threading

    from node.time_limit import TimeLimit

    store, other = stores["parquet"], stores["csv"]
    failed: list[BaseException] = []
    other_done: list[int] = []

    def run() -> None:
        try:
            store._session.sql("SELECT count(*) FROM range(0, 100000000000)").collect()
        except Exception as exc:  # noqa: BLE001 - the test reads what it was
            failed.append(exc)

    def run_other() -> None:  # running when the first is interrupted, and not stopped
        other_done.append(other._rows(other._compiler(None), f"SELECT count(*) FROM range("
                                      f"0, {OTHER_ROWS})")[0][0])

    with TimeLimit(store, 1.0) as limit:
        worker, beside = threading.Thread(target=run), threading.Thread(target=run_other)
        worker.start()
        beside.start()
        worker.join(120)
    beside.join(120)
    assert limit.reached and not worker.is_alive() and len(failed) == 1
    assert other_done == [OTHER_ROWS]
    spec = _spec("count", None)
    _same(stores["pandas"].computed(spec, exact_scale, None),
          store.computed(spec, exact_scale, None))
