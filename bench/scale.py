"""A node's start-up, per-query latency and peak memory as its rows grow: the DuckDB node
(``node.sql.duckdb_rows``), DuckDB alone running the same aggregates by hand on the same file,
and the pandas node (load, validate, coerce, then ``node.statistics.local_vector``), each in
a fresh process (peak RSS is the process's), measured in the same run, one after another.

DuckDB by hand is measured twice, both counting with ``count_if`` rather than ``count(*)
FILTER`` (which took DuckDB 1.7 to 2x as long for descriptive statistics): "raw" loads the
file into memory and adds float64; "exact" does the least of what the node must do, by hand: it
keeps the rows in a database file under the node's memory limit, and rounds each row's term
to the node's fixed point (2^48) before adding the integers exactly
(``sum(CAST(x * 2^48 AS BIGINT))``, into DuckDB's HUGEINT; grouped, as the node does, as
the high and low 31 bits apart). node/raw is what the issue's targets are stated against;
node/exact shows what the node adds to that work (checks, filters, disclosure rules,
encoding).

One node, 10 numeric and 3 categorical columns (plus the dataset), from CSV and Parquet.
Queries: count; descriptive_stats of the 10 numbers; linear_regression on 5 covariates; a
5 x 20 contingency table. The node's time covers the whole contribution: SQL, disclosure
rules and fixed-point encoding of the vector. Sizes: ``FEDTALLY_SCALE_ROWS`` (default
``1000000,5000000``); the pandas node is skipped above ``FEDTALLY_SCALE_PANDAS_MAX`` rows
(default 5,000,000: at 20M it needs ~10 GiB and minutes).

PostgreSQL, where its server binaries are installed (``FEDTALLY_SCALE_POSTGRES=0`` leaves it
out): the same rows COPYed into a table of a throwaway local cluster (the tests' own,
``tests/postgres_support.py``), then the PostgreSQL node (``node.sql.postgres_rows``:
start-up is its validation in SQL) against the same aggregates by hand in PostgreSQL
("raw": its start-up is the COPY).

Spark, where pyspark and Java are installed (``FEDTALLY_SCALE_SPARK=0`` leaves it out), in
local mode with 2 cores on the Parquet file: the Spark node (``node.sql.spark_rows``) against
the same aggregates by hand in Spark SQL over the file's rows cached in Spark ("raw": its
start-up is the read and the cache). Both start-ups include the JVM's; peak RSS adds the
JVM's peak to the Python process's (an upper bound of their joint peak).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

NUMBERS = [f"x{i}" for i in range(10)]
REPEATS = 3

GENERATE = """
COPY (SELECT 'd' || (i % 2)::VARCHAR AS dataset,
  {numbers},
  'a' || (hash(i) % 5)::VARCHAR AS a, 'b' || (hash(i + 1) % 20)::VARCHAR AS b,
  CASE WHEN hash(i + 2) % 2 = 0 THEN 'F' ELSE 'M' END AS sex
  FROM range({rows}) t(i)) TO '{path}' ({options})
