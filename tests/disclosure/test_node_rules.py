"""The rules nodes apply before and around touching rows: numbers checked first, failures
that say nothing about a row and keep the charge, the privacy unit, exact access as a
grant, the honest nodes a DP round guarantees."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
from disclosure.scenario import model, registry

import fedtally
from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from node.statistics import select_rows
from protocol.errors import BudgetExhausted, InternalError, QueryError
from stats.datamodel import DataModel, PlanModel, Variable
from stats.kinds import KINDS
from stats.planner import layout
from stats.plans import DP_FRAC_BITS
from stats.query import QuerySpec

DP = fedtally.DP(rho=0.5)


def _spec_bytes(privacy: dict) -> bytes:
    spec = {"method": "count", "kind": "", "data_model": "attack:1", "datasets": ["a"],
            "variables": [], "by": None, "filters": None, "privacy": privacy,
            "parameters": {}}
    return json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize("privacy", [
    {"mode": "dp", "rho": 1.0, "epsilon": "1e10000000"},
    {"mode": "dp", "rho": 1.0, "epsilon": 1e300},
    {"mode": "dp", "rho": 1.0, "delta": 0},
    {"mode": "dp", "rho": 1e-320},
    {"mode": "dp", "rho": 1.0, "bounds": {"age": [0, 0]}},
    {"mode": "dp", "rho": 1.0, "bounds": {"age": [1, "2"]}},
])
def test_a_node_checks_every_number_a_malicious_aggregator_forwards(privacy) -> None:
    """What a node parses from a signed query (node.admission calls QuerySpec.from_bytes)
    is validated before any work, whatever the aggregator relays."""
    with pytest.raises(QueryError):
        QuerySpec.from_bytes(_spec_bytes(privacy))


@pytest.fixture
def federation() -> SimulatedFederation:
    return SimulatedFederation(registry("A"), model(), seed=2, policy=Policy.from_dict(
        {"budgets": {"alice": {"*": {"rho": 5.0}}}, "exact_access": "*"}))


def test_a_failure_while_computing_says_nothing_and_keeps_the_charge(
        federation: SimulatedFederation, monkeypatch: pytest.MonkeyPatch) -> None:
    """If computing on the rows fails anyway, the researcher gets a fixed text and the DP
    charge stands: a refund would make the failure a free question about the rows."""
    moments = KINDS["moments"]

    def broken(spec, rows, view):  # noqa: ANN001, ANN202
        raise ZeroDivisionError(f"row {len(rows)} has a value of {rows['age'].iloc[0]}")

    monkeypatch.setitem(KINDS, "moments", dataclasses.replace(
        moments, frame_compute=broken, statistic=None, abs_statistic=None))
    with pytest.raises(InternalError) as info:
        federation.descriptive_stats(["age"], privacy=DP)
    assert str(info.value) == "the node could not compute its contribution"
    spent = federation.budget()["spent_rho"]
    # the first node failed and kept its charge; the others refunded (nothing left them)
    assert spent.max() == pytest.approx(0.5) and spent.min() == 0
    monkeypatch.undo()
    assert federation.count() > 0


def test_refusals_before_any_row_cost_nothing(federation: SimulatedFederation) -> None:
    with pytest.raises(QueryError, match="bounds"):
        federation.descriptive_stats(["age"], privacy=fedtally.DP(rho=0.5, bounds={
            "age": (0.0, 1e-300)}))
    with pytest.raises(QueryError, match="declared binary"):
        federation.kaplan_meier("days", "status_raw", privacy=DP)
    assert federation.budget()["spent_rho"].sum() == 0


def test_the_rounding_of_fixed_point_values_is_in_the_sensitivity() -> None:
    spec = QuerySpec("descriptive_stats", "attack:1", ("a",), ("age",),
                     privacy={"mode": "dp", "rho": 1.0})
    plan = layout(spec, PlanModel(model()), 1 << 20)
    assert plan.noise is not None
    unit = 1 << DP_FRAC_BITS
    # a row moves count, sum and sum of squares by at most one unit each; rounding one more
    assert plan.noise.sensitivity_l2 == pytest.approx((unit + 1) * math.sqrt(3))
    assert plan.noise.clipping == (("age", 18.0, 100.0),)


def test_an_inferred_data_model_offers_no_dp() -> None:
    fed = SimulatedFederation(registry("A"), seed=1, policy=Policy.from_dict(
        {"budgets": {"alice": {"*": {"rho": 5.0}}}}))
    with pytest.raises(QueryError, match="inferred from the rows"):
        fed.count(privacy=DP)
    assert fed.model().inferred


def _visits() -> tuple[DataModel, dict[str, pd.DataFrame]]:
    variables = [Variable("dataset", "dataset", "text", True, ("x", "y")),
                 Variable("subject", "patient", "text", False),
                 Variable("score", "score", "real", False, min=0, max=10)]
    base = DataModel("visits", "1", {v.code: v for v in variables}, longitudinal=True)
    rows = {node: pd.DataFrame({"subject": [f"{node}{i // 5}" for i in range(40)],
                                "score": [float(i % 10) for i in range(40)]})
            for node in ("x", "y")}
    return base, rows


def test_several_rows_per_patient_need_a_declared_patient_unit() -> None:
    base, rows = _visits()
    policy = Policy.from_dict({"budgets": {"alice": {"*": {"rho": 5.0}}}, "exact_access": "*"})
    fed = SimulatedFederation(rows, base, seed=1, policy=policy, max_colluding_nodes=0)
    with pytest.raises(QueryError, match="patient_id"):
        fed.count(privacy=DP)
    declared = dataclasses.replace(base, patient_id="subject", max_rows_per_patient=3)
    spec = QuerySpec("descriptive_stats", "visits:1", ("x",), ("score",),
                     privacy={"mode": "dp", "rho": 1.0})
    plan = layout(spec, PlanModel(declared), 1 << 20)
    assert plan.noise is not None and plan.noise.rows_per_unit == 3
    assert plan.noise.sensitivity_l2 == pytest.approx((3 * (1 << DP_FRAC_BITS) + 1)
                                                      * math.sqrt(3))
    # each patient (5 visits here) keeps at most 3 rows in a DP query
    frame = rows["x"].assign(dataset="x")
    kept = select_rows(spec, frame, declared)
    assert kept.groupby("subject").size().max() == 3 and len(kept) == 8 * 3
    exact = QuerySpec("descriptive_stats", "visits:1", ("x",), ("score",))
    assert len(select_rows(exact, frame, declared)) == 40
    SimulatedFederation(rows, declared, seed=1, policy=policy,
                        max_colluding_nodes=0).count(privacy=DP)


def test_datasets_sharing_patients_share_one_budget() -> None:
    data = registry("A")
    data["a"].loc[::2, "dataset"] = "b"  # the first hospital holds datasets a and b
    data["b"]["dataset"] = "c"
    grouped = Policy.from_dict({"budgets": {"alice": {"ab": {"rho": 1.0}, "*": {"rho": 1.0}}},
                                "budget_groups": {"ab": ["a", "b"]}})
    fed = SimulatedFederation(data, model(), seed=1, policy=grouped)
    fed.count(datasets=["a"], privacy=fedtally.DP(rho=0.6))
    with pytest.raises(BudgetExhausted):
        fed.count(datasets=["b"], privacy=fedtally.DP(rho=0.6))
    fed.count(datasets=["c"], privacy=fedtally.DP(rho=0.6))
    separate = SimulatedFederation(data, model(), seed=1, policy=Policy.from_dict(
        {"budgets": {"alice": {"*": {"rho": 1.0}}}}))
    separate.count(datasets=["a"], privacy=fedtally.DP(rho=0.6))
    separate.count(datasets=["b"], privacy=fedtally.DP(rho=0.6))


def test_exact_answers_are_granted_per_researcher() -> None:
    metered = Policy.from_dict({"budgets": {"alice": {"*": {"rho": 1.0}}}})
    fed = SimulatedFederation(registry("A"), model(), seed=1, policy=metered)
    with pytest.raises(QueryError, match="exact"):
        fed.count()
    fed.count(privacy=fedtally.DP(rho=0.1))
    granted = dataclasses.replace(metered, exact_access=frozenset({"alice"}))
    assert SimulatedFederation(registry("A"), model(), seed=1, policy=granted).count() > 0


def test_a_dp_round_must_guarantee_its_honest_nodes() -> None:
    """Noise calibrated for h honest contributors needs a round that cannot end with fewer:
    a node refuses a DP round whose signed threshold, less the c nodes that may collude, is
    below h (manifests derive thresholds that satisfy it; this is the node's own check of
    what the aggregator proposes). Exact queries carry no noise to protect."""
    fed = SimulatedFederation(registry("A"), model(), seed=1, policy=Policy.from_dict(
        {"budgets": {"alice": {"*": {"rho": 5.0}}}, "exact_access": "*"}))
    session = fed.sessions["a"]
    session.dp_honest_nodes, session.max_colluding_nodes = 3, 1
    dp = QuerySpec("count", "attack:1", ("a", "b", "c"), privacy={"mode": "dp", "rho": 0.5})
    with pytest.raises(QueryError, match="honest"):
        session.plan(dp, "alice", threshold=3)
    session.plan(dp, "alice", threshold=4)
    session.plan(QuerySpec("count", "attack:1", ("a", "b", "c")), "alice", threshold=2)
