"""Shamir secret sharing of 256-bit secrets over GF(p), p = 2**521 - 1 (a Mersenne prime).

Shares are (x, y) with x the holder's 1-based index. Fewer than ``threshold`` shares reveal
nothing about the secret (information-theoretically). :func:`combine` raises
:class:`ShareError` for malformed, duplicated or too few shares; a corrupted share gives a
different secret, which callers detect against a commitment or a public key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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


def combine(shares: Mapping[int, bytes], threshold: int, secret_size: int = 32) -> bytes:
    """Recover the secret from at least ``threshold`` shares (Lagrange interpolation at 0)."""
    if threshold < 1 or len(shares) < threshold:
        raise ShareError(f"need at least {threshold} shares, got {len(shares)}")
    points: list[tuple[int, int]] = []
    for x, raw in shares.items():
        if not 0 < x < PRIME:
            raise ShareError("share coordinate out of range")
        if len(raw) != SHARE_SIZE:
            raise ShareError("share has the wrong length")
        y = int.from_bytes(raw, "big")
        if y >= PRIME:
            raise ShareError("share value out of range")
        points.append((x, y))
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * secret_size):
        raise ShareError("shares do not interpolate to a secret of the expected size")
    return secret.to_bytes(secret_size, "big")
