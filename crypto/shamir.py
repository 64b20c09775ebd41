"""Shamir secret sharing of 256-bit secrets over GF(p), p = 2**521 - 1 (a Mersenne prime).

Shares are (x, y) with x the holder's 1-based index. Fewer than ``threshold`` shares reveal
nothing about the secret (information-theoretically). :func:`combine` raises
:class:`ShareError` for malformed, duplicated or too few shares; a corrupted share gives a
different secret, which callers detect against a commitment or a public key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from crypto.errors import ShareError
from crypto.randomness import RandomSource, uniform_below

PRIME = (1 << 521) - 1
SHARE_SIZE = 66  # bytes for one y coordinate (521 bits)
MAX_SECRET_SIZE = 64


def split(secret: bytes, threshold: int, xs: Iterable[int], rng: RandomSource) -> dict[int, bytes]:
    """Share ``secret`` so that any ``threshold`` of the holders at ``xs`` recover it."""
    holders = list(xs)
    if not 0 < len(secret) <= MAX_SECRET_SIZE:
        raise ShareError(f"secrets are 1 to {MAX_SECRET_SIZE} bytes")
    if len(set(holders)) != len(holders) or any(not 0 < x < PRIME for x in holders):
        raise ShareError("share coordinates must be distinct and in [1, p)")
    if not 1 <= threshold <= len(holders):
        raise ShareError("threshold must be between 1 and the number of holders")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [uniform_below(rng, PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in holders:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y.to_bytes(SHARE_SIZE, "big")
    return shares


def zero_coefficients(xs: Sequence[int]) -> tuple[int, ...]:
    """Lagrange coefficients at 0 for the points ``xs``: the secret is
    ``sum(c_i * y_i) mod p``. Computing them once serves every secret shared at the same
    points (the aggregator rebuilds many secrets from the same holders)."""
    if not xs:
        raise ShareError("need at least one share")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ShareError("share coordinates must be distinct and in [1, p)")
    numerators, denominators = [], []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        numerators.append(numerator)
        denominators.append(denominator)
    # one modular inversion for all denominators (Montgomery's trick)
    prefix = [1]
    for d in denominators:
        prefix.append(prefix[-1] * d % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    inverses = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        inverses[i] = inverse * prefix[i] % PRIME
        inverse = inverse * denominators[i] % PRIME
    return tuple(n * v % PRIME for n, v in zip(numerators, inverses, strict=True))


def combine_with(coefficients: Sequence[int], ys: Sequence[bytes], secret_size: int = 32
                 ) -> bytes:
    """The secret from the shares ``ys`` at the points ``coefficients`` were made for."""
    if len(ys) != len(coefficients):
        raise ShareError("one share per coefficient is needed")
    secret = 0
    for c, raw in zip(coefficients, ys, strict=True):
        if len(raw) != SHARE_SIZE:
            raise ShareError("share has the wrong length")
        y = int.from_bytes(raw, "big")
        if y >= PRIME:
            raise ShareError("share value out of range")
        secret += c * y
    secret %= PRIME
    if secret >= 1 << (8 * secret_size):
        raise ShareError("shares do not interpolate to a secret of the expected size")
    return secret.to_bytes(secret_size, "big")


def combine(shares: Mapping[int, bytes], threshold: int, secret_size: int = 32) -> bytes:
    """Recover the secret from at least ``threshold`` shares (Lagrange interpolation at 0
    through all of them)."""
    if threshold < 1 or len(shares) < threshold:
        raise ShareError(f"need at least {threshold} shares, got {len(shares)}")
    xs = list(shares)
    return combine_with(zero_coefficients(xs), [shares[x] for x in xs], secret_size)
