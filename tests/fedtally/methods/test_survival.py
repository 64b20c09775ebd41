"""Kaplan-Meier and log-rank over a simulated federation, checked against lifelines on the
pooled rows (censoring, ties, missing values, a categorical group, 3 nodes)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test as ll_logrank
from lifelines.statistics import multivariate_logrank_test

import fedtally
from fedtally.methods.kaplan_meier import KaplanMeierTable, kaplan_meier
from fedtally.methods.logrank_test import logrank_test
from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DataModel, Variable

NODES = ("n1", "n2", "n3")
RTOL = 1e-9


def _model() -> DataModel:
    variables = [
        Variable("dataset", "dataset", "text", True, NODES),
        Variable("time", "days to event", "int", False, min=0, max=60),
        Variable("days", "same, no maximum declared", "int", False, min=0),
        Variable("rtime", "real-valued time", "real", False, min=0),
        Variable("status", "1 = event", "int", False, min=0, max=1),
        Variable("outcome", "event as a category", "text", True, ("alive", "dead")),
        Variable("arm", "treatment arm", "text", True, ("A", "B", "C", "D")),
        Variable("sex", "sex", "text", True, ("F", "M")),
    ]
    return DataModel("trial", "1", {v.code: v for v in variables})


def _node_rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    arm = rng.choice(["A", "B", "C"], n)
    scale = np.select([arm == "A", arm == "B"], [20.0, 30.0], 45.0)
    event_time = np.floor(rng.exponential(scale))
    censor_time = np.floor(rng.uniform(0, 80, n))
    time = np.minimum(np.minimum(event_time, censor_time), 60)
    status = ((event_time <= censor_time) & (event_time <= 60)).astype(float)
    frame = pd.DataFrame({
        "time": time, "days": time, "rtime": time + rng.uniform(0, 1, n).round(3),
        "status": status, "outcome": np.where(status == 1, "dead", "alive"),
        "arm": arm, "sex": rng.choice(["F", "M"], n)})
    for column, share in (("time", 0.04), ("status", 0.04), ("arm", 0.05)):
        frame.loc[rng.random(n) < share, column] = np.nan
    frame["days"] = frame["time"]
    frame.loc[frame["status"].isna(), "outcome"] = np.nan
    return frame


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(20240611)
    return {node: _node_rows(rng, size) for node, size in zip(NODES, (180, 220, 200),
                                                                strict=True)}


#: the estimator's arithmetic is checked at daily resolution, where most interval cells
#: hold fewer than 10 rows: these nodes keep the MIP's row minimum but release small cells
#: (test_km_small_interval_cells_are_withheld checks the default)
ARITHMETIC = Policy(min_row_count=10, small_cell_threshold=1)


@pytest.fixture(scope="module")
def fed(data: dict[str, pd.DataFrame]) -> SimulatedFederation:
    return SimulatedFederation(data, _model(), seed=7, policy=ARITHMETIC)


def _lifelines_at(table: pd.DataFrame, rows: pd.DataFrame, alpha: float = 0.05,
                  duration: str = "time", whole_grid: bool = True) -> None:
    """The table equals lifelines' KM on ``rows`` at every grid time."""
    rows = rows.dropna(subset=[duration, "status"])
    kmf = KaplanMeierFitter(alpha=alpha).fit(rows[duration], rows["status"])
    times = table["time"].to_numpy()
    np.testing.assert_allclose(table["survival"], kmf.survival_function_at_times(times),
                               rtol=RTOL, atol=0)
    ci = kmf.confidence_interval_
    step = np.searchsorted(ci.index.to_numpy(), times, side="right") - 1
    assert (step >= 0).all()
    np.testing.assert_allclose(table["ci_lower"], ci.iloc[step, 0], rtol=RTOL, atol=0)
    np.testing.assert_allclose(table["ci_upper"], ci.iloc[step, 1], rtol=RTOL, atol=0)
    t = rows[duration].to_numpy()
    e = rows["status"].to_numpy() == 1
    at_risk = [(t >= x).sum() for x in times]
    events = [((t == x) & e).sum() for x in times]
    assert table["at_risk"].tolist() == at_risk
    assert table["events"].tolist() == events
    if whole_grid:  # the grid holds every event time
        assert int(table["events"].sum()) == int(e.sum())


# --- Kaplan-Meier -------------------------------------------------------------------------


