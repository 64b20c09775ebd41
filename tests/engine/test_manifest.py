"""The pure manifest parser: bytes in, a verified Manifest out (no files involved).

The file-level behaviour (init, tampering of a written file, key files) is covered by
tests/fedtally/test_federation.py; this module checks what the services rely on.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from crypto.identity import SigningIdentity
from crypto.randomness import SeededRandom
from engine.errors import AuthenticationError, ConfigurationError, LocalError
from engine.manifest import (
    DEFAULT_PARAMETERS,
    FORMAT,
    MAX_MANIFEST_BYTES,
    Manifest,
    canonical_json,
    sign_manifest,
    signed_content,
)

AUTHORITY = SigningIdentity.generate(SeededRandom("manifest-authority"))
IDENTITIES = {name: SigningIdentity.generate(SeededRandom(f"member-{name}"))
              for name in ("aggregator", "n2", "n1", "n3", "alice", "audit")}
ROLES = {"n2": "node", "n1": "node", "n3": "node", "alice": "researcher", "audit": "auditor"}


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "format": FORMAT,
        "federation_id": "fed-test",
        "created": "2024-05-01T12:00:00Z",
        "aggregator": {"name": "aggregator", "host": "agg.example.org", "port": 443,
                       "public_key": IDENTITIES["aggregator"].verify_key.hex()},
        "members": [{"name": name, "role": role, "public_key": IDENTITIES[name].verify_key.hex()}
                    for name, role in ROLES.items()],
        "parameters": dict(DEFAULT_PARAMETERS),
    }
    body.update(changes)
    return body


def _signed(body: dict[str, Any] | None = None) -> dict[str, Any]:
    return sign_manifest(body if body is not None else _body(), AUTHORITY)


def _raw(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1).encode()


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    return Manifest.from_bytes(_raw(_signed()))


def test_the_services_api(manifest: Manifest) -> None:
    assert manifest.federation_id == "fed-test"
    assert manifest.nodes() == ("n1", "n2", "n3")  # sorted names
    assert manifest.researchers() == ("alice",) and manifest.auditors() == ("audit",)
    assert manifest.names("node") == manifest.nodes()
    assert list(manifest.members) == list(ROLES)  # document order
    alice = manifest.member("alice")
    assert (alice.name, alice.role) == ("alice", "researcher")
    assert alice.verify_key == IDENTITIES["alice"].verify_key
    assert manifest.member("alice", "researcher") == alice
    assert manifest.aggregator.name == manifest.aggregator.role == "aggregator"
    assert (manifest.aggregator_host, manifest.aggregator_port) == ("agg.example.org", 443)
    assert manifest.aggregator_url == "wss://agg.example.org:443"
    assert manifest.verify_keys() == {name: i.verify_key for name, i in IDENTITIES.items()}
    assert manifest.authority_key == AUTHORITY.verify_key
    assert (manifest.min_participants, manifest.max_rows_per_node) == (2, 1 << 24)
    assert (manifest.stage_timeout_s, manifest.protection) == (60.0, "mask")
    assert manifest.threshold_fraction == pytest.approx(2 / 3)
    assert manifest.threshold_for(3) == 2 and manifest.threshold_for(10) == 7
    assert manifest.created == "2024-05-01T12:00:00Z"


def test_signed_content_digest_and_round_trip(manifest: Manifest) -> None:
    document = manifest.to_document()
    assert signed_content(document) == manifest.signed_content
    assert canonical_json({k: v for k, v in document.items() if k != "signature"}) == \
        manifest.signed_content
    assert len(manifest.digest) == 32
    assert Manifest.from_bytes(canonical_json(document)) == manifest
    # to_document hands out a copy: editing it leaves the manifest alone
    document["members"].clear()
    assert manifest.to_document()["members"] and manifest.member("n1")
    with pytest.raises(TypeError):
        manifest.document["federation_id"] = "other"  # type: ignore[index]


def test_a_document_edited_after_parsing_changes_nothing() -> None:
    document = _signed()
    parsed = Manifest.from_document(document)
    document["federation_id"] = "fed-other"
    assert parsed.federation_id == "fed-test" and parsed.to_document()["federation_id"] == "fed-test"


@pytest.mark.parametrize("name,role", [("mallory", None), ("aggregator", None), ("", None),
                                       (None, None), ("alice", "node"), ("n1", "researcher")])
def test_member_refuses_strangers_the_aggregator_and_wrong_roles(
        manifest: Manifest, name: Any, role: Any) -> None:
    with pytest.raises(AuthenticationError):
        manifest.member(name, role)


def test_pinning_accepts_hex_or_key_and_refuses_others() -> None:
    raw = _raw(_signed())
    assert Manifest.from_bytes(raw, authority_key=AUTHORITY.verify_key.hex().upper())
    assert Manifest.from_bytes(raw, authority_key=AUTHORITY.verify_key)
    other = SigningIdentity.generate(SeededRandom("other authority"))
    with pytest.raises(AuthenticationError):
        Manifest.from_bytes(raw, authority_key=other.verify_key)
    with pytest.raises(ConfigurationError):
        Manifest.from_bytes(raw, authority_key="not hex")


def test_the_signature_is_checked_before_the_structure() -> None:
    # a malformed document whose signature does not verify is an authentication failure
    document = _signed(_body(members="nonsense"))
    document["federation_id"] = "fed-edited"
    with pytest.raises(AuthenticationError):
        Manifest.from_document(document)
    # the same malformed document, properly signed, is a configuration error
    with pytest.raises(ConfigurationError):
        Manifest.from_document(_signed(_body(members="nonsense")))
    with pytest.raises(ConfigurationError):
        Manifest.from_document(_signed(_body(format="fedtally-federation/2")))


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"\xff", b'{"a": 1, "a": 2}', b'{"a": NaN}',
                                 b'{"a": Infinity}', b"[" * 100_000])
def test_strict_json(raw: bytes) -> None:
    with pytest.raises(ConfigurationError):
        Manifest.from_bytes(raw)


def test_size_limit_and_non_json_documents() -> None:
    with pytest.raises(ConfigurationError, match="larger than"):
        Manifest.from_bytes(b" " * (MAX_MANIFEST_BYTES + 1))
    document = _signed()
    document["parameters"] = {**document["parameters"], "stage_timeout_s": float("nan")}
    with pytest.raises(ConfigurationError):
        Manifest.from_document(document)
    with pytest.raises(ConfigurationError):
        sign_manifest(_body(parameters={**DEFAULT_PARAMETERS, "threshold_fraction": float("nan")}),
                      AUTHORITY)
    with pytest.raises(LocalError):
        sign_manifest(_signed(), AUTHORITY)


def _edit(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(_body())
    *parents, last = path.split(".")
    target: Any = body
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return body


@pytest.mark.parametrize("path,value", [
    ("created", KeyError), ("created", "2024-05-01T12:00:00"), ("federation_id", "a b"),
    ("aggregator.name", "agg"), ("aggregator.port", 0), ("aggregator.host", "::"),
    ("aggregator.extra", 1), ("members.1.name", "N2"), ("members.0.name", "Keys"),
    ("members.0.role", "aggregator"), ("members.1.public_key", "xyz"),
    ("members.0.public_key", IDENTITIES["aggregator"].verify_key.hex()),
    ("parameters.threshold_fraction", 0), ("parameters.threshold_fraction", True),
    ("parameters.min_participants", 1), ("parameters.min_participants", 4),
    ("parameters.stage_timeout_s", 0), ("parameters.protection", KeyError),
    ("parameters.max_rows_per_node", 2.5), ("parameters.extra", 1),
])
def test_structure_checks(path: str, value: Any) -> None:
    with pytest.raises(ConfigurationError):
        Manifest.from_document(_signed(_edit(path, value)))


def test_a_low_threshold_fraction_still_means_a_strict_majority() -> None:
    body = _body(parameters={**DEFAULT_PARAMETERS, "threshold_fraction": 0.1})
    manifest = Manifest.from_document(_signed(body))
    assert [manifest.threshold_for(n) for n in (1, 2, 3, 10)] == [1, 2, 2, 6]
    for bad in (0, -3, True, 2.0):
        with pytest.raises(LocalError):
            manifest.threshold_for(bad)


def test_check_identity(manifest: Manifest) -> None:
    keys = {name: identity.verify_key for name, identity in IDENTITIES.items()}
    manifest.check_identity("n1", "node", "fed-test", keys["n1"])
    manifest.check_identity("aggregator", "aggregator", "fed-test", keys["aggregator"])
    manifest.check_identity("authority", "authority", "fed-test", AUTHORITY.verify_key)
    with pytest.raises(ConfigurationError, match="belongs to federation"):
        manifest.check_identity("n1", "node", "fed-other", keys["n1"])
    with pytest.raises(ConfigurationError, match="not the key"):
        manifest.check_identity("n1", "node", "fed-test", keys["n2"])
    with pytest.raises(ConfigurationError, match="no researcher called"):
        manifest.check_identity("n1", "researcher", "fed-test", keys["n1"])
    with pytest.raises(ConfigurationError, match="no node called"):
        manifest.check_identity("mallory", "node", "fed-test", keys["n1"])
    with pytest.raises(ConfigurationError, match="not the key"):
        manifest.check_identity("authority", "authority", "fed-test", keys["n1"])
