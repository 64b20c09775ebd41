"""Ledger entries: fields, canonical encoding, hash chain, signatures and signed heads.

An entry's hash is ``SHA-256(ENTRY_DOMAIN || prev_hash || field_1 || ... || field_n)`` with
the fields in the fixed order of :data:`FIELDS`, each encoded as a one-byte type tag
(``i`` = signed 64-bit big-endian integer, ``s`` = UTF-8 text), a 4-byte big-endian length
and the bytes. The encoding is injective (tags and lengths), needs no JSON canonicalisation,
and an auditor can re-implement it in a few lines. The node signs
``SIG_DOMAIN || hash`` with Ed25519, and signs heads as ``HEAD_DOMAIN || seq || hash``: the
single head row of the file names the newest entry (deleting entries at the end is detected
by the file alone), and the head receipts the node hands out (:mod:`privacy.head`) let anyone
holding one detect a later truncation or rollback.

The first entry (seq 0) is a ``genesis`` entry naming the node's public key, so a ledger
emptied or replaced by an attacker without the key never verifies. When the federation's
authority gives the node a new key, the node appends a ``key_rotation`` entry naming the new
public key, signed with the key it replaces; every later entry, and the head from that entry
on, is signed with the new key (the chain of keys: genesis key, then each rotation's key). Which fields each kind of
entry uses is fixed by :data:`SHAPES`; every other field holds its empty value.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, fields
from typing import Protocol

FORMAT = "fedtally-ledger-v2"
#: SQLite ``user_version`` of a v2 file (a v1 file has 0)
SCHEMA_VERSION = 2
ENTRY_DOMAIN = FORMAT.encode() + b"/entry\x00"
SIG_DOMAIN = FORMAT.encode() + b"/signature\x00"
HEAD_DOMAIN = FORMAT.encode() + b"/head\x00"
GENESIS_PREV = bytes(32)
HASH_SIZE = 32
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32

GENESIS, POLICY, QUERY = "genesis", "policy", "query"
CHARGE, RELEASE, REFUND = "charge", "release", "refund"
KEY_ROTATION = "key_rotation"
KINDS = frozenset({GENESIS, POLICY, QUERY, CHARGE, RELEASE, REFUND, KEY_ROTATION})
#: kinds that name the ledger's key from their entry on (the key chain)
KEY_KINDS = (GENESIS, KEY_ROTATION)
#: decisions of a ``query`` entry
ANSWERED_EXACT, ANSWERED_DP, REFUSED = "answered-exact", "answered-dp", "refused"
DECISIONS = frozenset({ANSWERED_EXACT, ANSWERED_DP, REFUSED})
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
    """One ledger entry, as stored (amounts in nano-rho, decimals and JSON as canonical text).

    Empty values: ``""`` for text, ``0`` for counts, :data:`NO_REF` for ``ref_seq``.
    """

    seq: int
    time: str  # ISO 8601 UTC; never earlier than the previous entry's
    kind: str  # genesis / policy / query / charge / release / refund
    query_id: str  # lowercase hex
    researcher: str
    method: str  # the algorithm
    datasets: str  # query: canonical JSON list of the query's datasets
    held: str  # query: canonical JSON list of those this node holds (charged when DP)
    dataset: str  # charge, release, refund: the one dataset charged
    variables: str  # query: canonical JSON list
    filters: str  # query: canonical JSON of the row filter, "" when none
    query_digest: str  # query: hex digest of the signed query
    decision: str  # query: answered-exact / answered-dp / refused
    reason: str  # query: refusal reason code; refund: the proof that nothing left;
    #               key_rotation: "manifest-v<N>", the manifest version listing the new key
    mechanism: str  # query (DP): e.g. "distributed discrete gaussian (zCDP)"
    rho_nano: int  # query: charged (answered-dp) or requested; charge/release/refund: charged
    epsilon: str  # query (DP): computed by the ledger from rho and delta
    delta: str
    noise_scale: str  # query (DP): sigma of one node's discrete Gaussian share
    honest_nodes: int  # query (DP): honest surviving nodes the calibration assumes
    dimension: int  # query (DP): noisy coordinates of the vector
    bounds: str  # query (DP): canonical JSON of the clipping bounds
    sensitivity: str  # query (DP): L2 sensitivity, fixed-point units
    policy_digest: str  # policy: SHA-256 of policy_json; query: digest of the policy in force
    policy_json: str  # policy: the node's whole policy, canonical JSON
    transcript: str  # release: transcript / round digest (hex), "" when none
    node_key: str  # genesis: the node's Ed25519 public key (hex); key_rotation: its new key
    ref_seq: int  # charge -> its query entry; release/refund -> the charge


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Entry))
INT_FIELDS = frozenset({"seq", "rho_nano", "honest_nodes", "dimension", "ref_seq"})
_MECHANISM = frozenset({"mechanism", "rho_nano", "epsilon", "delta", "noise_scale",
                        "honest_nodes", "dimension", "bounds", "sensitivity"})
_QUERY = frozenset({"query_id", "researcher", "method"})
#: the fields each kind may set (besides seq, time, kind); the others hold empty values
SHAPES: dict[str, frozenset[str]] = {
    GENESIS: frozenset({"node_key"}),
    KEY_ROTATION: frozenset({"node_key", "reason"}),
    POLICY: frozenset({"policy_digest", "policy_json"}),
    QUERY: _QUERY | _MECHANISM | {"datasets", "held", "variables", "filters", "query_digest",
                                  "decision", "reason", "policy_digest"},
    CHARGE: _QUERY | {"dataset", "rho_nano", "ref_seq"},
    RELEASE: _QUERY | {"dataset", "rho_nano", "ref_seq", "transcript"},
    REFUND: _QUERY | {"dataset", "rho_nano", "ref_seq", "reason"},
}


def rotation_reason(manifest_version: int) -> str:
    """The ``reason`` of a key_rotation entry: the manifest version that lists the new key."""
    return f"manifest-v{manifest_version}"


def key_of(entry: Entry) -> bytes:
    """The public key a genesis or key_rotation entry names; ValueError when malformed."""
    text = entry.node_key
    if len(text) != 2 * PUBLIC_KEY_SIZE or text != text.lower():
        raise ValueError("a node key is 64 lowercase hex digits")
    return bytes.fromhex(text)


def empty_value(name: str) -> object:
    if name == "ref_seq":
        return NO_REF
    return 0 if name in INT_FIELDS else ""


def blank(seq: int, time: str, kind: str, **values: object) -> Entry:
    """An entry of ``kind`` with ``values`` set and every other field empty."""
    data = {name: empty_value(name) for name in FIELDS}
    data.update(seq=seq, time=time, kind=kind, **values)
    return Entry(**data)  # type: ignore[arg-type]


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
