"""Proofs that whoever sends a vector of ciphertexts knows their plaintexts and randomness.

Every ciphertext we make is ``c_j = (1+n)^(m_j) * h_n^(a_j) mod n^2`` with ``h_n`` the key's
:attr:`~crypto.paillier.PaillierPublicKey.randomizer_base` (an ``n``-th power that every
party derives from ``n``) and ``a_j < 2^ceil(k/2)``. One Sigma-protocol covers the whole
vector (one commitment, one 128-bit challenge per ciphertext), made non-interactive with
Fiat-Shamir and bound to ``binding`` (the caller's sender, round and key):

1. ``x`` uniform in ``[0, n)``, ``y`` uniform with ``2 * 128 + 24`` bits more than any
   ``a_j``; ``A = (1 + x n) * h_n^y``;
2. ``s = H(binding, n, ciphertexts, A)`` (128 bits) and weights ``e_j`` (128 bits each)
   expanded from ``s``;
3. ``z1 = x + sum e_j m_j mod n`` and ``z2 = y + sum e_j a_j`` (integers); the proof is
   ``(s, z1, z2)`` and the verifier recomputes ``A = (1 + z1 n) h_n^z2 / prod c_j^e_j``.

Soundness for the plaintexts needs no assumption beyond the random oracle: the plaintext
map ``phi`` (what decryption computes) is a homomorphism onto ``Z_n`` with ``phi(1+n) = 1``
and ``phi(h_n) = 0``, so every accepted answer satisfies ``z1 = phi(A) + sum e_j phi(c_j)
mod n``; ``K + 1`` answers for one commitment whose challenge vectors are in general
position give every ``phi(c_j)`` by solving a linear system mod ``n`` (the differences of
128-bit challenges are invertible mod ``p`` and ``q``; an affine hyperplane mod ``p``
holds at most a ``2^-128`` fraction of the challenge vectors). A node that multiplies
other nodes' ciphertexts together therefore cannot prove it, since it does not know their
sum. Knowledge of the randomness as integers is argued, not proven: it follows as in
Damgard and Fujisaki (2002) if nobody can take non-trivial roots of ``h`` in ``Z_n^*``
(strong RSA). ``z1`` hides the plaintexts perfectly and ``z2`` hides the exponents within
statistical distance ``2^-128``. Verification raises :class:`InvalidPlaintextProof`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz

from crypto.errors import CryptoError
from crypto.kdf import context
from crypto.paillier import FixedBase, PaillierPublicKey, randomizer_bits
from crypto.partial_proof import multi_exp
from crypto.randomness import RandomSource, uniform_below

CHALLENGE_BITS = 128
WEIGHT_BITS = 128
ZK_BITS = 128
#: a proof covers at most 2^BATCH_BITS - 1 ciphertexts (a round sends far fewer)
BATCH_BITS = 24


class InvalidPlaintextProof(CryptoError):
    """A proof of plaintext knowledge does not verify: its sender may not know what it sent."""


@dataclass(frozen=True)
class PlaintextProof:
    challenge: int
    plaintext_response: int
    randomizer_response: int

    def __repr__(self) -> str:
        return f"PlaintextProof(challenge={self.challenge:#034x})"

    def to_bytes(self, public: PaillierPublicKey) -> bytes:
        return (self.challenge.to_bytes(CHALLENGE_BITS // 8, "big")
                + self.plaintext_response.to_bytes(_modulus_size(public), "big")
                + self.randomizer_response.to_bytes(_response_size(public), "big"))

    @classmethod
    def from_bytes(cls, public: PaillierPublicKey, raw: bytes) -> PlaintextProof:
        if len(raw) != proof_size(public):
            raise InvalidPlaintextProof("a proof of plaintext knowledge of the wrong length")
        head, middle = CHALLENGE_BITS // 8, CHALLENGE_BITS // 8 + _modulus_size(public)
        return cls(int.from_bytes(raw[:head], "big"), int.from_bytes(raw[head:middle], "big"),
                   int.from_bytes(raw[middle:], "big"))


def _modulus_size(public: PaillierPublicKey) -> int:
    return (public.bits + 7) // 8


def _nonce_bits(public: PaillierPublicKey) -> int:
    return randomizer_bits(public.bits) + WEIGHT_BITS + BATCH_BITS + ZK_BITS


def _response_size(public: PaillierPublicKey) -> int:
    return (_nonce_bits(public) + 1 + 7) // 8


def proof_size(public: PaillierPublicKey) -> int:
    """Bytes of one proof, whatever the number of ciphertexts it covers (628 at 3072 bits)."""
    return CHALLENGE_BITS // 8 + _modulus_size(public) + _response_size(public)


#: a window of 4 bits keeps the table near 5.5 MB at 3072 bits; one power costs ~450 products
_TABLE_WINDOW = 4


@functools.lru_cache(maxsize=4)
def _table(base: int, modulus: int, bits: int) -> FixedBase:
    return FixedBase(base, mpz(modulus), bits, _TABLE_WINDOW)


def _power_of_h(public: PaillierPublicKey, exponent: int) -> mpz:
    table = _table(int(public.randomizer_base), int(public.n_square), _nonce_bits(public) + 1)
    return table.power(exponent)


def prepare(public: PaillierPublicKey) -> None:
    """Build the fixed-base table of ``h_n`` now (about 0.1 s at 3072 bits) instead of in
    the first proof or verification."""
    _power_of_h(public, 0)


def _challenge(public: PaillierPublicKey, binding: bytes, ciphertexts: Sequence[mpz],
               commitment: mpz) -> int:
    digest = hashlib.sha256(context(
        b"fedtally/v1", "paillier-plaintext-proof", binding, public.n, len(ciphertexts),
        hashlib.sha256(public.to_bytes(ciphertexts)).digest(), int(commitment))).digest()
    return int.from_bytes(digest[:CHALLENGE_BITS // 8], "big")


def _weights(challenge: int, count: int) -> list[int]:
    seed = context(b"fedtally/v1", "paillier-plaintext-proof-weights", challenge)
    size = WEIGHT_BITS // 8
    stream = hashlib.shake_256(seed).digest(count * size)
    return [int.from_bytes(stream[i * size:(i + 1) * size], "big") for i in range(count)]


def _commitment_from(public: PaillierPublicKey, ciphertexts: Sequence[mpz],
                     weights: Sequence[int], z1: int, z2: int) -> mpz:
    """The commitment that responses ``(z1, z2)`` answer to challenge ``weights``:
    ``(1+n)^z1 h_n^z2 / prod c_j^e_j``, which an honest prover's ``A`` equals."""
    n, n2 = public.n_mpz, public.n_square
    weighted = multi_exp(ciphertexts, weights, n2)
    return gmpy2.t_mod((1 + mpz(z1) * n) * _power_of_h(public, z2)
                       * gmpy2.invert(weighted, n2), n2)


