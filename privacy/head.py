"""Signed ledger heads that leave the node: receipts an auditor checks a ledger against.

A :class:`HeadReceipt` is the node's Ed25519 signature over ``(seq, hash)`` of an entry of
its ledger (``HEAD_DOMAIN || int64_be(seq) || hash``, see :mod:`privacy.entry`). The node
hands one out after every query (inside its contribution); researchers and the aggregator
keep them. A ledger that no longer contains that exact entry at that position was truncated,
rolled back to an older copy, or rewritten, and :func:`privacy.audit.verify_ledger` says so.

On the wire and in receipts files a receipt is one JSON line::

    {"format":"fedtally-head-receipt-v1","hash":"<64 hex>","node_key":"<64 hex>",
     "seq":41,"signature":"<128 hex>"}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions

from privacy import entry as E
from privacy.errors import InvalidRequest, ReceiptInvalid

RECEIPT_FORMAT = "fedtally-head-receipt-v1"
_KEYS = frozenset({"format", "node_key", "seq", "hash", "signature"})
_HEAD_TEXT = re.compile(r"(\d{1,18}):([0-9a-fA-F]{64})")
#: a receipts file larger than this is refused rather than read into memory
MAX_RECEIPTS_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, repr=False)
class HeadReceipt:
    """The node's signature over entry ``seq`` of its ledger, whose hash is ``hash``."""

    node_key: bytes  # the node's Ed25519 public key
    seq: int
    hash: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.node_key, bytes) or len(self.node_key) != E.PUBLIC_KEY_SIZE:
            raise InvalidRequest("a head receipt's node key is 32 bytes")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) \
                or not 0 <= self.seq < 2**63:
            raise InvalidRequest("a head receipt's seq is a non-negative integer")
        if not isinstance(self.hash, bytes) or len(self.hash) != E.HASH_SIZE:
            raise InvalidRequest("a head receipt's hash is 32 bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) != E.SIGNATURE_SIZE:
            raise InvalidRequest("a head receipt's signature is 64 bytes")

    @property
    def text(self) -> str:
        """``SEQ:HEX``, as ``fedtally audit verify`` prints and ``--expected-head`` takes."""
        return f"{self.seq}:{self.hash.hex()}"

    def __repr__(self) -> str:
        return f"HeadReceipt({self.text}, node {self.node_key.hex()[:16]}...)"

    def to_json(self) -> str:
        """One line of canonical JSON (sorted keys, no spaces, no newline)."""
        return json.dumps({"format": RECEIPT_FORMAT, "node_key": self.node_key.hex(),
                           "seq": self.seq, "hash": self.hash.hex(),
                           "signature": self.signature.hex()},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> HeadReceipt:
        """Parse one receipt line; :class:`ReceiptInvalid` if it is not one."""
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ReceiptInvalid("a head receipt is not valid JSON") from exc
        if not isinstance(obj, dict) or set(obj) != _KEYS or obj["format"] != RECEIPT_FORMAT:
            raise ReceiptInvalid(f"a head receipt is a JSON object with exactly the keys "
                                 f"{sorted(_KEYS)} and format {RECEIPT_FORMAT!r}")
        try:
            return cls(_unhex(obj["node_key"]), obj["seq"], _unhex(obj["hash"]),
                       _unhex(obj["signature"]))
        except InvalidRequest as exc:
            raise ReceiptInvalid(str(exc)) from exc

    def check_signature(self, public_key: bytes) -> None:
        """Raise :class:`ReceiptInvalid` unless ``public_key`` signed this head."""
        if self.node_key != public_key:
            raise ReceiptInvalid(f"receipt {self.text} names another node key", self)
        try:
            nacl.bindings.crypto_sign_open(
                self.signature + E.head_message(self.seq, self.hash), public_key)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                nacl.exceptions.TypeError) as exc:
            raise ReceiptInvalid(f"receipt {self.text} is not signed by the node key",
                                 self) from exc


def parse_head(text: str) -> tuple[int, bytes]:
    """``"SEQ:HEX"`` (64 hex digits) -> ``(seq, hash)``; :class:`InvalidRequest` otherwise."""
    match = _HEAD_TEXT.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidRequest("a head is SEQ:HEX, e.g. 41:3f0c... (the 64 hex digits that "
                             "`fedtally audit verify` prints)")
    return int(match.group(1)), bytes.fromhex(match.group(2))


def load_receipts(path: str | Path) -> list[HeadReceipt]:
    """Read a receipts file (one JSON receipt per line; blank lines ignored).

    :class:`ReceiptInvalid` names the first bad line; an unreadable file is one too.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RECEIPTS_BYTES:
            raise ReceiptInvalid(f"{path} is larger than {MAX_RECEIPTS_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReceiptInvalid(f"cannot read the receipts file {path} ({exc})") from exc
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(HeadReceipt.from_json(line))
        except ReceiptInvalid as exc:
            raise ReceiptInvalid(f"{path} line {number}: {exc}") from exc
    return out


def write_receipts(path: str | Path, receipts: Iterable[HeadReceipt]) -> None:
    """Append receipts to a receipts file (created 0600), one line each."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        for receipt in receipts:
            out.write(receipt.to_json() + "\n")


def _unhex(value: object) -> bytes:
    if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-f]{2})+", value):
        raise InvalidRequest("receipt fields are lowercase hex")
    return bytes.fromhex(value)