"""


def _model() -> dict:
    variables = [{"code": "dataset", "sql_type": "text", "is_categorical": True,
                  "enumerations": ["d0", "d1"]}]
    variables += [{"code": x, "sql_type": "real", "is_categorical": False} for x in NUMBERS]
    variables += [{"code": "a", "sql_type": "text", "is_categorical": True,
                   "enumerations": [f"a{i}" for i in range(5)]},
                  {"code": "b", "sql_type": "text", "is_categorical": True,
                   "enumerations": [f"b{i}" for i in range(20)]},
                  {"code": "sex", "sql_type": "text", "is_categorical": True,
                   "enumerations": ["F", "M"]}]
    return {"variables": variables}


WORKER = r'''
import json, statistics, sys, time
kind, path, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
NUMBERS = [f"x{i}" for i in range(10)]
COVARIATES = NUMBERS[:5]
REPEATS = int(sys.argv[4])

def timed(fn):
    fn()
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter(); fn(); samples.append(time.perf_counter() - start)
    return statistics.median(samples)

def peak_mib():
    """Peak RSS of this process plus its children's (Spark's JVM), each VmHWM from /proc
    (the rusage maximum would start from the parent's size at the fork): an upper bound,
    as the peaks may fall at different times."""
    import os

    def hwm(pid):
        try:
            with open(f"/proc/{pid}/status") as status:
                return next(int(line.split()[1]) for line in status
                            if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            return 0

    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    mine, found = {os.getpid()}, True
    while found:
        found = {pid for pid, parent in parents.items() if parent in mine} - mine
        mine |= found
    return sum(hwm(pid) for pid in mine) / 1024

out = {}
if kind == "raw" and fmt == "spark":
    from pyspark import StorageLevel
    from node.sql.spark_rows import spark_session
    start = time.perf_counter()
    session = spark_session("local[2]")
    frame = session.read.parquet(path)
    frame.persist(StorageLevel.MEMORY_AND_DISK)
    frame.count()
    frame.createOrReplaceTempView("t")
    out["startup"] = time.perf_counter() - start
elif kind == "raw" and fmt == "postgresql":
    import psycopg
    con = psycopg.connect(path.replace("postgresql+psycopg://", "postgresql://"))
    out["startup"] = float(sys.argv[6])  # the COPY into the table
elif kind in ("raw", "exact"):
    import atexit, shutil, tempfile
    import duckdb
    from node.sql.duckdb_rows import DEFAULT_MEMORY_LIMIT  # imported before the clock starts
    start = time.perf_counter()
    if kind == "raw":
        con = duckdb.connect(config={"threads": 2})
    else:  # a database file under the node's memory limit, as the node keeps its rows
        folder = tempfile.mkdtemp(prefix="fedtally-exact-")
        atexit.register(shutil.rmtree, folder, True)  # removed at any exit but a kill
        con = duckdb.connect(f"{folder}/rows.duckdb", config={
            "threads": 2, "memory_limit": DEFAULT_MEMORY_LIMIT,
            "temp_directory": f"{folder}/spill"})
    con.execute("SET enable_progress_bar = false")
    reader = "read_csv" if fmt == "csv" else "read_parquet"
    con.execute(f"CREATE TABLE t AS SELECT * FROM {reader}('{path}')")
    out["startup"] = time.perf_counter() - start
if kind in ("raw", "exact"):
    if kind == "raw":
        def total(x, grouped=False):
            return f"sum({x})"
    else:  # each row's term rounded to the node's fixed point (2^48) and added exactly
        def total(x, grouped=False):
            term = f"CAST(({x}) * 281474976710656.0 AS BIGINT)"
            if not grouped:
                return f"sum({term})"
            # grouped, as the node adds large terms: high and low 31 bits apart (DuckDB's
            # grouped HUGEINT state carries every few rows)
            return (f"CAST(sum({term} >> 31) AS HUGEINT) * 2147483648 "
                    f"+ sum({term} & 2147483647)")
    # PostgreSQL has no count_if; Spark's node counts with FILTER too (Spark's count_if
    # was no faster there: 1.33-1.48 s against 1.36 s for descriptive_stats at 5M rows)
    nonzero = "count_if({x} <> 0)" if fmt in ("csv", "parquet") \
        else "count(*) FILTER (WHERE {x} <> 0)"
    per_var = ", ".join(f"count({x}), {total(x, True)}, {total(f'{x} * {x}', True)}, "
                        + nonzero.format(x=x) for x in NUMBERS)
    cols = ["1.0"] + COVARIATES + ["x9"]
    pairs = ", ".join(total(f"{cols[i]} * {cols[j]}") for i in range(len(cols))
                      for j in range(i, len(cols)))
    complete = " AND ".join(f"{x} IS NOT NULL" for x in COVARIATES + ["x9"])
    queries = {
        "count": "SELECT dataset, count(*) FROM t GROUP BY dataset",
        "descriptive_stats": f"SELECT dataset, count(*), {per_var} FROM t GROUP BY dataset",
        "linear_regression": f"SELECT count(*), {pairs} FROM t WHERE {complete}",
        "contingency": "SELECT a, b, count(*) FROM t GROUP BY a, b",
    }
    for name, sql in queries.items():
        if fmt == "spark":
            out[name] = timed(lambda sql=sql: session.sql(sql).collect())
        else:
            out[name] = timed(lambda sql=sql: con.execute(sql).fetchall())
else:
    from stats.planner import layout
    from stats.query import QuerySpec
    from stats.datamodel import DataModel, PlanModel
    from node.datasource import DataSource, load_all
    from node.statistics import local_vector
    model = DataModel.from_json(json.loads(sys.argv[5]))
    source = DataSource("sql", url=path, table="t") if fmt == "postgresql" \
        else DataSource("spark", url=path, format="parquet", master="local[2]") \
        if fmt == "spark" else DataSource(fmt, path=path)
    # every import before the clock starts, as for DuckDB by hand
    if kind == "node" and fmt == "spark":
        from node.sql.spark_rows import SparkRows as Store
    elif kind == "node" and fmt == "postgresql":
        from node.sql.postgres_rows import PostgresRows as Store
    elif kind == "node":
        from node.sql.duckdb_rows import DuckRows as Store
    from node.rowstore import FrameRows
    from node.validation import check_valid, coerce
    start = time.perf_counter()
    if kind == "node":
        store = Store.load([source], model)
    else:
        rows = load_all([source]); check_valid(rows, model)
        store = FrameRows(coerce(rows, model), model); del rows
    out["startup"] = time.perf_counter() - start
    view = PlanModel(model)
    datasets = ("d0", "d1")
    terms = [{"const": 1}] + [{"var": x} for x in COVARIATES] + [{"var": "x9"}]
    specs = {
        "count": QuerySpec("count", model.name, datasets),
        "descriptive_stats": QuerySpec("descriptive_stats", model.name, datasets,
                                       tuple(NUMBERS)),
        "linear_regression": QuerySpec("linear_regression", model.name, datasets,
                                       parameters={"terms": terms}),
        "contingency": QuerySpec("contingency_table", model.name, datasets,
                                 parameters={"axes": [{"var": "a"}, {"var": "b"}]}),
    }
    for name, spec in specs.items():
        plan = layout(spec, view, 1 << 40)
        out[name] = timed(lambda spec=spec, plan=plan: local_vector(
            spec, plan, store, model, min_row_count=10, small_cell_threshold=10))
out["peak_mib"] = peak_mib()
print(json.dumps(out))
'''

QUERIES = ("count", "descriptive_stats", "linear_regression", "contingency")


def _sizes() -> list[int]:
    return [int(s) for s in os.environ.get("FEDTALLY_SCALE_ROWS", "1000000,5000000").split(",")]


def _model_json() -> str:
    from stats.datamodel import DataModel, Variable

    variables = [Variable(v["code"], v["code"], v["sql_type"], v["is_categorical"],
                          tuple(v.get("enumerations", ()))) for v in _model()["variables"]]
    return json.dumps(DataModel("scale", "1", {v.code: v for v in variables}).to_json())


def _generate(rows: int, folder: Path) -> dict[str, Path]:
    import duckdb

    numbers = ", ".join(f"round((hash(i * {k + 3}) % 100000) / 1000.0 - {k * 5}, 3) AS x{k}"
                        for k in range(10))
    out = {}
    for fmt, options in (("csv", "HEADER"), ("parquet", "FORMAT PARQUET")):
        path = folder / f"rows_{rows}.{fmt}"
        duckdb.sql(GENERATE.format(numbers=numbers, rows=rows, path=path, options=options))
        out[fmt] = path
    return out


def _measure(kind: str, path: Path | str, fmt: str, model: str, load_s: float = 0.0
             ) -> dict[str, float]:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", WORKER, kind, str(path), fmt, str(REPEATS),
                           model, str(load_s)], cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{kind} on {fmt} failed:\n{done.stderr[-2000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def _postgres() -> tuple[object | None, str]:
    """The tests' throwaway PostgreSQL cluster (or None, and why not)."""
    if os.environ.get("FEDTALLY_SCALE_POSTGRES", "1") == "0":
        return None, "left out (FEDTALLY_SCALE_POSTGRES=0)"
    import importlib.util

    where = Path(__file__).resolve().parents[1] / "tests" / "postgres_support.py"
    spec = importlib.util.spec_from_file_location("postgres_support", where)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    try:
        return module.start(), ""
    except RuntimeError as exc:
        return None, str(exc)


def _spark() -> tuple[bool, str]:
    """Whether to measure Spark (local[2] on the Parquet file), and why not."""
    if os.environ.get("FEDTALLY_SCALE_SPARK", "1") == "0":
        return False, "left out (FEDTALLY_SCALE_SPARK=0)"
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark") is None:
        return False, "pyspark is not installed (pip install 'fedtally[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return False, "no Java runtime"
    return True, ""


def _copy_into_postgres(server: object, csv: Path) -> float:
    """The CSV file COPYed into table t (and analysed); seconds taken."""
    import time

    start = time.perf_counter()
    with server.connect() as admin:  # type: ignore[attr-defined]
        admin.execute("DROP TABLE IF EXISTS t")
        admin.execute("CREATE TABLE t (dataset text, " + ", ".join(
            f"{x} double precision" for x in NUMBERS) + ", a text, b text, sex text)")
        with admin.cursor().copy("COPY t FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                csv.open("rb") as source:
            while chunk := source.read(1 << 20):
                copy.write(chunk)
        admin.execute("VACUUM ANALYZE t")
    return time.perf_counter() - start


def run() -> Iterator[str]:
    """The table, a line at a time as each backend is measured (by default about seven
    minutes; which backend is being measured is said on stderr)."""
    pandas_max = int(os.environ.get("FEDTALLY_SCALE_PANDAS_MAX", "5000000"))
    model = _model_json()
    yield ("scale: one node, 10 numeric + 3 categorical columns; each backend in a fresh "
           f"process; per query the median of {REPEATS} after a warm-up; seconds, MiB")
    header = f"{'rows':>10} {'file':>7} {'backend':>11} {'start-up':>9} " + " ".join(
        f"{q[:12]:>12}" for q in QUERIES) + f" {'peak RSS':>9}"
    server, why = _postgres()
    if server is None:
        yield f"PostgreSQL: {why}"
    spark, why = _spark()
    if not spark:
        yield f"Spark: {why}"
    try:
        yield from _run_sizes(header, model, pandas_max, server, spark)
    finally:
        if server is not None:
            server.stop()  # type: ignore[attr-defined]


def _progress(what: str) -> None:
    print(f"  [scale] {what}", file=sys.stderr, flush=True)


def _run_sizes(header: str, model: str, pandas_max: int, server: object | None,
               spark: bool) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fedtally-scale-") as tmp:
        for rows in _sizes():
            _progress(f"writing {rows:,} rows as CSV and Parquet")
            files: dict[str, Path | str] = dict(_generate(rows, Path(tmp)))
            load_s = 0.0
            if server is not None:
                _progress(f"copying {rows:,} rows into PostgreSQL")
                load_s = _copy_into_postgres(server, Path(files["csv"]))
                files["postgresql"] = server.url()  # type: ignore[attr-defined]
            if spark:
                files["spark"] = str(files["parquet"])
            for fmt, path in files.items():
                yield header
                results = {}
                for kind in ("node", "raw", "exact", "pandas"):
                    if kind in ("exact", "pandas") and fmt in ("postgresql", "spark") \
                            or kind == "pandas" and rows > pandas_max:
                        continue
                    _progress(f"{rows:,} rows, {fmt}: {kind}")
                    try:
                        r = results[kind] = _measure(kind, path, fmt, model, load_s)
                    except RuntimeError as exc:
                        if fmt != "spark":
                            raise
                        # a Java Spark cannot run on is no reason to lose the other lines
                        said = [line for line in str(exc).splitlines() if line.strip()]
                        yield f"Spark: {kind} failed: {said[-1][:200]}"
                        break
                    yield (f"{rows:>10,} {fmt[:7]:>7} {kind:>11} {r['startup']:>9.2f} "
                           + " ".join(f"{r[q]:>12.4f}" for q in QUERIES)
                           + f" {r['peak_mib']:>9.0f}")
                node = results.get("node", {})
                for other in ("raw", "exact", "pandas"):
                    if node and other in results:
                        r = results[other]
                        yield (f"{'':>10} {fmt[:7]:>7} {'node/' + other:>11} "
                               f"{node['startup'] / r['startup']:>9.2f} "
                               + " ".join(f"{node[q] / r[q]:>12.2f}" for q in QUERIES)
                               + f" {node['peak_mib'] / r['peak_mib']:>9.2f}")
                yield ""
            for path in files.values():
                if isinstance(path, Path):
                    path.unlink()
