"""HKDF-SHA256 with labelled, length-prefixed context (no ambiguous concatenation)."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PROTOCOL_LABEL = b"fedtally/v1"


def context(*parts: bytes | str | int) -> bytes:
    """Unambiguous encoding of a tuple of parts: each is type-tagged and length-prefixed."""
    out = bytearray()
    for part in parts:
        if isinstance(part, bool):
            raise TypeError("bool is not a context part")
        if isinstance(part, int):
            if part < 0:
                raise ValueError("context integers are non-negative")
            raw = part.to_bytes(max(1, (part.bit_length() + 7) // 8), "big")
            tag = b"i"
        elif isinstance(part, str):
            raw, tag = part.encode(), b"s"
        elif isinstance(part, bytes | bytearray):
            raw, tag = bytes(part), b"b"
        else:
            raise TypeError(f"unsupported context part {type(part).__name__}")
        out += tag + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def derive_key(ikm: bytes, purpose: str, *binding: bytes | str | int, salt: bytes | None = None,
               length: int = 32) -> bytes:
    """Derive a key for ``purpose`` bound to ``binding`` (protocol label always included)."""
    info = context(PROTOCOL_LABEL, purpose, *binding)
    return hkdf_sha256(ikm, salt=salt, info=info, length=length)
