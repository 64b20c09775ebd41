"""X25519 key agreement (pynacl/libsodium).

Low-order public keys give an all-zero shared secret; libsodium refuses those and so do we
(:class:`InvalidKey`). That is our decision for Wycheproof's ``acceptable`` low-order cases.
"""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions

from crypto.errors import InvalidKey
from crypto.randomness import RandomSource

KEY_SIZE = 32


class X25519KeyPair:
    __slots__ = ("_secret", "public")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_SIZE:
            raise InvalidKey("an X25519 secret key is 32 bytes")
        self._secret = secret
        self.public = nacl.bindings.crypto_scalarmult_base(secret)

    @classmethod
    def generate(cls, rng: RandomSource) -> X25519KeyPair:
        return cls(rng.bytes(KEY_SIZE))

    def secret_bytes(self) -> bytes:
        """The secret scalar (Shamir-shared in the protocol). Handle with care."""
        return self._secret

    def exchange(self, peer_public: bytes) -> bytes:
        return x25519(self._secret, peer_public)

    def __repr__(self) -> str:
        return f"X25519KeyPair(public={self.public.hex()[:16]}...)"


def x25519(secret: bytes, peer_public: bytes) -> bytes:
    """Shared secret; raises :class:`InvalidKey` for malformed or low-order peer keys."""
    if len(secret) != KEY_SIZE or len(peer_public) != KEY_SIZE:
        raise InvalidKey("X25519 keys are 32 bytes")
    try:
        shared = nacl.bindings.crypto_scalarmult(secret, peer_public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError) as exc:
        raise InvalidKey("X25519 peer key is of low order") from exc
    if shared == bytes(KEY_SIZE):  # belt and braces: libsodium already refuses this
        raise InvalidKey("X25519 peer key is of low order")
    return shared


def public_from_secret(secret: bytes) -> bytes:
    if len(secret) != KEY_SIZE:
        raise InvalidKey("an X25519 secret key is 32 bytes")
    return nacl.bindings.crypto_scalarmult_base(secret)
