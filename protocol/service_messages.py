"""Wire messages of the services around the rounds: authentication, catalog, queries.

Connection set-up (inside TLS): the aggregator sends a fresh :class:`Challenge`; the client
answers with a :class:`Hello` signed by its manifest key over the challenge; the aggregator
answers :class:`Welcome` or an :class:`ErrorNotice` and closes. A member then states the
software it runs (:class:`MemberInfo`), which ``fedtally status`` shows to other members.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crypto.kdf import context
from protocol.codec import NAME, Bool, Bytes, Choice, Seq, Str, Struct, UInt, message, wire
from protocol.messages import QUERY_ID, SIGNATURE, SignedCommitment
from protocol.params import MAX_NODES, RoundParams
from protocol.signed_query import SignedQuery

REQUEST_ID = Bytes(16, exact=16)
ROLES = ("node", "researcher", "auditor")
MAX_CATALOG = 16 * 1024 * 1024
MAX_RESULT = 64 * 1024 * 1024
#: one ledger head receipt as JSON (about 300 characters)
MAX_RECEIPT = 1024
#: a software version as a member states it ("0.1.0", "0.2.0.dev3+g1a2b3c", "unknown")
SOFTWARE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_\-]{0,63}")
SOFTWARE = Str(64, SOFTWARE_PATTERN)


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
    #: mask mode: each survivor's signed commitment to its vector (protocol/commitment.py)
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


@message(35)
@dataclass(frozen=True)
class MemberInfo:
    """Member to aggregator, right after Welcome: the fedtally version it runs. Informational
    (for ``fedtally status``); nothing is decided on it."""

    software: str = wire(SOFTWARE)


@message(36)
@dataclass(frozen=True)
class StatusRequest:
    """Researcher or auditor to aggregator: who is online (answered only after the hello)."""

    request_id: bytes = wire(REQUEST_ID)


@dataclass(frozen=True)
class NodeStatus:
    """One node of the manifest as the aggregator has seen it since it started. Times are
    Unix milliseconds, 0 for never."""

    name: str = wire(NAME)
    online: bool = wire(Bool())
    #: the version it stated when it last connected ("" if it never did)
    software: str = wire(Str(64))
    #: when its current (or, offline, its last) connection was authenticated
    connected_at_ms: int = wire(UInt(8))
    #: online: its answer to the ping sent for this status (or its last one, or when it
    #: connected); offline: its disconnection. Never its last frame, which would show
    #: when rounds run
    last_seen_ms: int = wire(UInt(8))
    #: round trip of that ping, in microseconds (0: not measured)
    latency_us: int = wire(UInt(4))


@message(37)
@dataclass(frozen=True)
class Status:
    """Aggregator to researcher or auditor: its version and uptime, every node of the
    manifest, and how many researchers and auditors are connected (not who: which
    researcher works when is theirs to tell)."""

    request_id: bytes = wire(REQUEST_ID)
    software: str = wire(SOFTWARE)
    started_at_ms: int = wire(UInt(8))
    now_ms: int = wire(UInt(8))
    nodes: tuple[NodeStatus, ...] = wire(Seq(Struct(NodeStatus), MAX_NODES))
    researchers_online: int = wire(UInt(4))
    auditors_online: int = wire(UInt(4))


def cancel_statement(federation_id: str, query_id: bytes, researcher: str) -> bytes:
    """What a researcher signs to cancel its query. It names the query, so it cancels that
    one and no other, and only the key that signed the query can make it."""
    return context(b"fedtally/v1", "cancel", federation_id, query_id, researcher)


@message(38)
@dataclass(frozen=True)
class CancelQuery:
    """Researcher to aggregator, and aggregator to the round's nodes: stop query
    ``query_id`` (Ctrl-C, a client timeout), signed by the researcher who sent it. The
    aggregator aborts the round; a node refunds its DP charge only if its contribution has
    not left yet (a cancel after release refunds nothing). Nothing answers it."""

    researcher: str = wire(NAME)
    query_id: bytes = wire(QUERY_ID)
    signature: bytes = wire(SIGNATURE)
