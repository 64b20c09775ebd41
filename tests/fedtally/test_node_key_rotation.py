"""A node's key rotated in a running federation (`federation rotate-key fed hosp_a`): real
processes restart under the new manifest, the node records the rotation in its ledger (signed
with its old key), keeps what researchers spent, and its ledger verifies against the new
manifest. Without its previous key the node refuses to start rather than forget spending."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

import fedtally
from crypto.randomness import SeededRandom
from fedtally.cli import main
from fedtally.federation import init_federation, machine_files, rotate_key
from fedtally.local import wait_for_nodes
from fedtally.synthetic import stroke_model, three_hospitals
from node.config import load_node_config
from protocol.errors import ConfigurationError

POLICY = {"budgets": {"alice": {"*": {"rho": 1.0}}}, "exact_access": ["alice"]}


def test_rotate_key_keeps_a_nodes_previous_key_for_its_ledger(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    init_federation(root, ["hosp_a", "hosp_b", "hosp_c"], ["alice"], rng=SeededRandom(5))
    old = (root / "keys" / "hosp_a.key").read_bytes()
    rotate_key(root, "hosp_a", rng=SeededRandom(6))
    previous = root / "keys" / "hosp_a.key.previous"
    assert previous.read_bytes() == old
    assert stat.S_IMODE(previous.stat().st_mode) == 0o600
    manifest = fedtally.federation.load_manifest(root / "federation.json")
    assert "keys/hosp_a.key.previous" in machine_files(manifest, "hosp_a", root)
    assert "keys/hosp_a.key.previous" in (root / "README.txt").read_text()
    config = load_node_config(root / "hosp_a" / "node.json")
    assert config.previous_identity is not None
    # another member's key planted as the previous key is refused by name
    shutil.copy(previous, tmp_path / "kept")
    shutil.copy(root / "keys" / "hosp_b.key", previous)
    with pytest.raises(ConfigurationError, match="not hosp_a's previous node key"):
        load_node_config(root / "hosp_a" / "node.json")
    shutil.copy(tmp_path / "kept", previous)
    # rotating again before the node restarted keeps the key its ledger is still under
    rotate_key(root, "hosp_a", rng=SeededRandom(7))
    assert previous.read_bytes() == old
    # a researcher's rotation leaves no previous key (no ledger is signed with it)
    rotate_key(root, "alice", rng=SeededRandom(8))
    assert not (root / "keys" / "alice.key.previous").exists()


def test_a_real_federation_keeps_spending_across_a_node_key_rotation(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = three_hospitals(seed=5, scale=0.05)
    root = tmp_path / "fed"
    ledger = root / "hosp_a" / "ledger.db"
    with fedtally.local_federation(data, stroke_model(), workdir=root, policy=POLICY) as fed:
        processes = fed.local
        fed.count(privacy=fedtally.DP(rho=0.4))
        fed.count(privacy=fedtally.DP(rho=0.4))  # every node has spent 0.8 of alice's 1.0
        rotate_key(root, "hosp_a")
        processes.stop()
        # without its previous key, hosp_a refuses to start (it never starts a new ledger)
        aside = shutil.move(root / "keys" / "hosp_a.key.previous", tmp_path / "previous")
        processes.start_node("hosp_a")
        assert processes.nodes["hosp_a"].wait(60) != 0
        assert "put that key file at" in processes.log("hosp_a")
        shutil.move(aside, root / "keys" / "hosp_a.key.previous")
        processes.start_aggregator()
        for name in data:
            processes.start_node(name)
        pins = json.loads((root / "researchers" / "alice.json").read_text())
        alice = fedtally.connect(processes.url, root / "keys" / "alice.key",
                                 root / "federation.json", authority=pins["authority"])
        try:
            wait_for_nodes(alice, set(data), processes)
            budget = alice.budget().drop("*", level="dataset")
            spent = budget.xs("hosp_a", level="node")["spent_rho"].tolist()
            assert spent == pytest.approx([0.8])  # kept across the rotation
            with pytest.raises(fedtally.BudgetExhausted, match="0.2 remaining"):
                alice.count(privacy=fedtally.DP(rho=0.4))
            assert alice.count(privacy=fedtally.DP(rho=0.2)).noise_std > 0
        finally:
            alice.close()
        # the node recorded the rotation and deleted the retired key
        assert not (root / "keys" / "hosp_a.key.previous").exists()
        processes.stop()
    capsys.readouterr()
    assert main(["audit", "verify", str(ledger), "--federation",
                 str(root / "federation.json")]) == 0
    line = capsys.readouterr().out
    assert "valid" in line and "1 key rotations" in line and "net rho charged 1" in line


def test_a_node_on_a_rolled_back_ledger_keeps_its_previous_key(tmp_path: Path) -> None:
    """A node restarted after a rotation on an older copy of its ledger is refused by the
    receipts check, and its previous key is kept (the newest copy is still under it)."""
    from node.admission import ReplayGuard
    from node.service import open_ledger

    root = tmp_path / "fed"
    init_federation(root, ["hosp_a", "hosp_b", "hosp_c"], ["alice"], rng=SeededRandom(5))
    config = load_node_config(root / "hosp_a" / "node.json")
    guard = ReplayGuard(path=config.ledger.parent / "seen-queries.db")
    keeper = open_ledger(config, guard)
    shutil.copy(config.ledger, tmp_path / "older.db")
    keeper.ledger.record_policy({"budgets": {"alice": {"*": {"rho": 0.5}}}})
    head = keeper.ledger.head_receipt()
    guard.remember_head(head.seq, head.hash)
    keeper.close()
    rotate_key(root, "hosp_a", rng=SeededRandom(6))
    shutil.copy(config.ledger, tmp_path / "newest.db")
    shutil.copy(tmp_path / "older.db", config.ledger)
    config = load_node_config(root / "hosp_a" / "node.json")
    with pytest.raises(ConfigurationError, match="older than the receipts"):
        open_ledger(config, guard)
    assert (root / "keys" / "hosp_a.key.previous").exists()
    shutil.copy(tmp_path / "newest.db", config.ledger)  # the operator restores the newest
    open_ledger(config, guard).close()
    assert not (root / "keys" / "hosp_a.key.previous").exists()
