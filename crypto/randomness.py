"""Randomness as a parameter (as VDAF's ``shard(..., rand)``).

Production code uses :class:`SystemRandom` (the OS CSPRNG). Tests and known-answer vectors
inject :class:`SeededRandom`, a deterministic AES-256-CTR stream keyed by SHA-256 of a seed,
so a whole protocol run is reproducible byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Protocol

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class RandomSource(Protocol):
    def bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""
        ...


class SystemRandom:
    """The operating system's CSPRNG."""

    def bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def below(self, bound: int) -> int:
        return secrets.randbelow(bound)


class SeededRandom:
    """Deterministic CSPRNG for tests: never use it for real secrets."""

    def __init__(self, seed: int | bytes | str) -> None:
        # the seed's type is tagged so that 65, "A" and b"A" give different streams
        if isinstance(seed, int):
            seed = b"i" + seed.to_bytes((seed.bit_length() + 8) // 8 or 1, "big", signed=True)
        elif isinstance(seed, str):
            seed = b"s" + seed.encode()
        else:
            seed = b"b" + bytes(seed)
        key = hashlib.sha256(b"fedtally/v1/seeded-random" + seed).digest()
        self._stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def bytes(self, n: int) -> bytes:
        return self._stream.update(bytes(n))

    def below(self, bound: int) -> int:
        return uniform_below(self, bound)

    def child(self, label: str) -> SeededRandom:
        """An independent stream, e.g. one per simulated party."""
        return SeededRandom(self.bytes(32) + label.encode())


def uniform_below(rng: RandomSource, bound: int) -> int:
    """Uniform integer in [0, bound) by rejection sampling (no modulo bias)."""
    if bound <= 0:
        raise ValueError("bound must be positive")
    nbytes = (bound.bit_length() + 7) // 8 + 8
    limit = (256**nbytes // bound) * bound
    while True:
        x = int.from_bytes(rng.bytes(nbytes), "big")
        if x < limit:
            return x % bound
