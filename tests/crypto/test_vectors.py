"""Known-answer vectors of tests/vectors/ (written by tests/vectors/generate.py).

Positive cases are recomputed and compared exactly; negative (``bad_``) cases must fail in
the recorded way. Beyond the regression check, the mask and sealing vectors are also
recomputed here from the raw primitives, following each file's ``algorithm`` text, so the
description in the file is known to be true. Finally the generator is re-run in a temp dir
and must reproduce the checked-in files byte for byte (they are generated, not hand-edited).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from functools import cache
from itertools import combinations
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

import support
from crypto import errors, shamir
from crypto.keyagreement import X25519KeyPair, public_from_secret, x25519
from crypto.prg import MaskExpander, pairwise_mask_key, self_mask_key
from crypto.randomness import SeededRandom
from crypto.sealed import open_sealed, seal

FILES = ("mask_expansion.json", "share_sealing.json", "shamir.json")
GENERATOR = support.VECTORS / "generate.py"


@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((support.VECTORS / name).read_text(encoding="utf-8"))


def _params(name: str) -> list[Any]:
    return [pytest.param(case, id=case["id"]) for case in _load(name)["tests"]]


def _h(text: str) -> bytes:
    return bytes.fromhex(text)


def _error(case: dict[str, Any]) -> type[Exception]:
    kind = getattr(errors, case["error"])
    assert issubclass(kind, errors.CryptoError)
    return kind


# -- the files themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_file_has_provenance_and_enough_cases(name: str) -> None:
    data = _load(name)
    provenance = data["provenance"]
    assert isinstance(provenance, str)
    assert "Self-generated" in provenance and "NOT third-party" in provenance
    assert "tests/vectors/generate.py" in provenance
    assert data["library_versions"] in provenance
    assert isinstance(data["algorithm"], str) and data["algorithm"]
    ids = [case["id"] for case in data["tests"]]
    assert len(set(ids)) == len(ids)
    positive = [c for c in data["tests"] if not c["id"].startswith("bad_")]
    negative = [c for c in data["tests"] if c["id"].startswith("bad_")]
    assert len(positive) >= 3 and len(negative) >= 3
    assert all(c["result"] == "valid" for c in positive)
    assert all(c["result"] != "valid" for c in negative)


def test_generator_reproduces_the_checked_in_files(tmp_path) -> None:
    run = subprocess.run([sys.executable, str(GENERATOR), str(tmp_path)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    for name in FILES:
        checked = (support.VECTORS / name).read_bytes()
        fresh = (tmp_path / name).read_bytes()
        recorded = _load(name)["library_versions"]
        current = json.loads(fresh)["library_versions"]
        if current != recorded:
            # another library version must give the same values; only the record differs
            fresh = fresh.replace(current.encode(), recorded.encode())
        assert fresh == checked, (
            f"{name} differs from the generator's output: regenerate it with "
            f"`.venv/bin/python tests/vectors/generate.py` if the change is intended")


# -- mask expansion -----------------------------------------------------------------------------


def _reference_mask(key: bytes, bits: int, length: int) -> bytes:
    """The file's algorithm text, from raw AES-CTR and Python ints."""
    limbs = (bits + 63) // 64
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(
        bytes(limbs * length * 8))
    words = [int.from_bytes(stream[8 * i:8 * i + 8], "little") for i in range(limbs * length)]
    top_bits = bits - 64 * (limbs - 1)
    for j in range(length):
        words[(limbs - 1) * length + j] &= (1 << top_bits) - 1
    return b"".join(w.to_bytes(8, "little") for w in words)


