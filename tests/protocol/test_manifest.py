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
from protocol.collusion import choose_neighbours
from protocol.errors import (
    AuthenticationError,
    ConfigurationError,
    LocalError,
    ParameterMismatch,
    ThresholdNotMet,
)
from protocol.manifest import (
    DEFAULT_PARAMETERS,
    FORMAT,
    MAX_MANIFEST_BYTES,
    Manifest,
    canonical_json,
    sign_manifest,
    signed_content,
)
from protocol.simulate import make_params

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
    # c = 1 colluding node by default: 2 of 3 would let the aggregator and one node learn
    # the third (t - c >= 2), so 3 of 3; from 4 nodes up the fraction 2/3 decides
    assert manifest.max_colluding_nodes == 1 and manifest.secagg_plus is False
    assert manifest.threshold_for(3) == 3 and manifest.threshold_for(10) == 7
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
    body = _body(parameters={**DEFAULT_PARAMETERS, "threshold_fraction": 0.1,
                             "max_colluding_nodes": 0})
    manifest = Manifest.from_document(_signed(body))
    assert [manifest.threshold_for(n) for n in (2, 3, 10)] == [2, 2, 6]
    for bad in (0, -3, True, 2.0):
        with pytest.raises(LocalError):
            manifest.threshold_for(bad)
    with pytest.raises(ThresholdNotMet):  # a sum of one node is that node
        manifest.threshold_for(1)


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


# --- the collusion bound (threat_model.md, "Collusion") ---------------------------------------


def _with(**parameters: Any) -> Manifest:
    return Manifest.from_document(_signed(_body(parameters={**DEFAULT_PARAMETERS,
                                                            **parameters})))


@pytest.mark.parametrize("colluding", [0, 1, 2, 3])
def test_thresholds_follow_the_colluding_bound(colluding: int) -> None:
    members = {f"n{i}": "node" for i in range(12)}
    global IDENTITIES, ROLES
    saved = IDENTITIES, ROLES
    IDENTITIES = {**IDENTITIES, **{m: SigningIdentity.generate(SeededRandom(m)) for m in members}}
    ROLES = {**members, "alice": "researcher"}
    try:
        manifest = _with(max_colluding_nodes=colluding, threshold_fraction=0.5)
    finally:
        IDENTITIES, ROLES = saved
    for n in range(1, 13):
        if n < colluding + 2:
            with pytest.raises(ThresholdNotMet, match=f"at least {colluding + 2} nodes"):
                manifest.threshold_for(n)
            continue
        t = manifest.threshold_for(n)
        assert 2 * t > n + colluding and t - colluding >= 2 and t <= n
        # the least such t: one less breaks a bound
        assert 2 * (t - 1) <= n + colluding or t - 1 - colluding < 2


def test_a_federation_too_small_for_its_colluding_bound_is_refused() -> None:
    # three nodes: at most one colluder (t = 3 of 3); two would leave one honest input
    assert _with(max_colluding_nodes=1).threshold_for(3) == 3
    with pytest.raises(ConfigurationError, match="at least 4 nodes"):
        _with(max_colluding_nodes=2)
    # DP noise calibrated for 3 honest nodes needs t - c >= 3
    with pytest.raises(ConfigurationError, match="3 honest inputs"):
        _with(max_colluding_nodes=1, dp_honest_nodes=3)
    assert _with(max_colluding_nodes=0, dp_honest_nodes=3).threshold_for(3) == 3


@pytest.mark.parametrize("value", [-1, 1.5, True, "1", None])
def test_max_colluding_nodes_must_be_a_non_negative_integer(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_colluding_nodes"):
        _with(max_colluding_nodes=value)


def test_secagg_plus_must_be_a_boolean() -> None:
    with pytest.raises(ConfigurationError, match="secagg_plus"):
        _with(secagg_plus=1)


def test_an_older_manifest_without_the_bound_gets_the_safe_default() -> None:
    parameters = {k: v for k, v in DEFAULT_PARAMETERS.items()
                  if k not in ("max_colluding_nodes", "secagg_plus")}
    manifest = Manifest.from_document(_signed(_body(parameters=parameters)))
    assert manifest.max_colluding_nodes == 1 and not manifest.secagg_plus
    assert manifest.threshold_for(3) == 3


def test_rounds_are_checked_against_the_manifest_bound() -> None:
    rng = SeededRandom(3)
    manifest = _with(max_colluding_nodes=1)
    manifest.check_round(make_params(6, 4, 2, 32, 0, rng, max_colluding=1))
    with pytest.raises(ParameterMismatch, match="colluding"):
        manifest.check_round(make_params(6, 4, 2, 32, 0, rng, max_colluding=0))
    with pytest.raises(ParameterMismatch, match="threshold"):
        _with(max_colluding_nodes=0).check_round(make_params(9, 5, 2, 32, 0, rng))
    # two participants cannot hold one colluder off: no such round can even be made
    with pytest.raises(ValueError):
        make_params(2, 2, 2, 32, 0, rng, max_colluding=1)
    with pytest.raises(ThresholdNotMet):
        manifest.threshold_for(2)
    sparse = make_params(200, 134, 2, 32, 34, rng, max_colluding=1)
    with pytest.raises(ParameterMismatch, match="complete graph"):
        manifest.check_round(sparse)
    _with(max_colluding_nodes=1, secagg_plus=True).check_round(sparse)
    # a graph whose neighbourhoods hold only 2 honest inputs fails a DP assumption of 3
    thin = make_params(200, 134, 2, 32, 2, rng, max_colluding=1)  # t_s = 3 of 3 holders
    assert thin.honest_inputs == 2
    with pytest.raises(ParameterMismatch, match="3 honest inputs"):
        _with(max_colluding_nodes=0, secagg_plus=True, dp_honest_nodes=3).check_round(thin)


def test_the_aggregator_plans_secagg_plus_only_when_enabled_and_cheaper() -> None:
    assert _with(secagg_plus=False).graph_for(500) == 0
    enabled = _with(secagg_plus=True)
    assert enabled.graph_for(500) == choose_neighbours(500, 1) > 0
    assert enabled.graph_for(20) == 0  # no graph is cheaper than the complete one
