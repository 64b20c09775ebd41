"""Proofs of correct partial decryption (crypto/partial_proof.py) and the verification keys
the dealer publishes for them (crypto/threshold_paillier.py).

The attack the proofs exist for: with exactly ``t`` partials there is no second subset to
cross-check, so a holder that multiplies one of its partials by ``(1+n)^f`` (for an ``f``
chosen with the public Lagrange coefficient) shifts the combined plaintext by any amount it
likes, and :meth:`ThresholdPublic.combine` accepts it. Only the proof catches that.

Keys are 1024 bits (dealt once per module); one 2048-bit case checks the manifest's size.
"""

from __future__ import annotations

import functools
import random

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import support
from crypto import partial_proof
from crypto.errors import CryptoError, ShareError
from crypto.paillier import FastEncryptor, InvalidCiphertext, PaillierPrivateKey, generate_keypair
from crypto.partial_proof import (
    CHALLENGE_BITS,
    InvalidPartialDecryption,
    PartialProof,
    multi_exp,
    proof_size,
    prove,
    response_size,
    verify,
)
from crypto.randomness import SeededRandom
from crypto.threshold_paillier import KeyShare, ThresholdPublic, deal, deal_new

KEY_BITS = 1024
BINDING = b"test_partial_proof/round-1"
EXAMPLES = settings(max_examples=60 if support.IN_CI else 25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def key() -> PaillierPrivateKey:
    return generate_keypair(KEY_BITS, SeededRandom("test_partial_proof/key"))


@functools.cache
def dealt(holders: int, threshold: int) -> tuple[ThresholdPublic, tuple[KeyShare, ...]]:
    tp, shares = deal(key(), holders, threshold,
                      SeededRandom(f"test_partial_proof/deal/{holders}/{threshold}"))
    return tp, tuple(shares)


@functools.cache
def ciphertexts(count: int, seed: int = 0) -> tuple[mpz, ...]:
    """Encryptions of ``0 .. count-1`` (plus a large plaintext at the end)."""
    encryptor = FastEncryptor(key().public, SeededRandom(f"test_partial_proof/enc/{seed}"))
    messages = list(range(count - 1)) + [key().public.n - 5] if count else []
    return tuple(encryptor.encrypt_many(messages))


def messages_of(count: int) -> list[int]:
    return list(range(count - 1)) + [key().public.n - 5] if count else []


def random_unit(tp: ThresholdPublic, rng: SeededRandom) -> mpz:
    while True:
        c = mpz(rng.below(int(tp.public.n_square) - 2) + 2)
        if gmpy2.gcd(c, tp.public.n_mpz) == 1:
            return c


def shifted(tp: ThresholdPublic, partials: list[mpz], position: int, f: int) -> list[mpz]:
    """``partials`` with one multiplied by ``(1+n)^f = 1 + f*n mod n^2``."""
    n, n2 = tp.public.n_mpz, tp.public.n_square
    out = list(partials)
    out[position] = gmpy2.t_mod(out[position] * (1 + mpz(f % int(n)) * n), n2)
    return out


def nonce_bits(tp: ThresholdPublic) -> int:
    return tp.share_bits + partial_proof.CHALLENGE_BITS + partial_proof.ZK_BITS


# --- multi_exp ---------------------------------------------------------------------------------


def naive(bases: list[int], exponents: list[int], modulus: int) -> int:
    m = mpz(modulus)
    result = mpz(1) % m
    for b, e in zip(bases, exponents, strict=True):
        result = result * gmpy2.powmod(b, e, m) % m
    return int(result)


_EXPONENT = st.one_of(st.just(0), st.just(1), st.integers(0, 2**16),
                      st.integers(0, 2**200), st.integers(2**199, 2**200))


@EXAMPLES
@given(pairs=st.lists(st.tuples(st.integers(0, 2**2100), _EXPONENT), max_size=300),
       modulus=st.one_of(st.just(-1), st.integers(2, 2**64), st.integers(2, 2**2048)),
       as_mpz=st.booleans())
def test_multi_exp_equals_the_naive_product(pairs: list[tuple[int, int]], modulus: int,
                                            as_mpz: bool) -> None:
    if modulus == -1:  # the modulus the proofs use
        modulus = int(key().public.n_square)
    bases = [mpz(b) if as_mpz else b for b, _ in pairs]
    exponents = [e for _, e in pairs]
    assert multi_exp(bases, exponents, mpz(modulus)) == naive([b for b, _ in pairs], exponents,
                                                              modulus)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 64, 255, 256,
                                  300])
