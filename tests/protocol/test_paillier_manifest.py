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
from crypto.threshold_paillier import ThresholdPublic, deal
from protocol.errors import AuthenticationError, ConfigurationError
from protocol.manifest import (
    DEFAULT_PARAMETERS,
    FORMAT,
    MIN_MANIFEST_PAILLIER_BITS,
    Manifest,
    sign_manifest,
)
from protocol.paillier_key import FederationKey

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
#: the dealer's public verification base and keys for KEY shared among three holders
DEALT, SHARES = deal(KEY, 3, 2, SeededRandom("paillier-manifest-deal"))
V_HEX = format(DEALT.verification_base, "x")
VK_HEX = [format(k, "x") for k in DEALT.verification_keys]
N2 = KEY.public.n ** 2


def _paillier(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"n": N_HEX, "decryption_threshold": 2, "holders": list(NODES),
                             "verification_base": V_HEX, "verification_keys": list(VK_HEX)}
    value.update(changes)
    return value


def _body(protection: str = "paillier", paillier: Any = None, **params: Any) -> dict[str, Any]:
    # the key's structure is checked with 2 of 3, the quorum bound without colluders (c =
    # 0); the quorum bound with colluders has its own tests below
    params = {"max_colluding_nodes": 0, **params}
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
    assert key.threshold.verification_base == DEALT.verification_base
    assert key.threshold.verification_keys == DEALT.verification_keys
    assert key.threshold == DEALT
    for share in SHARES:  # the keys the manifest carries are v^(s_i) of the dealt shares
        assert key.threshold.verification_key(share.index) == \
            pow(DEALT.verification_base, share.value, N2)
    expected = FederationKey(ThresholdPublic(PaillierPublicKey(KEY.public.n), 2, 3,
                                             DEALT.verification_base, DEALT.verification_keys),
                             NODES)
    assert key.fingerprint == expected.fingerprint
    without = FederationKey(ThresholdPublic(PaillierPublicKey(KEY.public.n), 2, 3), NODES)
    assert key.fingerprint != without.fingerprint
    again = _manifest(_body(paillier=_paillier()))
    assert again.paillier_key is not None
    assert again.paillier_key.fingerprint == key.fingerprint  # stable across parses
    assert manifest.paillier_key is key  # computed once


def test_the_fingerprint_names_modulus_threshold_and_holder_order() -> None:
    base = _manifest(_body(paillier=_paillier())).paillier_key
    other_order = _manifest(_body(paillier=_paillier(holders=["n3", "n1", "n2"]))).paillier_key
    three = _manifest(_body(paillier=_paillier(decryption_threshold=3))).paillier_key
    other_private = generate_keypair(2048, SeededRandom("paillier-manifest-other"))
    other_tp, _ = deal(other_private, 3, 2, SeededRandom("paillier-manifest-other-deal"))
    other_key = _manifest(_body(paillier=_paillier(
        n=format(other_private.public.n, "x"),
        verification_base=format(other_tp.verification_base, "x"),
        verification_keys=[format(k, "x") for k in other_tp.verification_keys]))).paillier_key
    redealt, _ = deal(KEY, 3, 2, SeededRandom("paillier-manifest-redeal"))
    other_base = _manifest(_body(paillier=_paillier(
        verification_base=format(redealt.verification_base, "x")))).paillier_key
    other_keys = _manifest(_body(paillier=_paillier(
        verification_keys=[format(k, "x") for k in redealt.verification_keys]))).paillier_key
    swapped_keys = _manifest(_body(paillier=_paillier(
        verification_keys=[VK_HEX[1], VK_HEX[0], VK_HEX[2]]))).paillier_key
    keys = [base, other_order, three, other_key, other_base, other_keys, swapped_keys]
    assert all(k is not None for k in keys)
    assert other_order is not None and three is not None
    assert other_order.holders == ("n3", "n1", "n2") and other_order.index("n3") == 1
    assert three.threshold.threshold == 3
    fingerprints = {k.fingerprint for k in keys}  # type: ignore[union-attr]
    assert len(fingerprints) == len(keys)


@pytest.mark.parametrize("field,value", [
    ("decryption_threshold", 3),
    ("verification_base", format(DEALT.verification_keys[0], "x")),
    ("verification_keys", [VK_HEX[0], VK_HEX[0], VK_HEX[2]]),
])
def test_the_key_is_part_of_the_signed_content(field: str, value: Any) -> None:
    document = sign_manifest(_body(paillier=_paillier()), AUTHORITY)
    document["parameters"]["paillier"][field] = value
    with pytest.raises(AuthenticationError):
        Manifest.from_document(document)


