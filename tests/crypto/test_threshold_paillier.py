"""Threshold Paillier: dealing, partial decryption and combination, end to end with packing
(crypto/threshold_paillier.py with crypto/paillier.py and crypto/packing.py)."""

from __future__ import annotations

import functools
import random
from fractions import Fraction
from itertools import combinations

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import support
from crypto.encoding import plan_ring
from crypto.errors import CryptoError, ShareError
from crypto.packing import Packing, PackingError
from crypto.paillier import (
    DEFAULT_KEY_BITS,
    FastEncryptor,
    InvalidCiphertext,
    PaillierPrivateKey,
    generate_keypair,
)
from crypto.randomness import SeededRandom
from crypto.threshold_paillier import (
    MAX_HOLDERS,
    CombineFailed,
    KeyShare,
    ThresholdPublic,
    deal,
    deal_new,
)

KEY_BITS = 1024
ROUND_TRIP = settings(max_examples=100 if support.IN_CI else 30, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def key() -> PaillierPrivateKey:
    return generate_keypair(KEY_BITS, SeededRandom("test_threshold_paillier/key"))


@functools.cache
def dealt(holders: int, threshold: int) -> tuple[ThresholdPublic, tuple[KeyShare, ...]]:
    tp, shares = deal(key(), holders, threshold, SeededRandom(f"deal/{holders}/{threshold}"))
    return tp, tuple(shares)


@functools.cache
def node_encryptor(node: int) -> FastEncryptor:
    return FastEncryptor(key().public, SeededRandom(f"node/{node}"))


def one_plus_n(c: int) -> mpz:
    """``c * (1 + n) mod n^2``: a valid ciphertext of the plaintext plus one."""
    public = key().public
    return gmpy2.t_mod(mpz(c) * (public.n_mpz + 1), public.n_square)


def signed_vectors(value_bits: int, count: int, length: int, style: str,
                   seed: int) -> list[list[int]]:
    lo, hi = -(1 << (value_bits - 1)), (1 << (value_bits - 1)) - 1
    rnd = random.Random(seed)  # test data only
    edges = [lo, lo + 1, -1, 0, 1, hi - 1, hi]
    if style == "max":
        return [[hi] * length for _ in range(count)]
    if style == "min":
        return [[lo] * length for _ in range(count)]
    if style == "edges":
        return [[rnd.choice(edges) if rnd.random() < 0.7 else rnd.randint(lo, hi)
                 for _ in range(length)] for _ in range(count)]
    return [[rnd.randint(lo, hi) for _ in range(length)] for _ in range(count)]


# --- the whole pipeline -------------------------------------------------------------------


@ROUND_TRIP
@given(value_bits=st.one_of(st.sampled_from([2, 3, 8, 31, 32, 33, 63, 64, 65, 127, 128]),
                            st.integers(2, 128)),
       length=st.one_of(st.sampled_from([1, 2, 299, 300]), st.integers(1, 300)),
       nodes=st.integers(2, 6), style=st.sampled_from(["random", "edges", "max", "min"]),
       seed=st.integers(0, 2**32), data=st.data())
def test_pack_encrypt_combine_threshold_decrypt_unpack_is_exact(
        value_bits: int, length: int, nodes: int, style: str, seed: int,
        data: st.DataObject) -> None:
    threshold = data.draw(st.integers(1, nodes), label="threshold")
    extra_room = data.draw(st.integers(0, 3), label="extra contributors planned")
    tp, shares = dealt(nodes, threshold)
    public = tp.public
    packing = Packing(value_bits, nodes + extra_room, public.plaintext_bits)
    vectors = signed_vectors(value_bits, nodes, length, style, seed)
    contributions = [node_encryptor(i).encrypt_many(packing.pack(v))
                     for i, v in enumerate(vectors)]
    assert all(len(c) == packing.plaintexts_for(length) for c in contributions)
    wire = [public.from_bytes(public.to_bytes(c)) for c in contributions]  # as sent
    total = public.combine(wire)
    order = data.draw(st.permutations(range(nodes)), label="holders asked")
    answering = order[:data.draw(st.integers(threshold, nodes), label="answers")]
    partials = {shares[i].index: shares[i].partial_decrypt(total) for i in answering}
    plaintexts = tp.combine(partials)
    assert packing.unpack(plaintexts, length, nodes) == \
        [sum(column) for column in zip(*vectors, strict=True)]


def test_any_t_of_n_recover_the_total_and_t_minus_1_do_not() -> None:
    holders, threshold = 5, 3
    tp, shares = dealt(holders, threshold)
    public = tp.public
    packing = Packing(32, 3, public.plaintext_bits)
    vectors = signed_vectors(32, 3, 70, "edges", 5)
    total = public.combine([node_encryptor(i).encrypt_many(packing.pack(v))
                            for i, v in enumerate(vectors)])
    expected = [sum(column) for column in zip(*vectors, strict=True)]
    partials = {s.index: s.partial_decrypt(total) for s in shares}
    for size in range(threshold, holders + 1):
        for chosen in combinations(sorted(partials), size):
            plaintexts = tp.combine({i: partials[i] for i in chosen})
            assert packing.unpack(plaintexts, len(expected), 3) == expected
    too_few = ThresholdPublic(public, threshold - 1, holders)
    for chosen in combinations(sorted(partials), threshold - 1):
        subset = {i: partials[i] for i in chosen}
        with pytest.raises(ShareError):
            tp.combine(subset)
        with pytest.raises(CombineFailed):  # interpolating t-1 points is not the key
            too_few.combine(subset)
    for chosen in combinations(sorted(partials), 1):
        with pytest.raises(CombineFailed):
            ThresholdPublic(public, 1, holders).combine({i: partials[i] for i in chosen})
    with pytest.raises(ShareError):
        tp.combine({})


@pytest.mark.parametrize(("holders", "threshold"), [(2, 1), (2, 2), (3, 2), (4, 3), (6, 6)])
def test_every_threshold_subset_decrypts(holders: int, threshold: int) -> None:
    tp, shares = dealt(holders, threshold)
    messages = [0, 1, 2**1000 + 3, key().public.n - 1]
    cs = node_encryptor(0).encrypt_many(messages)
    partials = {s.index: s.partial_decrypt(cs) for s in shares}
    for chosen in combinations(sorted(partials), threshold):
        assert tp.combine({i: partials[i] for i in chosen}) == messages
    if threshold > 1:
        with pytest.raises(ShareError):
            tp.combine({i: partials[i] for i in sorted(partials)[:threshold - 1]})


# --- wrong partial decryptions -------------------------------------------------------------


def _partials(holders: int, threshold: int, messages: list[int]) -> tuple[
        ThresholdPublic, list[mpz], dict[int, list[mpz]]]:
    tp, shares = dealt(holders, threshold)
    cs = node_encryptor(1).encrypt_many(messages)
    return tp, cs, {s.index: s.partial_decrypt(cs) for s in shares}


def test_one_wrong_partial_among_more_than_t_is_detected() -> None:
    holders, threshold = 5, 3
    messages = [7, 2**900, 0]
    tp, cs, partials = _partials(holders, threshold, messages)
    other = node_encryptor(2).encrypt_many(messages)  # same plaintexts, other ciphertexts
    n2 = tp.public.n_square
    for size in (threshold + 1, holders):
        for chosen in combinations(sorted(partials), size):
            subset = {i: list(partials[i]) for i in chosen}
            assert tp.combine(subset) == messages
            for wrong in chosen:
                right = subset[wrong]
                tampers = [
                    [gmpy2.t_mod(right[0] * 2, n2)] + right[1:],  # a random-looking change
                    [right[0] ^ 1] + right[1:],  # a flipped bit
                    # the subtle one: still 1 mod n after combining, so only the
                    # disagreement of two subsets shows it
                    right[:1] + [one_plus_n(right[1])] + right[2:],
                    # an honest answer to another ciphertext of the same plaintexts
                    [gmpy2.powmod(other[0], dealt(holders, threshold)[1][wrong - 1].value, n2)]
                    + right[1:],
                    # another holder's answer under this holder's index
                    partials[wrong % holders + 1],
                ]
                for tampered in tampers:
                    subset[wrong] = tampered
                    with pytest.raises(CombineFailed):
                        tp.combine(subset)
                subset[wrong] = right


def test_a_random_wrong_partial_among_exactly_t_is_detected() -> None:
    tp, _, partials = _partials(3, 2, [1, 2, 3])
    n2 = tp.public.n_square
    for wrong in (1, 2, 3):
        for keep in (1, 2, 3):
            if keep == wrong:
                continue
            subset = {keep: partials[keep],
                      wrong: [gmpy2.t_mod(p * 3, n2) for p in partials[wrong]]}
            with pytest.raises(CombineFailed):
                tp.combine(subset)


def test_partials_of_different_lengths_or_from_unknown_holders_are_refused() -> None:
    tp, _, partials = _partials(4, 2, [1, 2])
    with pytest.raises(CombineFailed):
        tp.combine({1: partials[1], 2: partials[2][:1]})
    with pytest.raises(CombineFailed):
        tp.combine({1: partials[1], 2: partials[2], 3: partials[3] + partials[3][:1]})
    for index in (0, 5, -1):
        with pytest.raises(ShareError):
            tp.combine({1: partials[1], index: partials[2]})
    assert tp.combine({1: [], 2: []}) == []


# --- tampered and malformed ciphertexts ----------------------------------------------------


def threshold_decrypt(tp: ThresholdPublic, shares: tuple[KeyShare, ...],
                      cs: list[int]) -> list[int]:
    return tp.combine({s.index: s.partial_decrypt(cs) for s in shares[:tp.threshold]})


def test_tampered_ciphertexts_change_the_total_or_are_refused() -> None:
    tp, shares = dealt(3, 2)
    public = tp.public
    packing = Packing(32, 3, public.plaintext_bits)
    values = signed_vectors(32, 1, packing.slots, "random", 9)[0]
    (c,) = node_encryptor(0).encrypt_many(packing.pack(values))
    # multiplying by 1 + n adds one to the plaintext: Paillier is malleable, the total moves
    assert threshold_decrypt(tp, shares, [one_plus_n(c)]) == [packing.pack(values)[0] + 1]
    assert packing.unpack(threshold_decrypt(tp, shares, [one_plus_n(c)]), len(values), 1) == \
        [values[0] + 1] + values[1:]
    raw = public.to_bytes([c])
    n2 = int(public.n_square)
    outcomes = []
    for bit in (0, 1, 77, 1000, 2040, 8 * len(raw) - 2, 8 * len(raw) - 1):
        flipped = (int.from_bytes(raw, "big") ^ (1 << bit)).to_bytes(len(raw), "big")
        if int.from_bytes(flipped, "big") >= n2:
            with pytest.raises(InvalidCiphertext):
                public.from_bytes(flipped)
            outcomes.append("refused")
            continue
        (tampered,) = public.from_bytes(flipped)  # a unit below n^2: nothing to see there
        (m,) = threshold_decrypt(tp, shares, [tampered])
        assert m != packing.pack(values)[0]
        with pytest.raises(PackingError):  # a random plaintext is no packed sum
            packing.unpack([m], len(values), 1)
        outcomes.append("changed")
    assert outcomes.count("changed") >= 5
    too_big = (n2 | (1 << (8 * len(raw) - 1))).to_bytes(len(raw), "big")
    with pytest.raises(InvalidCiphertext):
        public.from_bytes(too_big)


def test_malformed_ciphertexts_are_refused_everywhere() -> None:
    k = key()
    tp, shares = dealt(3, 2)
    public = tp.public
    n2 = int(public.n_square)
    good = node_encryptor(0).encrypt(5)
    for bad in (0, n2, n2 + 1, -1, k.p, 3 * k.q, public.n, n2 - k.p):
        with pytest.raises(InvalidCiphertext):
            public.check(bad)
        with pytest.raises(InvalidCiphertext):
            shares[0].partial_decrypt([good, bad])
        with pytest.raises(InvalidCiphertext):
            shares[0].partial_decrypt([good, bad, good], workers=2)
        honest = shares[1].partial_decrypt([good, good])
        with pytest.raises(InvalidCiphertext):  # a partial decryption is range-checked too
            tp.combine({1: [honest[0], bad], 2: honest})
        if bad in (0, -1) or gmpy2.gcd(bad, public.n) != 1:
            # the aggregator's product does not check its inputs, but what it makes of a
            # zero, negative or non-invertible one is refused by every holder
            (product,) = public.combine([[good], [bad]])
            with pytest.raises(InvalidCiphertext):
                shares[0].partial_decrypt([product])
        if 0 <= bad < 1 << (8 * public.ciphertext_size):
            with pytest.raises(InvalidCiphertext):
                public.from_bytes(bad.to_bytes(public.ciphertext_size, "big"))
    with pytest.raises(InvalidCiphertext):
        public.from_bytes(b"\x01" * (public.ciphertext_size + 1))
    with pytest.raises(InvalidCiphertext):
        public.from_bytes(public.to_bytes([good, good]), count=3)


# --- partial decryption, dealing, coefficients ------------------------------------------


def test_partial_decrypt_with_threads_equals_single_threaded() -> None:
    tp, shares = dealt(3, 2)
    cs = node_encryptor(0).encrypt_many(range(9))
    single = shares[0].partial_decrypt(cs)
    assert single == [gmpy2.powmod(c, shares[0].value, tp.public.n_square) for c in cs]
    for workers in (2, 3, 4, 16):
        assert shares[0].partial_decrypt(cs, workers=workers) == single
    assert shares[0].partial_decrypt(cs[:1], workers=2) == single[:1]
    assert shares[0].partial_decrypt([], workers=2) == [] == shares[0].partial_decrypt([])
    assert tp.combine({1: single, 3: shares[2].partial_decrypt(cs, workers=2)}) == list(range(9))


def test_threshold_decryption_agrees_with_whole_key_decryption() -> None:
    k = key()
    tp, shares = dealt(4, 3)
    rnd = SeededRandom("units")
    units = []
    while len(units) < 8:  # arbitrary units of Z*_{n^2}, not only our own ciphertexts
        c = rnd.below(int(tp.public.n_square) - 1) + 1
        if gmpy2.gcd(c, tp.public.n) == 1:
            units.append(c)
    assert threshold_decrypt(tp, shares, units) == [k.decrypt(c) for c in units]
    cs = node_encryptor(3).encrypt_many([0, 99, k.public.n - 1])
    assert threshold_decrypt(tp, shares, cs) == [k.decrypt(c) for c in cs] == \
        [0, 99, k.public.n - 1]


def test_dealing_is_deterministic_and_shares_do_not_leak_in_repr() -> None:
    k = key()
    tp, shares = deal(k, 4, 3, SeededRandom("dealing"))
    again = deal(k, 4, 3, SeededRandom("dealing"))
    other = deal(k, 4, 3, SeededRandom("dealing, again"))
    assert again == (tp, shares)
    assert [s.value for s in other[1]] != [s.value for s in shares]
    assert [s.index for s in shares] == [1, 2, 3, 4]
    assert other[0].verification_base != tp.verification_base
    assert other[0].verification_keys != tp.verification_keys
    # the public part: the key, the threshold, the holders, and (new) the verification base
    # and one verification key v^(s_i) per holder
    assert tp == ThresholdPublic(k.public, 3, 4, tp.verification_base, tp.verification_keys)
    assert tp != ThresholdPublic(k.public, 3, 4) and tp.delta == 24
    assert len(tp.verification_keys) == 4
    n2 = tp.public.n_square
    for s in shares:
        assert s.value > 0 and s.threshold_public is tp
        assert tp.verification_key(s.index) == gmpy2.powmod(tp.verification_base, s.value, n2)
        for text in (repr(s), str(s), repr([s]), f"{s}"):
            assert str(s.value) not in text and hex(s.value)[2:] not in text
            assert str(k.p) not in text and str(k.q) not in text
        assert repr(s) == f"KeyShare(index={s.index})"
        # the public part names no share (its verification keys are v^(s_i), not s_i)
        for text in (repr(tp), str(tp)):
            assert str(s.value) not in text and hex(s.value)[2:] not in text
            assert str(s.value)[:64] not in text
    assert str(k.p) not in repr(tp) and str(k.q) not in repr(tp)


def test_deal_new_makes_a_key_of_the_requested_size() -> None:
    tp, shares = deal_new(KEY_BITS, 3, 2, SeededRandom("deal_new"))
    assert tp.public.bits == KEY_BITS and (tp.threshold, tp.holders) == (2, 3)
    cs = FastEncryptor(tp.public, SeededRandom("deal_new/enc"), 64).encrypt_many([31337])
    assert threshold_decrypt(tp, tuple(shares), cs) == [31337]


@pytest.mark.parametrize(("holders", "threshold"), [(0, 0), (0, 1), (MAX_HOLDERS + 1, 2),
                                                    (3, 0), (3, 4), (3, -1), (-2, 1)])
def test_threshold_public_refuses_impossible_parameters(holders: int, threshold: int) -> None:
    with pytest.raises(ShareError):
        ThresholdPublic(key().public, threshold, holders)
    with pytest.raises(CryptoError):
        deal(key(), holders, threshold, SeededRandom("bad"))


@settings(max_examples=200, deadline=None)
@given(holders=st.integers(1, 12), data=st.data())
def test_coefficients_are_integral_lagrange_weights(holders: int, data: st.DataObject) -> None:
    """sum_i (Delta l_i) f(i) = Delta f(0) for every polynomial of degree < |S|."""
    tp = ThresholdPublic(key().public, 1, holders)
    indices = data.draw(st.lists(st.integers(1, holders), min_size=1, unique=True))
    coefficients = tp.coefficients(indices)
    assert sorted(coefficients) == sorted(indices)
    poly = data.draw(st.lists(st.integers(-(2**80), 2**80), min_size=len(indices),
                              max_size=len(indices)))
    f = [sum(a * x**k for k, a in enumerate(poly)) for x in range(holders + 1)]
    assert sum(coefficients[i] * f[i] for i in indices) == tp.delta * f[0]
    for i in indices:
        weight = Fraction(1)
        for j in indices:
            if j != i:
                weight *= Fraction(j, j - i)
        assert coefficients[i] == weight * tp.delta


def test_coefficients_refuse_bad_index_sets() -> None:
    tp = ThresholdPublic(key().public, 2, 4)
    for bad in ([], [1, 1], [0, 1], [1, 5], [-1, 2]):
        with pytest.raises(ShareError):
            tp.coefficients(bad)


@pytest.mark.slow
def test_default_size_three_nodes_threshold_two() -> None:
    """The one 3072-bit round here: keygen, dealing, three nodes, two partial decryptions."""
    tp, shares = deal_new(DEFAULT_KEY_BITS, 3, 2, SeededRandom("threshold/3072"))
    public = tp.public
    assert public.bits == DEFAULT_KEY_BITS
    ring = plan_ring(-3 * 2**31, 3 * (2**31 - 1)).bits
    packing = Packing(ring, 3, public.plaintext_bits)
    assert (ring, packing.slot_bits, packing.slots) == (34, 36, 85)
    vectors = signed_vectors(32, 3, packing.slots + 1, "edges", 3072)
    enc = FastEncryptor(public, SeededRandom("threshold/3072/enc"))
    total = public.combine([enc.encrypt_many(packing.pack(v)) for v in vectors])
    assert len(total) == 2
    partials = {s.index: s.partial_decrypt(total) for s in (shares[0], shares[2])}
    assert packing.unpack(tp.combine(partials), len(vectors[0]), 3) == \
        [sum(column) for column in zip(*vectors, strict=True)]
