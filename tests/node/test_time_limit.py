"""A computation on the rows past the policy's max_query_seconds is stopped in the engine
(DuckDB, PostgreSQL, Spark), refused as internal with the limit named, and the node serves
the next query; the limit never touches a statement after its context ends."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crypto.identity import SigningIdentity
from crypto.randomness import SeededRandom
from node.budget import BudgetKeeper
from node.datasource import DataSource
from node.policy import Policy
from node.rowstore import FrameRows
from node.session import LoadedData, NodeSession
from node.sql.duckdb_rows import DuckRows
from node.time_limit import RoundEnd, TimeLimit
from protocol.errors import InternalError, QueryError, QueryStopped
from stats.query import QuerySpec
from tests.stats.test_kinds import OUTCOME, TERMS, _model

#: 20 folds of a logistic step over 300,000 rows: about 1.3 s on DuckDB on a 2-core machine,
#: against limits of 0.05 s below (a loaded machine only makes it slower)
FOLDS = 20


def _rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "dataset": rng.choice(["d1", "d2"], n), "age": rng.integers(18, 100, n).astype(float),
        "bmi": rng.uniform(15, 40, n).round(1), "score": rng.normal(0, 3, n),
        "sex": rng.choice(["F", "M"], n), "arm": rng.choice(["A", "B", "C"], n),
        "event": rng.integers(0, 2, n).astype(float),
        "time": rng.integers(0, 100, n).astype(float)})


def _session(store: Any, tmp_path: Path, seconds: float) -> NodeSession:
    policy = Policy.from_dict({"exact_access": "*", "max_query_seconds": seconds})
    budget = BudgetKeeper(tmp_path / f"ledger-{seconds}.db",
                          SigningIdentity.generate(SeededRandom(7)), policy)
    return NodeSession("n", LoadedData(_model(), store=store), policy, budget, 1 << 24)


def _answer(session: NodeSession, spec: QuerySpec) -> Any:
    plan = session.plan(spec, "alice", threshold=1)
    return session.compute(spec, plan, b"q" * 16)


@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> DuckRows:
    path = tmp_path_factory.mktemp("slow") / "rows.parquet"
    _rows(300_000).to_parquet(path)
    store = DuckRows.load([DataSource("parquet", path=path)], _model())
    yield store
    store.close()


def test_a_query_past_max_query_seconds_is_stopped_and_refused_naming_the_limit(
        duck: DuckRows, tmp_path: Path) -> None:
    spec = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"),
                     method="logistic_regression_cv",
                     parameters={"terms": TERMS, "outcome": OUTCOME, "folds": FOLDS,
                                 "betas": [[0.01] * len(TERMS)] * FOLDS})
    started = time.monotonic()
    with pytest.raises(InternalError, match=r"time limit \(max_query_seconds, 0.05 s\)"):
        _answer(_session(duck, tmp_path, 0.05), spec)
    stopped = time.monotonic() - started
    # the node serves on: the same query, given time, is answered, with the pandas store's
    # numbers; and the limit stopped the engine well before that
    started = time.monotonic()
    answered = _answer(_session(duck, tmp_path, 600), spec)
    whole = time.monotonic() - started
    expected = _answer(_session(FrameRows(_rows(300_000), _model()), tmp_path, 600), spec)
    assert answered.vector == expected.vector
    assert stopped < whole


def test_the_engine_failing_for_another_reason_keeps_the_fixed_text(
        duck: DuckRows, tmp_path: Path) -> None:
    """Only a stop at the limit names it: another failure reads as every internal one."""
    spec = QuerySpec(data_model="kinds:1", datasets=("d1",), method="count")
    session = _session(duck, tmp_path, 600)
    plan = session.plan(spec, "alice", threshold=1)
    connection = duck._connection
    duck._connection = None  # type: ignore[assignment]
    try:
        with pytest.raises(InternalError) as failed:
            session.compute(spec, plan, b"q" * 16)
    finally:
        duck._connection = connection
    assert str(failed.value) == str(InternalError())


class _Counting:
    """Counts interrupts (a real store's interrupt, counted)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.interrupts = 0

    def interrupt(self) -> bool:
        self.interrupts += 1
        return bool(self.store.interrupt())


def test_no_interrupt_before_the_limit_nor_after_the_context(duck: DuckRows) -> None:
    counting = _Counting(duck)
    with TimeLimit(counting, 5) as limit:  # type: ignore[arg-type]
        pass
    assert not limit.reached and counting.interrupts == 0
    with TimeLimit(counting, 0.01) as limit:  # type: ignore[arg-type]
        time.sleep(0.5)  # between statements: interrupted again and again, harmlessly
    assert limit.reached and counting.interrupts >= 2
    seen = counting.interrupts
    time.sleep(0.5)
    assert counting.interrupts == seen
    assert duck.count() == 300_000
    assert duck._rows(duck._compiler(None), "SELECT count(*) FROM node_rows")[0][0] == 300_000


def test_what_interrupted_first_is_the_cause(duck: DuckRows) -> None:
    """The limit, then the round's end: the limit's (the charge stands); the round's end
    first: a stop. A store that cannot be interrupted (pandas) has no cause, so a failure
    there is never read as either."""
    stop = RoundEnd()
    with TimeLimit(duck, 0.01, stop) as limit:
        time.sleep(0.3)
        stop.end("cancelled")
        time.sleep(0.3)
    assert limit.cause == "limit"
    stop = RoundEnd()
    with TimeLimit(duck, 600, stop) as limit:
        stop.end("cancelled")
        time.sleep(0.5)
    assert limit.cause == "stop" and not limit.reached
    with TimeLimit(FrameRows(_rows(10), _model()), 0.01, RoundEnd()) as limit:
        time.sleep(0.3)
    assert limit.cause is None


#: an exact regression on 70 terms (products of up to four variables) whose cross-products
#: of an undeclared variable of magnitude 1e6 need the range check's pass over the rows:
#: about 1.2 s on DuckDB over 300,000 rows on a 2-core machine
WIDE_VARIABLES = ["age", "bmi", "score", "time"]
WIDE = QuerySpec(data_model="kinds:1", datasets=("d1", "d2"), method="linear_regression",
                 variables=("event",), parameters={"terms": [{"const": 1}] + [
                     {"var": v} for v in WIDE_VARIABLES] + [
                     {"product": [{"var": v} for v in chosen]} for degree in (2, 3, 4)
                     for chosen in itertools.combinations_with_replacement(WIDE_VARIABLES,
                                                                           degree)]})


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> DuckRows:
    rows = _rows(300_000)
    rows["score"] *= 1e5
    path = tmp_path_factory.mktemp("wide") / "rows.parquet"
    rows.to_parquet(path)
    store = DuckRows.load([DataSource("parquet", path=path)], _model())
    yield store
    store.close()


def test_the_range_checks_pass_over_the_rows_is_stopped_by_its_rounds_end(
        wide: DuckRows, tmp_path: Path) -> None:
    """An exact query's range check sums |terms| over the rows before the query is admitted:
    the round's end (a cancel, an abort) interrupts it there too, and the time limit bounds
    it; the node then serves on."""
    session = _session(wide, tmp_path, 600)
    started = time.monotonic()
    with pytest.raises(QueryError, match="could exceed the exactly encodable range"):
        session.plan(WIDE, "alice", threshold=1)
    whole = time.monotonic() - started

    stop = RoundEnd()
    timer = threading.Timer(0.1, stop.end, ["cancelled by its researcher alice (signed)"])
    started = time.monotonic()
    timer.start()
    with pytest.raises(QueryStopped, match="cancelled by its researcher alice"):
        session.plan(WIDE, "alice", threshold=1, stop=stop)
    stopped = time.monotonic() - started
    timer.join()
    assert stopped < whole
    with pytest.raises(QueryStopped):  # ended before it began: no pass at all
        session.plan(WIDE, "alice", threshold=1, stop=stop)

    with pytest.raises(InternalError, match=r"time limit \(max_query_seconds, 0.05 s\)"):
        _session(wide, tmp_path, 0.05).plan(WIDE, "alice", threshold=1)
    assert wide.count() == 300_000