def _reference_context(*parts: bytes | str | int) -> bytes:
    out = b""
    for part in parts:
        if isinstance(part, int):
            raw, tag = part.to_bytes(max(1, (part.bit_length() + 7) // 8), "big"), b"i"
        elif isinstance(part, str):
            raw, tag = part.encode(), b"s"
        else:
            raw, tag = part, b"b"
        out += tag + len(raw).to_bytes(4, "big") + raw
    return out


def _reference_hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()  # salt None = 32 zero bytes
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out, counter = out + block, counter + 1
    return out[:length]


def _compute_mask_case(case: dict[str, Any]) -> str:
    op = case["op"]
    if op == "mask":
        return MaskExpander(case["bits"], case["length"]).mask(_h(case["key"])).to_bytes().hex()
    if op == "pairwise_mask_key":
        return pairwise_mask_key(_h(case["shared_secret"]), _h(case["round_digest"]),
                                 case["low_id"], case["high_id"]).hex()
    if op == "self_mask_key":
        return self_mask_key(_h(case["seed"]), _h(case["round_digest"]), case["owner"]).hex()
    if op == "pairwise_mask":
        key = pairwise_mask_key(_h(case["shared_secret"]), _h(case["round_digest"]),
                                case["low_id"], case["high_id"])
        assert key.hex() == case["expected_key"]
        return MaskExpander(case["bits"], case["length"]).mask(key).to_bytes().hex()
    raise AssertionError(f"unknown op {op}")


@pytest.mark.parametrize("case", _params("mask_expansion.json"))
def test_mask_expansion_vector(case: dict[str, Any]) -> None:
    if case["result"] == "valid":
        assert _compute_mask_case(case) == case["expected"]
    elif case["result"] == "mismatch":
        assert _compute_mask_case(case) != case["expected"]
    else:
        assert case["result"] == "error"
        with pytest.raises(_error(case)):
            _compute_mask_case(case)


@pytest.mark.parametrize("case", [p for p in _params("mask_expansion.json")
                                  if p.values[0]["result"] == "valid"])
def test_mask_expansion_matches_the_algorithm_text(case: dict[str, Any]) -> None:
    op = case["op"]
    if op in ("pairwise_mask_key", "pairwise_mask"):
        info = _reference_context(b"fedtally/v1", "pair-mask", _h(case["round_digest"]),
                                  case["low_id"], case["high_id"])
        key = _reference_hkdf(_h(case["shared_secret"]), info, 16)
        if op == "pairwise_mask_key":
            assert key.hex() == case["expected"]
            return
        assert key.hex() == case["expected_key"]
        assert _reference_mask(key, case["bits"], case["length"]).hex() == case["expected"]
    elif op == "self_mask_key":
        info = _reference_context(b"fedtally/v1", "self-mask", _h(case["round_digest"]),
                                  case["owner"])
        assert _reference_hkdf(_h(case["seed"]), info, 16).hex() == case["expected"]
    else:
        assert op == "mask"
        expected = _reference_mask(_h(case["key"]), case["bits"], case["length"])
        assert expected.hex() == case["expected"]


# -- sealing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params("share_sealing.json"))
def test_share_sealing_vector(case: dict[str, Any]) -> None:
    binding, sealed = _h(case["binding"]), _h(case["sealed"])
    if case["op"] == "seal":
        assert case["result"] == "valid"
        sender = X25519KeyPair(_h(case["sender_secret"]))
        recipient = X25519KeyPair(_h(case["recipient_secret"]))
        assert sender.public.hex() == case["sender_public"]
        assert recipient.public.hex() == case["recipient_public"]
        plaintext = _h(case["plaintext"])
        again = seal(sender, recipient.public, plaintext, binding, SeededRandom(case["nonce_seed"]))
        assert again == sealed
        assert open_sealed(recipient, sender.public, sealed, binding) == plaintext
    else:
        assert (case["op"], case["result"]) == ("open", "error")
        recipient = X25519KeyPair(_h(case["recipient_secret"]))
        with pytest.raises(_error(case)):
            open_sealed(recipient, _h(case["sender_public"]), sealed, binding)


@pytest.mark.parametrize("case", [p for p in _params("share_sealing.json")
                                  if p.values[0]["result"] == "valid"])
def test_share_sealing_matches_the_algorithm_text(case: dict[str, Any]) -> None:
    suite = "x25519-hkdf-sha256-chacha20poly1305"
    sender_public, recipient_public = _h(case["sender_public"]), _h(case["recipient_public"])
    assert public_from_secret(_h(case["sender_secret"])) == sender_public
    shared = x25519(_h(case["sender_secret"]), recipient_public)
    binding = _h(case["binding"])
    info = _reference_context(b"fedtally/v1", "seal", suite, binding, sender_public,
                              recipient_public)
    key = _reference_hkdf(shared, info, 32)
    nonce = SeededRandom(case["nonce_seed"]).bytes(12)
    body = ChaCha20Poly1305(key).encrypt(nonce, _h(case["plaintext"]),
                                         _reference_context(suite, binding))
    assert (nonce + body).hex() == case["sealed"]


# -- Shamir -----------------------------------------------------------------------------------


def _shares(case: dict[str, Any]) -> dict[int, bytes]:
    return {item["x"]: _h(item["y"]) for item in case["shares"]}


@pytest.mark.parametrize("case", _params("shamir.json"))
def test_shamir_vector(case: dict[str, Any]) -> None:
    if case["op"] == "split":
        secret, threshold = _h(case["secret"]), case["threshold"]

        def split() -> dict[int, bytes]:
            return shamir.split(secret, threshold, case["xs"], SeededRandom(case["rng_seed"]))

        if case["result"] == "error":
            with pytest.raises(_error(case)):
                split()
            return
        assert case["result"] == "valid"
        shares = split()
        assert list(shares) == case["xs"]
        assert shares == _shares(case)
        for chosen in combinations(shares.items(), threshold):
            assert shamir.combine(dict(chosen), threshold, len(secret)) == secret
        assert shamir.combine(shares, threshold, len(secret)) == secret
        return

    assert case["op"] == "combine"
    shares, threshold, size = _shares(case), case["threshold"], case["secret_size"]
    if case["result"] == "error":
        with pytest.raises(_error(case)):
            shamir.combine(shares, threshold, size)
    else:
        assert case["result"] == "wrong_secret_or_error"
        try:
            recovered = shamir.combine(shares, threshold, size)
        except errors.ShareError:
            return
        assert recovered != _h(case["secret"])


def test_shamir_split_vectors_lie_on_one_polynomial() -> None:
    """Independent of crypto.shamir: shares of a threshold-t case interpolate to the secret
    with a plain Lagrange formula, and t-1 of them do not pin it down."""
    p = (1 << 521) - 1
    for case in _load("shamir.json")["tests"]:
        if case["op"] != "split" or case["result"] != "valid":
            continue
        points = [(item["x"], int(item["y"], 16)) for item in case["shares"]]
        t = case["threshold"]
        secret = 0
        for i, (xi, yi) in enumerate(points[:t]):
            term = yi
            for j, (xj, _) in enumerate(points[:t]):
                if i != j:
                    term = term * xj * pow(xj - xi, -1, p) % p
            secret = (secret + term) % p
        assert secret == int(case["secret"], 16), case["id"]
        assert all(0 <= y < p for _, y in points)


def test_vector_masks_are_not_trivial() -> None:
    """A sanity check on the vectors: the full 64-bit limbs of a mask look random (no
    repeated words), and the top limb has nothing above the ring width."""
    for case in _load("mask_expansion.json")["tests"]:
        if case["op"] != "mask" or case["result"] != "valid":
            continue
        bits, length = case["bits"], case["length"]
        words = np.frombuffer(_h(case["expected"]), dtype="<u8").reshape(-1, length)
        full = words if bits % 64 == 0 else words[:-1]
        assert len(set(full.ravel().tolist())) == full.size
        top_bits = bits - 64 * (words.shape[0] - 1)
        assert all(int(w) >> top_bits == 0 for w in words[-1])
