"""Membership changes after init: `federation add-member`, `remove-member` and `rotate-key`
re-sign the manifest with a higher version; an old key, a removed member and a rolled-back
manifest are refused; nothing is half-written when a change is refused. One test runs a
real federation through the changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import fedtally
from aggregator.config import load_aggregator_config
from crypto.randomness import SeededRandom
from fedtally.cli import main
from fedtally.federation import add_member, init_federation, remove_member, rotate_key
from fedtally.local import wait_for_nodes
from fedtally.synthetic import stroke_model, three_hospitals
from node.config import load_node_config
from protocol.errors import AuthenticationError, ConfigurationError
from protocol.manifest import Manifest

NODES = ["hosp_a", "hosp_b", "hosp_c"]


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    init_federation(tmp_path / "fed", NODES, ["alice"], rng=SeededRandom(5))
    return tmp_path / "fed"


def manifest(root: Path) -> Manifest:
    return Manifest.from_bytes((root / "federation.json").read_bytes())


def test_add_member_writes_its_key_and_config_and_raises_the_version(federation: Path) -> None:
    add_member(federation, "hosp_d", "node", rng=SeededRandom(6))
    add_member(federation, "bob", "researcher", rng=SeededRandom(7))
    add_member(federation, "carol", "auditor", rng=SeededRandom(8))
    changed = manifest(federation)
    assert changed.version == 4
    assert changed.nodes() == (*NODES, "hosp_d")
    assert changed.member("bob").role == "researcher"
    assert changed.member("carol").role == "auditor"
    config = load_node_config(federation / "hosp_d" / "node.json")
    assert config.me.name == "hosp_d"
    bundle = json.loads((federation / "researchers" / "bob.json").read_text())
    assert bundle["authority"] == changed.authority_fingerprint
    # the aggregator's config and the first node's are untouched and accept the new version
    load_aggregator_config(federation / "aggregator.json")
    load_node_config(federation / "hosp_a" / "node.json")


def test_a_rolled_back_manifest_is_refused_once_a_newer_one_was_accepted(
        federation: Path) -> None:
    old = (federation / "federation.json").read_bytes()
    load_node_config(federation / "hosp_a" / "node.json")
    load_aggregator_config(federation / "aggregator.json")
    remove_member(federation, "alice")
    load_node_config(federation / "hosp_a" / "node.json")  # version 2 accepted
    load_aggregator_config(federation / "aggregator.json")
    # an attacker puts back version 1, validly signed, which still lists alice
    (federation / "federation.json").write_bytes(old)
    with pytest.raises(AuthenticationError, match="version 1, older than version 2"):
        load_node_config(federation / "hosp_a" / "node.json")
    with pytest.raises(AuthenticationError, match="rolled-back manifest"):
        load_aggregator_config(federation / "aggregator.json")
    # a node that never saw version 2 has nothing to compare with: it still accepts it
    load_node_config(federation / "hosp_b" / "node.json")


def test_a_rotated_key_is_refused_in_its_old_form(federation: Path, tmp_path: Path) -> None:
    old_key = tmp_path / "old-hosp_a.key"
    shutil.copy(federation / "keys" / "hosp_a.key", old_key)
    rotate_key(federation, "hosp_a", rng=SeededRandom(9))
    assert not (federation / "keys" / "hosp_a.key.new").exists()
    load_node_config(federation / "hosp_a" / "node.json")  # the new key matches
    shutil.copy(old_key, federation / "keys" / "hosp_a.key")
    with pytest.raises(ConfigurationError, match="not a node with this key"):
        load_node_config(federation / "hosp_a" / "node.json")
    rotate_key(federation, "aggregator", rng=SeededRandom(10))
    assert manifest(federation).version == 3


def test_refused_changes_leave_the_federation_as_it_was(federation: Path) -> None:
    before = (federation / "federation.json").read_bytes()
    keys = sorted(p.name for p in (federation / "keys").iterdir())
    refusals = [
        (lambda: add_member(federation, "hosp_a", "node"), "already a name"),
        (lambda: add_member(federation, "aggregator", "researcher"), "already a name"),
        (lambda: add_member(federation, "bad name!", "node"), "name"),
        (lambda: add_member(federation, "dave", "admin"), "a member is one of"),
        (lambda: remove_member(federation, "nobody"), "not a member"),
        (lambda: remove_member(federation, "aggregator"), "rotate its key"),
        # three nodes with c = 1 is the least a round can hold: a node cannot leave
        (lambda: remove_member(federation, "hosp_c"), "node"),
        (lambda: rotate_key(federation, "nobody"), "not a member"),
        (lambda: add_member(federation / "hosp_a", "dave", "node"), "authority's folder"),
    ]
    for change, message in refusals:
        with pytest.raises(ConfigurationError, match=message):
            change()
    assert (federation / "federation.json").read_bytes() == before
    assert sorted(p.name for p in (federation / "keys").iterdir()) == keys
    assert not (federation / "bad name!").exists() and not (federation / "dave").exists()


def test_the_cli_changes_membership(federation: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["federation", "add-member", str(federation), "bob", "--role",
                 "researcher"]) == 0
    assert "version 2" in capsys.readouterr().out
    assert main(["federation", "rotate-key", str(federation), "bob"]) == 0
    assert main(["federation", "remove-member", str(federation), "bob"]) == 0
    assert manifest(federation).version == 4
    assert not (federation / "keys" / "bob.key").exists()
    assert main(["federation", "remove-member", str(federation), "bob"]) == 2
    assert "not a member" in capsys.readouterr().err


POLICY = {"budgets": {"alice": {"*": {"rho": 1.0}}, "bob": {"*": {"rho": 1.0}}},
          "exact_access": ["alice", "bob"], "allowed_methods": ["count"]}


def test_a_real_federation_through_membership_changes(tmp_path: Path) -> None:
    """Add a node and a researcher, rotate alice's key, restart the services with the new
    manifest: the new node answers, bob queries, alice's old key is refused."""
    data = three_hospitals(seed=5, scale=0.05)
    root = tmp_path / "fed"
    with fedtally.local_federation(data, stroke_model(), workdir=root, policy=POLICY) as fed:
        processes = fed.local
        before = fed.count()
        old_alice, old_manifest = tmp_path / "alice-old.key", tmp_path / "federation-v1.json"
        shutil.copy(root / "keys" / "alice.key", old_alice)
        shutil.copy(root / "federation.json", old_manifest)
        add_member(root, "hosp_d", "node")
        add_member(root, "bob", "researcher")
        add_member(root, "carol", "auditor")
        rotate_key(root, "alice")
        config = json.loads((root / "hosp_a" / "node.json").read_text())
        # the new hospital's dataset is declared in the data model every node shares
        model_path = (root / "hosp_a" / config["data_model"]).resolve()
        model = json.loads(model_path.read_text())
        [dataset] = [v for v in model["variables"] if v["code"] == "dataset"]
        dataset["enumerations"].append({"code": "hosp_d", "label": "hosp_d"})
        model_path.write_text(json.dumps(model))
        shutil.copy(root / "hosp_a" / "data.csv", root / "hosp_d" / "data.csv")
        new_config = json.loads((root / "hosp_d" / "node.json").read_text())
        new_config.update(data=[{**config["data"][0], "dataset": "hosp_d"}],
                          data_model=config["data_model"], policy=config["policy"])
        (root / "hosp_d" / "node.json").write_text(json.dumps(new_config))
        processes.stop()
        processes.start_aggregator()
        for name in [*data, "hosp_d"]:
            processes.start_node(name)
        pins = json.loads((root / "researchers" / "bob.json").read_text())
        bob = fedtally.connect(processes.url, root / "keys" / "bob.key",
                               root / "federation.json", authority=pins["authority"])
        try:
            wait_for_nodes(bob, {*data, "hosp_d"}, processes)
            after = bob.count()
            assert after == before + len(data["hosp_a"])  # hosp_d holds hosp_a's rows
        finally:
            bob.close()
        # the auditor's key: read-only, the catalog and the status, no query, no budget
        carol = fedtally.connect(processes.url, root / "keys" / "carol.key",
                                 root / "federation.json", authority=pins["authority"])
        try:
            assert {n["name"] for n in carol.status()["nodes"] if n["online"]} == {
                *data, "hosp_d"}
            assert "hosp_d" in set(carol.datasets().index.get_level_values(1))
            for asked in (carol.count, carol.budget):
                with pytest.raises(AuthenticationError, match="carol is an auditor"):
                    asked()
        finally:
            carol.close()
        with pytest.raises(AuthenticationError, match="not a researcher with this key"):
            fedtally.connect(processes.url, old_alice, root / "federation.json",
                             authority=pins["authority"])
        # the client that saw version 4 beside this key refuses to go back to version 1
        with pytest.raises(AuthenticationError, match="rolled-back manifest"):
            fedtally.connect(processes.url, old_alice, old_manifest,
                             authority=pins["authority"], ca=root / "tls" / "ca.pem")
        # a client that never saw version 4 believes version 1: the aggregator refuses it
        (tmp_path / "elsewhere").mkdir()
        fresh_key = shutil.copy(old_alice, tmp_path / "elsewhere" / "alice.key")
        with pytest.raises(AuthenticationError, match="hello signature does not verify"):
            fedtally.connect(processes.url, fresh_key, old_manifest,
                             authority=pins["authority"], ca=root / "tls" / "ca.pem")
