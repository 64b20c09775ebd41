"""Write the known-answer vector files of tests/vectors/ from the project's own crypto code.

    .venv/bin/python tests/vectors/generate.py [OUTPUT_DIR]

OUTPUT_DIR defaults to the directory of this script. The output is a pure function of this
script, the crypto/ package and the recorded date: every random input comes from
crypto.randomness.SeededRandom, and JSON is written with a fixed layout, so re-running it
reproduces the checked-in files byte for byte (tests/crypto/test_vectors.py checks that).

These are self-generated regression vectors, not third-party ones: they pin the current
behaviour (mask expansion, pair-key derivation, sealing, Shamir) so that any change to it is
noticed. Third-party vectors for the primitives underneath live in ../shared/vectors/wycheproof.

When a change to crypto/ is intended, bump VECTORS_DATE, regenerate, and say why in the
commit message.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from crypto import shamir  # noqa: E402
from crypto.encoding import MAX_RING_BITS  # noqa: E402
from crypto.errors import DecryptionFailed, EncodingError, ShareError  # noqa: E402
from crypto.kdf import context  # noqa: E402
from crypto.keyagreement import X25519KeyPair  # noqa: E402
from crypto.prg import MaskExpander, pairwise_mask_key, self_mask_key  # noqa: E402
from crypto.randomness import SeededRandom  # noqa: E402
from crypto.sealed import open_sealed, seal  # noqa: E402

#: the date these files were last (re)generated; bump it when regenerating on purpose
VECTORS_DATE = "2026-11-29"
SCRIPT = "tests/vectors/generate.py"
FILES = ("mask_expansion.json", "share_sealing.json", "shamir.json")


def library_versions() -> str:
    py = ".".join(str(part) for part in sys.version_info[:3])
    return (f"Python {py}, cryptography {version('cryptography')}, PyNaCl {version('pynacl')}, "
            f"numpy {version('numpy')}")


def provenance(what: str) -> str:
    return (f"Self-generated regression vectors for {what}; NOT third-party vectors. Written "
            f"by {SCRIPT} of the fedtally repository (dated {VECTORS_DATE}) with "
            f"{library_versions()}, by calling the project's own crypto/ code on deterministic "
            "inputs (crypto.randomness.SeededRandom with the seeds recorded here). They pin "
            "current behaviour so that a change is noticed; they do not prove correctness "
            "against an independent implementation. Regenerate with "
            f"`.venv/bin/python {SCRIPT}`.")


def _rand(label: str, n: int) -> bytes:
    return SeededRandom(f"fedtally/vectors/{label}").bytes(n)


def _flip(data: bytes, index: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


def _expect_error(kind: type[Exception], call: Any) -> None:
    """Guard: a negative vector is only written if the code really fails that way."""
    try:
        call()
    except kind:
        return
    raise AssertionError(f"expected {kind.__name__}")


# -- mask expansion -----------------------------------------------------------------------


def _mask_hex(key: bytes, bits: int, length: int) -> str:
    return MaskExpander(bits, length).mask(key).to_bytes().hex()


def mask_expansion() -> dict[str, Any]:
    tests: list[dict[str, Any]] = []
    for bits, length in ((8, 5), (63, 3), (64, 4), (65, 3), (128, 2), (200, 3)):
        key = _rand(f"mask/{bits}/{length}", 16)
        tests.append({"id": f"mask_{bits}bit_len{length}", "op": "mask", "key": key.hex(),
                      "bits": bits, "length": length, "result": "valid",
                      "expected": _mask_hex(key, bits, length)})

    shared = _rand("pair/shared", 32)
    digest = _rand("pair/round-digest", 32)
    pair = {"shared_secret": shared.hex(), "round_digest": digest.hex(),
            "low_id": "node-a", "high_id": "node-b"}
    pair_key = pairwise_mask_key(shared, digest, "node-a", "node-b")
    tests.append({"id": "pairwise_key_a_b", "op": "pairwise_mask_key", **pair,
                  "result": "valid", "expected": pair_key.hex()})
    other_digest = _rand("pair/round-digest-2", 32)
    tests.append({"id": "pairwise_key_a_b_round2", "op": "pairwise_mask_key", **pair,
                  "round_digest": other_digest.hex(), "result": "valid",
                  "expected": pairwise_mask_key(shared, other_digest, "node-a", "node-b").hex()})
    tests.append({"id": "pairwise_mask_a_b_64bit", "op": "pairwise_mask", **pair, "bits": 64,
                  "length": 6, "result": "valid", "expected_key": pair_key.hex(),
                  "expected": _mask_hex(pair_key, 64, 6)})
    tests.append({"id": "pairwise_mask_a_b_130bit", "op": "pairwise_mask", **pair, "bits": 130,
                  "length": 2, "result": "valid", "expected_key": pair_key.hex(),
                  "expected": _mask_hex(pair_key, 130, 2)})
    seed = _rand("self/seed", 32)
    tests.append({"id": "self_mask_key_a", "op": "self_mask_key", "seed": seed.hex(),
                  "round_digest": digest.hex(), "owner": "node-a", "result": "valid",
                  "expected": self_mask_key(seed, digest, "node-a").hex()})

    # negative cases
    for name, key_len in (("bad_key_too_short", 15), ("bad_key_too_long", 32),
                          ("bad_key_empty", 0)):
        key = _rand(f"mask/{name}", key_len)
        _expect_error(EncodingError, lambda key=key: MaskExpander(64, 4).mask(key))
        tests.append({"id": name, "op": "mask", "key": key.hex(), "bits": 64, "length": 4,
                      "result": "error", "error": "EncodingError"})
    key = _rand("mask/64/4", 16)
    for name, bits in (("bad_ring_too_wide", MAX_RING_BITS + 1), ("bad_ring_too_narrow", 7)):
        _expect_error(EncodingError, lambda bits=bits: MaskExpander(bits, 4).mask(key))
        tests.append({"id": name, "op": "mask", "key": key.hex(), "bits": bits, "length": 4,
                      "result": "error", "error": "EncodingError"})
    good = bytes.fromhex(_mask_hex(key, 64, 4))
    tests.append({"id": "bad_tampered_expected_mask", "op": "mask", "key": key.hex(), "bits": 64,
                  "length": 4, "result": "mismatch", "expected": _flip(good, 9, 3).hex(),
                  "comment": "one bit of the expected mask flipped: must not match"})
    tests.append({"id": "bad_tampered_expected_pairwise_key", "op": "pairwise_mask_key", **pair,
                  "result": "mismatch", "expected": _flip(pair_key, 0).hex(),
                  "comment": "one bit of the expected key flipped: must not match"})
    tests.append({"id": "bad_pairwise_key_ids_swapped", "op": "pairwise_mask_key", **pair,
                  "low_id": "node-b", "high_id": "node-a", "result": "mismatch",
                  "expected": pair_key.hex(),
                  "comment": "the pair order is bound: (b, a) must not give the key of (a, b)"})
    tests.append({"id": "bad_pairwise_key_other_round", "op": "pairwise_mask_key", **pair,
                  "round_digest": other_digest.hex(), "result": "mismatch",
                  "expected": pair_key.hex(),
                  "comment": "the round digest is bound: another round must give another key"})
    return {
        "provenance": provenance("mask expansion and mask-key derivation"),
        "library_versions": library_versions(),
        "algorithm": (
            "mask: the AES-128-CTR keystream of the 16-byte key (counter block all zero) over "
            "limbs*length*8 zero bytes, read as little-endian uint64 words in limb-major order "
            "(shape (limbs, length), limbs = ceil(bits/64)), the top limb masked to the ring "
            "width; 'expected' is crypto.encoding.RingVector.to_bytes() of "
            "crypto.prg.MaskExpander(bits, length).mask(key). pairwise_mask_key: HKDF-SHA256, "
            "salt None, ikm = X25519 shared secret, info = crypto.kdf.context('fedtally/v1', "
            "'pair-mask', round_digest, low_id, high_id), 16 bytes. self_mask_key: the same with "
            "purpose 'self-mask' and (round_digest, owner). pairwise_mask: the key, then its "
            "mask. result 'valid' must reproduce 'expected' exactly; 'mismatch' must NOT; "
            "'error' must raise crypto.errors.<error>."),
        "tests": tests,
    }


# -- sealing --------------------------------------------------------------------------------


def _binding(round_no: int, sender: str = "node-a", recipient: str = "node-b") -> bytes:
    return context("fedtally/v1", "federation:demo", "query:q-0001", "round", round_no,
                   "from:" + sender, "to:" + recipient)


def share_sealing() -> dict[str, Any]:
    sender = X25519KeyPair(_rand("seal/sender", 32))
    recipient = X25519KeyPair(_rand("seal/recipient", 32))
    stranger = X25519KeyPair(_rand("seal/stranger", 32))
    share = shamir.split(_rand("seal/secret", 32), 2, [1, 2, 3], SeededRandom("seal/shares"))[2]
    tests: list[dict[str, Any]] = []
    plaintexts = (("sealed_shamir_share", share), ("sealed_empty", b""),
                  ("sealed_one_byte", b"\x00"), ("sealed_long", _rand("seal/long", 300)))
    for round_no, (name, plaintext) in enumerate(plaintexts, start=1):
        binding = _binding(round_no)
        nonce_seed = f"fedtally/vectors/seal/nonce/{name}"
        sealed = seal(sender, recipient.public, plaintext, binding, SeededRandom(nonce_seed))
        assert open_sealed(recipient, sender.public, sealed, binding) == plaintext
        tests.append({"id": name, "op": "seal", "sender_secret": sender.secret_bytes().hex(),
                      "sender_public": sender.public.hex(),
                      "recipient_secret": recipient.secret_bytes().hex(),
                      "recipient_public": recipient.public.hex(), "binding": binding.hex(),
                      "plaintext": plaintext.hex(), "nonce_seed": nonce_seed,
                      "result": "valid", "sealed": sealed.hex()})

    binding = _binding(1)
    good = bytes.fromhex(tests[0]["sealed"])

    def bad(name: str, comment: str, *, sealed: bytes = good, binding: bytes = binding,
            opener: X25519KeyPair = recipient, sender_public: bytes = sender.public) -> None:
        _expect_error(DecryptionFailed,
                      lambda: open_sealed(opener, sender_public, sealed, binding))
        tests.append({"id": name, "op": "open", "recipient_secret": opener.secret_bytes().hex(),
                      "sender_public": sender_public.hex(), "binding": binding.hex(),
                      "sealed": sealed.hex(), "result": "error", "error": "DecryptionFailed",
                      "comment": comment})

    bad("bad_flipped_tag_byte", "last byte (Poly1305 tag) flipped", sealed=_flip(good, -1))
    bad("bad_flipped_nonce_byte", "first byte (nonce) flipped", sealed=_flip(good, 0))
    bad("bad_flipped_ciphertext_byte", "a ciphertext byte flipped", sealed=_flip(good, 20, 7))
    bad("bad_truncated", "shorter than nonce + tag", sealed=good[:27])
    bad("bad_wrong_binding_round", "opened with the binding of round 2",
        binding=_binding(2))
    bad("bad_wrong_binding_parties", "opened with sender and recipient swapped in the binding",
        binding=_binding(1, "node-b", "node-a"))
    bad("bad_wrong_recipient", "opened by a third party's key", opener=stranger)
    bad("bad_wrong_sender_public", "opened against another sender's public key",
        sender_public=stranger.public)
    bad("bad_low_order_sender_public", "sender public key of low order (u = 0)",
        sender_public=bytes(32))
    return {
        "provenance": provenance("sealed share delivery (crypto.sealed)"),
        "library_versions": library_versions(),
        "algorithm": (
            "seal: shared = X25519(sender_secret, recipient_public); key = HKDF-SHA256(salt "
            "None, ikm shared, info crypto.kdf.context('fedtally/v1', 'seal', "
            "'x25519-hkdf-sha256-chacha20poly1305', binding, sender_public, recipient_public), "
            "32 bytes); nonce = first 12 bytes of SeededRandom(nonce_seed); sealed = nonce || "
            "ChaCha20-Poly1305(key).encrypt(nonce, plaintext, aad=context("
            "'x25519-hkdf-sha256-chacha20poly1305', binding)). op 'seal' (result 'valid') must "
            "reproduce 'sealed' exactly and open back to 'plaintext'; op 'open' (result "
            "'error') must raise crypto.errors.DecryptionFailed from "
            "crypto.sealed.open_sealed."),
        "tests": tests,
    }


# -- Shamir -----------------------------------------------------------------------------------


def _shares_json(shares: dict[int, bytes]) -> list[dict[str, Any]]:
    return [{"x": x, "y": y.hex()} for x, y in shares.items()]


def shamir_vectors() -> dict[str, Any]:
    tests: list[dict[str, Any]] = []
    cases = (("split_t1_n1", 32, 1, [1]), ("split_t2_n3", 32, 2, [1, 2, 3]),
             ("split_t3_n5_sparse_xs", 32, 3, [2, 5, 7, 11, 13]),
             ("split_t4_n4_64_byte_secret", 64, 4, [1, 2, 3, 4]),
             ("split_t2_n2_one_byte_secret", 1, 2, [1, 2]))
    split_outputs: dict[str, tuple[bytes, dict[int, bytes]]] = {}
    for name, size, threshold, xs in cases:
        secret = _rand(f"shamir/{name}/secret", size)
        rng_seed = f"fedtally/vectors/shamir/{name}/rng"
        shares = shamir.split(secret, threshold, xs, SeededRandom(rng_seed))
        split_outputs[name] = (secret, shares)
        tests.append({"id": name, "op": "split", "secret": secret.hex(), "threshold": threshold,
                      "xs": xs, "rng_seed": rng_seed, "result": "valid",
                      "shares": _shares_json(shares)})

    secret, shares = split_outputs["split_t3_n5_sparse_xs"]

    def bad_combine(name: str, chosen: dict[int, bytes], comment: str,
                    result: str = "error") -> None:
        if result == "error":
            _expect_error(ShareError, lambda: shamir.combine(chosen, 3, len(secret)))
        tests.append({"id": name, "op": "combine", "threshold": 3, "secret_size": len(secret),
                      "shares": _shares_json(chosen), "result": result,
                      **({"error": "ShareError"} if result == "error" else
                         {"secret": secret.hex()}),
                      "comment": comment})

    def bad_split(name: str, secret: bytes, threshold: int, xs: list[int], comment: str) -> None:
        _expect_error(ShareError,
                      lambda: shamir.split(secret, threshold, xs, SeededRandom("unused")))
        tests.append({"id": name, "op": "split", "secret": secret.hex(), "threshold": threshold,
                      "xs": xs, "rng_seed": "unused", "result": "error", "error": "ShareError",
                      "comment": comment})

    two = {x: shares[x] for x in (2, 5)}
    bad_combine("bad_fewer_than_threshold", two, "2 shares for threshold 3")
    corrupted = {x: shares[x] for x in (2, 5, 7)}
    corrupted[7] = _flip(corrupted[7], len(corrupted[7]) - 1)
    bad_combine("bad_corrupted_share", corrupted,
                "one bit of one y flipped: must give a different secret or ShareError",
                result="wrong_secret_or_error")
    zero_x = {0: shares[2], 5: shares[5], 7: shares[7]}
    bad_combine("bad_combine_zero_coordinate", zero_x, "x = 0 would be the secret itself")
    big_x = {shamir.PRIME: shares[2], 5: shares[5], 7: shares[7]}
    bad_combine("bad_combine_coordinate_out_of_range", big_x, "x = p is out of [1, p)")
    short = {2: shares[2][1:], 5: shares[5], 7: shares[7]}
    bad_combine("bad_share_wrong_length", short, "a 65-byte y")
    too_big = {2: shamir.PRIME.to_bytes(shamir.SHARE_SIZE, "big"), 5: shares[5], 7: shares[7]}
    bad_combine("bad_share_value_out_of_range", too_big, "y = p is not a field element")

    bad_split("bad_duplicate_coordinates", secret, 2, [1, 2, 2], "x = 2 twice")
    bad_split("bad_zero_coordinate", secret, 2, [0, 1, 2], "x = 0 would hand out the secret")
    bad_split("bad_coordinate_out_of_range", secret, 2, [1, shamir.PRIME], "x = p")
    bad_split("bad_threshold_above_holders", secret, 4, [1, 2, 3], "threshold 4 of 3 holders")
    bad_split("bad_threshold_zero", secret, 0, [1, 2, 3], "threshold 0")
    bad_split("bad_secret_too_long", _rand("shamir/too-long", shamir.MAX_SECRET_SIZE + 1), 2,
              [1, 2], "65-byte secret")
    bad_split("bad_secret_empty", b"", 2, [1, 2], "empty secret")
    return {
        "provenance": provenance("Shamir secret sharing (crypto.shamir)"),
        "library_versions": library_versions(),
        "algorithm": (
            "Shamir over GF(p), p = 2^521 - 1. split: coefficients [int(secret, big-endian)] "
            "+ (threshold - 1) values uniform_below(SeededRandom(rng_seed), p) (rejection "
            "sampling); y = f(x) by Horner, each y as 66 big-endian bytes; shares in the order "
            "of xs. op 'split' (result 'valid') must reproduce 'shares' exactly, and any "
            "'threshold' of them must combine back to 'secret' (secret_size = its length). "
            "op 'combine' with result 'error' must raise crypto.errors.ShareError; result "
            "'wrong_secret_or_error' must raise ShareError or return a value other than "
            "'secret'. op 'split' with result 'error' must raise ShareError."),
        "tests": tests,
    }


BUILDERS = {
    "mask_expansion.json": mask_expansion,
    "share_sealing.json": share_sealing,
    "shamir.json": shamir_vectors,
}


def render(name: str) -> str:
    return json.dumps(BUILDERS[name](), indent=2, ensure_ascii=True) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: {SCRIPT} [OUTPUT_DIR]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0]) if argv else Path(__file__).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (out_dir / name).write_text(render(name), encoding="utf-8", newline="\n")
        print(f"wrote {out_dir / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
