"""Shamir, sealing, signatures, key agreement, mask expansion, KDF context and randomness."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import shamir
from crypto.encoding import RingVector, limbs_for, signed_range
from crypto.errors import DecryptionFailed, EncodingError, InvalidKey, InvalidSignature, ShareError
from crypto.identity import SigningIdentity, VerifyKey
from crypto.kdf import context, derive_key
from crypto.keyagreement import X25519KeyPair, public_from_secret, x25519
from crypto.prg import MaskExpander, pairwise_mask_key, self_mask_key
from crypto.randomness import SeededRandom, SystemRandom, uniform_below
from crypto.sealed import NONCE_SIZE, TAG_SIZE, open_sealed, seal

# -- Shamir -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 7))
def test_shamir_any_t_of_n_recover_and_t_minus_1_do_not(n: int) -> None:
    rng = SeededRandom(f"shamir/{n}")
    for t in range(1, n + 1):
        secret = rng.bytes(32)
        shares = shamir.split(secret, t, range(1, n + 1), rng)
        assert sorted(shares) == list(range(1, n + 1))
        for chosen in combinations(shares, t):
            assert shamir.combine({x: shares[x] for x in chosen}, t) == secret
        for chosen in combinations(shares, t - 1):
            subset = {x: shares[x] for x in chosen}
            with pytest.raises(ShareError):
                shamir.combine(subset, t)
            if t >= 2:
                # interpolating t-1 points as if they were enough: never the secret
                try:
                    assert shamir.combine(subset, t - 1) != secret
                except ShareError:
                    pass


@given(secret=st.binary(min_size=1, max_size=shamir.MAX_SECRET_SIZE),
       xs=st.lists(st.integers(1, 2**64), min_size=1, max_size=7, unique=True),
       data=st.data())
def test_shamir_round_trip_any_secret_and_coordinates(secret: bytes, xs: list[int],
                                                      data: st.DataObject) -> None:
    t = data.draw(st.integers(1, len(xs)))
    shares = shamir.split(secret, t, xs, SeededRandom(data.draw(st.binary(max_size=8))))
    chosen = data.draw(st.permutations(xs))[:t]
    assert shamir.combine({x: shares[x] for x in chosen}, t, len(secret)) == secret
    assert all(len(y) == shamir.SHARE_SIZE for y in shares.values())


def test_shamir_corrupted_share_never_gives_the_secret() -> None:
    secret = SeededRandom("corrupt").bytes(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4], SeededRandom("corrupt/rng"))
    for x in shares:
        for others in combinations(sorted(set(shares) - {x}), 2):
            for index in (0, 30, shamir.SHARE_SIZE - 1):
                y = bytearray(shares[x])
                y[index] ^= 0x01
                chosen = {x: bytes(y), **{k: shares[k] for k in others}}
                try:
                    assert shamir.combine(chosen, 3) != secret
                except ShareError:
                    pass


def test_shamir_refuses_malformed_inputs() -> None:
    rng = SeededRandom("malformed")
    with pytest.raises(ShareError):
        shamir.split(b"s" * 32, 2, [1, 1, 2], rng)  # duplicate coordinate
    with pytest.raises(ShareError):
        shamir.split(b"s" * 32, 2, [0, 1], rng)  # x = 0 is the secret
    with pytest.raises(ShareError):
        shamir.split(b"s" * 32, 2, [1, shamir.PRIME], rng)
    with pytest.raises(ShareError):
        shamir.split(b"s" * 32, 3, [1, 2], rng)
    with pytest.raises(ShareError):
        shamir.split(b"", 1, [1], rng)
    good = shamir.split(b"s" * 32, 2, [1, 2], rng)
    with pytest.raises(ShareError):
        shamir.combine({0: good[1], 2: good[2]}, 2)
    with pytest.raises(ShareError):
        shamir.combine({1: good[1][:-1], 2: good[2]}, 2)
    with pytest.raises(ShareError):
        shamir.combine({1: b"\xff" * shamir.SHARE_SIZE, 2: good[2]}, 2)
    with pytest.raises(ShareError):
        shamir.combine(good, 0)
    with pytest.raises(ShareError):
        shamir.combine(good, 2, secret_size=1)  # too big for the declared size


# -- sealing -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parties() -> tuple[X25519KeyPair, X25519KeyPair, X25519KeyPair]:
    rng = SeededRandom("seal/parties")
    return X25519KeyPair.generate(rng), X25519KeyPair.generate(rng), X25519KeyPair.generate(rng)


BINDING = context("fedtally/v1", "fed", "query-7", 3, "a", "b")


def test_sealed_round_trip_and_any_tampering_fails(parties) -> None:
    sender, recipient, _ = parties
    plaintext = b"a Shamir share, 66 bytes long, more or less...." * 2
    sealed = seal(sender, recipient.public, plaintext, BINDING, SeededRandom("nonce"))
    assert len(sealed) == NONCE_SIZE + len(plaintext) + TAG_SIZE
    assert open_sealed(recipient, sender.public, sealed, BINDING) == plaintext
    for index in range(len(sealed)):
        for bit in (0, 7):
            bad = bytearray(sealed)
            bad[index] ^= 1 << bit
            with pytest.raises(DecryptionFailed):
                open_sealed(recipient, sender.public, bytes(bad), BINDING)
    for cut in (0, NONCE_SIZE + TAG_SIZE - 1, len(sealed) - 1):
        with pytest.raises(DecryptionFailed):
            open_sealed(recipient, sender.public, sealed[:cut], BINDING)
    with pytest.raises(DecryptionFailed):
        open_sealed(recipient, sender.public, sealed + b"\x00", BINDING)


def test_sealed_wrong_binding_recipient_or_sender_fails(parties) -> None:
    sender, recipient, stranger = parties
    sealed = seal(sender, recipient.public, b"share", BINDING, SeededRandom("nonce2"))
    for other in (context("fedtally/v1", "fed", "query-7", 4, "a", "b"),
                  context("fedtally/v1", "fed", "query-7", 3, "b", "a"), b"", BINDING + b"\x00"):
        with pytest.raises(DecryptionFailed):
            open_sealed(recipient, sender.public, sealed, other)
    with pytest.raises(DecryptionFailed):  # wrong recipient
        open_sealed(stranger, sender.public, sealed, BINDING)
    with pytest.raises(DecryptionFailed):  # wrong sender key
        open_sealed(recipient, stranger.public, sealed, BINDING)
    with pytest.raises(DecryptionFailed):  # the sender cannot open what it sent to another
        open_sealed(sender, recipient.public, sealed, BINDING)
    for bad_key in (bytes(32), b"\x01" + bytes(31), bytes(31)):  # low order / wrong length
        with pytest.raises(DecryptionFailed):
            open_sealed(recipient, bad_key, sealed, BINDING)
    with pytest.raises(InvalidKey):
        seal(sender, bytes(32), b"share", BINDING, SeededRandom("nonce3"))


def test_sealing_uses_fresh_nonces_from_the_rng(parties) -> None:
    sender, recipient, _ = parties
    rng = SystemRandom()
    first = seal(sender, recipient.public, b"same", BINDING, rng)
    second = seal(sender, recipient.public, b"same", BINDING, rng)
    assert first[:NONCE_SIZE] != second[:NONCE_SIZE] and first != second
    assert seal(sender, recipient.public, b"same", BINDING, SeededRandom(1)) == \
        seal(sender, recipient.public, b"same", BINDING, SeededRandom(1))


# -- signatures and key agreement --------------------------------------------------------------


def test_signatures_verify_returns_none_and_failures_raise() -> None:
    identity = SigningIdentity.generate(SeededRandom("ed25519"))
    key = identity.verify_key
    signature = identity.sign(b"message")
    assert len(signature) == 64
    result = key.verify(b"message", signature)
    assert result is None  # no bool form: success returns nothing
    with pytest.raises(InvalidSignature):
        key.verify(b"messagE", signature)
    for index in (0, 31, 32, 63):
        bad = bytearray(signature)
        bad[index] ^= 0x01
        with pytest.raises(InvalidSignature):
            key.verify(b"message", bytes(bad))
    for bad_sig in (signature[:-1], signature + b"\x00", b""):
        with pytest.raises(InvalidSignature):
            key.verify(b"message", bad_sig)
    other = SigningIdentity.generate(SeededRandom("ed25519/other")).verify_key
    with pytest.raises(InvalidSignature):
        other.verify(b"message", signature)
    assert VerifyKey.from_hex(key.hex()) == key
    with pytest.raises(InvalidKey):
        VerifyKey(key.raw[:-1])
    with pytest.raises(InvalidKey):
        VerifyKey.from_hex("zz" * 32)
    with pytest.raises(InvalidKey):
        SigningIdentity(bytes(31))


def test_signing_identity_is_deterministic_from_its_seed() -> None:
    identity = SigningIdentity.generate(SeededRandom("ed25519/seed"))
    again = SigningIdentity(identity.seed())
    assert again.verify_key == identity.verify_key
    assert again.sign(b"m") == identity.sign(b"m")  # Ed25519 signatures are deterministic


def test_x25519_agreement_is_symmetric_and_refuses_bad_keys() -> None:
    rng = SeededRandom("x25519")
    a, b = X25519KeyPair.generate(rng), X25519KeyPair.generate(rng)
    assert a.exchange(b.public) == b.exchange(a.public) == x25519(a.secret_bytes(), b.public)
    assert public_from_secret(a.secret_bytes()) == a.public
    for bad in (bytes(32), (1).to_bytes(32, "little"), bytes(31), bytes(33)):
        with pytest.raises(InvalidKey):
            a.exchange(bad)
    with pytest.raises(InvalidKey):
        X25519KeyPair(bytes(31))
    with pytest.raises(InvalidKey):
        public_from_secret(bytes(33))


def test_reprs_never_show_secrets() -> None:
    identity = SigningIdentity.generate(SeededRandom("repr/ed"))
    pair = X25519KeyPair.generate(SeededRandom("repr/x"))
    for obj, secret in ((identity, identity.seed()), (pair, pair.secret_bytes())):
        for text in (repr(obj), str(obj), f"{obj!r:>300}"):
            lowered = text.lower()
            assert secret.hex() not in lowered
            assert secret.hex()[:16] not in lowered
            assert repr(secret) not in text
    assert identity.verify_key.hex()[:16] in repr(identity)


# -- masks -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [64, 150, 192])
def test_mask_add_then_sub_restores_the_vector(bits: int) -> None:
    assert limbs_for(bits) in (1, 3)
    length = 257
    lo, hi = signed_range(bits)
    rng = SeededRandom(f"mask/{bits}")
    values = [uniform_below(rng, hi - lo + 1) + lo for _ in range(length - 2)] + [lo, hi]
    original = RingVector.from_ints(bits, np.array(values, dtype=object))
    expander = MaskExpander(bits, length)
    keys = [rng.bytes(16) for _ in range(3)]
    acc = original.copy()
    for key in keys:
        expander.add_mask_(acc, key)
    assert acc != original
    # adding the mask is the same as adding the ring vector mask(key)
    manual = original.copy()
    for key in keys:
        manual.add_(expander.mask(key))
    assert acc == manual
    for key in reversed(keys):
        expander.sub_mask_(acc, key)
    assert acc == original
    assert [int(v) for v in acc.to_signed()] == values


def test_pair_masks_cancel_in_the_sum() -> None:
    bits, length = 96, 50
    rng = SeededRandom("pairs")
    shared, digest = rng.bytes(32), rng.bytes(32)
    key = pairwise_mask_key(shared, digest, "node-a", "node-b")
    expander = MaskExpander(bits, length)
    a = RingVector.from_ints(bits, np.arange(length, dtype=np.int64))
    b = RingVector.from_ints(bits, -3 * np.arange(length, dtype=np.int64))
    expander.add_mask_(a, key)
    expander.sub_mask_(b, key)
    assert a.add_(b) == RingVector.from_ints(bits, -2 * np.arange(length, dtype=np.int64))


def test_masks_and_mask_keys_differ() -> None:
    rng = SeededRandom("differ")
    expander = MaskExpander(130, 16)
    keys = [rng.bytes(16) for _ in range(8)]
    masks = [expander.mask(key).to_bytes() for key in keys]
    assert len(set(masks)) == len(masks)
    assert expander.mask(keys[0]).to_bytes() == masks[0]  # and the same key repeats
    shared, digest = rng.bytes(32), rng.bytes(32)
    derived = {
        pairwise_mask_key(shared, digest, "a", "b"),
        pairwise_mask_key(shared, digest, "b", "a"),
        pairwise_mask_key(shared, rng.bytes(32), "a", "b"),
        pairwise_mask_key(rng.bytes(32), digest, "a", "b"),
        pairwise_mask_key(shared, digest, "a", "c"),
        self_mask_key(shared, digest, "a"),
        self_mask_key(shared, digest, "b"),
    }
    assert len(derived) == 7 and all(len(k) == 16 for k in derived)


def test_mask_expander_refuses_wrong_keys_and_shapes() -> None:
    expander = MaskExpander(64, 4)
    for bad in (bytes(15), bytes(17), bytes(32)):
        with pytest.raises(EncodingError):
            expander.mask(bad)
    with pytest.raises(EncodingError):
        expander.add_mask_(RingVector.zeros(64, 5), bytes(16))
    with pytest.raises(EncodingError):
        expander.sub_mask_(RingVector.zeros(65, 4), bytes(16))


# -- KDF context ----------------------------------------------------------------------------------


def test_context_is_unambiguous() -> None:
    encodings = {context("ab", "c"), context("a", "bc"), context("abc"), context(b"abc"),
                 context("a", "b", "c"), context(1), context(b"\x01"), context("1"),
                 context(256), context(0), context()}
    assert len(encodings) == 11
    with pytest.raises(TypeError):
        context(True)
    with pytest.raises(ValueError):
        context(-1)
    with pytest.raises(TypeError):
        context(1.0)  # type: ignore[arg-type]
    assert derive_key(b"k", "p1") != derive_key(b"k", "p2")
    assert derive_key(b"k", "p", "x") != derive_key(b"k", "p", b"x")
    assert len(derive_key(b"k", "p", length=16)) == 16


# -- randomness ---------------------------------------------------------------------------------


def test_seeded_random_is_deterministic() -> None:
    for seed in (0, 1, -5, 2**200, b"", b"seed", "seed"):
        a, b = SeededRandom(seed), SeededRandom(seed)
        assert a.bytes(40) == b.bytes(10) + b.bytes(30)
        assert a.below(10**30) == b.below(10**30)
        assert a.child("x").bytes(16) == b.child("x").bytes(16)
    assert SeededRandom(1).bytes(32) != SeededRandom(2).bytes(32)
    assert SeededRandom("s").bytes(32) != SeededRandom("t").bytes(32)
    parent = SeededRandom("parent")
    children = [parent.child("x").bytes(32), parent.child("x").bytes(32),
                parent.child("y").bytes(32)]
    assert len(set(children)) == 3
    assert all(0 <= SeededRandom(i).below(7) < 7 for i in range(50))


def test_system_random_is_not_constant() -> None:
    rng = SystemRandom()
    draws = {rng.bytes(32) for _ in range(8)}
    assert len(draws) == 8
    assert all(len(d) == 32 for d in draws)
    values = {rng.below(2**64) for _ in range(8)}
    assert len(values) > 1 and all(0 <= v < 2**64 for v in values)


def test_uniform_below_is_in_range_and_covers_it() -> None:
    rng = SeededRandom("below")
    seen = {uniform_below(rng, 5) for _ in range(200)}
    assert seen == set(range(5))
    for bad in (0, -1):
        with pytest.raises(ValueError):
            uniform_below(rng, bad)
