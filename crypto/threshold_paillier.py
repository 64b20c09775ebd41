"""Threshold Paillier decryption: t of N key holders together decrypt; t - 1 learn nothing.

A dealer (``fedtally federation init``, once) makes a key, computes the decryption exponent
``d`` with ``d = 0 mod lambda`` and ``d = 1 mod n``, shares ``Delta * d`` (``Delta = N!``)
with a random polynomial *over the integers* whose coefficients are drawn from a range
``2^STATISTICAL_BITS`` times wider than any shift a secret change needs (Rabin 1998;
Damgard and Thorbek 2006), and forgets ``p``, ``q`` and ``d``. Safe primes are not needed:
nothing is ever reduced modulo the secret group order.

Holder ``i`` answers a ciphertext ``c`` with ``c^(s_i) mod n^2``. Any ``t`` answers combine
with the integer coefficients ``Delta * lagrange_i(0)``:
``prod c_i^(Delta*l_i) = c^(Delta^2 d) = 1 + m*Delta^2*n mod n^2``, so
``m = L(.) * Delta^-2 mod n``. A result that is not ``1 mod n`` (a wrong partial, too few
holders) raises :class:`CombineFailed`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property

import gmpy2
from gmpy2 import mpz

from crypto.errors import CryptoError, ShareError
from crypto.paillier import PaillierPrivateKey, PaillierPublicKey, generate_keypair
from crypto.randomness import RandomSource, uniform_below

#: statistical distance of t - 1 shares from independent of the key: (t-1) * 2^-STATISTICAL_BITS
STATISTICAL_BITS = 128
MAX_HOLDERS = 1024


class CombineFailed(CryptoError):
    """Partial decryptions do not combine to a valid plaintext (wrong, tampered or too few)."""


@dataclass(frozen=True)
class ThresholdPublic:
    """What everyone may know: the public key, the threshold, the number of holders, and
    the base and per-holder keys that partial decryptions are verified against
    (:mod:`crypto.partial_proof`; a key without them can combine but not verify)."""

    public: PaillierPublicKey
    threshold: int
    holders: int
    verification_base: int = 0
    verification_keys: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.holders <= MAX_HOLDERS:
            raise ShareError(f"1 to {MAX_HOLDERS} key holders")
        if not 1 <= self.threshold <= self.holders:
            raise ShareError("the decryption threshold lies in [1, holders]")
        if self.verification_keys or self.verification_base:
            if len(self.verification_keys) != self.holders:
                raise ShareError("one verification key per holder is required")
            try:
                for value in (self.verification_base, *self.verification_keys):
                    self.public.check(value)
            except CryptoError:
                raise ShareError("a verification key is not a unit mod n^2") from None
            if self.verification_base in (1, int(self.public.n_square) - 1):
                raise ShareError("the verification base must not be 1 or -1")

    def verification_key(self, index: int) -> int:
        if not self.verification_keys:
            raise ShareError("this key has no verification keys: partial decryptions "
                             "cannot be verified")
        if not 1 <= index <= self.holders:
            raise ShareError(f"holder index {index} is out of range")
        return self.verification_keys[index - 1]

    @cached_property
    def share_bits(self) -> int:
        """An upper bound on the bit length of any holder's share (public)."""
        width = _coefficient_range(self.public, self.holders, self.threshold)
        bound = self.delta * self.public.n ** 2 + width * self.holders ** self.threshold
        return bound.bit_length()

    @cached_property
    def delta(self) -> int:
        return math.factorial(self.holders)

    @cached_property
    def _delta_square_inverse(self) -> mpz:
        return gmpy2.invert(mpz(self.delta) ** 2, self.public.n_mpz)

    def coefficients(self, indices: Sequence[int]) -> dict[int, int]:
        """``Delta * lagrange_i(0)`` over ``indices`` (integers, since Delta = N!)."""
        if len(set(indices)) != len(indices) or not indices:
            raise ShareError("partial decryptions from distinct holders are needed")
        for i in indices:
            if not 1 <= i <= self.holders:
                raise ShareError(f"holder index {i} is out of range")
        out: dict[int, int] = {}
        for i in indices:
            value = Fraction(self.delta)
            for j in indices:
                if j != i:
                    value *= Fraction(j, j - i)
            if value.denominator != 1:  # cannot happen for distinct indices in [1, N]
                raise ShareError("Lagrange coefficient is not integral")
            out[i] = int(value)
        return out

    def combine(self, partials: Mapping[int, Sequence[int]]) -> list[int]:
        """Plaintexts from the partial decryptions of ``threshold`` or more holders.

        Uses the ``threshold`` lowest indices; with more than that, a second disjoint-enough
        subset is combined as well and any disagreement raises (a wrong partial shows).
        """
        if len(partials) < self.threshold:
            raise ShareError(f"{len(partials)} partial decryption(s); {self.threshold} needed")
        indices = sorted(partials)
        lengths = {len(partials[i]) for i in indices}
        if len(lengths) != 1:
            raise CombineFailed("partial decryptions of different lengths")
        checked = {i: [self.public.check(value) for value in partials[i]] for i in indices}
        first = self._combine_subset({i: checked[i] for i in indices[:self.threshold]})
        if len(indices) > self.threshold:
            second = self._combine_subset({i: checked[i] for i in indices[-self.threshold:]})
            if second != first:
                raise CombineFailed("two subsets of the partial decryptions disagree")
        return first

    def _combine_subset(self, partials: Mapping[int, Sequence[mpz]]) -> list[int]:
        """Combine range-checked partials (a negative coefficient inverts, which every
        checked unit allows)."""
        n, n2 = self.public.n_mpz, self.public.n_square
        coefficients = self.coefficients(list(partials))
        count = len(next(iter(partials.values())))
        products = [mpz(1)] * count
        for i, values in partials.items():
            k = coefficients[i]
            for position, value in enumerate(values):
                term = gmpy2.powmod(value, k, n2)
                products[position] = gmpy2.t_mod(products[position] * term, n2)
        out = []
        for u in products:
            if gmpy2.t_mod(u, n) != 1:
                raise CombineFailed("the partial decryptions do not combine to a plaintext")
            out.append(int(gmpy2.t_mod(((u - 1) // n) * self._delta_square_inverse, n)))
        return out


@dataclass(frozen=True)
class KeyShare:
    """One holder's share of the decryption key. Secret: kept in a 0600 file."""

    index: int
    value: int
    threshold_public: ThresholdPublic

    def __repr__(self) -> str:
        return f"KeyShare(index={self.index})"

    def partial_decrypt(self, ciphertexts: Sequence[int], *, workers: int = 1) -> list[mpz]:
        """``c^s mod n^2`` for each (range-checked) ciphertext. gmpy2 releases the GIL in
        ``powmod_base_list``, so ``workers`` threads use that many cores."""
        public = self.threshold_public.public
        checked = [public.check(c) for c in ciphertexts]
        exponent = mpz(self.value)
        if workers <= 1 or len(checked) < 2:
            return list(gmpy2.powmod_base_list(checked, exponent, public.n_square))
        size = -(-len(checked) // workers)
        chunks = [checked[i:i + size] for i in range(0, len(checked), size)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            parts = pool.map(lambda chunk: gmpy2.powmod_base_list(chunk, exponent,
                                                                   public.n_square), chunks)
            return [value for part in parts for value in part]


def _coefficient_range(public: PaillierPublicKey, holders: int, threshold: int) -> int:
    """Width of the uniform range of each polynomial coefficient: 2^kappa times the largest
    coefficient of the polynomial that moves t - 1 shares from one secret to another."""
    shift = math.factorial(holders) * public.n ** 2 * (holders + 1) ** max(threshold - 1, 0)
    return shift << STATISTICAL_BITS


def deal(key: PaillierPrivateKey, holders: int, threshold: int,
         rng: RandomSource) -> tuple[ThresholdPublic, list[KeyShare]]:
    """Split ``key`` into ``holders`` shares, any ``threshold`` of which decrypt, with a
    public verification base ``v`` (a random square) and keys ``v^(s_i)``."""
    unchecked = ThresholdPublic(key.public, threshold, holders)
    n = mpz(key.public.n)
    lam = gmpy2.lcm(mpz(key.p) - 1, mpz(key.q) - 1)
    d = lam * gmpy2.invert(lam, n)  # 0 mod lambda, 1 mod n
    secret = int(d) * unchecked.delta
    width = _coefficient_range(key.public, holders, threshold)
    coefficients = [secret] + [uniform_below(rng, width) for _ in range(threshold - 1)]
    values = []
    for index in range(1, holders + 1):
        value = 0
        for coefficient in reversed(coefficients):
            value = value * index + coefficient
        values.append(value)
    n2 = key.public.n_square
    while True:
        x = mpz(uniform_below(rng, int(n2) - 2) + 2)
        if gmpy2.gcd(x, n) == 1:
            break
    base = gmpy2.t_mod(x * x, n2)
    tp = ThresholdPublic(key.public, threshold, holders, int(base),
                         tuple(int(gmpy2.powmod(base, value, n2)) for value in values))
    return tp, [KeyShare(index, value, tp) for index, value in enumerate(values, start=1)]


def deal_new(bits: int, holders: int, threshold: int,
             rng: RandomSource) -> tuple[ThresholdPublic, list[KeyShare]]:
    """Generate a key and share it; the whole key goes out of scope on return."""
    return deal(generate_keypair(bits, rng), holders, threshold, rng)
