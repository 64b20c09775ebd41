"""Sealed point-to-point delivery: ChaCha20-Poly1305 under an X25519-derived key.

The key is derived from the static-ephemeral X25519 secret of (sender, recipient) and bound,
with the associated data, to the caller's ``binding`` (protocol version, suite, federation,
query, round, sender and recipient ids). A ciphertext moved to another round, query, sender
or recipient fails to open with :class:`DecryptionFailed`.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crypto.errors import DecryptionFailed, InvalidKey
from crypto.kdf import context, derive_key
from crypto.keyagreement import X25519KeyPair
from crypto.randomness import RandomSource

NONCE_SIZE = 12
TAG_SIZE = 16
SUITE = "x25519-hkdf-sha256-chacha20poly1305"


def _key(shared: bytes, binding: bytes, sender_public: bytes, recipient_public: bytes) -> bytes:
    return derive_key(shared, "seal", SUITE, binding, sender_public, recipient_public)


def seal(sender: X25519KeyPair, recipient_public: bytes, plaintext: bytes, binding: bytes,
         rng: RandomSource) -> bytes:
    """Encrypt ``plaintext`` for ``recipient_public``; returns nonce || ciphertext || tag."""
    key = _key(sender.exchange(recipient_public), binding, sender.public, recipient_public)
    nonce = rng.bytes(NONCE_SIZE)
    associated = context(SUITE, binding)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(recipient: X25519KeyPair, sender_public: bytes, sealed: bytes,
                binding: bytes) -> bytes:
    """Decrypt a sealed message; raises :class:`DecryptionFailed` on any mismatch."""
    if len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionFailed("sealed message too short")
    try:
        shared = recipient.exchange(sender_public)
    except InvalidKey as exc:
        raise DecryptionFailed("sender key is invalid") from exc
    key = _key(shared, binding, sender_public, recipient.public)
    nonce, body = sealed[:NONCE_SIZE], sealed[NONCE_SIZE:]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, context(SUITE, binding))
    except InvalidTag as exc:
        raise DecryptionFailed("sealed message failed authentication") from exc
