"""The manifest's threshold Paillier key (parameters.paillier under protection "paillier"):
every malformed key is a ConfigurationError, a valid one becomes Manifest.paillier_key."""

from __future__ import annotations

import json
from typing import Any

import gmpy2
import pytest

from crypto.identity import SigningIdentity
from crypto.paillier import PaillierPublicKey, generate_keypair
from crypto.randomness import SeededRandom
from crypto.threshold_paillier import ThresholdPublic
from engine.errors import AuthenticationError, ConfigurationError
from engine.manifest import (
    DEFAULT_PARAMETERS,
    FORMAT,
    MIN_MANIFEST_PAILLIER_BITS,
    Manifest,
    sign_manifest,
)
from engine.paillier_key import FederationKey

AUTHORITY = SigningIdentity.generate(SeededRandom("paillier-manifest-authority"))
IDENTITIES = {name: SigningIdentity.generate(SeededRandom(f"paillier-member-{name}"))
              for name in ("aggregator", "n2", "n1", "n3", "alice", "audit")}
ROLES = {"n2": "node", "n1": "node", "n3": "node", "alice": "researcher", "audit": "auditor"}
NODES = ("n1", "n2", "n3")
#: one 2048-bit modulus for the whole module (the manifest's minimum)
KEY = generate_keypair(MIN_MANIFEST_PAILLIER_BITS, SeededRandom("paillier-manifest-key"))
N_HEX = format(KEY.public.n, "x")
SMALL_N = generate_keypair(1024, SeededRandom("paillier-manifest-small")).public.n
PRIME = int(gmpy2.next_prime(1 << 2047))


def _paillier(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"n": N_HEX, "decryption_threshold": 2, "holders": list(NODES)}
    value.update(changes)
    return value


def _body(protection: str = "paillier", paillier: Any = None, **params: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "federation_id": "fed-paillier",
        "created": "2024-05-01T12:00:00Z",
        "aggregator": {"name": "aggregator", "host": "agg.example.org", "port": 443,
                       "public_key": IDENTITIES["aggregator"].verify_key.hex()},
        "members": [{"name": name, "role": role, "public_key": IDENTITIES[name].verify_key.hex()}
                    for name, role in ROLES.items()],
        "parameters": {**DEFAULT_PARAMETERS, "protection": protection, "paillier": paillier,
                       **params},
    }


def _manifest(body: dict[str, Any]) -> Manifest:
    raw = json.dumps(sign_manifest(body, AUTHORITY), indent=1).encode()
    return Manifest.from_bytes(raw, authority_key=AUTHORITY.verify_key)


def _refused(paillier: Any, match: str | None = None) -> ConfigurationError:
    with pytest.raises(ConfigurationError, match=match) as caught:
        _manifest(_body(paillier=paillier))
    assert "parameters.paillier" in str(caught.value)
    return caught.value


def test_a_valid_key_becomes_the_federation_key() -> None:
    manifest = _manifest(_body(paillier=_paillier()))
    assert manifest.protection == "paillier"
    key = manifest.paillier_key
    assert key is not None
    assert key.holders == NODES
    assert key.threshold.threshold == 2 and key.threshold.holders == 3
    assert key.threshold.public == KEY.public
    assert [key.index(name) for name in NODES] == [1, 2, 3]
    expected = FederationKey(ThresholdPublic(PaillierPublicKey(KEY.public.n), 2, 3), NODES)
    assert key.fingerprint == expected.fingerprint
    again = _manifest(_body(paillier=_paillier()))
    assert again.paillier_key is not None
    assert again.paillier_key.fingerprint == key.fingerprint  # stable across parses
    assert manifest.paillier_key is key  # computed once


def test_the_fingerprint_names_modulus_threshold_and_holder_order() -> None:
    base = _manifest(_body(paillier=_paillier())).paillier_key
    other_order = _manifest(_body(paillier=_paillier(holders=["n3", "n1", "n2"]))).paillier_key
    three = _manifest(_body(paillier=_paillier(decryption_threshold=3))).paillier_key
    other_n = generate_keypair(2048, SeededRandom("paillier-manifest-other")).public.n
    other_key = _manifest(_body(paillier=_paillier(n=format(other_n, "x")))).paillier_key
    assert base is not None and other_order is not None and three is not None
    assert other_key is not None
    assert other_order.holders == ("n3", "n1", "n2") and other_order.index("n3") == 1
    assert three.threshold.threshold == 3
    fingerprints = {k.fingerprint for k in (base, other_order, three, other_key)}
    assert len(fingerprints) == 4


def test_the_key_is_part_of_the_signed_content() -> None:
    document = sign_manifest(_body(paillier=_paillier()), AUTHORITY)
    document["parameters"]["paillier"]["decryption_threshold"] = 3
    with pytest.raises(AuthenticationError):
        Manifest.from_document(document)


@pytest.mark.parametrize("paillier", [
    None, [], "n", 5,
    {"n": N_HEX, "decryption_threshold": 2},
    {"n": N_HEX, "holders": list(NODES)},
    {"decryption_threshold": 2, "holders": list(NODES)},
    _paillier(p="abc"), _paillier(q=1), _paillier(share="00"), _paillier(threshold=2),
])
def test_missing_or_extra_keys_are_refused(paillier: Any) -> None:
    _refused(paillier)


