"""Paillier public-key operations with g = n + 1 and fast fixed-base randomness (gmpy2).

Encryption is ``c = (1 + m*n) * h_n^a mod n^2`` where ``h_n = h^n mod n^2`` for a fixed
``h = -x^2 mod n`` and ``a`` a short random exponent (Damgard, Jurik and Nielsen 2010,
"A generalization of Paillier's public-key system with applications to electronic voting",
section 4.2, where ``h`` is part of the public key). Here ``x`` is hashed from ``n``, so
every party computes the same ``h_n`` and can check that it is an ``n``-th power (an
encryption of 0): proofs of plaintext knowledge (:mod:`crypto.plaintext_proof`) are made
relative to it. ``h_n^a`` comes from a table of ``h_n^(j * 2^(w*i))``, so one encryption
costs about ``RANDOMIZER_BITS / w`` modular multiplications instead of a full
exponentiation. The security assumption (DCR with short exponents) is stated in
``threat_model.md``.

Ciphertexts cross the wire as fixed-width big-endian integers; every ciphertext we accept
is checked to lie in ``(0, n^2)`` and to be invertible mod ``n^2`` (:class:`InvalidCiphertext`).
Decryption here needs the whole key (tests and phe interop only); the federation decrypts
with :mod:`crypto.threshold_paillier`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import gmpy2
from gmpy2 import mpz

from crypto.errors import CryptoError, InvalidKey
from crypto.kdf import context
from crypto.randomness import RandomSource

DEFAULT_KEY_BITS = 3072
#: the smallest modulus this module accepts; services require DEFAULT_KEY_BITS unless told
MIN_KEY_BITS = 1024
MAX_KEY_BITS = 8192
#: window of the fixed-base table: 2^w entries per row
WINDOW_BITS = 8


class InvalidCiphertext(CryptoError):
    """A ciphertext is out of range, not invertible, malformed or of the wrong length."""


def randomizer_bits(key_bits: int) -> int:
    """Bits of the short exponent ``a``: ceil(k/2) for a k-bit modulus, as DJN 2010 gives."""
    return (key_bits + 1) // 2


@dataclass(frozen=True)
class PaillierPublicKey:
    n: int

    def __post_init__(self) -> None:
        n = self.n
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0 or n % 2 == 0:
            raise InvalidKey("a Paillier modulus is a positive odd integer")
        if not MIN_KEY_BITS <= n.bit_length() <= MAX_KEY_BITS:
            raise InvalidKey(f"a Paillier modulus has {MIN_KEY_BITS} to {MAX_KEY_BITS} bits")
        if gmpy2.is_prime(n) or gmpy2.is_square(n):
            raise InvalidKey("a Paillier modulus is a product of two distinct primes")

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @cached_property
    def n_mpz(self) -> mpz:
        return mpz(self.n)

    @cached_property
    def n_square(self) -> mpz:
        return self.n_mpz * self.n_mpz

    @cached_property
    def randomizer_base(self) -> mpz:
        """``h_n = h^n mod n^2`` with ``h = -x^2 mod n`` and ``x`` hashed from ``n``: nobody
        chose it, and being an ``n``-th power it encrypts 0 (what the proofs of plaintext
        knowledge rely on)."""
        n = self.n_mpz
        width = (self.bits + 7) // 8 + 16  # 128 bits more than n: x mod n is near uniform
        counter = 0
        while True:
            seed = context(b"fedtally/v1", "paillier-randomizer-base", self.n, counter)
            x = gmpy2.t_mod(mpz(int.from_bytes(hashlib.shake_256(seed).digest(width), "big")),
                            n)
            if x > 1 and gmpy2.gcd(x, n) == 1:
                break
            counter += 1  # never in practice: only 0, 1 or a multiple of p or q
        h = gmpy2.t_mod(-x * x, n)
        return gmpy2.powmod(h, n, self.n_square)

    @property
    def plaintext_bits(self) -> int:
        """Bits a packed plaintext may use: every such integer is below n."""
        return self.bits - 1

    @property
    def ciphertext_size(self) -> int:
        return (int(self.n_square).bit_length() + 7) // 8

    # --- ciphertext hygiene -----------------------------------------------------------

    def check(self, c: int) -> mpz:
        """Accept ``c`` only if 0 < c < n^2 and gcd(c, n) = 1; else InvalidCiphertext."""
        value = mpz(c)
        if not 0 < value < self.n_square:
            raise InvalidCiphertext("a ciphertext is out of range")
        if gmpy2.gcd(value, self.n_mpz) != 1:
            raise InvalidCiphertext("a ciphertext is not invertible")
        return value

    def to_bytes(self, ciphertexts: Sequence[int]) -> bytes:
        size = self.ciphertext_size
        return b"".join(int(c).to_bytes(size, "big") for c in ciphertexts)

    def from_bytes(self, raw: bytes, count: int | None = None) -> list[mpz]:
        """Parse and check a run of fixed-width ciphertexts."""
        size = self.ciphertext_size
        if len(raw) % size or (count is not None and len(raw) != count * size):
            raise InvalidCiphertext("ciphertext bytes of the wrong length")
        return [self.check(int.from_bytes(raw[i:i + size], "big"))
                for i in range(0, len(raw), size)]

    # --- homomorphic operations ---------------------------------------------------------

    def add(self, a: int, b: int) -> mpz:
        """Ciphertext of the sum of two plaintexts (mod n)."""
        return gmpy2.t_mod(mpz(a) * mpz(b), self.n_square)

    def combine(self, contributions: Sequence[Sequence[mpz]]) -> list[mpz]:
        """Element-wise product of equally long ciphertext vectors (sums of plaintexts)."""
        if not contributions:
            raise InvalidCiphertext("nothing to combine")
        width = len(contributions[0])
        if any(len(c) != width for c in contributions):
            raise InvalidCiphertext("ciphertext vectors of different lengths")
        n2 = self.n_square
        total = list(contributions[0])
        for vector in contributions[1:]:
            total = [gmpy2.t_mod(x * y, n2) for x, y in zip(total, vector, strict=True)]
        return total

    def encrypt_with(self, m: int, randomizer: int) -> mpz:
        """``(1 + m n) * randomizer mod n^2``: the randomizer must be an n-th power."""
        if not 0 <= m < self.n:
            raise CryptoError("a plaintext lies in [0, n)")
        return gmpy2.t_mod((1 + mpz(m) * self.n_mpz) * randomizer, self.n_square)


class FixedBase:
    """``base^e mod modulus`` for exponents below ``2^exponent_bits`` from a precomputed
    table of ``base^(j * 2^(w*i))``: about ``exponent_bits / w`` multiplications each,
    after ``exponent_bits / w * 2^w`` to build the table once."""

    def __init__(self, base: int, modulus: mpz, exponent_bits: int,
                 window: int = WINDOW_BITS) -> None:
        self.modulus = mpz(modulus)
        self.exponent_bits = exponent_bits
        self.window = window
        rows = max(1, -(-exponent_bits // window))
        current = gmpy2.t_mod(mpz(base), self.modulus)
        table: list[list[mpz]] = []
        for _ in range(rows):
            row = [mpz(1), current]
            for _ in range(2, 1 << window):
                row.append(gmpy2.t_mod(row[-1] * current, self.modulus))
            table.append(row)
            current = gmpy2.t_mod(row[-1] * current, self.modulus)  # base^(2^w), next row
        self.table = table

    def power(self, exponent: int) -> mpz:
        if not 0 <= exponent < 1 << (len(self.table) * self.window):
            raise CryptoError("exponent out of the table's range")
        mask = (1 << self.window) - 1
        result = mpz(1)
        for row in self.table:
            digit = exponent & mask
            if digit:
                result = gmpy2.t_mod(result * row[digit], self.modulus)
            exponent >>= self.window
        return result


@dataclass
class FastEncryptor:
    """Encrypts with randomizers ``h_n^a`` (``h_n``: the key's :attr:`randomizer_base`) from
    a precomputed fixed-base table.

    Building the table costs about ``RANDOMIZER_BITS / w * 2^w`` multiplications (about a
    second at 3072 bits); build one per key and process and reuse it.
    """

    public: PaillierPublicKey
    rng: RandomSource
    exponent_bits: int = 0
    fixed: FixedBase = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.exponent_bits:
            self.exponent_bits = randomizer_bits(self.public.bits)
        self.fixed = FixedBase(self.public.randomizer_base, self.public.n_square,
                               self.exponent_bits)

    def exponent(self) -> int:
        """A fresh uniform randomizer exponent ``a`` of ``exponent_bits`` bits (secret)."""
        a = int.from_bytes(self.rng.bytes((self.exponent_bits + 7) // 8), "little")
        return a & ((1 << self.exponent_bits) - 1)

    def randomizer(self) -> mpz:
        """``h_n^a`` for a fresh uniform ``a`` of ``exponent_bits`` bits."""
        return self.fixed.power(self.exponent())

    def encrypt(self, m: int) -> mpz:
        return self.public.encrypt_with(m, self.randomizer())

    def encrypt_many(self, plaintexts: Iterable[int]) -> list[mpz]:
        return [self.encrypt(m) for m in plaintexts]

    def encrypt_with_exponents(self, plaintexts: Iterable[int]) -> tuple[list[mpz], list[int]]:
        """Ciphertexts and the exponents ``a`` of their randomizers: the witness of a proof
        of plaintext knowledge, as secret as the plaintexts (never sent, never logged)."""
        ciphertexts, exponents = [], []
        for m in plaintexts:
            a = self.exponent()
            ciphertexts.append(self.public.encrypt_with(m, self.fixed.power(a)))
            exponents.append(a)
        return ciphertexts, exponents


# --- whole-key operations (the dealer, tests and interop; never run at a node) -------------


@dataclass(frozen=True)
class PaillierPrivateKey:
    public: PaillierPublicKey
    p: int
    q: int

    def __repr__(self) -> str:
        return f"PaillierPrivateKey(bits={self.public.bits})"

    @cached_property
    def _lambda(self) -> mpz:
        return gmpy2.lcm(mpz(self.p) - 1, mpz(self.q) - 1)

    @cached_property
    def _mu(self) -> mpz:
        return gmpy2.invert(self._lambda, self.public.n_mpz)

    def decrypt(self, c: int) -> int:
        value = self.public.check(c)
        n = self.public.n_mpz
        u = gmpy2.powmod(value, self._lambda, self.public.n_square)
        return int(gmpy2.t_mod(((u - 1) // n) * self._mu, n))


def _prime(bits: int, rng: RandomSource) -> mpz:
    """A random prime of exactly ``bits`` bits with its top two bits set (so p*q has 2*bits)."""
    nbytes = (bits + 7) // 8
    while True:
        candidate = mpz(int.from_bytes(rng.bytes(nbytes), "big") >> (8 * nbytes - bits))
        candidate |= (mpz(3) << (bits - 2)) | 1
        prime = gmpy2.next_prime(candidate)
        if prime.bit_length() == bits and gmpy2.is_prime(prime, 50):
            return prime


def generate_keypair(bits: int, rng: RandomSource) -> PaillierPrivateKey:
    """A fresh key whose modulus has exactly ``bits`` bits (even, >= MIN_KEY_BITS)."""
    if bits % 2 or not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise InvalidKey(f"key size must be even and in [{MIN_KEY_BITS}, {MAX_KEY_BITS}]")
    while True:
        p = _prime(bits // 2, rng)
        q = _prime(bits // 2, rng)
        n = p * q
        # gcd(n, phi) = 1 holds for equal-size distinct primes; checked all the same
        if p != q and n.bit_length() == bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            return PaillierPrivateKey(PaillierPublicKey(int(n)), int(p), int(q))