@pytest.mark.parametrize("pattern", ["weights", "zeros", "one nonzero", "ones", "mixed widths",
                                     "one base"])
def test_multi_exp_at_window_and_bucket_edges(size: int, pattern: str) -> None:
    n2 = int(key().public.n_square)
    rnd = random.Random(size * 7 + len(pattern))  # test data only
    bases = [rnd.randrange(1, n2) for _ in range(size)]
    if pattern == "weights":  # what the proof batches with
        exponents = [rnd.getrandbits(128) for _ in range(size)]
    elif pattern == "zeros":
        exponents = [0] * size
    elif pattern == "one nonzero":
        exponents = [0] * size
        if size:
            exponents[rnd.randrange(size)] = rnd.getrandbits(200) | 1
    elif pattern == "ones":
        exponents = [1] * size
    elif pattern == "mixed widths":
        exponents = [rnd.getrandbits(rnd.choice([1, 2, 9, 10, 11, 64, 199, 200]))
                     for _ in range(size)]
    else:
        bases = [bases[0] if bases else 3] * size
        exponents = [rnd.getrandbits(200) for _ in range(size)]
    assert multi_exp([mpz(b) for b in bases], exponents, mpz(n2)) == naive(bases, exponents, n2)


def test_multi_exp_with_the_widest_windows() -> None:
    # 4100 bases: 10-bit windows, the largest bucket table
    n2 = int(key().public.n_square)
    rnd = random.Random(4100)  # test data only
    bases = [rnd.randrange(1, n2) for _ in range(4100)]
    exponents = [rnd.getrandbits(128) for _ in bases]
    exponents[::97] = [0] * len(exponents[::97])
    assert multi_exp([mpz(b) for b in bases], exponents, mpz(n2)) == naive(bases, exponents, n2)


def test_multi_exp_of_nothing_is_one_and_lengths_must_match() -> None:
    n2 = key().public.n_square
    assert multi_exp([], [], n2) == 1
    assert multi_exp([mpz(5)], [0], n2) == 1
    assert multi_exp([mpz(5), mpz(7)], [2, 1], n2) == 175
    for bases, exponents in (([mpz(2)], []), ([], [1]), ([mpz(2)] * 3, [1, 2]),
                             ([mpz(2)] * 40, [1] * 41)):
        with pytest.raises(CryptoError):
            multi_exp(bases, exponents, n2)


# --- honest proofs -------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 17, 50])
def test_an_honest_proof_verifies(count: int) -> None:
    tp, shares = dealt(3, 2)
    cs = list(ciphertexts(count))
    for share in shares:
        partials = share.partial_decrypt(cs)
        proof = prove(share, cs, partials, BINDING, SeededRandom(f"prove/{count}/{share.index}"))
        verify(tp, share.index, cs, partials, proof, BINDING)
        # as ints (what the researcher parses) as well as mpz
        verify(tp, share.index, [int(c) for c in cs], [int(d) for d in partials], proof, BINDING)
        assert 0 <= proof.challenge < 1 << CHALLENGE_BITS
        assert 0 <= proof.response < 1 << (nonce_bits(tp) + 1)
    assert tp.combine({s.index: s.partial_decrypt(cs) for s in shares[:2]}) == messages_of(count)


@pytest.mark.parametrize(("holders", "threshold"), [(1, 1), (2, 2), (5, 3), (7, 4)])
def test_every_holder_of_other_dealings_proves(holders: int, threshold: int) -> None:
    tp, shares = dealt(holders, threshold)
    cs = list(ciphertexts(4))
    for share in shares:
        partials = share.partial_decrypt(cs)
        verify(tp, share.index, cs, partials,
               prove(share, cs, partials, BINDING, SeededRandom(share.index)), BINDING)


