"""Every Wycheproof case for the primitives we wrap (see ../shared/vectors/wycheproof).

One pytest case per Wycheproof ``tcId``; :func:`test_every_case_is_collected` checks that the
number of collected cases equals each file's ``numberOfTests``. Where ../shared is absent (a
user's own clone) every test here is skipped with the reason.

Files and the code under test:

- ``ed25519_test.json``            crypto.identity.VerifyKey.verify
- ``x25519_test.json``             crypto.keyagreement.x25519
- ``chacha20_poly1305_test.json``  cryptography's ChaCha20Poly1305, called as crypto/sealed.py does
- ``hkdf_sha256_test.json``        crypto.kdf.hkdf_sha256
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

import support
from crypto import sealed
from crypto.errors import InvalidKey, InvalidSignature
from crypto.identity import VerifyKey
from crypto.kdf import hkdf_sha256
from crypto.keyagreement import x25519

FILES = (
    "ed25519_test.json",
    "x25519_test.json",
    "chacha20_poly1305_test.json",
    "hkdf_sha256_test.json",
)


@cache
def _load(name: str) -> dict[str, Any] | None:
    path = support.WYCHEPROOF / name
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _cases(name: str) -> list[Any]:
    """One pytest param per test case of ``name``, id ``tcId<n>``."""
    data = _load(name)
    if data is None:
        return [pytest.param(None, None, id="absent", marks=pytest.mark.skip(
            reason=f"reference data {support.WYCHEPROOF / name} is absent "
                   "(it ships beside the repository in CI)"))]
    return [pytest.param(group, case, id=f"tcId{case['tcId']}")
            for group in data["testGroups"] for case in group["tests"]]


CASES = {name: _cases(name) for name in FILES}


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


@pytest.mark.parametrize("name", FILES)
def test_every_case_is_collected(name: str) -> None:
    data = json.loads(support.require_shared(support.WYCHEPROOF / name).read_text())
    ids = [case.values[1]["tcId"] for case in CASES[name]]
    assert len(ids) == data["numberOfTests"], name
    assert len(set(ids)) == len(ids), f"duplicate tcId in {name}"


# -- Ed25519 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("group", "case"), CASES["ed25519_test.json"])
def test_ed25519(group: dict[str, Any], case: dict[str, Any]) -> None:
    support.require_shared(support.WYCHEPROOF / "ed25519_test.json")
    assert group["type"] == "EddsaVerify"
    public, msg, sig = _h(group["publicKey"]["pk"]), _h(case["msg"]), _h(case["sig"])
    if case["result"] == "valid":
        # verify has no bool form: success is "returns None, raises nothing"
        assert VerifyKey(public).verify(msg, sig) is None
    else:
        # Wycheproof's Ed25519 file has no "acceptable" cases; anything not valid must fail
        assert case["result"] == "invalid", case
        with pytest.raises((InvalidSignature, InvalidKey)):
            VerifyKey(public).verify(msg, sig)


# -- X25519 --------------------------------------------------------------------------------

#: Decisions for the flags of Wycheproof's ``acceptable`` X25519 cases. A case whose flags
#: include any REJECT flag must raise InvalidKey; every other acceptable case must give
#: exactly the RFC 7748 shared secret. A flag in neither table fails the test, so a new
#: Wycheproof flag cannot slip through without a written decision.
REJECT_FLAGS = {
    "LowOrderPublic": (
        "REJECTED. The peer key is a point of small order, so the shared secret is all-zero "
        "(or otherwise predictable) whatever our private key is. The pair mask and the sealed "
        "share key would then be known to the aggregator. libsodium refuses these; so do we."),
    "ZeroSharedSecret": (
        "REJECTED. RFC 7748 section 6.1 check: an all-zero shared secret is refused "
        "(crypto/keyagreement.py checks it too, belt and braces)."),
    "SmallPublicKey": (
        "REJECTED. u-coordinates such as 0 and 1 belong to no valid private key; in this "
        "file they are all low-order points as well, see LowOrderPublic."),
}
ACCEPT_FLAGS = {
    "Twist": (
        "ACCEPTED with the exact RFC 7748 result. X25519 is defined on the twist; clamping "
        "clears the cofactor and Curve25519's twist has large prime order, so a twist point "
        "leaks nothing useful about our (per-query, ephemeral) secret. Peer keys are also "
        "signed by the peer's Ed25519 identity, so the aggregator cannot inject one."),
    "NonCanonicalPublic": (
        "ACCEPTED with the exact RFC 7748 result (top bit masked, u reduced mod p), as RFC "
        "7748 sections 5 and 7 recommend. An honest peer never emits such an encoding, the "
        "encoding is covered by the peer's signature, and the sealing KDF binds the exact "
        "public-key bytes, so two encodings of one point cannot be confused."),
    "SpecialPublicKey": (
        "ACCEPTED with the exact result unless also low-order: these test the field "
        "arithmetic; a correct result is all that matters."),
    "EdgeCaseMultiplication": "ACCEPTED with the exact result unless also low-order (arithmetic edge case).",
    "EdgeCaseShared": "ACCEPTED with the exact result (the shared secret is an edge value, not zero).",
    "Ktv": "ACCEPTED with the exact result (an RFC known-answer vector on the twist).",
}


@pytest.mark.parametrize(("group", "case"), CASES["x25519_test.json"])
def test_x25519(group: dict[str, Any], case: dict[str, Any]) -> None:
    support.require_shared(support.WYCHEPROOF / "x25519_test.json")
    assert group["curve"] == "curve25519"
    private, public, shared = _h(case["private"]), _h(case["public"]), _h(case["shared"])
    result, flags = case["result"], set(case["flags"])
    if result == "valid":
        assert x25519(private, public) == shared
    elif result == "invalid":
        with pytest.raises(InvalidKey):
            x25519(private, public)
    else:
        assert result == "acceptable", case
        undecided = flags - REJECT_FLAGS.keys() - ACCEPT_FLAGS.keys()
        assert not undecided, f"acceptable flag(s) {sorted(undecided)} need a written decision"
        if flags & REJECT_FLAGS.keys():
            with pytest.raises(InvalidKey):
                x25519(private, public)
        else:
            assert x25519(private, public) == shared


def test_x25519_acceptable_decisions_cover_the_file() -> None:
    """Every decision is exercised by the file, and each ACCEPT flag really is accepted
    somewhere (so the tables above describe what the code does, not what it might do)."""
    data = _load("x25519_test.json")
    if data is None:
        support.require_shared(support.WYCHEPROOF / "x25519_test.json")
    seen_reject: set[str] = set()
    seen_accept: set[str] = set()
    for group in data["testGroups"]:
        for case in group["tests"]:
            if case["result"] != "acceptable":
                continue
            flags = set(case["flags"])
            if flags & REJECT_FLAGS.keys():
                seen_reject |= flags & REJECT_FLAGS.keys()
            else:
                seen_accept |= flags
    assert seen_reject == set(REJECT_FLAGS)
    assert seen_accept == set(ACCEPT_FLAGS)


# -- ChaCha20-Poly1305 (the AEAD of crypto/sealed.py) --------------------------------------


@pytest.mark.parametrize(("group", "case"), CASES["chacha20_poly1305_test.json"])
def test_chacha20_poly1305(group: dict[str, Any], case: dict[str, Any]) -> None:
    support.require_shared(support.WYCHEPROOF / "chacha20_poly1305_test.json")
    key, nonce, aad = _h(case["key"]), _h(case["iv"]), _h(case["aad"])
    msg, ct, tag = _h(case["msg"]), _h(case["ct"]), _h(case["tag"])
    aead = ChaCha20Poly1305(key)
    if case["result"] == "valid":
        assert group["ivSize"] == 8 * sealed.NONCE_SIZE
        assert group["tagSize"] == 8 * sealed.TAG_SIZE
        assert aead.decrypt(nonce, ct + tag, aad) == msg
        assert aead.encrypt(nonce, msg, aad) == ct + tag
    else:
        assert case["result"] == "invalid", case
        # a nonce of any size but 12 bytes raises ValueError: that counts as rejection
        with pytest.raises((InvalidTag, ValueError)):
            aead.decrypt(nonce, ct + tag, aad)
        try:
            produced = aead.encrypt(nonce, msg, aad)
        except ValueError:
            assert len(nonce) != sealed.NONCE_SIZE
        else:
            assert produced != ct + tag


# -- HKDF-SHA256 ---------------------------------------------------------------------------


@pytest.mark.parametrize(("group", "case"), CASES["hkdf_sha256_test.json"])
def test_hkdf_sha256(group: dict[str, Any], case: dict[str, Any]) -> None:
    support.require_shared(support.WYCHEPROOF / "hkdf_sha256_test.json")
    ikm, salt, info, size = _h(case["ikm"]), _h(case["salt"]), _h(case["info"]), case["size"]
    if case["result"] == "valid":
        assert hkdf_sha256(ikm, salt=salt, info=info, length=size).hex() == case["okm"]
        if not salt:
            # derive_key passes salt=None; RFC 5869 treats None and b"" the same (HashLen zeros)
            assert hkdf_sha256(ikm, salt=None, info=info, length=size).hex() == case["okm"]
    else:
        assert case["result"] == "invalid", case
        with pytest.raises(ValueError):  # e.g. output longer than 255 * 32 bytes
            hkdf_sha256(ikm, salt=salt, info=info, length=size)
