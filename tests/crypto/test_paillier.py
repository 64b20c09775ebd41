"""Paillier keys, fast fixed-base encryption, ciphertext hygiene and interop with the
reference library ``phe`` (crypto/paillier.py)."""

from __future__ import annotations

import functools

import gmpy2
import phe
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

import support
from crypto.errors import CryptoError, InvalidKey
from crypto.packing import Packing
from crypto.paillier import (
    DEFAULT_KEY_BITS,
    MAX_KEY_BITS,
    MIN_KEY_BITS,
    WINDOW_BITS,
    FastEncryptor,
    InvalidCiphertext,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
    randomizer_bits,
)
from crypto.randomness import SeededRandom
from crypto.threshold_paillier import deal

KEY_BITS = 1024
EXAMPLES = settings(max_examples=100 if support.IN_CI else 30, deadline=None)


@functools.cache
def key() -> PaillierPrivateKey:
    return generate_keypair(KEY_BITS, SeededRandom("test_paillier/key"))


@functools.cache
def encryptor() -> FastEncryptor:
    return FastEncryptor(key().public, SeededRandom("test_paillier/encryptor"))


def carmichael(k: PaillierPrivateKey) -> mpz:
    return gmpy2.lcm(mpz(k.p) - 1, mpz(k.q) - 1)


def phe_keys(k: PaillierPrivateKey) -> tuple[phe.PaillierPublicKey, phe.PaillierPrivateKey]:
    pub = phe.PaillierPublicKey(k.public.n)
    return pub, phe.PaillierPrivateKey(pub, k.p, k.q)