@pytest.mark.parametrize("n", [
    N_HEX.upper(), "0x" + N_HEX, N_HEX + "g", " " + N_HEX, "", int(N_HEX, 16), None, 5.0,
    "f" * 4097, ["ab"],
])
def test_n_must_be_lower_case_hex(n: Any) -> None:
    _refused(_paillier(n=n), "lower-case hex")


@pytest.mark.parametrize("n,why", [
    (SMALL_N, "at least 2048"),
    (KEY.public.n + 1, "odd"),  # even
    (PRIME, "product"),
    (KEY.p * KEY.p, "product"),  # a square
    (1, None), (3, None),
    ((1 << 2048) - 1 - 1, "odd"),
])
def test_n_must_be_a_large_enough_paillier_modulus(n: int, why: str | None) -> None:
    _refused(_paillier(n=format(n, "x")), why)


@pytest.mark.parametrize("holders", [
    ["n1", "n2"], ["n1", "n2", "n3", "alice"], ["n1", "n2", "alice"], ["n1", "n2", "n4"],
    ["n1", "n1", "n2", "n3"], ["n1", "n2", "n2"], [], "n1,n2,n3", None, {"n1": 1},
    ["N1", "n2", "n3"], ["aggregator", "n1", "n2", "n3"],
])
def test_holders_must_list_every_node_once(holders: Any) -> None:
    _refused(_paillier(holders=holders), "every node exactly once")


@pytest.mark.parametrize("holders", [["n1", 2, "n3"], [None, None, None], [["n1"], "n2", "n3"],
                                     ["n1", {"n": 2}, "n3"]])
def test_holders_of_other_types_are_a_configuration_error(holders: Any) -> None:
    _refused(_paillier(holders=holders))


def test_holders_of_one_type_other_than_strings_are_refused() -> None:
    _refused(_paillier(holders=[1, 2, 3]), "every node exactly once")


@pytest.mark.parametrize("threshold", [0, 1, 4, -2, 2.0, 2.5, "2", True, None, [2]])
def test_decryption_threshold_is_a_strict_majority_up_to_the_node_count(threshold: Any) -> None:
    _refused(_paillier(decryption_threshold=threshold), "decryption_threshold")


@pytest.mark.parametrize("threshold", [2, 3])
def test_decryption_thresholds_in_range(threshold: int) -> None:
    key = _manifest(_body(paillier=_paillier(decryption_threshold=threshold))).paillier_key
    assert key is not None and key.threshold.threshold == threshold


def test_the_majority_bound_follows_the_node_count() -> None:
    extra = {f"n{i}": SigningIdentity.generate(SeededRandom(f"paillier-member-n{i}"))
             for i in (4, 5)}
    body = _body(paillier=_paillier(holders=["n1", "n2", "n3", "n4", "n5"],
                                    decryption_threshold=3))
    body["members"] += [{"name": name, "role": "node", "public_key": i.verify_key.hex()}
                        for name, i in extra.items()]
    key = _manifest(body).paillier_key
    assert key is not None and key.threshold.holders == 5 and key.threshold.threshold == 3
    body["parameters"]["paillier"]["decryption_threshold"] = 2
    with pytest.raises(ConfigurationError, match=r"\[3, 5\]"):
        _manifest(body)


def test_paillier_protection_needs_a_key() -> None:
    with pytest.raises(ConfigurationError, match="paillier"):
        _manifest(_body(protection="paillier", paillier=None))
    body = _body(protection="paillier")
    del body["parameters"]["paillier"]  # optional parameter defaults to null
    with pytest.raises(ConfigurationError, match="paillier"):
        _manifest(body)


@pytest.mark.parametrize("paillier", [_paillier(), {}, "x", 0, False, []])
def test_a_key_under_mask_protection_is_refused(paillier: Any) -> None:
    with pytest.raises(ConfigurationError, match="must be null"):
        _manifest(_body(protection="mask", paillier=paillier))


def test_mask_manifests_without_a_key_still_load() -> None:
    manifest = _manifest(_body(protection="mask", paillier=None))
    assert manifest.protection == "mask"
    body = _body(protection="mask")
    del body["parameters"]["paillier"]
    assert _manifest(body).protection == "mask"


def test_a_mask_manifest_has_no_paillier_key() -> None:
    # the services ask every manifest for its key: under "mask" it is None, not an error
    assert _manifest(_body(protection="mask", paillier=None)).paillier_key is None
    body = _body(protection="mask")
    del body["parameters"]["paillier"]
    assert _manifest(body).paillier_key is None


def test_unknown_protection_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="protection"):
        _manifest(_body(protection="rsa", paillier=_paillier()))


def test_the_manifest_carries_only_the_public_modulus() -> None:
    manifest = _manifest(_body(paillier=_paillier()))
    text = json.dumps(manifest.to_document())
    assert N_HEX in text
    for secret in (KEY.p, KEY.q):
        assert format(secret, "x") not in text and str(secret) not in text
