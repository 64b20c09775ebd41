"""Proofs of plaintext knowledge (crypto/plaintext_proof.py) and the public randomizer base
they are made against (crypto/paillier.py).

The attack the proofs exist for: Paillier ciphertexts are malleable, so a node that saw
other nodes' ciphertexts can contribute their inverse (times an encryption it made) and the
decrypted "total" becomes one hospital's vector. Such a node knows the plaintext of nothing
it sends, so it cannot prove, whatever witness it tries.

Keys are 1024 bits (made once per module); one 2048-bit case checks a manifest-sized key.
"""

from __future__ import annotations

import functools

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import support
from crypto import plaintext_proof
from crypto.errors import CryptoError
from crypto.paillier import (
    FastEncryptor,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
    randomizer_bits,
)
from crypto.plaintext_proof import (
    BATCH_BITS,
    CHALLENGE_BITS,
    InvalidPlaintextProof,
    PlaintextProof,
    proof_size,
    prove,
    verify,
)
from crypto.randomness import SeededRandom

KEY_BITS = 1024
BINDING = b"test_plaintext_proof/node0/round-1"
EXAMPLES = settings(max_examples=40 if support.IN_CI else 15, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def key(seed: str = "a") -> PaillierPrivateKey:
    return generate_keypair(KEY_BITS, SeededRandom(f"test_plaintext_proof/key/{seed}"))


@functools.cache
def encryptor(seed: str = "a") -> FastEncryptor:
    return FastEncryptor(key(seed).public, SeededRandom(f"test_plaintext_proof/enc/{seed}"))


def encrypted(plaintexts: list[int], seed: str = "a") -> tuple[list[mpz], list[int]]:
    return encryptor(seed).encrypt_with_exponents(plaintexts)


def proved(plaintexts: list[int], binding: bytes = BINDING, seed: str = "a",
           rng: str = "prove") -> tuple[list[mpz], PlaintextProof]:
    cs, exponents = encrypted(plaintexts, seed)
    return cs, prove(key(seed).public, cs, plaintexts, exponents, binding, SeededRandom(rng))


def carmichael(k: PaillierPrivateKey) -> mpz:
    return gmpy2.lcm(mpz(k.p) - 1, mpz(k.q) - 1)


# --- the randomizer base ----------------------------------------------------------------------


def test_the_randomizer_base_is_an_n_th_power_derived_from_n_alone() -> None:
    k = key()
    public = k.public
    h_n = public.randomizer_base
    assert 1 < h_n < public.n_square
    assert gmpy2.powmod(h_n, carmichael(k), public.n_square) == 1  # an encryption of 0
    assert k.decrypt(h_n) == 0
    # every party computes the same base: a fresh key object, another encryptor
    assert PaillierPublicKey(public.n).randomizer_base == h_n
    assert FastEncryptor(public, SeededRandom("other"), 64).fixed.table[0][1] == h_n
    assert key("b").public.randomizer_base != h_n


def test_encryptions_decrypt_and_use_the_exponents_they_report() -> None:
    k = key()
    public = k.public
    plaintexts = [0, 1, 2**500, public.n - 1]
    cs, exponents = encrypted(plaintexts)
    assert [k.decrypt(c) for c in cs] == plaintexts
    assert all(0 <= a < 1 << randomizer_bits(KEY_BITS) for a in exponents)
    for c, m, a in zip(cs, plaintexts, exponents, strict=True):
        assert c == public.encrypt_with(m, gmpy2.powmod(public.randomizer_base, a,
                                                        public.n_square))


# --- honest proofs ----------------------------------------------------------------------------


@given(plaintexts=st.lists(st.integers(0, 2**1022), min_size=1, max_size=8),
       seed=st.integers(0, 2**32))
@EXAMPLES
def test_honest_proofs_verify_and_round_trip_through_bytes(plaintexts: list[int],
                                                           seed: int) -> None:
    public = key().public
    cs, proof = proved(plaintexts, rng=f"prop/{seed}")
    raw = proof.to_bytes(public)
    assert len(raw) == proof_size(public)
    again = PlaintextProof.from_bytes(public, raw)
    assert again == proof
    verify(public, cs, again, BINDING)
    verify(public, [int(c) for c in cs], again, BINDING)  # plain ints are accepted too


def test_the_proof_size_is_fixed_per_key_and_small() -> None:
    public = key().public
    sizes = {len(proved([5] * count, rng=f"size/{count}")[1].to_bytes(public))
             for count in (1, 2, 17)}
    assert sizes == {proof_size(public)}
    assert proof_size(public) == 16 + 128 + (512 + 128 + BATCH_BITS + 128 + 1 + 7) // 8


def test_edge_proofs_round_trip_and_bad_lengths_are_refused() -> None:
    public = key().public
    top = (1 << (randomizer_bits(KEY_BITS) + 128 + BATCH_BITS + 128 + 1)) - 1
    for edge in (PlaintextProof(0, 0, 0),
                 PlaintextProof((1 << CHALLENGE_BITS) - 1, public.n - 1, top)):
        assert PlaintextProof.from_bytes(public, edge.to_bytes(public)) == edge
    for length in (0, 1, proof_size(public) - 1, proof_size(public) + 1):
        with pytest.raises(InvalidPlaintextProof):
            PlaintextProof.from_bytes(public, bytes(length))


def test_two_proofs_of_the_same_ciphertexts_differ() -> None:
    public = key().public
    cs, exponents = encrypted([7, 8])
    first = prove(public, cs, [7, 8], exponents, BINDING, SeededRandom("fresh/1"))
    second = prove(public, cs, [7, 8], exponents, BINDING, SeededRandom("fresh/2"))
    assert first != second
    for proof in (first, second):
        verify(public, cs, proof, BINDING)
    assert "response" not in repr(first) and str(first.plaintext_response) not in repr(first)


def test_a_2048_bit_key_proves_and_verifies() -> None:
    k = generate_keypair(2048, SeededRandom("test_plaintext_proof/2048"))
    enc = FastEncryptor(k.public, SeededRandom("test_plaintext_proof/2048/enc"))
    cs, exponents = enc.encrypt_with_exponents([1, 2, 3])
    proof = prove(k.public, cs, [1, 2, 3], exponents, BINDING, SeededRandom("2048"))
    assert len(proof.to_bytes(k.public)) == proof_size(k.public)
    verify(k.public, cs, proof, BINDING)
    with pytest.raises(InvalidPlaintextProof):
        verify(k.public, cs, proof, BINDING + b"x")


# --- what a proof is bound to ---------------------------------------------------------------------


@pytest.mark.parametrize("binding", [b"test_plaintext_proof/node1/round-1",
                                     b"test_plaintext_proof/node0/round-2", b""])
def test_a_proof_for_another_binding_does_not_verify(binding: bytes) -> None:
    cs, proof = proved([11, 12, 13])
    with pytest.raises(InvalidPlaintextProof, match="does not verify"):
        verify(key().public, cs, proof, binding)


def test_a_proof_under_another_key_does_not_verify() -> None:
    cs, proof = proved([11, 12, 13])
    other = key("b").public
    assert other.bits == KEY_BITS and other.n != key().public.n
    checked = [c for c in cs if c < other.n_square and gmpy2.gcd(c, other.n) == 1]
    assert checked == cs  # the same values are units for the other key too
    with pytest.raises(InvalidPlaintextProof):
        verify(other, cs, proof, BINDING)


@pytest.mark.parametrize("change", ["reordered", "one dropped", "one added", "one altered",
                                    "one re-randomized"])
def test_a_proof_covers_exactly_its_ciphertexts(change: str) -> None:
    public = key().public
    cs, proof = proved([21, 22, 23])
    if change == "reordered":
        other = [cs[1], cs[0], cs[2]]
    elif change == "one dropped":
        other = cs[:2]
    elif change == "one added":
        other = cs + encryptor().encrypt_many([24])
    elif change == "one altered":
        other = [public.add(cs[0], 1 + public.n), *cs[1:]]  # the plaintext plus one
    else:  # the same plaintext with other randomness: still not what was proven
        other = [public.add(cs[0], encryptor().encrypt(0)), *cs[1:]]
    with pytest.raises(InvalidPlaintextProof):
        verify(public, other, proof, BINDING)


def test_altered_responses_do_not_verify() -> None:
    public = key().public
    cs, proof = proved([31, 32])
    for altered in (PlaintextProof(proof.challenge ^ 1, proof.plaintext_response,
                                   proof.randomizer_response),
                    PlaintextProof(proof.challenge, (proof.plaintext_response + 1) % public.n,
                                   proof.randomizer_response),
                    PlaintextProof(proof.challenge, proof.plaintext_response,
                                   proof.randomizer_response + 1)):
        with pytest.raises(InvalidPlaintextProof):
            verify(public, cs, altered, BINDING)
    # responses out of range are refused before any arithmetic
    for out in (PlaintextProof(proof.challenge, public.n, proof.randomizer_response),
                PlaintextProof(proof.challenge, proof.plaintext_response, 1 << 2000),
                PlaintextProof(1 << CHALLENGE_BITS, proof.plaintext_response,
                               proof.randomizer_response),
                PlaintextProof(proof.challenge, -1, proof.randomizer_response)):
        with pytest.raises(InvalidPlaintextProof, match="out of range"):
            verify(public, cs, out, BINDING)


def test_invalid_ciphertexts_and_empty_vectors_are_refused() -> None:
    k = key()
    public = k.public
    cs, proof = proved([41])
    for bad in ([0], [k.p], [public.n_square], [-1]):
        with pytest.raises(InvalidPlaintextProof):
            verify(public, bad, proof, BINDING)
    with pytest.raises(InvalidPlaintextProof):
        verify(public, [], proof, BINDING)


def test_a_witness_that_cannot_be_one_is_refused_by_the_prover() -> None:
    public = key().public
    cs, exponents = encrypted([1, 2])
    rng = SeededRandom("witness")
    with pytest.raises(CryptoError):
        prove(public, cs, [1], exponents, BINDING, rng)
    with pytest.raises(CryptoError):
        prove(public, cs, [1, 2], exponents[:1], BINDING, rng)
    with pytest.raises(CryptoError):
        prove(public, cs, [1, public.n], exponents, BINDING, rng)
    with pytest.raises(CryptoError):
        prove(public, cs, [1, 2], [exponents[0], 1 << randomizer_bits(KEY_BITS)], BINDING, rng)
    with pytest.raises(CryptoError):
        prove(public, [], [], [], BINDING, rng)


# --- the attack: combining other nodes' ciphertexts ---------------------------------------------


def _inverse_of_product(public: PaillierPublicKey, ciphertexts: list[mpz]) -> mpz:
    product = public.combine([[c] for c in ciphertexts])[0]
    return gmpy2.invert(product, public.n_square)


def test_a_combination_of_other_ciphertexts_cannot_be_proven() -> None:
    """inv(c0 * c2) * Enc(f): the attacker knows f and its randomness, not the rest."""
    k = key()
    public = k.public
    victims, _ = encrypted([1000, 2000])
    fill_cs, fill_a = encrypted([5])
    forged = public.add(_inverse_of_product(public, victims), fill_cs[0])
    assert k.decrypt(forged) == (5 - 3000) % public.n  # what it would add to a total
    attempts = {
        "its own part as the witness": prove(public, [forged], [5], fill_a, BINDING,
                                             SeededRandom("a1")),
        "the plaintext it hopes for": prove(public, [forged], [(5 - 3000) % public.n], fill_a,
                                            BINDING, SeededRandom("a2")),
    }
    for proof in attempts.values():
        with pytest.raises(InvalidPlaintextProof):
            verify(public, [forged], proof, BINDING)
    # a victim's own proof, replayed for a vector holding the forged ciphertext
    cs, victim_proof = proved([1000, 2000], binding=b"victim")
    with pytest.raises(InvalidPlaintextProof):
        verify(public, [forged, cs[1]], victim_proof, b"victim")
    # hiding the forged ciphertext among honest ones does not help: one unknown plaintext
    honest_cs, honest_a = encrypted([7, 8, 9])
    mixed = [honest_cs[0], forged, honest_cs[2]]
    with pytest.raises(InvalidPlaintextProof):
        verify(public, mixed, prove(public, mixed, [7, 5, 9],
                                    [honest_a[0], fill_a[0], honest_a[2]], BINDING,
                                    SeededRandom("a3")), BINDING)


def test_randomness_other_than_the_key_base_cannot_be_proven() -> None:
    """An encryption whose randomizer is not a power of the public base (as when each
    encryptor picked its own h) has no witness the proof accepts."""
    k = key()
    public = k.public
    own_h = gmpy2.powmod(mpz(12345), public.n_mpz, public.n_square)  # an n-th power, not h_n
    c = public.encrypt_with(77, gmpy2.powmod(own_h, 99, public.n_square))
    assert k.decrypt(c) == 77
    with pytest.raises(InvalidPlaintextProof):
        verify(public, [c], prove(public, [c], [77], [99], BINDING, SeededRandom("own-h")),
               BINDING)


# --- soundness, as the module docstring argues it --------------------------------------------------


def _solve_mod(matrix: list[list[int]], rhs: list[int], modulus: int) -> list[int]:
    """Gaussian elimination modulo ``modulus`` (every pivot must be a unit)."""
    size = len(matrix)
    rows = [list(row) + [value] for row, value in zip(matrix, rhs, strict=True)]
    for col in range(size):
        pivot = next(r for r in range(col, size) if gmpy2.gcd(rows[r][col], modulus) == 1)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        inverse = int(gmpy2.invert(rows[col][col], modulus))
        rows[col] = [v * inverse % modulus for v in rows[col]]
        for r in range(size):
            if r != col and rows[r][col]:
                factor = rows[r][col]
                rows[r] = [(a - factor * b) % modulus for a, b in
                           zip(rows[r], rows[col], strict=True)]
    return [row[-1] for row in rows]


@pytest.mark.parametrize("count", [1, 3])
def test_k_plus_one_answers_to_one_commitment_reveal_every_plaintext(count: int) -> None:
    """The special-soundness extractor: from the public ciphertexts and K + 1 accepted
    responses to one commitment (challenge vectors in general position) it solves for the
    plaintexts mod n; it never sees the witness."""
    public = key().public
    plaintexts = [1234567 * (j + 1) for j in range(count)]
    cs, exponents = encrypted(plaintexts)
    rng = SeededRandom(f"extract/{count}")
    x = rng.below(public.n)
    y = rng.below(1 << plaintext_proof._nonce_bits(public))
    commitment = gmpy2.t_mod((1 + mpz(x) * public.n_mpz)
                             * plaintext_proof._power_of_h(public, y), public.n_square)
    challenges, answers = [], []
    for i in range(count + 1):
        weights = plaintext_proof._weights(i + 17, count)
        z1 = (x + sum(e * m for e, m in zip(weights, plaintexts, strict=True))) % public.n
        z2 = y + sum(e * a for e, a in zip(weights, exponents, strict=True))
        # each answer satisfies the verification equation for the same commitment
        assert plaintext_proof._commitment_from(public, cs, weights, z1, z2) == commitment
        challenges.append(weights)
        answers.append(z1)
    differences = [[e - e0 for e, e0 in zip(challenges[i], challenges[0], strict=True)]
                   for i in range(1, count + 1)]
    deltas = [(answers[i] - answers[0]) % public.n for i in range(1, count + 1)]
    assert _solve_mod(differences, deltas, public.n) == plaintexts