@pytest.mark.parametrize("paillier", [
    None, [], "n", 5,
    {"n": N_HEX, "decryption_threshold": 2},
    {"n": N_HEX, "holders": list(NODES)},
    {"decryption_threshold": 2, "holders": list(NODES)},
    {"n": N_HEX, "decryption_threshold": 2, "holders": list(NODES)},  # before verification keys
    {"n": N_HEX, "decryption_threshold": 2, "holders": list(NODES), "verification_base": V_HEX},
    {"n": N_HEX, "decryption_threshold": 2, "holders": list(NODES),
     "verification_keys": VK_HEX},
    _paillier(p="abc"), _paillier(q=1), _paillier(share="00"), _paillier(threshold=2),
    _paillier(shares=VK_HEX), _paillier(verification_key=VK_HEX[0]),
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
    five, _ = deal(KEY, 5, 3, SeededRandom("paillier-manifest-deal-5"))
    body = _body(paillier=_paillier(holders=["n1", "n2", "n3", "n4", "n5"],
                                    decryption_threshold=3,
                                    verification_keys=[format(k, "x")
                                                       for k in five.verification_keys]))
    body["members"] += [{"name": name, "role": "node", "public_key": i.verify_key.hex()}
                        for name, i in extra.items()]
    key = _manifest(body).paillier_key
    assert key is not None and key.threshold.holders == 5 and key.threshold.threshold == 3
    assert len(key.threshold.verification_keys) == 5
    body["parameters"]["paillier"]["verification_keys"] = VK_HEX  # three keys for five nodes
    with pytest.raises(ConfigurationError, match="one key per holder"):
        _manifest(body)
    body["parameters"]["paillier"]["verification_keys"] = [format(k, "x")
                                                           for k in five.verification_keys]
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
    assert N_HEX in text and V_HEX in text and all(k in text for k in VK_HEX)
    secrets = [KEY.p, KEY.q] + [share.value for share in SHARES]
    for secret in secrets:
        assert format(secret, "x") not in text and str(secret) not in text
        assert format(secret, "x")[:64] not in text and str(secret)[:64] not in text


# --- the verification base and keys -------------------------------------------------------


@pytest.mark.parametrize("keys", [
    [], VK_HEX[:1], VK_HEX[:2], VK_HEX + VK_HEX[:1], VK_HEX * 2, None, "".join(VK_HEX),
    VK_HEX[0], {"n1": VK_HEX[0], "n2": VK_HEX[1], "n3": VK_HEX[2]}, 5,
])
def test_verification_keys_must_be_a_list_of_one_key_per_holder(keys: Any) -> None:
    _refused(_paillier(verification_keys=keys), "one key per holder")


@pytest.mark.parametrize("bad", [
    VK_HEX[0].upper(), "0x" + VK_HEX[0], VK_HEX[0] + "g", " " + VK_HEX[0], "", "-1",
    int(VK_HEX[0], 16), None, 5.0, True, ["ab"], "f" * 4097,
])
def test_verification_base_and_keys_must_be_lower_case_hex(bad: Any) -> None:
    caught = _refused(_paillier(verification_base=bad), "lower-case hex")
    assert "verification_base" in str(caught)
    for position in range(3):
        keys: list[Any] = list(VK_HEX)
        keys[position] = bad
        caught = _refused(_paillier(verification_keys=keys), "lower-case hex")
        assert f"verification_keys[{position}]" in str(caught)


@pytest.mark.parametrize("bad", [
    0, KEY.public.n, KEY.p, 3 * KEY.q, N2, N2 + 1, N2 + DEALT.verification_base,
    N2 - KEY.p, (1 << 4 * 4096) - 1,
], ids=["zero", "n", "p", "3q", "n^2", "n^2+1", "n^2+v", "n^2-p", "4096 hex digits"])
def test_verification_base_and_keys_must_be_units_mod_n_squared(bad: int) -> None:
    _refused(_paillier(verification_base=format(bad, "x")), "not a unit")
    for position in range(3):
        keys = list(VK_HEX)
        keys[position] = format(bad, "x")
        _refused(_paillier(verification_keys=keys), "not a unit")


def test_verification_keys_follow_the_holders_and_leading_zeros_parse() -> None:
    # the keys are in holder order: reordering the holders without the keys still parses
    # (the manifest cannot tell), but each index now names another holder's key
    reordered = _manifest(_body(paillier=_paillier(holders=["n3", "n1", "n2"]))).paillier_key
    assert reordered is not None
    assert reordered.threshold.verification_key(reordered.index("n3")) == \
        DEALT.verification_keys[0]
    padded = _manifest(_body(paillier=_paillier(verification_base="00" + V_HEX))).paillier_key
    assert padded is not None and padded.threshold.verification_base == DEALT.verification_base


# --- the quorum bound with colluding nodes: T > (N + c) / 2 -----------------------------------


def test_a_quorum_must_stay_out_of_reach_of_the_colluders_plus_a_minority() -> None:
    # with one colluder, 2 of 3 lets two quorums {colluder, a} and {colluder, b} decrypt two
    # different contributor sets in one round; the manifest refuses it and takes 3 of 3
    with pytest.raises(ConfigurationError, match=r"in \[3, 3\] for 3 nodes and 1 colluding"):
        _manifest(_body(paillier=_paillier(), max_colluding_nodes=1))
    key = _manifest(_body(paillier=_paillier(decryption_threshold=3),
                          max_colluding_nodes=1)).paillier_key
    assert key is not None and key.threshold.threshold == 3
