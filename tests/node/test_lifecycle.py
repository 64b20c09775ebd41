"""The simulator runs the node's own lifecycle (node/lifecycle.py): a query ``admit()``
refuses at a node is refused by the simulator with the same error, and recorded as refused
at every node, as in a networked federation; a query admit() lets through is answered."""

from __future__ import annotations

import dataclasses
import time

import pytest

from fedtally.simulated import SimulatedFederation
from fedtally.synthetic import stroke_model, three_hospitals
from node.admission import ReplayGuard, admit
from node.policy import Policy
from privacy.audit import read_genesis_key, verify_ledger_entries
from protocol.errors import FedtallyError, ParameterMismatch
from stats.datamodel import PlanModel
from stats.planner import layout
from stats.plans import Layout
from stats.query import QuerySpec

POLICY = {"budgets": {"alice": {"*": {"rho": 1.0}}}, "exact_access": [],
          "allowed_methods": ["descriptive_stats"], "max_slots": 60}
MODEL = stroke_model()
DATASETS = tuple(MODEL.datasets())


def planned(spec: QuerySpec) -> Layout:
    """The plan the simulator's client makes (the nodes recompute it)."""
    return layout(spec, PlanModel(MODEL), SimulatedFederation.max_rows_per_node,
                  honest_nodes=SimulatedFederation.dp_honest_nodes, verifiable=True)


DP = {"mode": "dp", "rho": 0.1}
CASES = {
    "a method the policy does not allow":
        QuerySpec("count", MODEL.name, DATASETS, privacy=DP),
    "an exact query without exact access":
        QuerySpec("descriptive_stats", MODEL.name, DATASETS, ("age",)),
    "more slots than the node's policy allows":
        QuerySpec("descriptive_stats", MODEL.name, DATASETS,
                  ("age", "nihss", "onset_to_door_min"), by="sex", privacy=DP),
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> SimulatedFederation:
    return SimulatedFederation(three_hospitals(seed=2, scale=0.02), MODEL, seed=2,
                               policy=Policy.from_dict(POLICY),
                               ledger_dir=tmp_path_factory.mktemp("ledgers"))


def refusals(fed: SimulatedFederation, node: str) -> list[tuple[str, str]]:
    ledger = fed.budgets[node].ledger.path
    entries = verify_ledger_entries(ledger, read_genesis_key(ledger))[1]
    return [(e.method, e.reason) for e in entries if e.kind == "query"
            and e.decision == "refused"]


def admitted_by_a_node(fed: SimulatedFederation, spec: QuerySpec, plan: Layout) -> None:
    """What admit() says of the query at one of the simulator's nodes (it records nothing):
    the query and round the simulator would send."""
    query, _, params = fed._round(spec, plan)
    admit(fed._me["hosp_a"], query, params, fed.sessions["hosp_a"], ReplayGuard(),
          int(time.time() * 1000))


@pytest.mark.parametrize("case", CASES)
def test_the_simulator_refuses_what_admit_refuses(fed: SimulatedFederation, case: str) -> None:
    spec = CASES[case]
    plan = planned(spec)  # the client lets it through; the nodes do not
    with pytest.raises(FedtallyError) as at_node:
        admitted_by_a_node(fed, spec, plan)
    with pytest.raises(type(at_node.value)) as in_simulator:
        fed._execute(spec, plan)
    assert in_simulator.value.code == at_node.value.code
    for name in fed.sessions:  # every node recorded its refusal, with its reason
        assert (spec.method, at_node.value.code) in refusals(fed, name)


def test_a_plan_that_differs_from_the_nodes_is_refused_alike(fed: SimulatedFederation) -> None:
    spec = QuerySpec("descriptive_stats", MODEL.name, DATASETS, ("age",), privacy=DP)
    plan = planned(spec)
    wrong = dataclasses.replace(plan, slots=plan.slots[:-1])  # a client that miscounts
    with pytest.raises(ParameterMismatch):
        admitted_by_a_node(fed, spec, wrong)
    with pytest.raises(ParameterMismatch):
        fed._execute(spec, wrong)
    admitted_by_a_node(fed, spec, plan)  # the true plan is admitted, and answered
    assert fed._execute(spec, plan).survivors == tuple(sorted(fed.sessions))


def test_a_node_failing_on_its_rows_keeps_its_charge_and_the_others_refund(
        fed: SimulatedFederation, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while one node computes (here an injected bug) ends the round before
    anything leaves: that node's charge stands (its failure might depend on its rows), the
    nodes that had charged refund, as the aggregator's abort makes them do in a federation."""
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(fed.sessions["hosp_b"], "compute", broken)
    spec = QuerySpec("descriptive_stats", MODEL.name, DATASETS, ("age",), privacy=DP)
    before = {name: spent(fed, name) for name in fed.sessions}
    with pytest.raises(RuntimeError, match="injected"):
        fed._execute(spec, planned(spec))
    after = {name: spent(fed, name) for name in fed.sessions}
    assert after["hosp_b"] > before["hosp_b"]
    assert after["hosp_a"] == before["hosp_a"] and after["hosp_c"] == before["hosp_c"]


def spent(fed: SimulatedFederation, node: str) -> float:
    return sum(line["spent_rho"] for line in fed.budgets[node].summary("alice"))
