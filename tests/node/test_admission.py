"""A node admits a query only after its own checks; nothing the aggregator says is believed."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from crypto.identity import SigningIdentity
from crypto.keyfile import read_key_file
from crypto.randomness import SeededRandom
from fedtally.federation import init_federation
from fedtally.synthetic import three_hospitals
from node.admission import MAX_CLOCK_SKEW_MS, NodeIdentity, ReplayGuard, admit
from node.budget import BudgetKeeper
from node.policy import Policy
from node.session import LoadedData, NodeSession
from node.validation import coerce
from protocol.errors import AuthenticationError, ParameterMismatch, QueryError, ReplayError
from protocol.manifest import Manifest
from protocol.params import RoundParams
from protocol.signed_query import SignedQuery, signed_query_statement
from stats.datamodel import DataModel, PlanModel
from stats.planner import layout
from stats.query import QuerySpec

NODES = ["hosp_a", "hosp_b", "hosp_c", "hosp_d", "hosp_e"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fed")
    init_federation(root, NODES, ["alice", "bob"], rng=SeededRandom(1))
    manifest = Manifest.from_bytes((root / "federation.json").read_bytes())
    keys = {name: read_key_file(root / "keys" / f"{name}.key").identity
            for name in [*NODES, "alice", "bob"]}
    frames = three_hospitals(scale=0.02)
    import pandas as pd

    model = DataModel.infer(pd.concat(frames.values()), code="stroke", version="1")
    rows = coerce(frames["hosp_a"], model)
    return manifest, keys, model, LoadedData(model, rows), root


def _query(world, *, researcher="alice", signer=None, issued_ms=None, spec=None,
           plan_override=None, reply_key=bytes(32)) -> tuple[SignedQuery, RoundParams]:
    manifest, keys, model, _, _ = world
    spec = spec or QuerySpec("count", model.name, model.datasets())
    plan = layout(spec, PlanModel(model), manifest.max_rows_per_node)
    length, bits = plan_override or (plan.length, plan.ring_bits)
    raw = spec.canonical()
    query_id = SeededRandom(time.time_ns()).bytes(16)
    issued = int(time.time() * 1000) if issued_ms is None else issued_ms
    statement = signed_query_statement(researcher, manifest.federation_id, query_id, issued, raw,
                                       length, bits, reply_key=reply_key)
    signature = (signer or keys[researcher]).sign(statement)
    query = SignedQuery(researcher, manifest.federation_id, query_id, issued, raw, length, bits,
                        signature, reply_key)
    nodes = manifest.nodes()
    params = RoundParams(manifest.federation_id, query_id, 0, tuple(nodes),
                         manifest.threshold_for(len(nodes)), length, bits, 0, query.digest,
                         max_colluding=manifest.max_colluding_nodes)
    return query, params


def _admit(world, query, params, policy=None, guard=None):
    manifest, keys, _, data, root = world
    me = NodeIdentity("hosp_a", keys["hosp_a"], manifest)
    policy = policy or Policy.default()
    budget = BudgetKeeper(root / f"ledger-{time.time_ns()}.db", keys["hosp_a"], policy)
    session = NodeSession("hosp_a", data, policy, budget, manifest.max_rows_per_node,
                          manifest.dp_honest_nodes)
    try:
        return admit(me, query, params, session, guard or ReplayGuard())
    finally:
        budget.close()


def test_a_proper_query_is_admitted(world) -> None:
    query, params = _query(world)
    admitted = _admit(world, query, params)
    assert admitted.layout.length == params.vector_length


@pytest.fixture(scope="module")
def paillier_world(world, tmp_path_factory: pytest.TempPathFactory):
    """The same node and data, in a Paillier federation (the smallest key a manifest takes)."""
    _, _, model, data, _ = world
    root = tmp_path_factory.mktemp("paillier")
    init_federation(root, NODES[:3], ["alice"], protection="paillier", paillier_bits=2048,
                    max_colluding_nodes=0, rng=SeededRandom(2))
    manifest = Manifest.from_bytes((root / "federation.json").read_bytes())
    keys = {name: read_key_file(root / "keys" / f"{name}.key").identity
            for name in [*NODES[:3], "alice"]}
    return manifest, keys, model, data, root


def test_a_paillier_query_without_a_reply_key_is_refused(paillier_world) -> None:
    """In Paillier mode the partial decryptions are sealed to the researcher's reply key: a
    query without one (a modified client) would have the nodes seal to nothing usable."""
    with pytest.raises(QueryError, match="reply key"):
        _admit(paillier_world, *_query(paillier_world))
    _admit(paillier_world, *_query(paillier_world, reply_key=bytes(range(32))))


def test_a_forged_signature_is_refused(world) -> None:
    query, params = _query(world, signer=SigningIdentity.generate(SeededRandom(9)))
    with pytest.raises(AuthenticationError):
        _admit(world, query, params)


def test_a_query_signed_by_a_node_is_refused(world) -> None:
    query, params = _query(world, researcher="hosp_b")
    with pytest.raises(AuthenticationError, match="not a researcher"):
        _admit(world, query, params)


def test_a_replayed_query_is_refused(world) -> None:
    query, params = _query(world)
    guard = ReplayGuard()
    _admit(world, query, params, guard=guard)
    with pytest.raises(ReplayError):
        _admit(world, query, params, guard=guard)


def test_a_query_is_remembered_before_it_is_planned(world) -> None:
    """A query refused (or stopped) while planning is remembered all the same: its replay
    is refused as a replay (no second ledger entry, no second pass over the rows for an
    exact query's range check, no answer for one whose round ended as it was planned)."""
    query, params = _query(world)
    guard = ReplayGuard()
    with pytest.raises(QueryError):
        _admit(world, query, params, policy=Policy(allowed_methods=frozenset({"histogram"})),
               guard=guard)
    with pytest.raises(ReplayError):
        _admit(world, query, params, guard=guard)


def test_a_replay_after_a_node_restart_is_refused(world, tmp_path) -> None:
    """The record survives the process: a restarted node still refuses the replay (in
    Paillier mode that would be a second partial decryption of the same round)."""
    query, params = _query(world)
    record = tmp_path / "seen-queries.db"
    _admit(world, query, params, guard=ReplayGuard(path=record))
    assert record.stat().st_mode & 0o077 == 0  # who asked when: the node's eyes only
    restarted = ReplayGuard(path=record)
    with pytest.raises(ReplayError):
        _admit(world, query, params, guard=restarted)
    fresh, fresh_params = _query(world)
    _admit(world, fresh, fresh_params, guard=restarted)


@pytest.mark.parametrize("skew", [MAX_CLOCK_SKEW_MS + 60_000, -(MAX_CLOCK_SKEW_MS + 60_000)])
def test_a_stale_or_future_query_is_refused(world, skew: int) -> None:
    query, params = _query(world, issued_ms=int(time.time() * 1000) - skew)
    with pytest.raises(ReplayError):
        _admit(world, query, params)


@pytest.mark.parametrize(("change", "match"), [
    ({"participants": ("hosp_b", "hosp_c", "hosp_d", "hosp_e")}, "participants"),
    ({"participants": ("alice", "hosp_a", "hosp_b", "hosp_c", "hosp_d")}, "non-node"),
    # a member added to the aggregator's manifest and not yet to this node's
    ({"participants": ("hosp_a", "hosp_b", "hosp_c", "hosp_d", "hosp_z")},
     r"names hosp_z, which this node's federation.json \(version 1\) does not list: if the "
     r"federation changed, this node needs the newest federation.json"),
    ({"threshold": 3, "max_colluding": 0}, "threshold"),
    ({"neighbours": 2}, "complete graph"),
    ({"max_colluding": 0}, "colluding"),
    ({"query_digest": bytes(32)}, "not bound"),
    ({"vector_length": 99}, "plan"),
    ({"ring_bits": 200}, "plan"),
])
def test_round_parameters_that_differ_from_the_nodes_view_are_refused(world, change, match) -> None:
    query, params = _query(world)
    with pytest.raises((ParameterMismatch, AuthenticationError), match=match):
        _admit(world, query, dataclasses.replace(params, **change))


def test_a_plan_the_researcher_misstated_is_refused(world) -> None:
    query, params = _query(world, plan_override=(3, 64))
    with pytest.raises(ParameterMismatch):
        _admit(world, query, params)


def test_policy_refusals(world) -> None:
    query, params = _query(world)
    with pytest.raises(QueryError):
        _admit(world, query, params, policy=Policy(allowed_methods=frozenset({"histogram"})))
    query, params = _query(world)
    with pytest.raises(QueryError, match="exact"):
        _admit(world, query, params, policy=Policy(exact_access=frozenset({"bob"})))


def test_unknown_variables_are_refused_before_any_work(world) -> None:
    _, _, model, _, _ = world
    spec = QuerySpec("descriptive_stats", model.name, model.datasets(), ("no_such",))
    with pytest.raises(QueryError, match="no_such"):
        _query(world, spec=spec)


def test_a_secagg_plus_round_is_admitted_only_where_the_manifest_enables_it(
        world, tmp_path: Path) -> None:
    # the same five nodes with secagg_plus: a k = 2 graph holds against c = 1 (t_s = 3 of 3
    # holders, two honest inputs per neighbourhood); the node re-derives the graph itself
    root = tmp_path / "plus"
    init_federation(root, NODES, ["alice", "bob"], rng=SeededRandom(1), secagg_plus=True)
    plus = (Manifest.from_bytes((root / "federation.json").read_bytes()), *world[1:])
    query, params = _query(plus)
    sparse = dataclasses.replace(params, neighbours=2)
    assert sparse.shamir_threshold == 3 and sparse.honest_inputs == 2
    assert _admit(plus, query, sparse).layout.length == params.vector_length
    query, params = _query(world)
    with pytest.raises(ParameterMismatch, match="complete graph"):
        _admit(world, query, dataclasses.replace(params, neighbours=2))