def test_a_2048_bit_key_proves_and_verifies() -> None:
    tp, shares = deal_new(2048, 3, 2, SeededRandom("test_partial_proof/2048"))
    cs = FastEncryptor(tp.public, SeededRandom("test_partial_proof/2048/enc")).encrypt_many(
        [1, 2, 3])
    partials = {s.index: s.partial_decrypt(cs) for s in shares}
    for share in shares:
        proof = prove(share, cs, partials[share.index], BINDING, SeededRandom("p2048"))
        assert len(proof.to_bytes(tp)) == proof_size(tp)
        verify(tp, share.index, cs, partials[share.index], proof, BINDING)
    with pytest.raises(InvalidPartialDecryption):
        verify(tp, 1, cs, partials[2], prove(shares[1], cs, partials[2], BINDING,
                                              SeededRandom("p2048")), BINDING)
    k = tp.coefficients([1, 2])[1]
    f = tp.delta ** 2 * int(gmpy2.invert(k % tp.public.n, tp.public.n))
    lie = shifted(tp, partials[1], 0, f)
    assert tp.combine({1: lie, 2: partials[2]}) == [2, 2, 3]
    with pytest.raises(InvalidPartialDecryption):
        verify(tp, 1, cs, lie, prove(shares[0], cs, lie, BINDING, SeededRandom("lie")), BINDING)


def test_proof_bytes_round_trip_and_have_a_fixed_size() -> None:
    tp, shares = dealt(3, 2)
    cs = list(ciphertexts(3))
    partials = shares[0].partial_decrypt(cs)
    assert proof_size(tp) == CHALLENGE_BITS // 8 + response_size(tp)
    assert response_size(tp) == (nonce_bits(tp) + 1 + 7) // 8
    sizes = set()
    for seed in range(8):
        proof = prove(shares[0], cs, partials, BINDING, SeededRandom(f"bytes/{seed}"))
        raw = proof.to_bytes(tp)
        sizes.add(len(raw))
        assert PartialProof.from_bytes(tp, raw) == proof
        verify(tp, 1, cs, partials, PartialProof.from_bytes(tp, raw), BINDING)
    assert sizes == {proof_size(tp)}
    for edge in (PartialProof(0, 0), PartialProof((1 << CHALLENGE_BITS) - 1,
                                                  (1 << (nonce_bits(tp) + 1)) - 1)):
        assert PartialProof.from_bytes(tp, edge.to_bytes(tp)) == edge
    for length in (0, 1, proof_size(tp) - 1, proof_size(tp) + 1, 2 * proof_size(tp)):
        with pytest.raises(InvalidPartialDecryption):
            PartialProof.from_bytes(tp, bytes(length))
    # the size follows the key: another dealing has wider shares
    wider, _ = dealt(7, 4)
    assert proof_size(wider) > proof_size(tp)


def test_the_response_is_fresh_for_each_proof() -> None:
    tp, shares = dealt(3, 2)
    cs = list(ciphertexts(5))
    partials = shares[1].partial_decrypt(cs)
    proofs = [prove(shares[1], cs, partials, BINDING, SeededRandom(f"fresh/{i}"))
              for i in range(6)]
    for proof in proofs:
        verify(tp, 2, cs, partials, proof, BINDING)
    assert len({p.response for p in proofs}) == len(proofs)
    assert len({p.challenge for p in proofs}) == len(proofs)
    # the response does not reveal the share: z - e * s is the nonce, of nonce_bits bits
    share = shares[1].value
    for proof in proofs:
        nonce = proof.response - proof.challenge * share
        assert 0 <= nonce < 1 << nonce_bits(tp)
    # the same randomness gives the same proof (SeededRandom is deterministic)
    assert prove(shares[1], cs, partials, BINDING, SeededRandom("fresh/0")) == proofs[0]


# --- the attack: a partial shifted by (1+n)^f ------------------------------------------------


