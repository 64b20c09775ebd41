"""Whole federations: real aggregator and node processes over TLS websockets on loopback."""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedtally
from fedtally.local import wait_for_nodes
from fedtally.synthetic import three_hospitals

REL = 1e-9


@pytest.fixture(scope="module")
def hospitals() -> dict[str, pd.DataFrame]:
    return three_hospitals(seed=7, scale=0.25)


@pytest.fixture(scope="module")
def fed(hospitals: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[fedtally.Federation]:
    workdir = tmp_path_factory.mktemp("federation")
    # c = 0: these tests lose one of three nodes and go on with two, which one colluding
    # node would forbid (t - c >= 2); test_one_colluder_assumed_needs_all_three checks that
    with fedtally.local_federation(hospitals, workdir=workdir, stage_timeout_s=4,
                                   max_colluding_nodes=0) as federation:
        yield federation


def pooled(hospitals: dict[str, pd.DataFrame], names: list[str] | None = None) -> pd.DataFrame:
    return pd.concat([hospitals[n] for n in (names or list(hospitals))], ignore_index=True)


def close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= REL * max(abs(a), abs(b), 1e-300)


def released_missing(cell: pd.DataFrame, variable: str, by: str | None) -> int:
    """Missing values as nodes release them: per (dataset, group) cell, the count when it is
    0 or at least the default small-cell threshold (10), else 0."""
    keys = ["dataset"] + ([by] if by else [])
    counts = cell.groupby(keys, dropna=False)[variable].apply(lambda c: int(c.isna().sum()))
    return int(sum(n for n in counts if n == 0 or n >= 10))


def check_stats(result: pd.DataFrame, rows: pd.DataFrame, variables: list[str],
                by: str | None = None) -> None:
    scopes = [("all", rows)] + [(d, g) for d, g in rows.groupby("dataset")]
    for variable in variables:
        for scope, part in scopes:
            groups = [("all", part)]
            if by:
                groups += [(level, g) for level, g in part.groupby(by)]
            for level, cell in groups:
                key = (variable, scope, level) if by else (variable, scope)
                got = result.loc[key]
                column = cell[variable]
                assert got["count"] == column.count(), key
                assert got["missing"] == released_missing(cell, variable, by), key
                assert close(got["mean"], column.mean()), (key, got["mean"], column.mean())
                assert close(got["std"], column.std()), (key, got["std"], column.std())


def test_metadata_only_catalog(fed: fedtally.Federation) -> None:
    frame = fed.datasets()
    assert list(frame.index.get_level_values("dataset")) == ["hosp_a", "hosp_b", "hosp_c"]
    assert frame.loc[("local:1", "hosp_b"), "nodes"] == ["hosp_b"]
    assert "age" in frame.iloc[0]["variables"]


def test_count_equals_pandas(fed: fedtally.Federation, hospitals: dict[str, pd.DataFrame]) -> None:
    rows = pooled(hospitals)
    assert fed.count() == len(rows)
    assert fed.count(datasets=["hosp_a", "hosp_c"]) == len(hospitals["hosp_a"]) + len(
        hospitals["hosp_c"])
    expected = int(((rows.age > 60) & (rows.sex == "F")).sum())
    assert fed.count(filters="age > 60 and sex == 'F'") == expected
    builder = {"condition": "AND", "rules": [
        {"id": "nihss", "field": "nihss", "type": "double", "input": "number",
         "operator": "greater_or_equal", "value": 10},
        {"id": "thrombolysis", "field": "thrombolysis", "type": "integer", "input": "number",
         "operator": "equal", "value": 1}]}
    assert fed.count(filters=builder) == int(((rows.nihss >= 10) & (rows.thrombolysis == 1)).sum())


def test_descriptive_stats_equal_pandas(fed: fedtally.Federation,
                                        hospitals: dict[str, pd.DataFrame]) -> None:
    variables = ["age", "nihss", "onset_to_door_min", "days_to_event"]
    result = fed.descriptive_stats(variables)
    assert list(result.columns) == ["count", "missing", "mean", "std"]
    check_stats(result, pooled(hospitals), variables)
    assert result.attrs["federation"]["nodes_contributing"] == 3


def test_descriptive_stats_with_filters_and_by(fed: fedtally.Federation,
                                               hospitals: dict[str, pd.DataFrame]) -> None:
    variables = ["age", "nihss", "mrs_90d"]
    result = fed.descriptive_stats(variables, by="sex", filters="onset_to_door_min <= 270",
                                   datasets=["hosp_a", "hosp_b"])
    rows = pooled(hospitals, ["hosp_a", "hosp_b"])
    check_stats(result, rows[rows.onset_to_door_min <= 270], variables, by="sex")


@pytest.mark.parametrize(("call", "error"), [
    (lambda f: f.descriptive_stats(["no_such_variable"]), fedtally.QueryError),
    (lambda f: f.count(datasets=["no_such_dataset"]), fedtally.QueryError),
    (lambda f: f.count(filters="age >>> 3"), fedtally.QueryError),
    (lambda f: f.count(filters="age > 'old'"), fedtally.QueryError),
    (lambda f: f.count(filters="__import__('os') == 1"), fedtally.QueryError),
    (lambda f: f.descriptive_stats(["age"], by="age"), fedtally.QueryError),
])
def test_bad_queries_get_typed_errors_and_the_service_keeps_serving(
        fed: fedtally.Federation, hospitals: dict[str, pd.DataFrame], call, error) -> None:
    with pytest.raises(error):
        call(fed)
    assert fed.count() == len(pooled(hospitals))


def test_small_filtered_cohorts_are_not_released(fed: fedtally.Federation,
                                                 hospitals: dict[str, pd.DataFrame]) -> None:
    # fewer than the default minimum of 10 rows at every node: every node contributes zeros
    rows = pooled(hospitals)
    longest = sorted(rows.onset_to_door_min)[-4]
    assert 0 < (rows.onset_to_door_min >= longest).sum() < 10
    count = fed.count(filters=f"onset_to_door_min >= {longest}")
    assert count == 0 and count.federation["nodes_contributing"] == 0
    # statistics of nothing are refused, with the reason, never computed from zeros
    with pytest.raises(fedtally.QueryError, match=r"no rows.*\(0 of 3 nodes contributed\)"):
        fed.descriptive_stats(["age"], filters=f"onset_to_door_min >= {longest}")


def test_many_queries_at_once(fed: fedtally.Federation, hospitals: dict[str, pd.DataFrame]) -> None:
    rows = pooled(hospitals)
    answers: dict[int, int] = {}

    def ask(i: int) -> None:
        answers[i] = fed.count(filters=f"age > {50 + i}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == {i: int((rows.age > 50 + i).sum()) for i in range(6)}


def test_a_killed_node_leaves_the_survivors_and_rejoins(fed: fedtally.Federation,
                                                        hospitals: dict[str, pd.DataFrame]
                                                        ) -> None:
    local = fed.local
    victim = local.nodes["hosp_b"]
    victim.send_signal(signal.SIGSTOP)  # frozen: still connected, answers nothing
    result: dict[str, object] = {}

    def ask() -> None:
        try:
            result["stats"] = fed.descriptive_stats(["age"], datasets=["hosp_a", "hosp_c"])
        except fedtally.FedtallyError as exc:  # pragma: no cover - reported below
            result["error"] = exc

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(1.0)  # the round has started and is waiting for hosp_b's keys
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    asker.join(60)
    assert "error" not in result, result.get("error")
    stats = result["stats"]
    assert isinstance(stats, pd.DataFrame)
    check_stats(stats, pooled(hospitals, ["hosp_a", "hosp_c"]), ["age"])
    assert stats.attrs["federation"]["nodes_answered"] == 2
    # with hosp_b gone its dataset is unavailable: a clear error, not a silent omission
    with pytest.raises(fedtally.QueryError, match="hosp_b"):
        fed.count(datasets=["hosp_b"])
    local.start_node("hosp_b")
    wait_for_nodes(fed, {"hosp_a", "hosp_b", "hosp_c"}, local)
    assert fed.count() == len(pooled(hospitals))


def test_too_few_survivors_fail_with_a_clear_error(hospitals: dict[str, pd.DataFrame],
                                                   tmp_path: Path) -> None:
    data = {name: frame for name, frame in hospitals.items()}
    with fedtally.local_federation(data, workdir=tmp_path, stage_timeout_s=2) as fed:
        for name in ("hosp_a", "hosp_b"):
            fed.local.nodes[name].send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(fedtally.ThresholdNotMet):
                fed.count()
        finally:
            for name in ("hosp_a", "hosp_b"):
                fed.local.nodes[name].send_signal(signal.SIGCONT)
        wait_for_nodes(fed, set(data), fed.local)
        assert fed.count() == sum(len(f) for f in data.values())


def test_one_colluder_assumed_needs_all_three(hospitals: dict[str, pd.DataFrame],
                                               tmp_path: Path) -> None:
    # the default c = 1: a round of three needs all three (two survivors would leave one
    # honest input next to a colluder's), and two nodes online is refused before any round
    with fedtally.local_federation(hospitals, workdir=tmp_path, stage_timeout_s=2) as fed:
        assert fed.manifest.max_colluding_nodes == 1
        assert fed.count() == len(pooled(hospitals))
        fed.local.nodes["hosp_c"].send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(fedtally.ThresholdNotMet):
                fed.count()
        finally:
            fed.local.nodes["hosp_c"].send_signal(signal.SIGCONT)
        wait_for_nodes(fed, set(hospitals), fed.local)
        fed.local.kill_node("hosp_c")
        with pytest.raises(fedtally.ThresholdNotMet, match=r"at least 3 nodes \(the manifest's "
                           r"max_colluding_nodes is 1\); offline: hosp_c"):
            deadline = time.monotonic() + 10
            while "hosp_c" in fed.catalog()["nodes"] and time.monotonic() < deadline:
                time.sleep(0.05)
            fed.count(datasets=["hosp_a"])
        assert "hosp_c" not in fed.catalog()["nodes"]


def test_broken_csv_is_refused_with_row_and_column(tmp_path: Path,
                                                   hospitals: dict[str, pd.DataFrame]) -> None:
    broken = tmp_path / "broken.csv"
    frame = hospitals["hosp_b"].copy()
    frame.to_csv(broken, index=False)
    text = broken.read_text().splitlines()
    cells = text[3].split(",")
    cells[1] = "seventy"  # age, on the third data row
    text[3] = ",".join(cells)
    broken.write_text("\n".join(text) + "\n")
    data_model = fedtally_model(hospitals)
    with pytest.raises(fedtally.DataError, match=r"(?s)hosp_b.*row 3, column 'age'.*not a number"):
        with fedtally.local_federation({"hosp_a": hospitals["hosp_a"], "hosp_b": broken},
                                       data_model=data_model, workdir=tmp_path / "fed",
                                       max_colluding_nodes=0):
            pass


def fedtally_model(hospitals: dict[str, pd.DataFrame]):
    from stats.datamodel import DataModel

    return DataModel.infer(pooled(hospitals), code="stroke", version="1")


def test_numpy_totals_are_exact_for_integer_columns(fed: fedtally.Federation,
                                                    hospitals: dict[str, pd.DataFrame]) -> None:
    result = fed.descriptive_stats(["thrombolysis", "death"])
    rows = pooled(hospitals)
    assert result.loc[("death", "all"), "mean"] == pytest.approx(rows.death.mean(), rel=1e-12)
    assert int(round(result.loc[("thrombolysis", "all"), "mean"]
                     * result.loc[("thrombolysis", "all"), "count"])) == int(
        np.sum(rows.thrombolysis))


def test_nodes_and_client_reconnect_after_an_aggregator_restart(
        hospitals: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    with fedtally.local_federation(hospitals, workdir=tmp_path) as fed:
        expected = len(pooled(hospitals))
        assert fed.count() == expected
        aggregator = fed.local.aggregator
        aggregator.terminate()  # SIGTERM, as a service manager stops it
        assert aggregator.wait(10) == 0  # a clean stop: every connection told, with a frame
        assert "aggregator stopped" in fed.local.log("aggregator")
        deadline = time.monotonic() + 10
        while "code 1001: the aggregator stopped" not in fed.local.log("hosp_a"):
            assert time.monotonic() < deadline, fed.local.log("hosp_a")[-1000:]
            time.sleep(0.05)
        with pytest.raises(fedtally.ServiceUnavailable):
            fed.count()
        fed.local.start_aggregator()  # same port: nodes find it again with their backoff
        wait_for_nodes(fed, set(hospitals), fed.local)
        assert fed.count() == expected
