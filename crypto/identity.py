"""Ed25519 identities (pynacl). ``verify`` raises :class:`InvalidSignature`; it has no bool form."""

from __future__ import annotations

from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from crypto.errors import InvalidKey, InvalidSignature
from crypto.randomness import RandomSource

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != PUBLIC_KEY_SIZE:
            raise InvalidKey("an Ed25519 public key is 32 bytes")

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` signs ``message``."""
        if not isinstance(message, bytes) or not isinstance(signature, bytes):
            raise TypeError("message and signature must be bytes")  # our bug, not a peer's
        if len(signature) != SIGNATURE_SIZE:
            raise InvalidSignature("an Ed25519 signature is 64 bytes")
        try:
            nacl.signing.VerifyKey(self.raw).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                nacl.exceptions.RuntimeError) as exc:
            raise InvalidSignature("signature does not verify") from exc

    def hex(self) -> str:
        return self.raw.hex()

    @classmethod
    def from_hex(cls, text: str) -> VerifyKey:
        try:
            return cls(bytes.fromhex(text))
        except ValueError as exc:
            raise InvalidKey("public key is not valid hex") from exc


class SigningIdentity:
    """An Ed25519 signing key. ``repr`` never shows the secret."""

    __slots__ = ("_key", "verify_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_SIZE:
            raise InvalidKey("an Ed25519 seed is 32 bytes")
        self._key = nacl.signing.SigningKey(seed)
        self.verify_key = VerifyKey(bytes(self._key.verify_key))

    @classmethod
    def generate(cls, rng: RandomSource) -> SigningIdentity:
        return cls(rng.bytes(SEED_SIZE))

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message).signature

    def seed(self) -> bytes:
        """The secret seed, for writing the key file. Handle with care."""
        return bytes(self._key)

    def __repr__(self) -> str:
        return f"SigningIdentity(public={self.verify_key.hex()[:16]}...)"