@pytest.mark.parametrize(("holders", "threshold", "chosen"), [
    (3, 2, (1, 2)), (3, 2, (1, 3)), (3, 2, (2, 3)), (5, 3, (1, 3, 5)), (5, 3, (2, 4, 5)),
])
@pytest.mark.parametrize("shift", [1, -1, 2**64 + 7])
def test_a_shifted_partial_passes_combine_with_t_partials_but_not_the_proof(
        holders: int, threshold: int, chosen: tuple[int, ...], shift: int) -> None:
    tp, shares = dealt(holders, threshold)
    n = tp.public.n
    cs = list(ciphertexts(4))
    messages = messages_of(4)
    honest = {i: shares[i - 1].partial_decrypt(cs) for i in chosen}
    coefficients = tp.coefficients(list(chosen))
    for liar in chosen:
        k = coefficients[liar]
        f = shift * tp.delta ** 2 * int(gmpy2.invert(k % n, n)) % n
        for position in (0, 3):
            lie = shifted(tp, honest[liar], position, f)
            # why proofs are needed: exactly t partials combine to the shifted total
            wrong = list(messages)
            wrong[position] = (wrong[position] + shift) % n
            assert tp.combine({**honest, liar: lie}) == wrong
            assert wrong != messages
            # the honest proof does not cover the shifted partials
            proof = prove(shares[liar - 1], cs, honest[liar], BINDING,
                          SeededRandom(f"attack/{liar}"))
            verify(tp, liar, cs, honest[liar], proof, BINDING)
            with pytest.raises(InvalidPartialDecryption, match=f"holder {liar}"):
                verify(tp, liar, cs, lie, proof, BINDING)
            # nor does a fresh proof the liar makes over its shifted partials
            forged = prove(shares[liar - 1], cs, lie, BINDING, SeededRandom(f"liar/{liar}"))
            with pytest.raises(InvalidPartialDecryption, match=f"holder {liar}"):
                verify(tp, liar, cs, lie, forged, BINDING)


def test_with_more_than_t_partials_the_shift_already_shows_in_the_cross_check() -> None:
    tp, shares = dealt(3, 2)
    cs = list(ciphertexts(2))
    partials = {s.index: s.partial_decrypt(cs) for s in shares}
    k = tp.coefficients([1, 2])[1]
    f = tp.delta ** 2 * int(gmpy2.invert(k, tp.public.n))
    partials[1] = shifted(tp, partials[1], 0, f)
    assert tp.combine({1: partials[1], 2: partials[2]}) == [1, tp.public.n - 5]  # was 0, n-5
    with pytest.raises(CryptoError):  # subsets {1, 2} and {2, 3} disagree
        tp.combine(partials)


def test_a_small_order_error_may_pass_the_proof_but_never_changes_the_total() -> None:
    """-1 has order 2; Delta = N! is even, so (-1)^(Delta * l_i) = 1 in the combination.
    The proof need not exclude such errors (module docstring): they change nothing."""
    tp, shares = dealt(3, 2)
    cs = list(ciphertexts(3))
    n2 = tp.public.n_square
    honest = {s.index: s.partial_decrypt(cs) for s in shares}
    for position in range(3):
        lie = list(honest[1])
        lie[position] = n2 - lie[position]
        assert tp.combine({1: lie, 2: honest[2]}) == messages_of(3)
        assert tp.combine({1: lie, 2: honest[2], 3: honest[3]}) == messages_of(3)
        proof = prove(shares[0], cs, lie, BINDING, SeededRandom(f"minus-one/{position}"))
        try:
            verify(tp, 1, cs, lie, proof, BINDING)
        except InvalidPartialDecryption:
            pass  # refused or accepted: either way the released total is the right one


# --- what verify refuses --------------------------------------------------------------------


@pytest.fixture(scope="module")
def statement() -> tuple[ThresholdPublic, tuple[KeyShare, ...], list[mpz], list[mpz],
                         PartialProof]:
    tp, shares = dealt(5, 3)
    cs = list(ciphertexts(6))
    partials = shares[1].partial_decrypt(cs)
    proof = prove(shares[1], cs, partials, BINDING, SeededRandom("statement"))
    verify(tp, 2, cs, partials, proof, BINDING)
    return tp, shares, cs, partials, proof


