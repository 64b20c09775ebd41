"""Errors of the crypto package. Verification raises one of these; it never returns False."""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every crypto failure. Messages never contain key material."""


class InvalidSignature(CryptoError):
    """An Ed25519 signature did not verify under the expected key and message."""


class InvalidKey(CryptoError):
    """A public or private key is malformed, of the wrong length, or of low order."""


class DecryptionFailed(CryptoError):
    """An AEAD ciphertext failed authentication (tampered, wrong key, wrong binding)."""


class ShareError(CryptoError):
    """Shamir shares are malformed, duplicated or fewer than the threshold."""


class EncodingError(CryptoError):
    """A value cannot be encoded into the requested fixed-point ring without loss."""


class RingOverflowError(EncodingError):
    """Declared bounds, row counts, node count and noise tail could wrap any allowed ring."""
