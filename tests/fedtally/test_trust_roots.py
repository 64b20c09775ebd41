"""Pinned trust roots: every member's config pins the authority's key and the federation
CA's certificate; a manifest re-signed by another authority (adding a researcher, raising
dp_honest_nodes) or a swapped CA file is refused by nodes, the aggregator, researchers'
clients and auditors, with one line naming both fingerprints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fedtally
from aggregator.config import load_aggregator_config
from crypto.identity import SigningIdentity
from crypto.randomness import SeededRandom
from crypto.tls import certificate_fingerprint, generate_ca
from fedtally.federation import init_federation
from node.config import load_node_config
from protocol.errors import AuthenticationError, ConfigurationError
from protocol.manifest import Manifest, key_fingerprint, sign_manifest

NODES = ["hosp_a", "hosp_b", "hosp_c"]


@pytest.fixture
def federation(tmp_path: Path) -> Path:
    init_federation(tmp_path / "fed", NODES, ["alice"], rng=SeededRandom(5))
    return tmp_path / "fed"


def _resign_with_a_fresh_authority(root: Path) -> str:
    """What an attacker who can write federation.json does: add a researcher, trust more
    nodes, and sign with a key of its own."""
    document = json.loads((root / "federation.json").read_text())
    body = {k: v for k, v in document.items() if k not in ("signature", "authority_public_key")}
    mallory = SigningIdentity.generate(SeededRandom(99))
    body["members"].append({"name": "mallory", "role": "researcher",
                            "public_key": mallory.verify_key.hex()})
    body["parameters"]["dp_honest_nodes"] = 2
    fresh = SigningIdentity.generate(SeededRandom(100))
    (root / "federation.json").write_text(json.dumps(sign_manifest(body, fresh)))
    return key_fingerprint(fresh.verify_key)


def test_init_pins_the_authority_and_the_ca_everywhere(federation: Path) -> None:
    manifest = Manifest.from_bytes((federation / "federation.json").read_bytes())
    ca = certificate_fingerprint((federation / "tls" / "ca.pem").read_bytes())
    assert manifest.tls_ca == ca and manifest.version == 1
    configs = [federation / "aggregator.json", *(federation / n / "node.json" for n in NODES),
               federation / "researchers" / "alice.json"]
    for path in configs:
        pins = json.loads(path.read_text())
        assert (pins["authority"], pins["tls_ca"]) == (manifest.authority_fingerprint, ca)
    readme = (federation / "README.txt").read_text()
    assert manifest.authority_fingerprint in readme and ca in readme


def test_a_manifest_signed_by_another_authority_is_refused_by_every_member(
        federation: Path) -> None:
    pinned = Manifest.from_bytes((federation / "federation.json").read_bytes())
    impostor = _resign_with_a_fresh_authority(federation)
    loaders = [lambda: load_node_config(federation / "hosp_a" / "node.json"),
               lambda: load_aggregator_config(federation / "aggregator.json"),
               lambda: fedtally.connect(bundle=federation / "researchers" / "alice.json"),
               lambda: fedtally.connect("wss://127.0.0.1:1", federation / "keys" / "alice.key",
                                        federation / "federation.json",
                                        authority=pinned.authority_fingerprint)]
    for load in loaders:
        with pytest.raises(AuthenticationError) as info:
            load()
        text = str(info.value)
        assert "\n" not in text
        assert impostor[:16] in text and pinned.authority_fingerprint[:16] in text
    out = subprocess.run([sys.executable, "-m", "fedtally", "audit", "verify",
                          str(federation / "hosp_a" / "ledger.db"), "--federation",
                          str(federation / "federation.json"), "--authority",
                          pinned.authority_fingerprint], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and impostor[:16] in out.stderr + out.stdout


def test_a_swapped_ca_file_is_refused(federation: Path) -> None:
    other, _ = generate_ca("an attacker's CA")
    (federation / "tls" / "ca.pem").write_bytes(other)
    with pytest.raises(AuthenticationError, match="CA certificate file"):
        load_node_config(federation / "hosp_a" / "node.json")
    with pytest.raises(AuthenticationError, match="CA certificate file"):
        fedtally.connect(bundle=federation / "researchers" / "alice.json")


def test_a_config_without_pins_is_refused(federation: Path) -> None:
    config = federation / "hosp_a" / "node.json"
    raw = json.loads(config.read_text())
    del raw["authority"]
    config.write_text(json.dumps(raw))
    with pytest.raises(ConfigurationError, match="must pin 'authority'"):
        load_node_config(config)


def test_connect_needs_a_pin(federation: Path) -> None:
    with pytest.raises(ConfigurationError, match="pin the federation authority"):
        fedtally.connect("wss://127.0.0.1:1", federation / "keys" / "alice.key",
                         federation / "federation.json")
    bundle = federation / "researchers" / "alice.json"
    moved = federation.parent / "elsewhere" / "alice.json"
    moved.parent.mkdir()
    shutil.copy(bundle, moved)
    with pytest.raises(ConfigurationError, match="cannot read"):
        fedtally.connect(bundle=moved)  # its paths are relative to the bundle's folder