def test_km_equals_lifelines_on_pooled_rows(fed: SimulatedFederation, pooled: pd.DataFrame
                                            ) -> None:
    table = kaplan_meier(fed, "time", "status")
    assert isinstance(table, KaplanMeierTable)
    assert list(table.columns) == ["time", "at_risk", "events", "censored", "survival",
                                   "ci_lower", "ci_upper"]
    assert table["time"].tolist() == list(range(61))  # the model's whole days, 0 to 60
    assert pooled["time"].dropna().duplicated().any()  # ties
    assert (pooled["status"] == 0).any()  # censoring
    _lifelines_at(table, pooled)
    assert table.privacy == {"mode": "exact"}
    assert table.federation["nodes_contributing"] == 3
    assert table.federation["cells_below_threshold"] == 0
    assert table.attrs["federation"] == table.federation
    assert not table.isna().any().any()


def test_km_by_group_equals_lifelines_per_group(fed: SimulatedFederation,
                                                pooled: pd.DataFrame) -> None:
    table = kaplan_meier(fed, "time", "status", by="arm")
    assert list(table.columns[:2]) == ["group", "time"]
    assert table["group"].unique().tolist() == ["A", "B", "C"]  # D has no rows: left out
    for level in ("A", "B", "C"):
        block = table[table["group"] == level].reset_index(drop=True)
        _lifelines_at(block, pooled[pooled["arm"] == level])
    assert isinstance(table[table["group"] == "A"], KaplanMeierTable)


def test_km_categorical_event_level_and_alpha(fed: SimulatedFederation,
                                              pooled: pd.DataFrame) -> None:
    numeric = kaplan_meier(fed, "time", "status", alpha=0.1)
    categorical = kaplan_meier(fed, "time", "outcome", event_level="dead", alpha=0.1)
    pd.testing.assert_frame_equal(pd.DataFrame(numeric), pd.DataFrame(categorical))
    _lifelines_at(numeric, pooled, alpha=0.1)
    assert numeric.alpha == 0.1
    filtered = kaplan_meier(fed, "time", "outcome", event_level="dead", filters="sex == 'M'")
    _lifelines_at(filtered, pooled[pooled["sex"] == "M"])