class Scripted:
    """A RandomSource that hands out the bytes it is given (then zeros)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def bytes(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out + bytes(n - len(out))


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [MIN_KEY_BITS, 1026, 1030, 1536, 2048])
def test_generate_keypair_has_exactly_the_requested_size(bits: int) -> None:
    k = generate_keypair(bits, SeededRandom(f"keygen/{bits}"))
    n = k.public.n
    assert n.bit_length() == bits == k.public.bits
    assert k.p * k.q == n and k.p != k.q
    assert k.p.bit_length() == k.q.bit_length() == bits // 2
    assert gmpy2.is_prime(k.p) and gmpy2.is_prime(k.q)
    assert gmpy2.gcd(n, (k.p - 1) * (k.q - 1)) == 1
    assert k.public.plaintext_bits == bits - 1
    assert 1 << k.public.plaintext_bits <= n  # every packed plaintext is below n
    assert k.public.ciphertext_size == (2 * bits + 7) // 8


@pytest.mark.parametrize("bits", [0, 2, 512, MIN_KEY_BITS - 2, MIN_KEY_BITS - 1,
                                  MIN_KEY_BITS + 1, 3071, MAX_KEY_BITS + 2, -1024])
def test_generate_keypair_refuses_odd_and_out_of_range_sizes(bits: int) -> None:
    with pytest.raises(InvalidKey):
        generate_keypair(bits, SeededRandom("refuse"))


def test_keygen_is_deterministic_under_a_seeded_source() -> None:
    a = generate_keypair(KEY_BITS, SeededRandom("same seed"))
    b = generate_keypair(KEY_BITS, SeededRandom("same seed"))
    c = generate_keypair(KEY_BITS, SeededRandom("other seed"))
    assert a.public.n == b.public.n and (a.p, a.q) == (b.p, b.q)
    assert c.public.n != a.public.n
    assert a.public == b.public and hash(a.public) == hash(b.public)


def test_public_key_refuses_moduli_that_are_not_rsa_moduli() -> None:
    k = key()
    p = mpz(k.p)
    odd_big_prime = int(gmpy2.next_prime(mpz(1) << (KEY_BITS - 1)))
    small = int(gmpy2.next_prime(1 << 500) * gmpy2.next_prime(1 << 510))  # 1011 bits
    huge = (1 << MAX_KEY_BITS + 8) + 1  # odd, composite (257 divides it), too long
    for bad in (k.public.n + 1, 2 * k.public.n, odd_big_prime, int(p * p), small, huge,
                0, -k.public.n, 1, 15):
        with pytest.raises(InvalidKey):
            PaillierPublicKey(bad)
    for bad in (True, float(k.public.n), str(k.public.n), None):
        with pytest.raises(InvalidKey):
            PaillierPublicKey(bad)  # type: ignore[arg-type]
    assert PaillierPublicKey(k.public.n).n == k.public.n


def test_private_key_repr_does_not_leak_the_factors() -> None:
    k = key()
    for text in (repr(k), str(k), f"{k}"):
        assert str(k.p) not in text and str(k.q) not in text
        assert hex(k.p)[2:] not in text and hex(k.q)[2:] not in text
        assert str(carmichael(k)) not in text
    assert repr(k) == f"PaillierPrivateKey(bits={KEY_BITS})"


def test_randomizer_bits_is_half_the_modulus() -> None:
    assert randomizer_bits(1024) == 512
    assert randomizer_bits(1025) == 513
    assert randomizer_bits(DEFAULT_KEY_BITS) == DEFAULT_KEY_BITS // 2
    assert encryptor().exponent_bits == 512


# --- encryption and decryption ------------------------------------------------------------


@EXAMPLES
@given(m=st.one_of(st.sampled_from([0, 1, 2, -1]), st.integers(0, 2**1100)))
def test_encrypt_then_decrypt(m: int) -> None:
    k = key()
    m %= k.public.n
    c = encryptor().encrypt(m)
    assert 0 < c < k.public.n_square
    assert k.decrypt(c) == m


def test_encrypt_with_refuses_plaintexts_outside_zero_to_n() -> None:
    public = key().public
    for bad in (-1, public.n, public.n + 5, -public.n):
        with pytest.raises(CryptoError):
            public.encrypt_with(bad, 1)
    with pytest.raises(CryptoError):
        encryptor().encrypt(public.n)


def test_randomizer_is_an_n_th_power() -> None:
    k = key()
    n, n2, lam = k.public.n_mpz, k.public.n_square, carmichael(k)
    enc = encryptor()
    for _ in range(5):
        c = enc.encrypt(0)
        assert c != 1
        # every n-th power r^n has order dividing lambda in Z*_{n^2}; so does c
        assert gmpy2.powmod(c, lam, n2) == 1
        assert gmpy2.powmod(enc.randomizer(), lam, n2) == 1
    # a ciphertext of a non-zero plaintext is not an n-th power: (1+n)^lambda = 1 + lambda n
    assert gmpy2.powmod(enc.encrypt(1), lam, n2) == (1 + lam * n) % n2
    # c^lambda = 1 + m lambda n for an encryption of m
    m = 123456789
    assert gmpy2.powmod(enc.encrypt(m), lam, n2) == (1 + m * lam * n) % n2


def test_two_encryptions_of_the_same_plaintext_differ() -> None:
    enc = encryptor()
    for m in (0, 1, 2**1000):
        seen = {enc.encrypt(m) for _ in range(20)}
        assert len(seen) == 20
        assert {key().decrypt(c) for c in seen} == {m}


@pytest.mark.parametrize("exponent_bits", [0, 1, 8, 13, 64])
def test_fixed_base_table_computes_base_to_the_exponent(exponent_bits: int) -> None:
    """The windowed table gives exactly h_n^a for the a drawn from the random source."""
    public = key().public
    enc = FastEncryptor(public, SeededRandom(f"table/{exponent_bits}"), exponent_bits)
    bits = enc.exponent_bits
    assert bits == (exponent_bits or randomizer_bits(KEY_BITS))
    assert len(enc.fixed.table) == -(-bits // WINDOW_BITS)
    base = enc.fixed.table[0][1]
    assert gmpy2.powmod(base, carmichael(key()), public.n_square) == 1  # an n-th power
    nbytes = (bits + 7) // 8
    for raw in (bytes(nbytes), b"\xff" * nbytes, SeededRandom(bits).bytes(nbytes),
                b"\x01" + bytes(nbytes - 1), bytes(nbytes - 1) + b"\x80"):
        a = int.from_bytes(raw, "little") & ((1 << bits) - 1)
        enc.rng = Scripted(raw)
        assert enc.randomizer() == gmpy2.powmod(base, a, public.n_square)


def test_fast_encryptor_is_deterministic_under_a_seeded_source() -> None:
    public = key().public
    a = FastEncryptor(public, SeededRandom("enc"), 64)
    b = FastEncryptor(public, SeededRandom("enc"), 64)
    assert a.encrypt_many(range(5)) == b.encrypt_many(range(5))
    assert "_table" not in repr(a)


# --- ciphertext hygiene ------------------------------------------------------------------


def bad_ciphertexts(k: PaillierPrivateKey) -> list[int]:
    n2 = k.public.n_square
    return [0, -1, -5, int(n2), int(n2) + 1, 2 * int(n2), k.p, k.q, k.public.n, 7 * k.p,
            int(n2) - k.q, k.p * k.q * 3]


def test_check_accepts_units_below_n_squared_and_refuses_the_rest() -> None:
    k = key()
    n2 = k.public.n_square
    for good in (1, 2, int(n2) - 1, int(encryptor().encrypt(5))):
        assert k.public.check(good) == good
        assert isinstance(k.public.check(good), type(mpz(0)))
    for bad in bad_ciphertexts(k):
        with pytest.raises(InvalidCiphertext):
            k.public.check(bad)
    assert issubclass(InvalidCiphertext, CryptoError)


def test_ciphertext_bytes_round_trip_and_refuse_bad_input() -> None:
    k = key()
    public, size = k.public, k.public.ciphertext_size
    assert size == 256
    cs = encryptor().encrypt_many([0, 1, 2**900]) + [mpz(1), public.n_square - 1]
    raw = public.to_bytes(cs)
    assert len(raw) == size * len(cs)
    assert public.from_bytes(raw) == cs
    assert public.from_bytes(raw, count=len(cs)) == cs
    assert public.from_bytes(b"") == [] and public.from_bytes(b"", count=0) == []
    for wrong in (raw[:-1], raw + b"\x00", raw[1:], b"\x00" * (size - 1)):
        with pytest.raises(InvalidCiphertext, match="length"):
            public.from_bytes(wrong)
    for count in (0, len(cs) - 1, len(cs) + 1):
        with pytest.raises(InvalidCiphertext, match="length"):
            public.from_bytes(raw, count=count)
    for bad in bad_ciphertexts(k):
        if 0 <= bad < 1 << (8 * size):
            wire = raw[:size] + bad.to_bytes(size, "big") + raw[size:]
            with pytest.raises(InvalidCiphertext):
                public.from_bytes(wire)
    with pytest.raises(InvalidCiphertext):
        public.from_bytes(b"\xff" * size)  # above n^2


def test_homomorphic_add_and_combine() -> None:
    k = key()
    public, enc, n = k.public, encryptor(), k.public.n
    assert k.decrypt(public.add(enc.encrypt(40), enc.encrypt(2))) == 42
    assert k.decrypt(public.add(enc.encrypt(n - 1), enc.encrypt(3))) == 2  # sums are mod n
    vectors = [[i * 1000 + j for j in range(7)] for i in range(4)]
    combined = public.combine([enc.encrypt_many(v) for v in vectors])
    assert [k.decrypt(c) for c in combined] == [sum(col) for col in zip(*vectors, strict=True)]
    assert [k.decrypt(c) for c in public.combine([enc.encrypt_many([5, 6])])] == [5, 6]
    assert public.combine([[], []]) == []
    with pytest.raises(InvalidCiphertext):
        public.combine([])
    with pytest.raises(InvalidCiphertext):
        public.combine([enc.encrypt_many([1, 2]), enc.encrypt_many([1])])


# --- interop with phe (python-paillier) -------------------------------------------------


def test_phe_uses_the_same_g_and_the_same_encryption_function() -> None:
    k = key()
    pub, _ = phe_keys(k)
    n, n2 = k.public.n_mpz, k.public.n_square
    assert pub.g == k.public.n + 1 and pub.nsquare == k.public.n_square
    for m in (0, 1, 12345, k.public.n - 1, 2**1000 + 7):
        assert pub.raw_encrypt(m, r_value=1) == k.public.encrypt_with(m, 1)
        r = 0xC0FFEE + m % 1000
        assert pub.raw_encrypt(m, r_value=r) == k.public.encrypt_with(m, gmpy2.powmod(r, n, n2))


def test_our_ciphertexts_decrypt_with_phe() -> None:
    k = key()
    pub, priv = phe_keys(k)
    enc = encryptor()
    for m in (0, 1, 2**31 - 1, 10**100, pub.max_int):
        c = enc.encrypt(m)
        assert priv.decrypt(phe.EncryptedNumber(pub, int(c))) == m
        assert priv.raw_decrypt(int(c)) == m
    # a packed plaintext is above n/3 (phe's decoding range), so it goes through raw_decrypt
    packing = Packing(32, 3, k.public.plaintext_bits)
    values = [-(2**31), 2**31 - 1, 0, -1, 7] * 6
    (m,) = packing.pack(values)
    assert priv.raw_decrypt(int(enc.encrypt(m))) == m
    assert packing.unpack([priv.raw_decrypt(int(enc.encrypt(m)))], len(values), 1) == values


def test_phe_ciphertexts_add_into_ours_and_threshold_decrypt_to_the_sum() -> None:
    k = key()
    pub, priv = phe_keys(k)
    tp, shares = deal(k, holders=3, threshold=2, rng=SeededRandom("phe/deal"))
    packing = Packing(32, 3, k.public.plaintext_bits)
    values = list(range(-14, 14))
    (ours,) = encryptor().encrypt_many(packing.pack(values))
    for extra in (0, 1, 2**31 - 1, -5):
        theirs = pub.encrypt(extra).ciphertext(be_secure=True)
        assert isinstance(theirs, int)
        k.public.check(theirs)  # phe ciphertexts pass our hygiene checks
        total = k.public.add(ours, theirs)
        expected = (packing.pack(values)[0] + extra) % k.public.n
        assert k.decrypt(total) == expected == priv.raw_decrypt(int(total))
        partials = {s.index: s.partial_decrypt([total]) for s in shares[1:]}
        assert tp.combine(partials) == [expected]
        # the addend lands in the first slot (a negative one borrows from no other slot here)
        assert packing.unpack([expected], len(values), 1) == [values[0] + extra] + values[1:]


@EXAMPLES
@given(seed=st.integers(0, 2**64))
def test_decryption_of_any_unit_agrees_with_phe(seed: int) -> None:
    """Z*_{n^2} is (1+n)^m r^n for unique m: every unit decrypts, and both agree on it."""
    k = key()
    _, priv = phe_keys(k)
    c = SeededRandom(seed).below(int(k.public.n_square) - 1) + 1
    if gmpy2.gcd(c, k.public.n) != 1:
        return
    assert k.decrypt(c) == priv.raw_decrypt(c)


@pytest.mark.slow
def test_default_size_key_encrypts_and_phe_decrypts() -> None:
    """The one 3072-bit check here: table, encryption and decryption at the service size."""
    k = generate_keypair(DEFAULT_KEY_BITS, SeededRandom("test_paillier/3072"))
    assert k.public.bits == DEFAULT_KEY_BITS and k.public.ciphertext_size == 768
    enc = FastEncryptor(k.public, SeededRandom("test_paillier/3072/enc"))
    assert enc.exponent_bits == DEFAULT_KEY_BITS // 2
    assert len(enc.fixed.table) == DEFAULT_KEY_BITS // 2 // WINDOW_BITS
    pub, priv = phe_keys(k)
    m = (1 << k.public.plaintext_bits) - 1
    c = enc.encrypt(m)
    assert gmpy2.powmod(enc.encrypt(0), carmichael(k), k.public.n_square) == 1
    assert priv.raw_decrypt(int(c)) == m == k.decrypt(c)
