"""The services' side of the SecAgg+ graph: the aggregator plans it for a large round when the
manifest enables it, every node's admission accepts those parameters (re-deriving the graph
and checking it against the manifest's collusion bound), and the round over exactly those
parameters completes through the real state machines.

A real-process run needs at least 68 node processes (the smallest round for which a graph
beats the complete one at c = 1), too heavy for the suite: the planning and admission code
of the services runs here in-process instead, with the sockets left out.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aggregator.service import AggregatorService, Session
from crypto.encoding import RingVector
from crypto.keyfile import read_key_file
from crypto.randomness import SeededRandom
from fedtally.federation import init_federation
from node.admission import NodeIdentity, ReplayGuard, admit
from node.validation import coerce
from protocol.errors import ParameterMismatch
from protocol.manifest import Manifest
from protocol.signed_query import SignedQuery, signed_query_statement
from protocol.simulate import run_round
from stats.datamodel import DataModel, PlanModel
from stats.planner import layout
from stats.query import QuerySpec
from support import node_session

NODES = [f"h{i:02d}" for i in range(80)]


def _federation(root: Path, secagg_plus: bool) -> tuple[Manifest, dict[str, Any]]:
    init_federation(root, NODES, ["alice"], rng=SeededRandom(7), secagg_plus=secagg_plus)
    manifest = Manifest.from_bytes((root / "federation.json").read_bytes())
    keys = {name: read_key_file(root / "keys" / f"{name}.key").identity
            for name in [*NODES, "alice"]}
    return manifest, keys


def _plan(manifest: Manifest, keys: dict[str, Any], model: DataModel
          ) -> tuple[SignedQuery, Any]:
    service = AggregatorService(manifest, host="127.0.0.1", port=0, ssl_context=None,
                                certificate_fingerprint="0" * 64)
    for name in NODES:  # every node online and serving the model (no socket needed to plan)
        service.catalogs[name] = {"data_models": {model.name: {"datasets_held": [name]}}}
        service.sessions[name] = Session(name, "node", connection=None)  # type: ignore[arg-type]
    spec = QuerySpec("count", model.name, model.datasets())
    plan = layout(spec, PlanModel(model), manifest.max_rows_per_node)
    query_id, issued = SeededRandom(time.time_ns()).bytes(16), int(time.time() * 1000)
    statement = signed_query_statement("alice", manifest.federation_id, query_id, issued,
                                       spec.canonical(), plan.length, plan.ring_bits)
    query = SignedQuery("alice", manifest.federation_id, query_id, issued, spec.canonical(),
                        plan.length, plan.ring_bits, keys["alice"].sign(statement))
    researcher = Session("alice", "researcher", connection=None)  # type: ignore[arg-type]
    return query, service._plan_round(researcher, query)


def _session(model: DataModel, root: Path):  # noqa: ANN202
    frame = pd.DataFrame({"dataset": NODES, "age": np.linspace(20, 90, len(NODES))})
    return node_session(model, coerce(frame, model), root)


@pytest.fixture(scope="module")
def model() -> DataModel:
    frame = pd.DataFrame({"dataset": NODES, "age": np.linspace(20, 90, len(NODES))})
    return DataModel.infer(frame, code="many", version="1")


def test_a_large_round_runs_over_the_secagg_plus_graph_when_the_manifest_enables_it(
        tmp_path: Path, model: DataModel) -> None:
    manifest, keys = _federation(tmp_path / "plus", secagg_plus=True)
    query, params = _plan(manifest, keys, model)
    assert params.neighbours == manifest.graph_for(len(NODES)) > 0
    assert params.max_colluding == manifest.max_colluding_nodes == 1
    assert params.threshold == manifest.threshold_for(len(NODES))
    assert params.honest_inputs >= 2 and params.neighbours < len(NODES) // 2
    for name in (NODES[0], NODES[41], NODES[-1]):  # each node admits it on its own checks
        me = NodeIdentity(name, keys[name], manifest)
        admitted = admit(me, query, params, _session(model, tmp_path), ReplayGuard())
        assert admitted.layout.length == params.vector_length
    # the round over exactly these parameters: every node's share of the work is its graph
    values = [RingVector.from_ints(params.ring_bits, [i] * params.vector_length)
              for i in range(len(NODES))]
    t = run_round(values, params, identities={n: keys[n] for n in NODES}, rng=SeededRandom(1),
                  dropouts={"masked_input": {3, 40}})
    assert t.result is not None and not t.node_errors
    assert list(t.result.to_signed()) == [sum(range(80)) - 3 - 40] * params.vector_length
    assert all(len(node._adverts) == params.neighbours + 1 for node in t.nodes.values())


def test_without_secagg_plus_the_round_is_complete_and_a_sparse_one_refused(
        tmp_path: Path, model: DataModel) -> None:
    manifest, keys = _federation(tmp_path / "complete", secagg_plus=False)
    query, params = _plan(manifest, keys, model)
    assert params.neighbours == 0 and params.max_colluding == 1
    sparse = dataclasses.replace(params, neighbours=34)
    me = NodeIdentity(NODES[0], keys[NODES[0]], manifest)
    with pytest.raises(ParameterMismatch, match="complete graph"):
        admit(me, query, sparse, _session(model, tmp_path), ReplayGuard())