def test_only_grid_counts_are_asked_for(fed: SimulatedFederation,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    original = fed.statistic

    def spy(algorithm: str, **kwargs: Any) -> Any:
        calls.append({"algorithm": algorithm, **kwargs})
        return original(algorithm, **kwargs)

    monkeypatch.setattr(fed, "statistic", spy)
    kaplan_meier(fed, "time", "status", by="arm", times=[10, 20, 40])
    logrank_test(fed, "time", "status", "arm", times=[10, 20, 40])
    assert [c["algorithm"] for c in calls] == ["kaplan_meier", "logrank_test"]
    for call in calls:
        assert call["kind"] == "survival"
        assert call["parameters"] == {"duration": "time", "event": "status",
                                      "grid": [10.0, 20.0, 40.0]}


def test_km_filters_and_datasets(fed: SimulatedFederation, pooled: pd.DataFrame,
                                 data: dict[str, pd.DataFrame]) -> None:
    table = kaplan_meier(fed, "time", "status", filters="sex == 'F'")
    _lifelines_at(table, pooled[pooled["sex"] == "F"])
    two = kaplan_meier(fed, "time", "status", datasets=["n1", "n3"])
    _lifelines_at(two, pd.concat([data["n1"], data["n3"]]))


def _grouped_km(rows: pd.DataFrame, grid: list[float], duration: str) -> pd.DataFrame:
    """The life-table-like KM at the grid points, computed directly from the rows."""
    rows = rows.dropna(subset=[duration, "status"])
    t, e = rows[duration].to_numpy(), rows["status"].to_numpy() == 1
    survival, out, previous = 1.0, [], -np.inf
    for point in grid:
        n = int((t > previous).sum())
        d = int(((t > previous) & (t <= point) & e).sum())
        survival *= 1 - d / n if n else 1.0
        out.append((n, d, survival))
        previous = point
    return pd.DataFrame(out, columns=["at_risk", "events", "survival"])


def test_km_coarse_grid_is_the_grouped_estimate(fed: SimulatedFederation,
                                                pooled: pd.DataFrame) -> None:
    grid = [5.0, 10.0, 20.0, 30.0, 45.0]
    table = kaplan_meier(fed, "time", "status", times=grid)
    expected = _grouped_km(pooled, grid, "time")
    assert table["time"].tolist() == grid
    assert table["at_risk"].tolist() == expected["at_risk"].tolist()
    assert table["events"].tolist() == expected["events"].tolist()
    np.testing.assert_allclose(table["survival"], expected["survival"], rtol=RTOL)
    assert ((table["ci_lower"] < table["survival"]) & (table["survival"] < table["ci_upper"])
            ).all()


def test_km_real_duration(fed: SimulatedFederation, pooled: pd.DataFrame) -> None:
    with pytest.raises(QueryError, match="times="):
        kaplan_meier(fed, "rtime", "status")
    with pytest.raises(QueryError, match="times="):
        kaplan_meier(fed, "rtime", "status", horizon=30)
    # a grid holding every observed time resolves them all: lifelines' estimate exactly
    grid = np.unique(pooled.dropna(subset=["rtime", "status"])["rtime"])
    table = kaplan_meier(fed, "rtime", "status", times=grid)
    _lifelines_at(table, pooled, duration="rtime")


def test_km_without_declared_max_needs_times_or_horizon(fed: SimulatedFederation,
                                                        pooled: pd.DataFrame) -> None:
    with pytest.raises(QueryError, match="horizon="):
        kaplan_meier(fed, "days", "status")
    table = kaplan_meier(fed, "days", "status", horizon=29.5)
    assert table["time"].tolist() == list(range(31))
    _lifelines_at(table, pooled, duration="days", whole_grid=False)
    with pytest.raises(QueryError, match="not both"):
        kaplan_meier(fed, "days", "status", times=[1, 2], horizon=3)


def test_km_small_interval_cells_are_withheld(data: dict[str, pd.DataFrame]) -> None:
    """Under the default policy every (group, interval) count of events, and of
    censorings, is a cell a node releases only if it holds 0 or at least 10 rows: a group of
    4 rows at one node releases nothing, and what is released is exactly the sum over the
    nodes of their releasable cells."""
    rows = {node: frame.copy() for node, frame in data.items()}
    rows["n2"].loc[rows["n2"].index[:4], "arm"] = "D"  # 4 rows: below the default 10
    fed = SimulatedFederation(rows, _model(), seed=3)
    grid = [20, 40, 60]
    with pytest.warns(fedtally.IncompleteAnswer,
                      match=r"cell\(s\) read 0 .*a coarser time grid \(times=\[\.\.\.\]\)"):
        table = kaplan_meier(fed, "time", "status", by="arm", times=grid)
    assert "D" not in set(table["group"])
    assert table.federation["cells_below_threshold"] > 0
    edges = [-np.inf, *grid]
    for arm in ("A", "B", "C"):
        expected = {"events": np.zeros(3, np.int64), "censored": np.zeros(3, np.int64)}
        for frame in rows.values():
            part = frame.dropna(subset=["time", "status", "arm"])
            part = part[part["arm"] == arm]
            for head, status in (("events", 1.0), ("censored", 0.0)):
                chosen = part[part["status"] == status]["time"]
                counts = np.array([((chosen > lo) & (chosen <= hi)).sum()
                                   for lo, hi in zip(edges, edges[1:], strict=False)])
                expected[head] += np.where(counts >= 10, counts, 0)
        block = table[table["group"] == arm]
        assert block["events"].tolist() == expected["events"].tolist()
        assert block["censored"].tolist() == expected["censored"].tolist()


def test_km_survival_reaching_zero() -> None:
    rows = {"a": pd.DataFrame({"t": [1, 2, 2, 5], "e": [1, 0, 1, 1]}),
            "b": pd.DataFrame({"t": [2, 3, 3], "e": [1, 1, 0]}),
            "c": pd.DataFrame({"t": [4, 6], "e": [0, 1]})}
    fed = SimulatedFederation(rows, policy=Policy(min_row_count=1, small_cell_threshold=1),
                              seed=1)
    table = kaplan_meier(fed, "t", "e", times=list(range(0, 8)))
    pooled = pd.concat(rows.values(), ignore_index=True).rename(columns={"t": "time",
                                                                         "e": "status"})
    _lifelines_at(table, pooled)
    assert table["survival"].iloc[-1] == 0.0
    assert table["ci_lower"].iloc[-1] == table["ci_upper"].iloc[-1] == 0.0


def test_km_bad_input(fed: SimulatedFederation) -> None:
    with pytest.raises(DegenerateInput):
        kaplan_meier(fed, "time", "status", filters="time > 1000")
    with pytest.raises(QueryError, match="event_level"):
        kaplan_meier(fed, "time", "outcome")
    with pytest.raises(QueryError):
        kaplan_meier(fed, "arm", "status")
    with pytest.raises(QueryError, match="increasing"):
        kaplan_meier(fed, "time", "status", times=[3, 2, 5])
    with pytest.raises(QueryError, match="alpha"):
        kaplan_meier(fed, "time", "status", alpha=1.5)
    with pytest.raises(QueryError, match="exact"):
        kaplan_meier(fed, "time", "status", privacy={"mode": "dp", "epsilon": 1})


# --- log-rank -------------------------------------------------------------------------------


def test_logrank_three_groups_equals_lifelines(fed: SimulatedFederation,
                                               pooled: pd.DataFrame) -> None:
    result = logrank_test(fed, "time", "status", "arm")
    rows = pooled.dropna(subset=["time", "status", "arm"])
    reference = multivariate_logrank_test(rows["time"], rows["arm"], rows["status"])
    assert result.dof == 2
    assert result.statistic == pytest.approx(reference.test_statistic, rel=RTOL)
    assert result.pvalue == pytest.approx(reference.p_value, rel=RTOL)
    assert result.observed.index.tolist() == ["A", "B", "C"]
    assert result.observed.sum() == pytest.approx(result.expected.sum(), rel=1e-12)
    assert result.nobs.sum() == len(rows)
    assert result.privacy == {"mode": "exact"}
    assert result.federation["nodes_contributing"] == 3


def test_logrank_two_groups_equals_lifelines(fed: SimulatedFederation,
                                             pooled: pd.DataFrame) -> None:
    result = logrank_test(fed, "time", "outcome", "sex", event_level="dead")
    rows = pooled.dropna(subset=["time", "status", "sex"])
    f, m = rows[rows["sex"] == "F"], rows[rows["sex"] == "M"]
    reference = ll_logrank(f["time"], m["time"], f["status"], m["status"])
    assert result.dof == 1
    assert result.statistic == pytest.approx(reference.test_statistic, rel=RTOL)
    assert result.pvalue == pytest.approx(reference.p_value, rel=RTOL)


def test_logrank_with_horizon_is_lifelines_t0(fed: SimulatedFederation,
                                              pooled: pd.DataFrame) -> None:
    result = logrank_test(fed, "days", "status", "arm", horizon=30)
    rows = pooled.dropna(subset=["days", "status", "arm"])
    reference = multivariate_logrank_test(rows["days"], rows["arm"], rows["status"], t_0=30)
    assert result.statistic == pytest.approx(reference.test_statistic, rel=RTOL)


def test_logrank_degenerate(fed: SimulatedFederation, data: dict[str, pd.DataFrame]) -> None:
    with pytest.raises(DegenerateInput, match="two groups"):
        logrank_test(fed, "time", "status", "arm", filters="arm == 'B'")
    quiet = {node: frame.assign(status=0.0) for node, frame in data.items()}
    no_events = SimulatedFederation(quiet, _model(), seed=5, policy=ARITHMETIC)
    with pytest.raises(DegenerateInput, match="events"):
        logrank_test(no_events, "time", "status", "arm")
    # no event released: a flat curve is never drawn (where counts may have been
    # withheld it would say "no deaths" of a cohort that had many: see below)
    with pytest.raises(DegenerateInput, match="needs events; there are none on the grid"):
        kaplan_meier(no_events, "time", "status")


def test_events_all_below_the_threshold_are_an_error_not_a_curve_without_deaths(
        data: dict[str, pd.DataFrame]) -> None:
    """Under the default policy, a daily grid over a few hundred patients per node releases
    no event count at all (each day's is below 10): the curve read "survival 1.0, no
    deaths" of a cohort with many, with only a warning. Now it is DegenerateInput, saying
    what to do; a coarse grid answers."""
    rng = np.random.default_rng(9)
    frames = {}
    for node in NODES:  # 300 patients each: 60 deaths spread over 60 days, the rest
        # followed to day 60 (a censoring count well above the threshold)
        deaths = rng.integers(0, 60, 60).astype(float)
        frames[node] = pd.DataFrame({
            "time": np.concatenate([deaths, np.full(240, 60.0)]),
            "status": np.concatenate([np.ones(60), np.zeros(240)]),
            "sex": rng.choice(["F", "M"], 300)})
    fed = SimulatedFederation(frames, _model(), seed=3)
    for ask in (lambda: kaplan_meier(fed, "time", "status"),
                lambda: logrank_test(fed, "time", "status", "sex")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fedtally.IncompleteAnswer)
            with pytest.raises(DegenerateInput, match=r"released no event: \d+ node-level "
                                                      r"cell\(s\) read 0.*coarser time grid"):
                ask()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fedtally.IncompleteAnswer)
        table = kaplan_meier(fed, "time", "status", times=[60])
    assert table["events"].sum() > 0
