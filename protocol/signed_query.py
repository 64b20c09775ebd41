"""The researcher's signed query as it travels: the specification is opaque bytes here
(its language is :mod:`stats.query`), signed with the plan every node recomputes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from crypto.kdf import context
from protocol.codec import NAME, Bytes, Str, UInt, wire

#: the largest query specification a signed query carries
MAX_SPEC_BYTES = 256 * 1024


@dataclass(frozen=True)
class SignedQuery:
    """A researcher's signed request. ``vector_length`` and ``ring_bits`` are the client's
    plan; every node recomputes them and refuses a mismatch. ``reply_key`` is the
    researcher's fresh X25519 public key for this query: in Paillier mode the nodes seal
    their partial decryptions to it, so only the researcher can see the total."""

    researcher: str = wire(NAME)
    federation_id: str = wire(Str(128))
    query_id: bytes = wire(Bytes(16, exact=16))
    issued_at_ms: int = wire(UInt(8))
    spec: bytes = wire(Bytes(MAX_SPEC_BYTES))
    vector_length: int = wire(UInt(4))
    ring_bits: int = wire(UInt(2))
    signature: bytes = wire(Bytes(64, exact=64))
    reply_key: bytes = wire(Bytes(32, exact=32), default=bytes(32))

    def statement(self) -> bytes:
        return signed_query_statement(self.researcher, self.federation_id, self.query_id,
                                      self.issued_at_ms, self.spec, self.vector_length,
                                      self.ring_bits, reply_key=self.reply_key)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.statement() + self.signature).digest()


def signed_query_statement(researcher: str, federation_id: str, query_id: bytes,
                           issued_at_ms: int, spec: bytes, vector_length: int,
                           ring_bits: int, *, reply_key: bytes = bytes(32)) -> bytes:
    return context(b"fedtally/v1", "query", researcher, federation_id, query_id, issued_at_ms,
                   spec, vector_length, ring_bits, reply_key)