def _check_count(count: int) -> None:
    if not 0 < count < 1 << BATCH_BITS:
        raise InvalidPlaintextProof(f"a proof covers 1 to {(1 << BATCH_BITS) - 1} ciphertexts")


def prove(public: PaillierPublicKey, ciphertexts: Sequence[mpz], plaintexts: Sequence[int],
          exponents: Sequence[int], binding: bytes, rng: RandomSource) -> PlaintextProof:
    """Prove knowledge of ``plaintexts[j]`` and ``exponents[j]`` with ``ciphertexts[j] =
    (1+n)^m h_n^a``, bound to ``binding`` (a :class:`CryptoError` for a witness that cannot
    be one: lengths that differ, a plaintext outside ``[0, n)``, an exponent too long)."""
    count = len(ciphertexts)
    _check_count(count)
    if len(plaintexts) != count or len(exponents) != count:
        raise CryptoError("one plaintext and one exponent per ciphertext are needed")
    limit = 1 << randomizer_bits(public.bits)
    if any(not 0 <= m < public.n for m in plaintexts) or \
            any(not 0 <= a < limit for a in exponents):
        raise CryptoError("a plaintext or a randomizer exponent is out of range")
    n, n2 = public.n_mpz, public.n_square
    x = mpz(uniform_below(rng, public.n))
    y = uniform_below(rng, 1 << _nonce_bits(public))
    commitment = gmpy2.t_mod((1 + x * n) * _power_of_h(public, y), n2)
    challenge = _challenge(public, binding, ciphertexts, commitment)
    weights = _weights(challenge, count)
    z1 = gmpy2.t_mod(x + sum(mpz(e) * m for e, m in zip(weights, plaintexts, strict=True)), n)
    z2 = y + sum(e * a for e, a in zip(weights, exponents, strict=True))
    return PlaintextProof(challenge, int(z1), z2)


def verify(public: PaillierPublicKey, ciphertexts: Sequence[int], proof: PlaintextProof,
           binding: bytes) -> None:
    """Raise :class:`InvalidPlaintextProof` unless ``proof`` shows, for ``binding``, that
    its maker knows the plaintexts and randomness of every one of ``ciphertexts``."""
    _check_count(len(ciphertexts))
    if not 0 <= proof.challenge < 1 << CHALLENGE_BITS or \
            not 0 <= proof.plaintext_response < public.n or \
            not 0 <= proof.randomizer_response < 1 << (_nonce_bits(public) + 1):
        raise InvalidPlaintextProof("a proof response is out of range")
    try:
        checked = [public.check(c) for c in ciphertexts]
    except CryptoError as exc:
        raise InvalidPlaintextProof("a ciphertext is not a valid group element") from exc
    commitment = _commitment_from(public, checked, _weights(proof.challenge, len(checked)),
                                  proof.plaintext_response, proof.randomizer_response)
    if _challenge(public, binding, checked, commitment) != proof.challenge:
        raise InvalidPlaintextProof("the proof of plaintext knowledge does not verify")