Statement = tuple[ThresholdPublic, tuple[KeyShare, ...], list[mpz], list[mpz], PartialProof]


def test_another_holders_index_or_another_binding_is_refused(statement: Statement) -> None:
    tp, shares, cs, partials, proof = statement
    for index in (1, 3, 4, 5):
        with pytest.raises(InvalidPartialDecryption):
            verify(tp, index, cs, partials, proof, BINDING)
    for binding in (b"", BINDING + b"\x00", b"test_partial_proof/round-2", BINDING[:-1]):
        with pytest.raises(InvalidPartialDecryption):
            verify(tp, 2, cs, partials, proof, binding)
    for index in (0, 6, 7):  # no such holder
        with pytest.raises(ShareError, match="out of range"):
            verify(tp, index, cs, partials, proof, BINDING)


def test_a_negative_holder_index_is_a_crypto_error(statement: Statement) -> None:
    tp, _, cs, partials, proof = statement
    with pytest.raises(CryptoError):
        verify(tp, -1, cs, partials, proof, BINDING)


def test_swapped_or_other_ciphertexts_are_refused(statement: Statement) -> None:
    tp, shares, cs, partials, proof = statement
    swapped = [cs[1], cs[0]] + cs[2:]
    with pytest.raises(InvalidPartialDecryption):  # the partials no longer match
        verify(tp, 2, swapped, partials, proof, BINDING)
    both = [partials[1], partials[0]] + partials[2:]
    with pytest.raises(InvalidPartialDecryption):  # consistent, but the weights moved
        verify(tp, 2, swapped, both, proof, BINDING)
    verify(tp, 2, swapped, both, prove(shares[1], swapped, both, BINDING, SeededRandom("s")),
           BINDING)
    other = list(ciphertexts(6, seed=1))  # same plaintexts, other ciphertexts
    with pytest.raises(InvalidPartialDecryption):
        verify(tp, 2, other, partials, proof, BINDING)
    with pytest.raises(InvalidPartialDecryption):  # the honest answer to other ciphertexts
        verify(tp, 2, cs, shares[1].partial_decrypt(other), proof, BINDING)


def test_partials_of_another_share_are_refused(statement: Statement) -> None:
    tp, shares, cs, partials, proof = statement
    theirs = shares[0].partial_decrypt(cs)
    theirs_proof = prove(shares[0], cs, theirs, BINDING, SeededRandom("theirs"))
    verify(tp, 1, cs, theirs, theirs_proof, BINDING)
    with pytest.raises(InvalidPartialDecryption):  # holder 1's proof, presented as holder 2
        verify(tp, 2, cs, theirs, theirs_proof, BINDING)
    with pytest.raises(InvalidPartialDecryption):  # holder 1's partials with 2's proof
        verify(tp, 2, cs, theirs, proof, BINDING)
    # holder 2 answers with holder 1's share and proves with it under its own index
    impostor = KeyShare(2, shares[0].value, tp)
    answer = impostor.partial_decrypt(cs)
    with pytest.raises(InvalidPartialDecryption):
        verify(tp, 2, cs, answer, prove(impostor, cs, answer, BINDING, SeededRandom("i")),
               BINDING)
    # a share off by one (a corrupted share file) proves nothing either
    corrupt = KeyShare(2, shares[1].value + 1, tp)
    answer = corrupt.partial_decrypt(cs)
    with pytest.raises(InvalidPartialDecryption):
        verify(tp, 2, cs, answer, prove(corrupt, cs, answer, BINDING, SeededRandom("c")),
               BINDING)


def test_one_partial_replaced_by_another_unit_is_refused(statement: Statement) -> None:
    tp, shares, cs, partials, proof = statement
    rng = SeededRandom("replacement")
    n2 = tp.public.n_square
    for position in (0, 2, len(partials) - 1):
        for replacement in (random_unit(tp, rng), mpz(1), cs[position],
                            gmpy2.t_mod(partials[position] * partials[position], n2),
                            gmpy2.t_mod(partials[position] * 4, n2)):
            changed = list(partials)
            changed[position] = replacement
            with pytest.raises(InvalidPartialDecryption):
                verify(tp, 2, cs, changed, proof, BINDING)
            with pytest.raises(InvalidPartialDecryption):
                verify(tp, 2, cs, changed,
                       prove(shares[1], cs, changed, BINDING, SeededRandom("r")), BINDING)


