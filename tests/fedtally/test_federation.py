"""The signed federation manifest, key files, config files and ``init_federation``."""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from crypto.identity import SigningIdentity, VerifyKey
from crypto.keyfile import KeyFile, write_key_file
from crypto.randomness import SeededRandom
from crypto.tls import certificate_fingerprint, client_ssl_context, server_ssl_context
from fedtally.federation import init_federation, load_config, load_identity, load_manifest
from protocol.errors import AuthenticationError, ConfigurationError, LocalError, ThresholdNotMet
from protocol.manifest import FORMAT, Manifest, canonical_json, sign_manifest

NODES = ["hosp-a", "hosp-b", "hosp-c"]
RESEARCHERS = ["alice"]
AUDITORS = ["audit.1"]
Document = dict[str, Any]


def _init(directory: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("rng", SeededRandom("federation-test"))
    kwargs.setdefault("auditors", AUDITORS)
    return init_federation(directory, kwargs.pop("nodes", NODES),
                           kwargs.pop("researchers", RESEARCHERS), **kwargs)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation folder the read-only tests share (init is slow-ish: TLS keys)."""
    root = tmp_path_factory.mktemp("fed") / "federation"
    _init(root)
    return root


def _document(fed: Path) -> Document:
    return json.loads((fed / "federation.json").read_text())


def _save(document: Document, path: Path) -> Path:
    path.write_text(json.dumps(document, indent=1))
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- init writes everything -----------------------------------------------------------------

PRIVATE_FILES = ["authority.key", "keys/aggregator.key", "tls/ca.key", "tls/aggregator.key",
                 *(f"keys/{name}.key" for name in [*NODES, *RESEARCHERS, *AUDITORS])]
PUBLIC_FILES = ["federation.json", "aggregator.json", "README.txt", "tls/ca.pem",
                "tls/aggregator.pem", *(f"{name}/node.json" for name in NODES)]


def test_init_writes_every_file_with_the_right_mode(fed: Path) -> None:
    for name in PRIVATE_FILES:
        assert _mode(fed / name) == 0o600, name
    for name in PUBLIC_FILES:
        assert _mode(fed / name) & 0o077 == 0o044, name  # others may read, not write
    assert _mode(fed / "keys") == 0o700
    # atomic writes leave no temporary files behind
    assert not [p for p in fed.rglob("*") if p.name.endswith(".tmp")]


def test_key_files_have_the_documented_format(fed: Path) -> None:
    manifest = load_manifest(fed / "federation.json")
    document = json.loads((fed / "keys" / "hosp-a.key").read_text())
    assert set(document) == {"format", "name", "role", "federation_id", "seed"}
    assert document["format"] == "fedtally-key/1"
    assert (document["name"], document["role"]) == ("hosp-a", "node")
    assert document["federation_id"] == manifest.federation_id
    identity = SigningIdentity(bytes.fromhex(document["seed"]))
    assert identity.verify_key == manifest.member("hosp-a").verify_key
    authority = load_identity(fed / "authority.key")
    assert (authority.name, authority.role) == ("authority", "authority")
    assert authority.identity.verify_key == manifest.authority_key


def test_config_files(fed: Path) -> None:
    aggregator = json.loads((fed / "aggregator.json").read_text())
    manifest = load_manifest(fed / "federation.json")
    pins = {"authority": manifest.authority_fingerprint, "tls_ca": manifest.tls_ca}
    assert aggregator == {"federation": "federation.json", "identity": "keys/aggregator.key",
                          "host": "127.0.0.1", "port": 8765, "tls_cert": "tls/aggregator.pem",
                          "tls_key": "tls/aggregator.key", **pins}
    node = json.loads((fed / "hosp-b" / "node.json").read_text())
    assert node == {"name": "hosp-b", "federation": "../federation.json",
                    "identity": "../keys/hosp-b.key", "aggregator_url": "wss://127.0.0.1:8765",
                    "ca": "../tls/ca.pem", "data": [], "data_model": None, "policy": None,
                    "ledger": "ledger.db", **pins}
    bundle = json.loads((fed / "researchers" / "alice.json").read_text())
    assert bundle == {"url": "wss://127.0.0.1:8765", "federation": "../federation.json",
                      "identity": "../keys/alice.key", "ca": "../tls/ca.pem", **pins}


def test_readme_tells_what_goes_where(fed: Path) -> None:
    readme = (fed / "README.txt").read_text()
    manifest = load_manifest(fed / "federation.json")
    for name in NODES:
        assert f"keys/{name}.key, tls/ca.pem, {name}/node.json" in readme
    assert "authority.key" in readme and "offline" in readme.lower()
    assert manifest.authority_fingerprint in readme and str(manifest.tls_ca) in readme
    assert "researchers/alice.json" in readme
    assert "seed" not in readme


def test_the_manifest_has_the_documented_shape(fed: Path) -> None:
    document = _document(fed)
    assert document["format"] == FORMAT
    assert document["federation_id"].startswith("fed-") and len(document["federation_id"]) == 12
    assert document["created"].endswith("Z")
    assert document["aggregator"]["name"] == "aggregator"
    assert [(m["name"], m["role"]) for m in document["members"]] == [
        ("hosp-a", "node"), ("hosp-b", "node"), ("hosp-c", "node"), ("alice", "researcher"),
        ("audit.1", "auditor")]
    assert document["parameters"] == {"threshold_fraction": 2 / 3, "min_participants": 2,
                                      "max_rows_per_node": 16777216, "protection": "mask",
                                      "stage_timeout_s": 60, "dp_honest_nodes": 1,
                                      "paillier": None, "max_colluding_nodes": 1,
                                      "secagg_plus": False, "verifiable_totals": True}
    assert document["version"] == 1
    assert document["aggregator"]["tls_ca"] == certificate_fingerprint(
        (fed / "tls" / "ca.pem").read_bytes())
    # the signature is over the canonical JSON without the signature
    body = {k: v for k, v in document.items() if k != "signature"}
    VerifyKey.from_hex(document["authority_public_key"]).verify(
        canonical_json(body), bytes.fromhex(document["signature"]))


def test_aggregator_tls_certificate_names_and_handshake(fed: Path) -> None:
    cert = x509.load_pem_x509_certificate((fed / "tls" / "aggregator.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                             ipaddress.ip_address("::1")}
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    server = server_ssl_context(fed / "tls" / "aggregator.pem", fed / "tls" / "aggregator.key")
    client = client_ssl_context(fed / "tls" / "ca.pem")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.recv(2) == b"ok"
        thread.join(10)


def test_a_named_aggregator_host_goes_into_the_certificate_and_urls(tmp_path: Path) -> None:
    manifest = load_manifest(_init(tmp_path / "f", aggregator_host="agg.example.org",
                                   aggregator_port=443))
    cert = x509.load_pem_x509_certificate((tmp_path / "f" / "tls" / "aggregator.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["agg.example.org", "localhost"]
    assert manifest.aggregator_url == "wss://agg.example.org:443"
    node = json.loads((tmp_path / "f" / "hosp-a" / "node.json").read_text())
    assert node["aggregator_url"] == "wss://agg.example.org:443"


def test_an_ipv6_aggregator_url_is_bracketed(tmp_path: Path) -> None:
    manifest = load_manifest(_init(tmp_path / "f", aggregator_host="::1"))
    assert manifest.aggregator_url == "wss://[::1]:8765"
    assert load_config(tmp_path / "f" / "hosp-a" / "node.json")["aggregator_url"] == \
        "wss://[::1]:8765"


def test_seeded_init_is_reproducible_and_system_init_is_not(tmp_path: Path) -> None:
    a = load_manifest(_init(tmp_path / "a", rng=SeededRandom(7)))
    b = load_manifest(_init(tmp_path / "b", rng=SeededRandom(7)))
    c = load_manifest(_init(tmp_path / "c", rng=None))
    d = load_manifest(_init(tmp_path / "d", rng=None))
    assert a.federation_id == b.federation_id and a.members == b.members
    assert c.federation_id != d.federation_id and c.members != d.members


def test_init_options_reach_the_manifest(tmp_path: Path) -> None:
    manifest = load_manifest(_init(tmp_path / "f", federation_id="cancer-registry",
                                   threshold_fraction=0.75, protection="paillier",
                                   auditors=[]))
    assert manifest.federation_id == "cancer-registry"
    assert manifest.parameters["threshold_fraction"] == 0.75
    assert manifest.parameters["protection"] == "paillier"
    assert manifest.auditors() == ()


# --- the manifest verifies, and any edit is caught -------------------------------------------


def test_manifest_loads_and_answers(fed: Path) -> None:
    manifest = load_manifest(fed / "federation.json")
    assert list(manifest.nodes()) == NODES
    assert list(manifest.researchers()) == RESEARCHERS
    assert list(manifest.auditors()) == AUDITORS
    assert manifest.member("alice").role == "researcher"
    assert manifest.member("alice", "researcher").name == "alice"
    keys = manifest.verify_keys()
    assert set(keys) == {*NODES, *RESEARCHERS, *AUDITORS, "aggregator"}
    assert all(isinstance(key, VerifyKey) for key in keys.values())
    assert len(manifest.digest) == 32


@pytest.mark.parametrize("name,role", [("mallory", None), ("aggregator", None), ("", None),
                                       ("alice", "node"), ("hosp-a", "researcher")])
def test_unknown_members_and_wrong_roles_are_refused(fed: Path, name: str, role: Any) -> None:
    manifest = load_manifest(fed / "federation.json")
    with pytest.raises(AuthenticationError):
        manifest.member(name, role)


def test_manifest_round_trips(fed: Path, tmp_path: Path) -> None:
    manifest = load_manifest(fed / "federation.json")
    assert manifest.to_document() == _document(fed)
    reparsed = Manifest.from_bytes(canonical_json(manifest.to_document()))
    assert reparsed == manifest and reparsed.digest == manifest.digest
    # reformatting the file changes no signed value
    reformatted = _save(_document(fed), tmp_path / "reformatted.json")
    assert load_manifest(reformatted) == manifest


def _flip_hex(text: str) -> str:
    return ("1" if text[0] != "1" else "2") + text[1:]


def _other_key() -> str:
    return SigningIdentity.generate(SeededRandom("another")).verify_key.hex()


TAMPERING: dict[str, Callable[[Document], None]] = {
    "member key": lambda d: d["members"][0].update(public_key=_flip_hex(d["members"][0]["public_key"])),
    "member key replaced": lambda d: d["members"][1].update(public_key=_other_key()),
    "member name": lambda d: d["members"][0].update(name="hosp-z"),
    "member role": lambda d: d["members"][3].update(role="node"),
    "added member": lambda d: d["members"].append(
        {"name": "mallory", "role": "researcher", "public_key": _other_key()}),
    "removed member": lambda d: d["members"].pop(),
    "reordered members": lambda d: d["members"].reverse(),
    "threshold": lambda d: d["parameters"].update(threshold_fraction=0.5),
    "protection": lambda d: d["parameters"].update(protection="paillier"),
    "min participants": lambda d: d["parameters"].update(min_participants=3),
    "max rows": lambda d: d["parameters"].update(max_rows_per_node=16777217),
    "timeout as float": lambda d: d["parameters"].update(stage_timeout_s=60.0),
    "aggregator host": lambda d: d["aggregator"].update(host="evil.example.org"),
    "aggregator port": lambda d: d["aggregator"].update(port=8766),
    "aggregator key": lambda d: d["aggregator"].update(public_key=_other_key()),
    "federation id": lambda d: d.update(federation_id="fed-00000000"),
    "created": lambda d: d.update(created="2000-01-01T00:00:00Z"),
    "extra field": lambda d: d.update(note="hello"),
    "authority key": lambda d: d.update(authority_public_key=_other_key()),
    "authority key malformed": lambda d: d.update(authority_public_key="zz"),
    "authority key missing": lambda d: d.pop("authority_public_key"),
    "signature": lambda d: d.update(signature=_flip_hex(d["signature"])),
    "signature truncated": lambda d: d.update(signature=d["signature"][:-2]),
    "signature missing": lambda d: d.pop("signature"),
}


@pytest.mark.parametrize("edit", sorted(TAMPERING))
def test_any_edit_of_signed_content_is_detected(fed: Path, tmp_path: Path, edit: str) -> None:
    document = _document(fed)
    TAMPERING[edit](document)
    with pytest.raises(AuthenticationError):
        load_manifest(_save(document, tmp_path / "federation.json"))


def test_every_single_byte_change_of_the_file_is_refused(fed: Path) -> None:
    data = (fed / "federation.json").read_bytes()
    for position in range(len(data)):
        edited = data[:position] + bytes([data[position] ^ 1]) + data[position + 1:]
        with pytest.raises((AuthenticationError, ConfigurationError)):
            Manifest.from_bytes(edited)


def test_pinning_the_authority(fed: Path, tmp_path: Path) -> None:
    path = fed / "federation.json"
    authority = load_manifest(path).authority_key
    assert load_manifest(path, expected_authority=authority.hex()).authority_key == authority
    assert load_manifest(path, expected_authority=authority) is not None
    with pytest.raises(AuthenticationError):
        load_manifest(path, expected_authority=_other_key())
    with pytest.raises(ConfigurationError):
        load_manifest(path, expected_authority="not hex")
    # a manifest re-signed by someone else verifies on its own, and only pinning catches it
    forged = sign_manifest({k: v for k, v in _document(fed).items()
                            if k not in ("signature", "authority_public_key")},
                           SigningIdentity.generate(SeededRandom("forger")))
    forged_path = _save(forged, tmp_path / "forged.json")
    load_manifest(forged_path)
    with pytest.raises(AuthenticationError):
        load_manifest(forged_path, expected_authority=authority.hex())


# --- malformed manifests: ConfigurationError, never a KeyError/TypeError ---------------------


@pytest.mark.parametrize("content", [b"", b"not json", b"[]", b'"text"', b"\xff\xfe",
                                     b'{"a": 1, "a": 2}', b'{"x": NaN}', b"[" * 100_000])
def test_unreadable_manifests(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "federation.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError):
        load_manifest(path)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_manifest(tmp_path / "nowhere.json")


AUTHORITY = SigningIdentity.generate(SeededRandom("test-authority"))

MALFORMED: dict[str, Callable[[Document], None]] = {
    "format": lambda d: d.update(format="fedtally-federation/2"),
    "no members": lambda d: d.pop("members"),
    "members not a list": lambda d: d.update(members={"a": 1}),
    "member not an object": lambda d: d["members"].append("mallory"),
    "member without key": lambda d: d["members"][0].pop("public_key"),
    "member key not hex": lambda d: d["members"][0].update(public_key="xyz"),
    "member key as int": lambda d: d["members"][0].update(public_key=5),
    "unknown role": lambda d: d["members"][0].update(role="admin"),
    "bad name": lambda d: d["members"][0].update(name="../etc"),
    "name as list": lambda d: d["members"][0].update(name=["a"]),
    "duplicate name": lambda d: d["members"][1].update(name=d["members"][0]["name"]),
    "duplicate name by case": lambda d: d["members"][1].update(name="HOSP-A"),
    "reserved name": lambda d: d["members"][3].update(name="aggregator"),
    "duplicate key": lambda d: d["members"][1].update(public_key=d["members"][0]["public_key"]),
    "aggregator key reused": lambda d: d["members"][1].update(
        public_key=d["aggregator"]["public_key"]),
    "too few nodes": lambda d: d["members"][1].update(role="researcher") or
    d["members"][2].update(role="researcher"),
    "unknown member key": lambda d: d["members"][0].update(admin=True),
    "aggregator renamed": lambda d: d["aggregator"].update(name="agg"),
    "port as string": lambda d: d["aggregator"].update(port="8765"),
    "port too large": lambda d: d["aggregator"].update(port=70000),
    "port as bool": lambda d: d["aggregator"].update(port=True),
    "wildcard host": lambda d: d["aggregator"].update(host="0.0.0.0"),
    "host with space": lambda d: d["aggregator"].update(host="a b"),
    "aggregator as list": lambda d: d.update(aggregator=[]),
    "parameters missing one": lambda d: d["parameters"].pop("protection"),
    "unknown parameter": lambda d: d["parameters"].update(secret=1),
    "fraction above one": lambda d: d["parameters"].update(threshold_fraction=1.5),
    "fraction zero": lambda d: d["parameters"].update(threshold_fraction=0),
    "fraction as text": lambda d: d["parameters"].update(threshold_fraction="2/3"),
    "unknown protection": lambda d: d["parameters"].update(protection="none"),
    "one participant": lambda d: d["parameters"].update(min_participants=1),
    "negative timeout": lambda d: d["parameters"].update(stage_timeout_s=-1),
    "rows zero": lambda d: d["parameters"].update(max_rows_per_node=0),
    "created not a date": lambda d: d.update(created="yesterday"),
    "created without zone": lambda d: d.update(created="2024-01-01T00:00:00"),
    "federation id": lambda d: d.update(federation_id="has space"),
    "unknown top-level key": lambda d: d.update(comment="x"),
}


@pytest.mark.parametrize("edit", sorted(MALFORMED))
def test_signed_but_malformed_manifests_are_configuration_errors(
        fed: Path, tmp_path: Path, edit: str) -> None:
    body = {k: v for k, v in _document(fed).items()
            if k not in ("signature", "authority_public_key")}
    body = copy.deepcopy(body)
    MALFORMED[edit](body)
    path = _save(sign_manifest(body, AUTHORITY), tmp_path / "federation.json")
    with pytest.raises(ConfigurationError):
        load_manifest(path)


# --- thresholds -----------------------------------------------------------------------------


@pytest.mark.parametrize("fraction,colluding,expected", [
    # with the default c = 1: 3 of 3 (t - c >= 2), then the fraction from 4 nodes up
    (2 / 3, 1, {3: 3, 4: 3, 5: 4, 6: 4, 9: 6, 10: 7, 100: 67}),
    (2 / 3, 0, {2: 2, 3: 2, 4: 3, 5: 4, 10: 7, 100: 67}),
    (0.9, 1, {10: 9, 100: 90, 3: 3}),  # the float 0.9 is a hair above 9/10: still 9 of 10
    (0.1, 1, {3: 3, 4: 3, 10: 6, 100: 51}),  # never below (n + c)/2
    (0.1, 0, {2: 2, 3: 2, 10: 6}),  # never below a strict majority
    (0.1, 10, {12: 12, 20: 16, 100: 56}),  # t > (n + c)/2 and t - c >= 2
    (1.0, 1, {3: 3, 5: 5, 50: 50}),
])
def test_threshold_for(fed: Path, tmp_path: Path, fraction: float, colluding: int,
                       expected: dict[int, int]) -> None:
    document = _document(fed)
    document["parameters"]["threshold_fraction"] = fraction
    document["parameters"]["max_colluding_nodes"] = colluding
    if colluding > 1:  # the federation itself must be able to hold c colluders off
        document["members"] += [{"name": f"extra{i}", "role": "node", "public_key":
                                 SigningIdentity.generate(SeededRandom(f"x{i}")).verify_key.hex()}
                                for i in range(colluding)]
    body = {k: v for k, v in document.items() if k not in ("signature", "authority_public_key")}
    manifest = load_manifest(_save(sign_manifest(body, AUTHORITY), tmp_path / "m.json"))
    assert {n: manifest.threshold_for(n) for n in expected} == expected
    for too_few in range(1, colluding + 2):  # no round of so few nodes holds c colluders off
        with pytest.raises(ThresholdNotMet, match=f"at least {colluding + 2} nodes"):
            manifest.threshold_for(too_few)


@pytest.mark.parametrize("n", [0, -1, True, 2.0])
def test_threshold_for_refuses_nonsense(fed: Path, n: Any) -> None:
    with pytest.raises(LocalError):
        load_manifest(fed / "federation.json").threshold_for(n)


# --- key files ------------------------------------------------------------------------------


def _copy_key(fed: Path, tmp_path: Path, name: str = "hosp-a") -> Path:
    target = tmp_path / f"{name}.key"
    target.write_bytes((fed / "keys" / f"{name}.key").read_bytes())
    target.chmod(0o600)
    return target


def test_load_identity_matches_the_manifest(fed: Path) -> None:
    manifest = load_manifest(fed / "federation.json")
    for member in manifest.members.values():
        key = load_identity(fed / "keys" / f"{member.name}.key", manifest=manifest)
        assert (key.name, key.role) == (member.name, member.role)
        assert key.identity.verify_key == member.verify_key
    key = load_identity(fed / "keys" / "aggregator.key", manifest=manifest)
    assert (key.name, key.role) == ("aggregator", "aggregator")
    assert key.identity.verify_key == manifest.aggregator.verify_key


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_key_files_others_can_access_are_refused(fed: Path, tmp_path: Path, mode: int) -> None:
    path = _copy_key(fed, tmp_path)
    seed = json.loads(path.read_text())["seed"]
    path.chmod(mode)
    with pytest.raises(ConfigurationError) as caught:
        load_identity(path)
    message = str(caught.value)
    assert str(path) in message and "chmod 600" in message
    assert seed not in message and seed not in repr(caught.value)
    path.chmod(0o400)  # owner-only read is fine
    assert load_identity(path).name == "hosp-a"


def _rewrite_key(path: Path, **changes: Any) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del document[key]
    path.write_text(json.dumps(document))
    path.chmod(0o600)


@pytest.mark.parametrize("changes", [
    {"seed": "00" * 31}, {"seed": "zz" * 32}, {"seed": None}, {"seed": 5}, {"role": "king"},
    {"format": "other"}, {"name": "a b"}, {"extra": 1},
])
def test_malformed_key_files_never_show_the_seed(fed: Path, tmp_path: Path,
                                                 changes: dict[str, Any]) -> None:
    path = _copy_key(fed, tmp_path)
    seed = json.loads(path.read_text())["seed"]
    _rewrite_key(path, **changes)
    with pytest.raises(ConfigurationError) as caught:
        load_identity(path)
    error: BaseException | None = caught.value
    while error is not None:  # nor anywhere in the chain a traceback would print
        assert seed not in str(error) and "zz" * 32 not in str(error)
        error = error.__cause__ or error.__context__


def test_key_file_not_json_or_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_identity(tmp_path / "none.key")
    path = tmp_path / "x.key"
    path.write_text("{")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError):
        load_identity(path)


def test_identity_repr_hides_the_seed(fed: Path) -> None:
    seed = json.loads((fed / "keys" / "alice.key").read_text())["seed"]
    key = load_identity(fed / "keys" / "alice.key")
    assert seed not in repr(key.identity) and seed not in repr(key)


def test_a_key_from_elsewhere_does_not_pass_for_a_member(fed: Path, tmp_path: Path) -> None:
    manifest = load_manifest(fed / "federation.json")
    impostor = tmp_path / "impostor.key"
    write_key_file(impostor, KeyFile("hosp-a", "node", manifest.federation_id,
                                     SigningIdentity.generate(SeededRandom("impostor"))))
    assert _mode(impostor) == 0o600
    with pytest.raises(ConfigurationError, match="not the key"):
        load_identity(impostor, manifest=manifest)
    path = _copy_key(fed, tmp_path)
    _rewrite_key(path, federation_id="fed-other")
    with pytest.raises(ConfigurationError, match="belongs to federation"):
        load_identity(path, manifest=manifest)
    _rewrite_key(path, federation_id=manifest.federation_id, name="mallory")
    with pytest.raises(ConfigurationError, match="no node called"):
        load_identity(path, manifest=manifest)


# --- init refuses bad input (before writing anything) ----------------------------------------


@pytest.mark.parametrize("nodes,researchers,auditors", [
    (["", "b"], ["r"], []),
    (["-a", "b"], ["r"], []),
    ([".hidden", "b"], ["r"], []),
    (["a b", "b"], ["r"], []),
    (["a/b", "b"], ["r"], []),
    (["../up", "b"], ["r"], []),
    (["x" * 65, "b"], ["r"], []),
    (["é", "b"], ["r"], []),
    ([5, "b"], ["r"], []),
    ("ab", ["r"], []),
    (["a", "a"], ["r"], []),
    (["a", "b"], ["a"], []),
    (["a", "b"], ["r"], ["r"]),
    (["a", "b"], ["r"], ["B"]),
    (["aggregator", "b"], ["r"], []),
    (["a", "b"], ["Authority"], []),
    (["keys", "b"], ["r"], []),
    (["tls", "b"], ["r"], []),
    (["federation.json", "b"], ["r"], []),
    (["only-one"], ["r"], []),
    ([], ["r"], []),
])
def test_init_refuses_bad_names(tmp_path: Path, nodes: Any, researchers: Any,
                                auditors: Any) -> None:
    target = tmp_path / "f"
    with pytest.raises(ConfigurationError):
        init_federation(target, nodes, researchers, auditors=auditors)
    assert not target.exists()


def test_init_refuses_a_federation_too_small_for_its_colluding_bound(tmp_path: Path) -> None:
    target = tmp_path / "f"
    with pytest.raises(ConfigurationError, match="2 node.*at least 3 nodes"):
        init_federation(target, ["a", "b"], ["r"])  # the default c = 1
    with pytest.raises(ConfigurationError, match="at least 5 nodes"):
        init_federation(target, ["a", "b", "c", "d"], ["r"], max_colluding_nodes=3)
    assert not target.exists()
    # two nodes, explicitly protected against the aggregator alone
    manifest = load_manifest(init_federation(target, ["a", "b"], ["r"], max_colluding_nodes=0))
    assert manifest.max_colluding_nodes == 0 and manifest.threshold_for(2) == 2


@pytest.mark.parametrize("options", [
    {"aggregator_host": "0.0.0.0"}, {"aggregator_host": "::"}, {"aggregator_host": "a b"},
    {"aggregator_host": ""}, {"aggregator_host": "x" * 300}, {"aggregator_port": 0},
    {"aggregator_port": 65536}, {"aggregator_port": "8765"}, {"threshold_fraction": 0},
    {"threshold_fraction": 1.01}, {"threshold_fraction": float("nan")},
    {"protection": "none"}, {"federation_id": "bad id"}, {"federation_id": ""},
    {"max_colluding_nodes": -1}, {"max_colluding_nodes": 1.0}, {"max_colluding_nodes": True},
    {"secagg_plus": "yes"},
])
def test_init_refuses_bad_options(tmp_path: Path, options: dict[str, Any]) -> None:
    target = tmp_path / "f"
    with pytest.raises(ConfigurationError):
        init_federation(target, ["a", "b"], ["r"], **{"max_colluding_nodes": 0, **options})
    assert not target.exists()


def test_init_refuses_an_existing_folder_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "f"
    first = load_manifest(_init(target, rng=None))
    with pytest.raises(ConfigurationError, match="not empty"):
        _init(target, rng=None)
    assert load_manifest(target / "federation.json") == first  # untouched
    (target / "notes.txt").write_text("mine")
    second = load_manifest(_init(target, rng=None, force=True))
    assert second.federation_id != first.federation_id
    assert (target / "notes.txt").read_text() == "mine"
    key = load_identity(target / "keys" / "hosp-a.key", manifest=second)
    assert key.identity.verify_key == second.member(key.name).verify_key


def test_init_accepts_an_empty_existing_folder_and_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert _init(tmp_path / "empty").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="not a folder"):
        _init(tmp_path / "file", force=True)


# --- config files ---------------------------------------------------------------------------


def test_load_node_config_resolves_paths(fed: Path) -> None:
    config = load_config(fed / "hosp-a" / "node.json")
    assert config["name"] == "hosp-a"
    assert Path(config["federation"]) == (fed / "federation.json").resolve()
    assert Path(config["identity"]) == (fed / "keys" / "hosp-a.key").resolve()
    assert Path(config["ca"]) == (fed / "tls" / "ca.pem").resolve()
    assert Path(config["ledger"]) == (fed / "hosp-a" / "ledger.db").resolve()
    assert config["data"] == [] and config["data_model"] is None and config["policy"] is None
    for key in ("federation", "identity", "ca"):
        assert Path(config[key]).is_file()
    assert load_config(fed / "hosp-a" / "node.json", "node") == config


def test_load_aggregator_config_resolves_paths(fed: Path) -> None:
    config = load_config(fed / "aggregator.json", kind="aggregator")
    assert (config["host"], config["port"]) == ("127.0.0.1", 8765)
    for key in ("federation", "identity", "tls_cert", "tls_key"):
        assert Path(config[key]).is_absolute() and Path(config[key]).is_file()
    key = load_identity(config["identity"], manifest=load_manifest(config["federation"]))
    assert (key.name, key.role) == ("aggregator", "aggregator")


def test_node_config_data_sources_and_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "site" / "node.json"
    path.parent.mkdir()
    path.write_text(json.dumps({
        "name": "n1", "federation": "/abs/federation.json", "identity": "k.key",
        "aggregator_url": "wss://agg:1", "ca": "ca.pem",
        "data": ["rows.csv", {"path": "more/rows.parquet", "dataset": "d"},
                 {"url": "sqlite:///x.db", "table": "t"}],
        "data_model": "CDEsMetadata.json", "policy": {"min_rows": 10}, "ledger": ":memory:",
        "log_level": "info",
    }))
    config = load_config(path)
    base = path.parent.resolve()
    assert config["federation"] == "/abs/federation.json"
    assert config["data"] == [str(base / "rows.csv"),
                              {"path": str(base / "more" / "rows.parquet"), "dataset": "d"},
                              {"url": "sqlite:///x.db", "table": "t"}]
    assert config["data_model"] == str(base / "CDEsMetadata.json")
    assert config["policy"] == {"min_rows": 10}
    assert config["ledger"] == ":memory:"
    assert config["log_level"] == "info"


NODE_CONFIG = {"name": "n1", "federation": "f.json", "identity": "k.key",
               "aggregator_url": "wss://agg:1", "ca": "ca.pem"}


@pytest.mark.parametrize("content,kind", [
    (None, None),
    ("{", None),
    ("[]", None),
    (json.dumps({"name": "n1"}), None),
    (json.dumps({**NODE_CONFIG, "aggregator_url": "ws://agg:1"}), None),
    (json.dumps({**NODE_CONFIG, "name": "a b"}), None),
    (json.dumps({**NODE_CONFIG, "identity": 5}), None),
    (json.dumps({k: v for k, v in NODE_CONFIG.items() if k != "ca"}), None),
    (json.dumps({**NODE_CONFIG, "data": "rows.csv"}), None),
    (json.dumps({**NODE_CONFIG, "data": [5]}), None),
    (json.dumps({**NODE_CONFIG, "policy": 5}), None),
    (json.dumps(NODE_CONFIG), "aggregator"),
    (json.dumps({"federation": "f", "identity": "k", "host": "h", "port": "1",
                 "tls_cert": "c", "tls_key": "k"}), None),
])
def test_bad_config_files(tmp_path: Path, content: str | None, kind: Any) -> None:
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigurationError):
        load_config(path, kind)


def test_write_identity_leaves_no_readable_copy(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not open the key to others
    try:
        path = tmp_path / "k.key"
        write_key_file(path, KeyFile("n1", "node", "fed-1",
                                     SigningIdentity.generate(SeededRandom(1))))
    finally:
        os.umask(old_umask)
    assert _mode(path) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]
