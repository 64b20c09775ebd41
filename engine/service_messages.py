"""Wire messages of the services around the rounds: authentication, catalog, queries.

Connection set-up (inside TLS): the aggregator sends a fresh :class:`Challenge`; the client
answers with a :class:`Hello` signed by its manifest key over the challenge; the aggregator
answers :class:`Welcome` or an :class:`ErrorNotice` and closes.
"""

from __future__ import annotations

from dataclasses import dataclass

from crypto.kdf import context
from engine.codec import NAME, Bytes, Choice, Seq, Str, Struct, UInt, message, wire
from engine.messages import SignedCommitment
from engine.params import MAX_NODES, RoundParams
from engine.query import SignedQuery

REQUEST_ID = Bytes(16, exact=16)
ROLES = ("node", "researcher", "auditor")
MAX_CATALOG = 16 * 1024 * 1024
MAX_RESULT = 64 * 1024 * 1024
#: one ledger head receipt as JSON (about 300 characters)
MAX_RECEIPT = 1024


def hello_statement(federation_id: str, nonce: bytes, name: str, role: str,
                    server_certificate: str) -> bytes:
    """What a member signs to authenticate a connection: the aggregator's fresh nonce and the
    SHA-256 of the TLS certificate the member's TLS session presented (RFC 5929's
    tls-server-end-point binding), so that a signed hello relayed over a TLS session to
    another endpoint does not verify there."""
    return context(b"fedtally/v1", "hello", federation_id, nonce, name, role,
                   server_certificate)


@message(20)
@dataclass(frozen=True)
class Challenge:
    federation_id: str = wire(Str(128))
    nonce: bytes = wire(Bytes(32, exact=32))


@message(21)
@dataclass(frozen=True)
class Hello:
    name: str = wire(NAME)
    role: str = wire(Choice(*ROLES))
    signature: bytes = wire(Bytes(64, exact=64))


@message(22)
@dataclass(frozen=True)
class Welcome:
    name: str = wire(NAME)
    #: names of the nodes connected right now (so a client knows the federation is up)
    nodes_online: tuple[str, ...] = wire(Seq(NAME, MAX_NODES))


@message(23)
@dataclass(frozen=True)
class ErrorNotice:
    """A typed error for whoever asked. ``message`` is a curated, public-safe text."""

    request_id: bytes = wire(REQUEST_ID)
    code: str = wire(Str(64))
    message: str = wire(Str(2048))


@message(24)
@dataclass(frozen=True)
class NodeInfo:
    """Node to aggregator after Welcome: metadata only (data models and dataset names)."""

    catalog: bytes = wire(Bytes(MAX_CATALOG))  # canonical JSON


@message(25)
@dataclass(frozen=True)
class CatalogRequest:
    request_id: bytes = wire(REQUEST_ID)


@message(26)
@dataclass(frozen=True)
class Catalog:
    request_id: bytes = wire(REQUEST_ID)
    #: canonical JSON: {"nodes": {name: node catalog}}
    catalog: bytes = wire(Bytes(MAX_CATALOG))


@message(27)
@dataclass(frozen=True)
class QueryRequest:
    request_id: bytes = wire(REQUEST_ID)
    query: SignedQuery = wire(Struct(SignedQuery))


@message(28)
@dataclass(frozen=True)
class QueryAnnounce:
    """Aggregator to node: take part in this round of this signed query."""

    query: SignedQuery = wire(Struct(SignedQuery))
    params: RoundParams = wire(Struct(RoundParams))


@message(29)
@dataclass(frozen=True)
class QueryRefused:
    """Node to aggregator: this node will not answer (a typed, public-safe reason)."""

    query_id: bytes = wire(Bytes(16, exact=16))
    code: str = wire(Str(64))
    message: str = wire(Str(2048))


@message(30)
@dataclass(frozen=True)
class QueryResult:
    request_id: bytes = wire(REQUEST_ID)
    query_id: bytes = wire(Bytes(16, exact=16))
    participants: tuple[str, ...] = wire(Seq(NAME, MAX_NODES))
    survivors: tuple[str, ...] = wire(Seq(NAME, MAX_NODES))
    ring_bits: int = wire(UInt(2))
    vector_length: int = wire(UInt(4))
    total: bytes = wire(Bytes(MAX_RESULT))
    #: each contributing node's signed ledger head after its entry for this query
    receipts: tuple[str, ...] = wire(Seq(Str(MAX_RECEIPT), MAX_NODES), default=())
    #: mask mode: each survivor's signed commitment to its vector (engine/commitment.py)
    commitments: tuple[SignedCommitment, ...] = wire(Seq(Struct(SignedCommitment), MAX_NODES),
                                                     default=())
    #: participants the aggregator dropped because they did not answer within the stage
    #: timeout (the others missing from ``survivors`` left: disconnected or refused)
    timed_out: tuple[str, ...] = wire(Seq(NAME, MAX_NODES), default=())


@message(31)
@dataclass(frozen=True)
class Progress:
    """Aggregator to researcher: a round moved to a new stage (for progress display)."""

    request_id: bytes = wire(REQUEST_ID)
    stage: str = wire(Str(32))
    waiting_for: int = wire(UInt(2))


@message(34)
@dataclass(frozen=True)
class LedgerHead:
    """Node to aggregator, right after its contribution: its ledger's head signed after the
    entry for this query (``privacy.head.HeadReceipt`` as one JSON line). Whoever keeps it
    can later tell a truncated or rolled-back ledger."""

    query_id: bytes = wire(Bytes(16, exact=16))
    receipt: str = wire(Str(MAX_RECEIPT))


def budget_statement(federation_id: str, request_id: bytes, researcher: str,
                     issued_at_ms: int) -> bytes:
    return context(b"fedtally/v1", "budget", federation_id, request_id, researcher,
                   issued_at_ms)


@message(32)
@dataclass(frozen=True)
class BudgetQuery:
    """Researcher to aggregator, forwarded to every node: what has this researcher spent?
    Signed, so a node tells each researcher only their own spending."""

    request_id: bytes = wire(REQUEST_ID)
    researcher: str = wire(NAME)
    issued_at_ms: int = wire(UInt(8))
    signature: bytes = wire(Bytes(64, exact=64))


@message(33)
@dataclass(frozen=True)
class BudgetReport:
    """Node to aggregator (and aggregator to researcher, keyed by node): canonical JSON."""

    request_id: bytes = wire(REQUEST_ID)
    report: bytes = wire(Bytes(MAX_CATALOG))