def test_a_tampered_proof_is_refused(statement: Statement) -> None:
    tp, _, cs, partials, proof = statement
    top = 1 << (nonce_bits(tp) + 1)
    tampered = [
        PartialProof(proof.challenge ^ 1, proof.response),
        PartialProof(proof.challenge ^ (1 << (CHALLENGE_BITS - 1)), proof.response),
        PartialProof(proof.challenge, proof.response ^ 1),
        PartialProof(proof.challenge, proof.response + 1),
        PartialProof(proof.challenge + 1, proof.response + tp.share_bits),
        PartialProof(proof.challenge, 0),
        PartialProof(0, 0),
        PartialProof(proof.challenge, top),  # out of range
        PartialProof(proof.challenge, top + proof.response),
        PartialProof(proof.challenge, -proof.response),
        PartialProof(proof.challenge, -1),
    ]
    for bad in tampered:
        with pytest.raises(InvalidPartialDecryption):
            verify(tp, 2, cs, partials, bad, BINDING)
    raw = bytearray(proof.to_bytes(tp))
    for at in (0, CHALLENGE_BITS // 8 - 1, CHALLENGE_BITS // 8, len(raw) - 1):
        flipped = bytearray(raw)
        flipped[at] ^= 0x01
        with pytest.raises(InvalidPartialDecryption):
            verify(tp, 2, cs, partials, PartialProof.from_bytes(tp, bytes(flipped)), BINDING)


def test_out_of_range_response_is_refused_before_any_exponentiation(
        statement: Statement) -> None:
    tp, _, cs, partials, proof = statement
    # also with a non-unit partial: the range check comes first and says so
    with pytest.raises(InvalidPartialDecryption, match="out of range"):
        verify(tp, 2, cs, [mpz(0)] + partials[1:], PartialProof(proof.challenge, 1 << 100_000),
               BINDING)


def test_partials_of_the_wrong_count_are_refused(statement: Statement) -> None:
    tp, _, cs, partials, proof = statement
    for cs_, ds in ((cs, partials[:-1]), (cs[:-1], partials), (cs, partials + partials[:1]),
                    ([], []), ([], partials), (cs, [])):
        with pytest.raises(InvalidPartialDecryption):
            verify(tp, 2, cs_, ds, proof, BINDING)


def test_a_non_unit_partial_or_ciphertext_is_refused(statement: Statement) -> None:
    tp, _, cs, partials, proof = statement
    k = key()
    n, n2 = tp.public.n, int(tp.public.n_square)
    for bad in (0, -1, n, k.p, 3 * k.q, n2, n2 + 1, n2 - k.p, -int(partials[0])):
        for position in (0, len(partials) - 1):
            changed = list(partials)
            changed[position] = bad
            with pytest.raises(InvalidPartialDecryption, match="group element") as caught:
                verify(tp, 2, cs, changed, proof, BINDING)
            assert isinstance(caught.value.__cause__, InvalidCiphertext)
            moved = list(cs)
            moved[position] = bad
            with pytest.raises(InvalidPartialDecryption, match="group element"):
                verify(tp, 2, moved, partials, proof, BINDING)


def test_a_key_without_verification_keys_cannot_verify_or_prove(statement: Statement) -> None:
    tp, shares, cs, partials, proof = statement
    bare = ThresholdPublic(tp.public, tp.threshold, tp.holders)
    assert bare.verification_keys == () and bare.verification_base == 0
    with pytest.raises(ShareError, match="no verification keys") as caught:
        verify(bare, 2, cs, partials, proof, BINDING)
    assert isinstance(caught.value, CryptoError)
    with pytest.raises(ShareError, match="no verification keys"):
        bare.verification_key(1)
    with pytest.raises(ShareError):
        prove(KeyShare(2, shares[1].value, bare), cs, partials, BINDING, SeededRandom("bare"))
    # such a key still combines (a holder without proofs is not needed for that)
    honest = {s.index: s.partial_decrypt(cs) for s in shares[:3]}
    assert bare.combine(honest) == tp.combine(honest) == messages_of(6)


def test_keys_of_another_dealing_refuse_the_proof(statement: Statement) -> None:
    tp, _, cs, partials, proof = statement
    again, _ = deal(key(), 5, 3, SeededRandom("another dealing of the same key"))
    assert again.public == tp.public and again.verification_keys != tp.verification_keys
    with pytest.raises(InvalidPartialDecryption):
        verify(again, 2, cs, partials, proof, BINDING)
    # the keys alone, under the old base (or the reverse), are not this dealing either
    for mixed in (ThresholdPublic(tp.public, 3, 5, tp.verification_base, again.verification_keys),
                  ThresholdPublic(tp.public, 3, 5, again.verification_base, tp.verification_keys)):
        with pytest.raises(InvalidPartialDecryption):
            verify(mixed, 2, cs, partials, proof, BINDING)


# --- ThresholdPublic's verification keys and deal() -----------------------------------------


def test_deal_publishes_v_to_the_share_for_each_holder() -> None:
    k = key()
    for holders, threshold in ((1, 1), (3, 2), (5, 3), (7, 4)):
        tp, shares = dealt(holders, threshold)
        n2 = tp.public.n_square
        v = mpz(tp.verification_base)
        assert len(tp.verification_keys) == holders
        tp.public.check(v)
        assert v != 1 and v != n2 - 1
        # a square mod n^2 is a square mod p and mod q
        assert gmpy2.legendre(v % k.p, k.p) == 1 and gmpy2.legendre(v % k.q, k.q) == 1
        assert gmpy2.jacobi(v % tp.public.n, tp.public.n) == 1
        for share in shares:
            assert tp.verification_key(share.index) == gmpy2.powmod(v, share.value, n2)
            assert share.value.bit_length() <= tp.share_bits
        assert len(set(tp.verification_keys)) == holders
        assert tp.verification_keys[0] != v


def test_every_base_of_many_dealings_is_a_square() -> None:
    k = key()
    for seed in range(10):
        tp, _ = deal(k, 2, 1, SeededRandom(f"square/{seed}"))
        v = tp.verification_base
        assert gmpy2.legendre(v % k.p, k.p) == 1 and gmpy2.legendre(v % k.q, k.q) == 1


@pytest.mark.parametrize("keys", ["one short", "one extra", "none with a base"])
def test_verification_keys_of_the_wrong_count_are_refused(keys: str) -> None:
    tp, _ = dealt(3, 2)
    base, vks = tp.verification_base, tp.verification_keys
    chosen = {"one short": vks[:2], "one extra": vks + vks[:1], "none with a base": ()}[keys]
    with pytest.raises(ShareError, match="one verification key per holder"):
        ThresholdPublic(tp.public, 2, 3, base, chosen)


def test_non_unit_verification_keys_or_base_are_refused() -> None:
    tp, _ = dealt(3, 2)
    k = key()
    n2 = int(tp.public.n_square)
    base, vks = tp.verification_base, tp.verification_keys
    assert ThresholdPublic(tp.public, 2, 3, base, vks) == tp
    for bad in (0, -1, tp.public.n, k.p, 2 * k.q, n2, n2 + base):
        with pytest.raises(ShareError, match="not a unit"):
            ThresholdPublic(tp.public, 2, 3, bad, vks)
        for position in range(3):
            changed = list(vks)
            changed[position] = bad
            with pytest.raises(ShareError, match="not a unit"):
                ThresholdPublic(tp.public, 2, 3, base, tuple(changed))
    with pytest.raises(ShareError, match="not a unit"):  # keys without a base
        ThresholdPublic(tp.public, 2, 3, 0, vks)


def test_verification_key_refuses_indices_out_of_range() -> None:
    tp, _ = dealt(3, 2)
    assert [tp.verification_key(i) for i in (1, 2, 3)] == list(tp.verification_keys)
    for index in (0, 4, -1):
        with pytest.raises(ShareError, match="out of range"):
            tp.verification_key(index)
