"""Ledger entries: fields, canonical encoding, hash chain and signatures.

An entry's hash is ``SHA-256(ENTRY_DOMAIN || prev_hash || field_1 || ... || field_n)`` with
the fields in the fixed order of :data:`FIELDS`, each encoded as a one-byte type tag
(``i`` = signed 64-bit big-endian integer, ``s`` = UTF-8 text), a 4-byte big-endian length
and the bytes. The encoding is injective (tags and lengths), needs no JSON canonicalisation,
and an auditor can re-implement it in a few lines. The node signs
``SIG_DOMAIN || hash`` with Ed25519; the single head row signs ``HEAD_DOMAIN || seq || hash``
of the newest entry so that deleting entries at the end is detected as well.
The first entry (seq 0) is a ``genesis`` entry naming the node's public key, so a ledger
emptied or replaced by an attacker without the key never verifies.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, fields
from typing import Protocol

FORMAT = "fedtally-ledger-v1"
ENTRY_DOMAIN = FORMAT.encode() + b"/entry\x00"
SIG_DOMAIN = FORMAT.encode() + b"/signature\x00"
HEAD_DOMAIN = FORMAT.encode() + b"/head\x00"
GENESIS_PREV = bytes(32)
HASH_SIZE = 32
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32

GENESIS, CHARGE, REFUND, REFUSAL, RELEASE = "genesis", "charge", "refund", "refusal", "release"
KINDS = frozenset({GENESIS, CHARGE, REFUND, REFUSAL, RELEASE})
#: ``ref_seq`` of entries that refer to no other entry
NO_REF = -1


class Signer(Protocol):
    """Anything with Ed25519 ``sign(message) -> 64-byte signature`` (our identity wrapper).

    A raw ``nacl.signing.SigningKey`` returns a ``SignedMessage``; :func:`signature_of`
    accepts both.
    """

    def sign(self, message: bytes) -> object: ...


@dataclass(frozen=True)
class Entry:
    """One ledger entry, as stored (amounts in nano-rho, decimals as canonical text)."""

    seq: int
    time: str  # ISO 8601 UTC, supplied by the caller's clock
    kind: str  # genesis / charge / refund / refusal / release
    query_id: str  # lowercase hex
    researcher: str
    dataset: str
    method: str  # the algorithm
    mechanism: str  # e.g. "distributed discrete gaussian"
    sensitivity: str  # decimal text, "" when not applicable
    noise_scale: str
    rho_nano: int  # charged (charge/refund), requested (refusal), released (release)
    budget_nano: int  # the limit in force when charging or refusing; -1 when not applicable
    epsilon: str
    delta: str
    policy_hash: str
    transcript: str  # transcript / round digest (hex), "" when none
    reason: str  # refusal reason code, refund proof, or the genesis public key
    ref_seq: int  # the charge a refund or release refers to; NO_REF otherwise


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Entry))
INT_FIELDS = frozenset({"seq", "rho_nano", "budget_nano", "ref_seq"})


_LENGTH = struct.Struct(">I")
_INT = struct.Struct(">q")
_INT_PREFIX = b"i" + _LENGTH.pack(_INT.size)
_LAYOUT = tuple((name, name in INT_FIELDS) for name in FIELDS)


def encode(prev_hash: bytes, entry: Entry) -> bytes:
    """The canonical bytes that the entry hash covers."""
    parts = [ENTRY_DOMAIN, prev_hash]
    for name, is_int in _LAYOUT:
        value = getattr(entry, name)
        if is_int:
            parts.append(_INT_PREFIX + _INT.pack(value))
        else:
            raw = value.encode("utf-8")
            parts.append(b"s" + _LENGTH.pack(len(raw)) + raw)
    return b"".join(parts)


def entry_hash(prev_hash: bytes, entry: Entry) -> bytes:
    return hashlib.sha256(encode(prev_hash, entry)).digest()


def head_message(seq: int, digest: bytes) -> bytes:
    return HEAD_DOMAIN + _INT.pack(seq) + digest


def signature_of(signer: Signer, message: bytes) -> bytes:
    """Sign and return the bare 64-byte signature, whatever the signer's return type."""
    out = signer.sign(message)
    signature = getattr(out, "signature", out)  # nacl's SignedMessage has .signature
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        raise TypeError("the signer must return a 64-byte Ed25519 signature")
    return bytes(signature)
