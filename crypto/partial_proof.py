"""Proofs that a key holder's partial decryptions are correct, verified by whoever combines.

The dealer publishes a base ``v`` and each holder's verification key ``V_i = v^(s_i) mod
n^2``. A holder proves, for a whole vector at once, that its partials ``d_j`` are
``c_j^(s_i)`` with the same ``s_i``:

1. weights ``rho_j`` (128 bits) come from a hash of the ciphertexts and the partials, so
   they are fixed only after the partials are (small-exponent batching, Bellare, Garay and
   Rabin 1998): ``C = prod c_j^rho_j`` and ``D = prod d_j^rho_j``;
2. a Chaum-Pedersen proof over the integers, made non-interactive with Fiat-Shamir, that
   ``log_C D = log_v V_i``: ``r`` uniform with ``2 * 128`` bits more than any share,
   ``a = C^r``, ``b = v^r``, ``e = H(..., a, b)`` (128 bits), ``z = r + e * s_i``.

A holder that changes any partial (for example multiplies one by ``(1+n)^f`` to shift the
total) must then solve for a multiple of the secret group order, i.e. factor ``n``. Errors
made of small-order elements are not excluded by the proof, but they make the combination
differ from ``1 mod n`` and fail there. The response ``z`` hides ``s_i`` statistically
(distance below ``2^-128``). Verification raises :class:`InvalidPartialDecryption`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz

from crypto.errors import CryptoError
from crypto.kdf import context
from crypto.paillier import FixedBase
from crypto.randomness import RandomSource, uniform_below
from crypto.threshold_paillier import KeyShare, ThresholdPublic

WEIGHT_BITS = 128
CHALLENGE_BITS = 128
ZK_BITS = 128


class InvalidPartialDecryption(CryptoError):
    """A partial decryption's proof does not verify: that holder's answer is wrong."""

    #: the holder whose proof failed, when known
    index: int | None = None


@dataclass(frozen=True)
class PartialProof:
    challenge: int
    response: int

    def to_bytes(self, tp: ThresholdPublic) -> bytes:
        return (self.challenge.to_bytes(CHALLENGE_BITS // 8, "big")
                + self.response.to_bytes(response_size(tp), "big"))

    @classmethod
    def from_bytes(cls, tp: ThresholdPublic, raw: bytes) -> PartialProof:
        if len(raw) != proof_size(tp):
            raise InvalidPartialDecryption("a partial decryption proof of the wrong length")
        head = CHALLENGE_BITS // 8
        return cls(int.from_bytes(raw[:head], "big"), int.from_bytes(raw[head:], "big"))


def _nonce_bits(tp: ThresholdPublic) -> int:
    return tp.share_bits + CHALLENGE_BITS + ZK_BITS


def response_size(tp: ThresholdPublic) -> int:
    return (_nonce_bits(tp) + 1 + 7) // 8


def proof_size(tp: ThresholdPublic) -> int:
    return CHALLENGE_BITS // 8 + response_size(tp)


def multi_exp(bases: Sequence[mpz], exponents: Sequence[int], modulus: mpz) -> mpz:
    """``prod bases[j]^exponents[j] mod modulus`` by bucketing windows of the exponents
    (Pippenger): about ``len(bases) + 2^(w+1)`` multiplications per ``w``-bit window."""
    if len(bases) != len(exponents):
        raise CryptoError("as many exponents as bases are needed")
    if len(bases) <= 2:
        result = mpz(1)
        for base, exponent in zip(bases, exponents, strict=True):
            result = gmpy2.t_mod(result * gmpy2.powmod(base, exponent, modulus), modulus)
        return result
    width = max(1, min(10, len(bases).bit_length() - 3))
    mask = (1 << width) - 1
    windows = -(-max(int(e).bit_length() for e in exponents) // width)
    result = mpz(1)
    for window in reversed(range(windows)):
        for _ in range(width if result != 1 else 0):
            result = gmpy2.t_mod(result * result, modulus)
        buckets: list[mpz | None] = [None] * (mask + 1)
        shift = window * width
        for base, exponent in zip(bases, exponents, strict=True):
            digit = (exponent >> shift) & mask
            if digit:
                held = buckets[digit]
                buckets[digit] = base if held is None else gmpy2.t_mod(held * base, modulus)
        running, total = mpz(1), mpz(1)
        for digit in range(mask, 0, -1):
            held = buckets[digit]
            if held is not None:
                running = gmpy2.t_mod(running * held, modulus)
            if running != 1:
                total = gmpy2.t_mod(total * running, modulus)
        result = gmpy2.t_mod(result * total, modulus)
    return result


def _weights(binding: bytes, index: int, ciphertexts: bytes, partials: bytes,
             count: int) -> list[int]:
    seed = context(b"fedtally/v1", "paillier-proof-weights", binding, index,
                   hashlib.sha256(ciphertexts).digest(), hashlib.sha256(partials).digest())
    stream = hashlib.shake_256(seed).digest(count * WEIGHT_BITS // 8)
    size = WEIGHT_BITS // 8
    return [int.from_bytes(stream[i * size:(i + 1) * size], "big") for i in range(count)]


#: a window of 4 bits keeps the table of v near 20 MB at 3072 bits, a quarter of the cost of a
#: plain exponentiation for each v^r and v^z
_TABLE_WINDOW = 4


@functools.lru_cache(maxsize=4)
def _verification_table(base: int, modulus: int, bits: int) -> FixedBase:
    return FixedBase(base, mpz(modulus), bits, _TABLE_WINDOW)


def _power_of_v(tp: ThresholdPublic, exponent: int) -> mpz:
    table = _verification_table(tp.verification_base, int(tp.public.n_square),
                                _nonce_bits(tp) + 1)
    return table.power(exponent)


def _powmod(base: mpz, exponent: mpz, modulus: mpz) -> mpz:
    """One exponentiation that releases the GIL, so proofs verify in parallel threads."""
    return gmpy2.powmod_base_list([base], exponent, modulus)[0]


def _challenge(binding: bytes, index: int, tp: ThresholdPublic, batch_c: mpz, batch_d: mpz,
               a: mpz, b: mpz) -> int:
    digest = hashlib.sha256(context(
        b"fedtally/v1", "paillier-proof-challenge", binding, index, tp.public.n,
        int(tp.verification_base), int(tp.verification_key(index)), int(batch_c),
        int(batch_d), int(a), int(b))).digest()
    return int.from_bytes(digest[:CHALLENGE_BITS // 8], "big")


def _batch(tp: ThresholdPublic, binding: bytes, index: int, ciphertexts: Sequence[mpz],
           partials: Sequence[mpz]) -> tuple[mpz, mpz]:
    public = tp.public
    weights = _weights(binding, index, public.to_bytes(ciphertexts), public.to_bytes(partials),
                       len(ciphertexts))
    return (multi_exp(ciphertexts, weights, public.n_square),
            multi_exp(partials, weights, public.n_square))


def prove(share: KeyShare, ciphertexts: Sequence[mpz], partials: Sequence[mpz],
          binding: bytes, rng: RandomSource) -> PartialProof:
    """Prove ``partials[j] = ciphertexts[j]^s`` for this share, bound to ``binding``."""
    tp = share.threshold_public
    n2 = tp.public.n_square
    batch_c, batch_d = _batch(tp, binding, share.index, ciphertexts, partials)
    nonce = mpz(uniform_below(rng, 1 << _nonce_bits(tp)))
    a = _powmod(batch_c, nonce, n2)
    b = _power_of_v(tp, int(nonce))
    e = _challenge(binding, share.index, tp, batch_c, batch_d, a, b)
    return PartialProof(e, int(nonce + e * mpz(share.value)))


def verify(tp: ThresholdPublic, index: int, ciphertexts: Sequence[int], partials: Sequence[int],
           proof: PartialProof, binding: bytes) -> None:
    """Raise :class:`InvalidPartialDecryption` unless ``proof`` shows that holder
    ``index``'s ``partials`` are the correct ones for ``ciphertexts``."""
    public = tp.public
    if len(ciphertexts) != len(partials) or not ciphertexts:
        raise InvalidPartialDecryption("partials and ciphertexts do not pair up")
    if not 0 <= proof.response < 1 << (_nonce_bits(tp) + 1):
        raise InvalidPartialDecryption("a proof response out of range")
    try:
        checked_c = [public.check(c) for c in ciphertexts]
        checked_d = [public.check(d) for d in partials]
    except CryptoError as exc:
        raise InvalidPartialDecryption("a partial decryption is not a valid group element") \
            from exc
    n2 = public.n_square
    key = tp.verification_key(index)  # first: it checks the index
    batch_c, batch_d = _batch(tp, binding, index, checked_c, checked_d)
    e, z = proof.challenge, mpz(proof.response)
    a = gmpy2.t_mod(_powmod(batch_c, z, n2) * gmpy2.powmod(batch_d, -e, n2), n2)
    b = gmpy2.t_mod(_power_of_v(tp, int(z)) * gmpy2.powmod(key, -e, n2), n2)
    if _challenge(binding, index, tp, batch_c, batch_d, a, b) != e:
        raise InvalidPartialDecryption(f"the partial decryption of holder {index} is not "
                                       "the one its key share gives")


@dataclass(frozen=True)
class Claim:
    """One holder's partial decryptions of ``ciphertexts`` with their proof."""

    index: int
    partials: Sequence[int]
    proof: PartialProof
    binding: bytes


def prepare(tp: ThresholdPublic) -> None:
    """Build the fixed-base table of the verification base now (about 0.3 s at 3072 bits)
    instead of in the first proof or verification."""
    _power_of_v(tp, 0)


def verify_all(tp: ThresholdPublic, ciphertexts: Sequence[int], claims: Sequence[Claim], *,
               workers: int = 1) -> None:
    """:func:`verify` every claim, ``workers`` at a time (the exponentiations release the
    GIL); raises :class:`InvalidPartialDecryption` for the lowest failing holder, with its
    ``index`` set."""
    prepare(tp)

    def check(claim: Claim) -> InvalidPartialDecryption | None:
        try:
            verify(tp, claim.index, ciphertexts, claim.partials, claim.proof, claim.binding)
        except InvalidPartialDecryption as exc:
            exc.index = claim.index
            return exc
        return None

    if workers <= 1 or len(claims) < 2:
        failures = [check(claim) for claim in claims]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            failures = list(pool.map(check, claims))
    for failure in failures:
        if failure is not None:
            raise failure
