"""Mask expansion from a keyed cryptographic PRG: AES-128-CTR keystream (pyca/cryptography).

Never numpy.random, never Mersenne Twister. Each mask key is used for exactly one keystream
(it is derived per ordered pair, per round, per query), so a fixed all-zero counter block is
safe. The expander reuses its buffers: masking runs close to raw keystream speed.
"""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from crypto.encoding import RingVector, add_limbs_, limbs_for, sub_limbs_
from crypto.errors import EncodingError
from crypto.kdf import derive_key

MASK_KEY_SIZE = 16
_BLOCK = 16
_ZERO_IV = bytes(16)


def pairwise_mask_key(shared_secret: bytes, round_digest: bytes, low_id: str, high_id: str) -> bytes:
    """Key of the mask shared by an ordered pair; bound to version, federation, query, round
    and every round parameter through ``round_digest``."""
    return derive_key(shared_secret, "pair-mask", round_digest, low_id, high_id,
                      length=MASK_KEY_SIZE)


def self_mask_key(seed: bytes, round_digest: bytes, owner: str) -> bytes:
    return derive_key(seed, "self-mask", round_digest, owner, length=MASK_KEY_SIZE)


class MaskExpander:
    """Expands mask keys into ring vectors of a fixed shape, reusing its buffers."""

    def __init__(self, bits: int, length: int) -> None:
        self.bits = bits
        self.length = length
        self.n_limbs = limbs_for(bits)
        self._nbytes = self.n_limbs * length * 8
        self._zeros = bytes(self._nbytes)
        self._buffer = bytearray(self._nbytes + _BLOCK - 1)
        self._view = np.frombuffer(self._buffer, dtype="<u8", count=self.n_limbs * length)
        self._view = self._view.reshape(self.n_limbs, length)

    def keystream(self, key: bytes) -> np.ndarray:
        """The mask as a (limbs, length) uint64 view into the shared buffer (not masked to
        the ring width; the caller's ring arithmetic does that). Overwritten by the next call."""
        if len(key) != MASK_KEY_SIZE:
            raise EncodingError("mask keys are 16 bytes")
        encryptor = Cipher(algorithms.AES(key), modes.CTR(_ZERO_IV)).encryptor()
        encryptor.update_into(self._zeros, self._buffer)
        return self._view

    def mask(self, key: bytes) -> RingVector:
        """A fresh ring vector holding the mask of ``key``."""
        return RingVector(self.bits, self.keystream(key).astype(np.uint64, copy=True))

    def add_mask_(self, acc: RingVector, key: bytes) -> None:
        self._check(acc)
        add_limbs_(acc.limbs, self.keystream(key))
        acc._mask_top()

    def sub_mask_(self, acc: RingVector, key: bytes) -> None:
        self._check(acc)
        sub_limbs_(acc.limbs, self.keystream(key))
        acc._mask_top()

    def _check(self, acc: RingVector) -> None:
        if acc.bits != self.bits or acc.length != self.length:
            raise EncodingError("mask shape does not match the vector")
