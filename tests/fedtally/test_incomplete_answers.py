"""Issue 13, "silently partial answers", with real processes: a node killed during a query, a
node paused past the stage timeout and a node down before the query each give an answer that
says whom it covers, warns with fedtally.IncompleteAnswer naming the dataset not covered (an
error under strict=True), and never shows the missing dataset as zero rows."""

from __future__ import annotations

import signal
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import fedtally
from fedtally.local import wait_for_nodes
from fedtally.synthetic import stroke_model, three_hospitals
from tests.support import wait_until

STAGE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def hospitals() -> dict[str, pd.DataFrame]:
    return three_hospitals(seed=11, scale=0.2)


@pytest.fixture(scope="module")
def fed(hospitals: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[fedtally.Federation]:
    workdir = tmp_path_factory.mktemp("incomplete")
    # c = 0 lets two of the three nodes answer (with the default c = 1 every sum needs all
    # three, so a missing node aborts the query instead of leaving it partial)
    with fedtally.local_federation(hospitals, workdir=workdir, max_colluding_nodes=0,
                                   stage_timeout_s=STAGE_TIMEOUT_S) as federation:
        yield federation


def rows(hospitals: dict[str, pd.DataFrame], *names: str) -> int:
    return sum(len(hospitals[n]) for n in names)


def _wait_offline(fed: fedtally.Federation, name: str) -> None:
    wait_until(lambda: name not in fed.catalog()["nodes"], f"{name} still online", every_s=0.05)


def _incomplete(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, fedtally.IncompleteAnswer)]


