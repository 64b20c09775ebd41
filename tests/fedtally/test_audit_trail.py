"""The audit trail through a real federation: every query is a ledger entry at every node
(exact, DP and refused alike), receipts come back with every result and are kept beside the
researcher's key, `fedtally audit verify --receipts` catches a ledger rolled back after the
fact, and a node restarted on an older ledger refuses to run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fedtally
from fedtally.simulated import SimulatedFederation
from fedtally.synthetic import stroke_model, three_hospitals
from node.policy import Policy
from privacy.audit import read_genesis_key, verify_ledger_entries
from stats.datamodel import PlanModel
from stats.planner import layout
from stats.query import QuerySpec
from tests.support import wait_until

POLICY = {"budgets": {"alice": {"*": {"rho": 1.0}}}, "exact_access": ["alice"],
          "allowed_methods": ["count", "descriptive_stats"]}


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedtally", "audit", *args],
                          capture_output=True, text=True, timeout=120)


def entries(path: Path) -> list:  # noqa: ANN201
    """The ledger's entries, verified against the key its genesis entry names."""
    return verify_ledger_entries(path, read_genesis_key(path))[1]


def queries(path: Path) -> list[tuple[str, str, str]]:
    """(decision, method, reason) of every query entry."""
    return [(e.decision, e.method, e.reason) for e in entries(path) if e.kind == "query"]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("trail")
    data = three_hospitals(seed=5, scale=0.05)
    with fedtally.local_federation(data, stroke_model(), workdir=workdir,
                                   policy=POLICY) as fed:
        yield fed, workdir, list(data)


def test_every_query_is_an_entry_at_every_node_with_a_receipt(federation) -> None:
    fed, workdir, nodes = federation
    fed.count()
    fed.count(privacy=fedtally.DP(rho=0.1))
    with pytest.raises(fedtally.QueryError):
        fed.pca(["age", "nihss"])  # not allowed by the policy: refused, and recorded
    for node in nodes:
        seen = queries(workdir / node / "ledger.db")
        assert ("answered-exact", "count", "") in seen
        assert ("answered-dp", "count", "") in seen
        # the researcher has the first refusal; the other nodes record theirs as they refuse
        wait_until(lambda n=node: ("refused", "pca", "query")
                   in queries(workdir / n / "ledger.db"), f"{node} did not record the refusal")
    receipts = fed.receipts()
    assert list(receipts.index) == sorted(nodes)
    kept = workdir / "keys" / "alice.receipts"
    assert kept.is_file() and kept.stat().st_mode & 0o077 == 0
    assert len(kept.read_text().splitlines()) >= 2 * len(nodes)
    for node in nodes:
        out = audit("verify", str(workdir / node / "ledger.db"), "--federation",
                    str(workdir / "federation.json"), "--receipts", str(kept))
        assert out.returncode == 0, out.stdout + out.stderr


def test_a_rolled_back_ledger_fails_with_the_receipts_and_the_node_refuses_it(
        federation, tmp_path: Path) -> None:
    fed, workdir, nodes = federation
    node = nodes[0]
    ledger = workdir / node / "ledger.db"
    connected = _connected_at(fed, node)
    fed.local.kill_node(node)  # a stopped node: its ledger file is complete on its own
    older = tmp_path / "older.db"
    shutil.copy(ledger, older)
    fed.local.start_node(node)
    _wait_until_online(fed, node, connected)
    fed.count()  # the node answers one more query: its receipt names a newer entry
    kept = workdir / "keys" / "alice.receipts"
    out = audit("verify", str(older), "--federation", str(workdir / "federation.json"),
                "--receipts", str(kept))
    assert out.returncode == 1 and "receipt" in (out.stdout + out.stderr).lower()
    # the node, restarted on the older copy, refuses to run and says what to do
    fed.local.kill_node(node)
    shutil.copy(ledger, tmp_path / "newest.db")
    shutil.copy(older, ledger)
    for suffix in ("-wal", "-shm"):
        Path(str(ledger) + suffix).unlink(missing_ok=True)
    fed.local.start_node(node)
    fed.local.nodes[node].wait(60)
    assert fed.local.nodes[node].returncode != 0
    assert "restore its newest copy" in fed.local.log(node)
    shutil.copy(tmp_path / "newest.db", ledger)
    connected = _connected_at(fed, node)
    fed.local.start_node(node)
    _wait_until_online(fed, node, connected)
    assert fed.count() > 0


def _connected_at(fed: fedtally.Federation, node: str) -> float:
    """When the aggregator last saw the node connect (its current or last connection)."""
    return next(n["connected_at"] or 0.0 for n in fed.status()["nodes"] if n["name"] == node)


def _wait_until_online(fed: fedtally.Federation, node: str, after: float) -> None:
    """Until the node is online on a connection newer than ``after``: right after a kill
    the aggregator may not have seen the old connection close yet, and would still list
    the node (a query would then meet it gone, with too few nodes for a round)."""
    def back() -> bool:
        state = next(n for n in fed.status()["nodes"] if n["name"] == node)
        return bool(state["online"]) and (state["connected_at"] or 0.0) > after \
            and node in fed.catalog()["nodes"]

    wait_until(back, f"{node} did not come back", 60, 0.2)


def test_an_epsilon_in_a_request_never_reaches_the_ledger(tmp_path: Path) -> None:
    """A modified client sends epsilon 0.01 with rho 2: the ledger records the epsilon it
    computes from the rho it charged (14.15 at delta 1e-9), not the request's."""
    fed = SimulatedFederation(three_hospitals(seed=1, scale=0.02), stroke_model(), seed=1,
                              ledger_dir=tmp_path, policy=Policy.from_dict(
                                  {"budgets": {"alice": {"*": {"rho": 5.0}}}}))
    spec = QuerySpec("count", "stroke:1", ("hosp_a", "hosp_b", "hosp_c"),
                     privacy={"mode": "dp", "rho": 2.0, "epsilon": 0.01, "delta": 1e-9})
    fed._execute(spec, layout(spec, PlanModel(stroke_model()), fed.max_rows_per_node,
                              verifiable=fed.verifiable_totals))
    for path in tmp_path.glob("*.db"):
        entry = next(e for e in entries(path) if e.kind == "query")
        assert float(entry.epsilon) == pytest.approx(14.15, abs=0.01)
        assert json.loads(entry.held)