def test_a_complete_answer_is_silent_and_says_whom_it_covers(
        fed: fedtally.Federation, hospitals: dict[str, pd.DataFrame]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", fedtally.IncompleteAnswer)
        count = fed.count()
    assert count == rows(hospitals, "hosp_a", "hosp_b", "hosp_c")
    assert isinstance(count, int) and isinstance(count, fedtally.Count)
    f = count.federation
    assert (f["nodes_asked"], f["nodes_answered"], f["nodes_contributing"]) == (3, 3, 3)
    assert f["datasets_covered"] == ["hosp_a", "hosp_b", "hosp_c"]
    assert f["datasets_not_covered"] == {} and f["nodes_not_answering"] == {}


def test_a_node_killed_during_a_query_is_named_not_zero(
        fed: fedtally.Federation, hospitals: dict[str, pd.DataFrame]) -> None:
    victim = fed.local.nodes["hosp_b"]
    victim.send_signal(signal.SIGSTOP)  # the round starts and waits for hosp_b...

    def kill() -> None:
        victim.send_signal(signal.SIGKILL)  # ...which then dies mid-query

    killer = threading.Timer(1.0, kill)
    killer.start()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = fed.descriptive_stats(["age"])
    finally:
        killer.join()
        victim.wait(10)
    [message] = _incomplete(caught)
    assert "datasets not covered: hosp_b" in message and "left during the query" in message
    federation = stats.attrs["federation"]
    assert list(federation["datasets_not_covered"]) == ["hosp_b"]
    assert federation["nodes_not_answering"] == {"hosp_b": fedtally.coverage.LEFT}
    # hosp_b is reported as not covered, never as a hospital with 0 rows
    assert "hosp_b" not in stats.index.get_level_values("dataset")
    assert stats.loc[("age", "all"), "count"] == sum(
        hospitals[n].age.count() for n in ("hosp_a", "hosp_c"))
    # the node's datasets stay visible while it is down
    listed = fed.datasets()
    assert listed.loc[(listed.index[0][0], "hosp_b"), "online"] == False  # noqa: E712
    fed.local.start_node("hosp_b")
    wait_for_nodes(fed, {"hosp_a", "hosp_b", "hosp_c"}, fed.local)


def test_a_node_paused_past_the_stage_timeout_is_reported_as_such(
        fed: fedtally.Federation, hospitals: dict[str, pd.DataFrame]) -> None:
    fed.local.nodes["hosp_c"].send_signal(signal.SIGSTOP)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            count = fed.count()
    finally:
        fed.local.nodes["hosp_c"].send_signal(signal.SIGCONT)
    [message] = _incomplete(caught)
    assert "hosp_c" in message and "did not answer within the stage timeout" in message
    assert count == rows(hospitals, "hosp_a", "hosp_b")
    assert count.federation["nodes_not_answering"] == {"hosp_c": fedtally.coverage.TIMED_OUT}
    assert count.federation["datasets_not_covered"] == {
        "hosp_c": f"node hosp_c {fedtally.coverage.TIMED_OUT}"}
    # the aggregator tells hosp_c its round is over: once resumed it stops that query
    # rather than compute it and hold its round (and a DP charge) until it reconnects
    deadline = time.monotonic() + 60
    told = ("the aggregator aborted the round (timeout)",  # while computing the query
            "aborted by the aggregator")  # once computed
    while not any(line in fed.local.log("hosp_c") for line in told):
        assert time.monotonic() < deadline, fed.local.log("hosp_c")[-2000:]
        time.sleep(0.1)
    wait_for_nodes(fed, {"hosp_a", "hosp_b", "hosp_c"}, fed.local)
    assert fed.count() == rows(hospitals, "hosp_a", "hosp_b", "hosp_c")


def test_a_node_down_before_the_query_warns_or_fails_when_strict(
        fed: fedtally.Federation, hospitals: dict[str, pd.DataFrame]) -> None:
    fed.local.kill_node("hosp_a")
    try:
        _wait_offline(fed, "hosp_a")
        with pytest.warns(fedtally.IncompleteAnswer, match="'hosp_a': no online node holds it"):
            count = fed.count()
        assert count == rows(hospitals, "hosp_b", "hosp_c")
        assert count.federation["datasets_asked"] == ["hosp_a", "hosp_b", "hosp_c"]
        assert count.federation["datasets_not_covered"] == {
            "hosp_a": fedtally.coverage.OFFLINE}
        receipts_before = len(fed.receipts())
        with pytest.raises(fedtally.IncompleteAnswerError, match="hosp_a"):
            fed.count(strict=True)  # refused before anything was sent
        fed.strict = True  # per connection
        try:
            with pytest.raises(fedtally.IncompleteAnswerError, match="hosp_a"):
                fed.histogram("sex")
            # a call may still relax it
            with pytest.warns(fedtally.IncompleteAnswer):
                fed.count(strict=False)
            # naming the datasets that are online is a complete answer
            assert fed.count(datasets=["hosp_b", "hosp_c"]) == rows(hospitals, "hosp_b",
                                                                    "hosp_c")
        finally:
            fed.strict = False
        assert len(fed.receipts()) >= receipts_before
        with pytest.raises(fedtally.QueryError, match="hosp_a"):
            fed.count(datasets=["hosp_a"])
    finally:
        fed.local.start_node("hosp_a")
    wait_for_nodes(fed, {"hosp_a", "hosp_b", "hosp_c"}, fed.local)


def test_local_federation_grants_a_trial_budget_listed_before_spending(
        hospitals: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    small = {name: frame.head(60) for name, frame in hospitals.items()}
    budget = fedtally.DP(epsilon=1.0, delta=1e-6)
    with fedtally.local_federation(small, stroke_model(), workdir=tmp_path,
                                   budget=budget) as fed:
        granted = fed.budget()
        # every granted budget is listed before any spending, in rho and in epsilon
        assert sorted(granted.index.get_level_values("node")) == ["hosp_a", "hosp_b", "hosp_c"]
        assert (granted["spent_rho"] == 0).all()
        assert granted["limit_rho"].tolist() == pytest.approx([budget.rho] * 3, rel=1e-6)
        assert granted["limit_epsilon"].tolist() == pytest.approx([1.0] * 3, rel=1e-3)
        noisy = fed.count(privacy=fedtally.DP(epsilon=0.5, delta=1e-6))
        assert isinstance(noisy.value, int) and noisy.value >= 0
        assert fed.count() == 180  # exact answers stay open in a trial
        spent = fed.budget()
        assert (spent["spent_rho"] > 0).any()
        assert (spent["remaining_epsilon"] < 1.0).any()


def test_a_filter_no_row_matches_is_answered_not_uncovered() -> None:
    """Every dataset answered, with no rows: the warning says so ("released no rows", which
    a cohort below a node's minimum reads alike), never "datasets not covered", which the
    answer's own record contradicted."""
    from fedtally.simulated import SimulatedFederation

    fed = SimulatedFederation(three_hospitals(seed=3, scale=0.05), stroke_model(), seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        count = fed.count(filters="age > 60 and age < 30")
    [message] = _incomplete(caught)
    assert count == 0 and "not covered" not in message
    assert message.startswith("incomplete answer: every dataset asked answered, but dataset "
                              "'hosp_a': released no rows")
    assert count.federation["datasets_not_covered"] == {}
    assert count.federation["datasets_without_rows"] == ["hosp_a", "hosp_b", "hosp_c"]
