"""The aggregator service: a websockets server over TLS that authenticates members against
the signed manifest, routes queries to nodes and drives each round's state machine.

It is trusted for availability only. It sees masked vectors and the final totals, never a
node's statistic. Every frame is bounded; a bad frame gets a typed error notice and the
service keeps serving.

Operations: ``GET /healthz`` answers load balancers (status and uptime, no names); members
ask ``fedtally status`` who is online (:class:`StatusRequest`). A node's name is held by one
connection: a second one is refused while the first answers pings (:class:`DuplicateMember`),
so two processes with one key cannot take turns. A researcher may cancel a query
(:class:`CancelQuery`, or by disconnecting): its round is aborted at every node.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from aggregator.operations import HEALTH_PATH, Presence, bind_error, health_response, now_ms
from crypto.errors import InvalidSignature
from crypto.randomness import SystemRandom
from privacy.errors import PrivacyError
from privacy.head import HeadReceipt, load_receipts, write_receipts
from protocol.codec import decode, encode
from protocol.errors import (
    AuthenticationError,
    DuplicateMember,
    FedtallyError,
    InternalError,
    QueryError,
    ReplayError,
    ThresholdNotMet,
    UnexpectedMessage,
)
from protocol.manifest import Manifest
from protocol.messages import MaskedInput, RoundAborted, SecAggMessage
from protocol.paillier_aggregator import PaillierAggregator
from protocol.paillier_messages import EncryptedInput, PaillierResult
from protocol.params import RoundParams
from protocol.secagg_aggregator import SecAggAggregator
from protocol.service_messages import (
    BudgetQuery,
    BudgetReport,
    CancelQuery,
    Catalog,
    CatalogRequest,
    Challenge,
    ErrorNotice,
    Hello,
    LedgerHead,
    MemberInfo,
    NodeInfo,
    NodeStatus,
    Progress,
    QueryAnnounce,
    QueryRefused,
    QueryRequest,
    QueryResult,
    Status,
    StatusRequest,
    Welcome,
    cancel_statement,
    hello_statement,
)
from protocol.signed_query import SignedQuery
from protocol.transport import MAX_FRAME, NO_REQUEST, error_notice, public_text
from stats.query import QuerySpec

log = logging.getLogger("fedtally.aggregator")

AUTH_TIMEOUT_S = 10.0
#: before a connection has authenticated, its frames may be no larger than a Hello
HELLO_FRAME_MAX = 1024
#: connections that have not authenticated yet, at most (the rest are turned away)
DEFAULT_MAX_UNAUTHENTICATED = 64
SEEN_QUERY_TTL_S = 3600.0
#: a node connecting under a name already connected: how long the established connection
#: has to answer a ping before it is taken for dead and replaced
DUPLICATE_PING_TIMEOUT_S = 5.0
#: concurrent connections of one researcher or auditor (notebooks, `fedtally status`)
MAX_SESSIONS_PER_CLIENT = 16
#: a status request pings every connected node; an answer later than this is not waited for
STATUS_PING_TIMEOUT_S = 2.0
#: the code of a round aborted because its researcher cancelled it (or left)
CANCELLED = "cancelled"


@dataclass(eq=False)
class Session:
    name: str
    role: str
    connection: ServerConnection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: the software version the member stated (MemberInfo), "" until it does
    software: str = ""
    connected_at_ms: int = field(default_factory=now_ms)
    #: the last ping it answered for a status (not its last frame: that would tell
    #: anyone asking for the status when other researchers' rounds run)
    last_pong_ms: int = 0
    latency_us: int = 0

    async def send(self, msg: object) -> int:
        """Send one message; returns the frame's size (0 if the connection is gone)."""
        frame = encode(msg)  # type: ignore[arg-type]
        try:
            async with self.lock:
                await self.connection.send(frame)
        except ConnectionClosed:
            return 0  # the receive loop notices and cleans up
        return len(frame)


@dataclass
class BudgetCollection:
    researcher: Session
    waiting: set[str]
    reports: dict[str, Any] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


RoundMachine = SecAggAggregator | PaillierAggregator
FINISHED = ("done", "aborted")


@dataclass
class ActiveRound:
    machine: RoundMachine
    researcher: Session
    request_id: bytes
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    refusal: tuple[str, str, str] | None = None  # (node, code, public message)
    #: node -> its signed ledger head after its entry for this query (a JSON line)
    receipts: dict[str, str] = field(default_factory=dict)
    #: websocket payload bytes of this round: from nodes, to nodes, to the researcher
    bytes_from_nodes: int = 0
    bytes_to_nodes: int = 0
    bytes_to_researcher: int = 0
    started: float = field(default_factory=time.perf_counter)
    #: participants dropped at a stage timeout (reported as such, never as zero rows)
    timed_out: set[str] = field(default_factory=set)
    #: the researcher cancelled the query (CancelQuery) or left
    cancelled: bool = False
    #: the researcher's signed cancel, passed on to the nodes
    cancel: CancelQuery | None = None


class AggregatorService:
    def __init__(self, manifest: Manifest, *, host: str, port: int, ssl_context: Any,
                 certificate_fingerprint: str, stage_timeout_s: float | None = None,
                 heads_path: Path | None = None,
                 max_unauthenticated: int = DEFAULT_MAX_UNAUTHENTICATED,
                 software: str = "unknown") -> None:
        self.manifest = manifest
        #: the fedtally version this aggregator runs (shown by `fedtally status`)
        self.software = software
        self.started_at_ms = now_ms()
        #: SHA-256 of our TLS certificate: members sign it into their hello (channel binding)
        self.certificate_fingerprint = certificate_fingerprint
        #: the newest ledger head each node sent, kept (in ``heads_path``) for auditors
        self.heads_path = heads_path
        self.heads: dict[str, HeadReceipt] = _load_heads(heads_path, manifest)
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.stage_timeout_s = stage_timeout_s or manifest.stage_timeout_s
        #: connected nodes, one connection per name
        self.sessions: dict[str, Session] = {}
        #: connected researchers and auditors: a member may hold several connections
        self.clients: dict[str, set[Session]] = {}
        #: nodes seen since the start (for status)
        self.presence: dict[str, Presence] = {}
        #: node names whose connection is being admitted (the duplicate check is in progress)
        self._admitting: set[str] = set()
        self.catalogs: dict[str, dict[str, Any]] = {}
        self.rounds: dict[bytes, ActiveRound] = {}
        self._seen_queries: dict[bytes, float] = {}
        self._budgets: dict[bytes, BudgetCollection] = {}
        self._keys = manifest.verify_keys()
        self._rng = SystemRandom()
        self._tasks: set[asyncio.Task[None]] = set()
        self.max_unauthenticated = max_unauthenticated
        self._unauthenticated = 0

    # --- server -------------------------------------------------------------------------

    async def serve(self, ready: Callable[[int], None] | None = None,
                    stop: asyncio.Event | None = None) -> None:
        """Listen until ``stop`` is set. A failure to listen (port in use, a host name that
        does not resolve or is not this machine's) is a one-line ConfigurationError."""
        # until a connection authenticates it may send a Hello and nothing larger
        server_context = serve(self._handle, self.host, self.port, ssl=self.ssl_context,
                               max_size=HELLO_FRAME_MAX, max_queue=16, compression=None,
                               ping_interval=20, ping_timeout=20,
                               open_timeout=AUTH_TIMEOUT_S,
                               process_request=self._process_request)
        try:
            server = await server_context.__aenter__()
        except OSError as exc:
            raise bind_error(exc, self.host, self.port) from None
        try:
            port = next(iter(server.sockets)).getsockname()[1]
            log.info("aggregator %s listening on wss://%s:%d (health: https://%s:%d%s)",
                     self.software, self.host, port, self.host, port, HEALTH_PATH)
            if ready:
                ready(port)
            await (stop.wait() if stop else asyncio.Future())
        finally:
            await server_context.__aexit__(None, None, None)

    def _process_request(self, connection: ServerConnection, request: Request
                         ) -> Response | None:
        """The health check for load balancers; anything else goes on to the handshake."""
        return health_response(connection, request, self.started_at_ms)

    async def _handle(self, connection: ServerConnection) -> None:
        if self._unauthenticated >= self.max_unauthenticated:
            log.warning("turned a connection away: %d are authenticating already",
                        self._unauthenticated)
            await connection.close(1013, "try again later")
            return
        self._unauthenticated += 1
        try:
            session = await self._authenticate(connection)
        finally:
            self._unauthenticated -= 1
        if session is None:
            return
        connection.protocol.max_message_size = MAX_FRAME  # a member: full-size frames
        log.info("%s %s connected", session.role, session.name)
        try:
            async for frame in connection:
                await self._dispatch(session, frame)
        except ConnectionClosed:
            pass
        finally:
            self._forget(session)
            log.info("%s %s disconnected", session.role, session.name)

    def _forget(self, session: Session) -> None:
        """A connection ended: a node leaves its rounds; a researcher's queries are
        cancelled (nobody could receive their results)."""
        if session.role != "node":
            mine = self.clients.get(session.name, set())
            mine.discard(session)
            if not mine:
                self.clients.pop(session.name, None)
            for active in self.rounds.values():
                if active.researcher is session and not active.cancelled:
                    active.cancelled = True
                    active.changed.set()
            return
        if self.sessions.get(session.name) is not session:
            return  # replaced already (see _evict)
        del self.sessions[session.name]
        self.catalogs.pop(session.name, None)
        presence = self.presence.get(session.name)
        if presence is not None:
            presence.disconnected_at_ms = now_ms()
        for active in self.rounds.values():
            active.machine.drop(session.name)
            active.changed.set()

    async def _alive(self, session: Session) -> bool:
        """Whether an established connection answers a ping within the timeout."""
        try:
            pong = await session.connection.ping()
            await asyncio.wait_for(pong, DUPLICATE_PING_TIMEOUT_S)
        except (ConnectionClosed, TimeoutError, RuntimeError):
            return False
        return True

    def _evict(self, session: Session) -> None:
        """Drop a dead connection at once (its close handshake could wait a long time)."""
        log.warning("%s %s: the established connection does not answer pings; replacing it",
                    session.role, session.name)
        self._forget(session)
        session.connection.transport.abort()

    async def _admit(self, hello: Hello, connection: ServerConnection) -> Session:
        """Register an authenticated connection. A node's name is held by one connection:
        while the established one answers a ping, the newcomer is refused (DuplicateMember);
        a dead one is replaced. Researchers and auditors may hold several connections."""
        session = Session(hello.name, hello.role, connection)
        if hello.role != "node":
            mine = self.clients.setdefault(hello.name, set())
            if len(mine) >= MAX_SESSIONS_PER_CLIENT:
                raise DuplicateMember(f"{hello.name} holds {len(mine)} connections already "
                                      "(the most one member may hold)")
            mine.add(session)
            return session
        if hello.name in self._admitting:
            raise DuplicateMember(f"another connection as node {hello.name} is being "
                                  "admitted right now; is a second node running with its key?")
        self._admitting.add(hello.name)
        try:
            previous = self.sessions.get(hello.name)
            if previous is not None:
                if await self._alive(previous):
                    raise DuplicateMember(
                        f"node {hello.name} is connected already and answers; refusing a "
                        f"second connection as {hello.name} (is a second node running with "
                        "its key? stop one of them)")
                self._evict(previous)
            self.sessions[hello.name] = session
            self.presence[hello.name] = Presence("", session.connected_at_ms)
        finally:
            self._admitting.discard(hello.name)
        return session

    async def _authenticate(self, connection: ServerConnection) -> Session | None:
        nonce = self._rng.bytes(32)
        try:
            await connection.send(encode(Challenge(self.manifest.federation_id, nonce)))
            frame = await asyncio.wait_for(connection.recv(), AUTH_TIMEOUT_S)
            hello = decode(frame if isinstance(frame, bytes) else frame.encode(), MAX_FRAME)
            if not isinstance(hello, Hello):
                raise UnexpectedMessage("the first message must be a Hello")
            member = self.manifest.member(hello.name)
            if member.role != hello.role:
                raise AuthenticationError(f"{hello.name} is not a {hello.role}")
            try:
                member.verify_key.verify(hello_statement(self.manifest.federation_id, nonce,
                                                         hello.name, hello.role,
                                                         self.certificate_fingerprint),
                                         hello.signature)
            except InvalidSignature as exc:
                raise AuthenticationError("the hello signature does not verify") from exc
            session = await self._admit(hello, connection)
        except (TimeoutError, ConnectionClosed):
            return None
        except FedtallyError as exc:
            with contextlib.suppress(ConnectionClosed):
                await connection.send(encode(error_notice(NO_REQUEST, exc)))
                await connection.close(1008, exc.code)
            if isinstance(exc, DuplicateMember):
                log.warning("refused a connection: %s", exc)  # names a member, not a secret
            else:
                log.warning("refused a connection: %s", exc.code)
            return None
        online = tuple(sorted(n for n, s in self.sessions.items() if s.role == "node"))
        if not await session.send(Welcome(hello.name, online)):
            self._forget(session)
            return None
        return session

    # --- dispatch ------------------------------------------------------------------------

    async def _dispatch(self, session: Session, frame: bytes | str) -> None:
        try:
            if isinstance(frame, str):
                raise UnexpectedMessage("text frames are not part of the protocol")
            msg = decode(frame, MAX_FRAME)
            handler = self._handlers(session.role).get(type(msg))
            if handler is None:
                if isinstance(msg, SecAggMessage) and session.role == "node":
                    self._on_secagg(session, msg, len(frame))
                    return
                raise UnexpectedMessage(f"a {session.role} may not send {type(msg).__name__}")
            await handler(session, msg)
        except FedtallyError as exc:
            log.info("rejected a message from %s: %s", session.name, exc.code)
            await session.send(error_notice(getattr(exc, "request_id", NO_REQUEST), exc))

    def _handlers(self, role: str) -> dict[type, Callable[[Session, Any], Awaitable[None]]]:
        if role == "node":
            return {NodeInfo: self._on_node_info, QueryRefused: self._on_refused,
                    BudgetReport: self._on_budget_report, LedgerHead: self._on_ledger_head,
                    MemberInfo: self._on_member_info}
        if role == "researcher":
            return {CatalogRequest: self._on_catalog_request, QueryRequest: self._on_query,
                    BudgetQuery: self._on_budget_query, MemberInfo: self._on_member_info,
                    StatusRequest: self._on_status_request, CancelQuery: self._on_cancel}
        return {CatalogRequest: self._on_catalog_request, MemberInfo: self._on_member_info,
                StatusRequest: self._on_status_request}

    async def _on_member_info(self, session: Session, msg: MemberInfo) -> None:
        session.software = msg.software
        presence = self.presence.get(session.name)
        if session.role == "node" and presence is not None \
                and self.sessions.get(session.name) is session:
            presence.software = msg.software
        log.info("%s %s runs fedtally %s", session.role, session.name, msg.software)

    async def _on_status_request(self, session: Session, msg: StatusRequest) -> None:
        await asyncio.gather(*(self._probe(node) for node in list(self.sessions.values())))
        await session.send(self.status(msg.request_id))

    async def _probe(self, session: Session) -> None:
        """Ping a node; an answer updates when it was last seen and its round trip."""
        started = time.perf_counter()
        try:
            pong = await session.connection.ping()
            await asyncio.wait_for(pong, STATUS_PING_TIMEOUT_S)
        except (ConnectionClosed, TimeoutError, RuntimeError):
            return
        session.latency_us = max(1, int((time.perf_counter() - started) * 1e6))
        session.last_pong_ms = now_ms()

    def status(self, request_id: bytes = bytes(16)) -> Status:
        """Every node of the manifest as seen since the start; researchers and auditors
        only counted."""
        now = now_ms()
        nodes = []
        for name in self.manifest.nodes():
            session, seen = self.sessions.get(name), self.presence.get(name)
            if session is not None:
                last = session.last_pong_ms or session.connected_at_ms
                nodes.append(NodeStatus(name, True, session.software, session.connected_at_ms,
                                        last, min(session.latency_us, 2**32 - 1)))
            elif seen is not None:
                nodes.append(NodeStatus(name, False, seen.software, seen.connected_at_ms,
                                        seen.disconnected_at_ms, 0))
            else:
                nodes.append(NodeStatus(name, False, "", 0, 0, 0))
        counts = {"researcher": 0, "auditor": 0}
        for sessions in self.clients.values():
            if sessions:
                counts[next(iter(sessions)).role] += 1
        return Status(request_id, self.software, self.started_at_ms, now, tuple(nodes),
                      counts["researcher"], counts["auditor"])

    async def _on_cancel(self, session: Session, msg: CancelQuery) -> None:
        """Abort the researcher's query, if it still runs, and pass the signed cancel on to
        its nodes. Only the query's own researcher can cancel it: the cancel must come from
        that researcher's connection and carry its signature over the query id (the nodes
        check it again). Nothing answers a cancel; a bad one is logged and dropped."""
        active = self.rounds.get(msg.query_id)
        if active is None or active.researcher.name != session.name \
                or msg.researcher != session.name:
            log.info("%s: ignored a cancel for no query of theirs in flight", session.name)
            return
        try:
            self._keys[session.name].verify(
                cancel_statement(self.manifest.federation_id, msg.query_id, session.name),
                msg.signature)
        except InvalidSignature:
            log.warning("%s: ignored a cancel whose signature does not verify", session.name)
            return
        active.cancel = msg
        active.cancelled = True
        active.changed.set()

    async def _on_node_info(self, session: Session, msg: NodeInfo) -> None:
        try:
            catalog = json.loads(msg.catalog)
        except ValueError as exc:
            raise QueryError("the node catalog is not valid JSON") from exc
        if not isinstance(catalog, dict) or not isinstance(catalog.get("data_models"), dict):
            raise QueryError("the node catalog has no data models")
        self.catalogs[session.name] = catalog

    async def _on_catalog_request(self, session: Session, msg: CatalogRequest) -> None:
        body = json.dumps({"nodes": {name: self.catalogs[name] for name in sorted(self.catalogs)},
                           "federation_id": self.manifest.federation_id},
                          sort_keys=True).encode()
        await session.send(Catalog(msg.request_id, body))

    async def _on_refused(self, session: Session, msg: QueryRefused) -> None:
        active = self.rounds.get(msg.query_id)
        if active is None or session.name not in active.machine.params.participants:
            raise ReplayError("a refusal for a query this node is not part of")
        active.refusal = (session.name, msg.code, msg.message)
        active.changed.set()

    async def _on_ledger_head(self, session: Session, msg: LedgerHead) -> None:
        """Keep a node's signed ledger head for the researcher's result and for auditors
        (the newest per node); one that does not verify is refused."""
        active = self.rounds.get(msg.query_id)
        if active is None or session.name not in active.machine.params.participants:
            raise ReplayError("a ledger head for a query this node is not part of")
        try:
            receipt = HeadReceipt.from_json(msg.receipt)
            receipt.check_signature(self._keys[session.name].raw)
        except PrivacyError as exc:
            raise AuthenticationError("the ledger head does not verify") from exc
        active.receipts[session.name] = msg.receipt
        newest = self.heads.get(session.name)
        if newest is None or receipt.seq > newest.seq:
            self.heads[session.name] = receipt
            _store_heads(self.heads_path, self.heads)

    def _on_secagg(self, session: Session, msg: SecAggMessage, size: int) -> None:
        active = self.rounds.get(msg.query_id)
        if active is None:
            raise ReplayError("message for a query that is not running")
        active.bytes_from_nodes += size
        try:
            active.machine.receive(session.name, msg)
        finally:
            active.changed.set()
        if isinstance(msg, MaskedInput | EncryptedInput):
            # masked words and ciphertexts look uniformly random: safe to show, and they
            # show what the aggregator sees
            words = " ".join(f"{w:016x}" for w in memoryview(msg.data[:24]).cast("Q"))
            log.info("%s from %s for query %s: %s ...", type(msg).__name__, session.name,
                     msg.query_id.hex()[:8], words)

    # --- budgets ---------------------------------------------------------------------------

    async def _on_budget_query(self, session: Session, msg: BudgetQuery) -> None:
        if msg.researcher != session.name:
            raise AuthenticationError("a researcher may ask only for their own budget")
        nodes = sorted(name for name, s in self.sessions.items() if s.role == "node")
        pending = BudgetCollection(session, set(nodes))
        self._budgets[msg.request_id] = pending
        for name in nodes:
            await self._send_to(name, msg)
        task = asyncio.create_task(self._finish_budget(msg.request_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_budget_report(self, session: Session, msg: BudgetReport) -> None:
        pending = self._budgets.get(msg.request_id)
        if pending is None or session.name not in pending.waiting:
            raise ReplayError("a budget report nobody asked for")
        try:
            pending.reports[session.name] = json.loads(msg.report)
        except ValueError as exc:
            raise QueryError("the budget report is not valid JSON") from exc
        pending.waiting.discard(session.name)
        pending.changed.set()

    async def _finish_budget(self, request_id: bytes) -> None:
        pending = self._budgets[request_id]
        deadline = asyncio.get_running_loop().time() + self.stage_timeout_s
        while pending.waiting and asyncio.get_running_loop().time() < deadline:
            pending.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pending.changed.wait(),
                                       deadline - asyncio.get_running_loop().time())
        del self._budgets[request_id]
        body = json.dumps({"nodes": pending.reports, "missing": sorted(pending.waiting)},
                          sort_keys=True).encode()
        await pending.researcher.send(BudgetReport(request_id, body))

    # --- queries ---------------------------------------------------------------------------

    async def _on_query(self, session: Session, msg: QueryRequest) -> None:
        query = msg.query
        try:
            params = self._plan_round(session, query)
        except FedtallyError as exc:
            exc.request_id = msg.request_id  # type: ignore[attr-defined]
            raise
        members = {n: self._keys[n] for n in params.participants}
        key = self.manifest.paillier_key
        machine: RoundMachine = (SecAggAggregator(params, members) if key is None
                                 else PaillierAggregator(params, members, key))
        active = ActiveRound(machine, session, msg.request_id)
        self.rounds[query.query_id] = active
        task = asyncio.create_task(self._run_round(active, query))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _plan_round(self, session: Session, query: SignedQuery) -> RoundParams:
        if query.researcher != session.name:
            raise AuthenticationError("the query is signed for another researcher")
        if query.federation_id != self.manifest.federation_id:
            raise AuthenticationError("the query names another federation")
        try:
            self._keys[query.researcher].verify(query.statement(), query.signature)
        except InvalidSignature as exc:
            raise AuthenticationError("the query signature does not verify") from exc
        now = time.time()
        self._seen_queries = {q: t for q, t in self._seen_queries.items()
                              if now - t < SEEN_QUERY_TTL_S}
        if query.query_id in self._seen_queries:
            raise ReplayError("this query was already submitted")
        self._seen_queries[query.query_id] = now
        spec = QuerySpec.from_bytes(query.spec)
        serving = sorted(name for name, cat in self.catalogs.items()
                         if spec.data_model in cat["data_models"] and name in self.sessions)
        held = {d for name in serving for d in self.catalogs[name]["data_models"][spec.data_model]
                .get("datasets_held", [])}
        missing = [d for d in spec.datasets if d not in held]
        if not serving:
            raise QueryError(f"no online node serves data model {spec.data_model!r}")
        if missing:
            raise QueryError(f"no online node holds dataset(s) {missing}")
        offline = sorted(name for name, member in self.manifest.members.items()
                         if member.role == "node" and name not in self.sessions)
        # what to do about too few nodes: bring the offline ones back (the status shows
        # them to every member anyway), or the federation needs more
        remedy = f"offline: {', '.join(offline)}" if offline else "the federation needs more"
        minimum = self.manifest.min_participants
        if len(serving) < minimum:
            raise ThresholdNotMet(f"only {len(serving)} node(s) online for "
                                  f"{spec.data_model!r}; a secure sum needs {minimum}; "
                                  f"{remedy}")
        key = self.manifest.paillier_key
        if key is not None and len(serving) < key.threshold.threshold:
            raise ThresholdNotMet(f"only {len(serving)} node(s) online for "
                                  f"{spec.data_model!r}; decrypting needs "
                                  f"{key.threshold.threshold} key holders; {remedy}")
        # thresholds from the manifest's collusion bound c; large rounds over the SecAgg+
        # graph when the manifest enables it (nodes re-derive the graph and check it)
        try:
            threshold = self.manifest.threshold_for(len(serving))
        except ThresholdNotMet as exc:
            raise ThresholdNotMet(
                f"{len(serving)} node(s) online for {spec.data_model!r}: {exc} (the "
                f"manifest's max_colluding_nodes is {self.manifest.max_colluding_nodes}); "
                f"{remedy}") from None
        return RoundParams(federation_id=self.manifest.federation_id, query_id=query.query_id,
                           round=0, participants=tuple(serving),
                           threshold=threshold,
                           vector_length=query.vector_length, ring_bits=query.ring_bits,
                           neighbours=self.manifest.graph_for(len(serving)),
                           query_digest=query.digest,
                           max_colluding=self.manifest.max_colluding_nodes)

    async def _run_round(self, active: ActiveRound, query: SignedQuery) -> None:
        machine = active.machine
        params = machine.params
        researcher = active.researcher
        try:
            announce = QueryAnnounce(query, params)
            for name in params.participants:
                active.bytes_to_nodes += await self._send_to(name, announce)
            while machine.stage.value not in FINISHED:
                await self._await_stage(active)
                if active.cancelled:
                    # the signed cancel first (nodes record who cancelled), then the abort
                    # that ends every node's round; a node whose contribution has not left
                    # refunds its DP charge, one whose contribution left keeps it
                    if active.cancel is not None:
                        await self._broadcast(params, active.cancel)
                    await self._broadcast(params, RoundAborted(params.query_id, params.round,
                                                               CANCELLED))
                    log.info("query %s cancelled by %s at stage %s", params.query_id.hex()[:8],
                             researcher.name, machine.stage.value)
                    return
                if active.refusal is not None:
                    node, code, text = active.refusal
                    await self._broadcast(params, RoundAborted(params.query_id, params.round,
                                                               "refused"))
                    await researcher.send(ErrorNotice(active.request_id, code,
                                                      f"{node} refused: {text}"))
                    return
                outgoing = machine.close_stage()
                for name, msg in outgoing:
                    active.bytes_to_nodes += await self._send_to(name, msg)
                if machine.stage.value not in FINISHED:
                    await researcher.send(Progress(active.request_id, machine.stage.value,
                                                   len(machine.expected)))
            if machine.result is None:
                error = machine.error or ThresholdNotMet("the round did not complete")
                # nodes still in the round stop (a node still computing is interrupted)
                await self._broadcast(params, RoundAborted(params.query_id, params.round,
                                                           error.code))
                await researcher.send(error_notice(active.request_id, error))
                return
            receipts = tuple(active.receipts[name] for name in sorted(active.receipts))
            timed_out = tuple(sorted(active.timed_out))
            # a node dropped at a stage's timeout would otherwise compute on (up to its
            # max_query_seconds), send into a finished round and hold its round, and a
            # mask-mode charge, until it reconnects
            for name in timed_out:
                await self._send_to(name, RoundAborted(params.query_id, params.round,
                                                       "timeout"))
            if isinstance(machine.result, PaillierResult):
                # sealed to the researcher: the aggregator cannot read the total
                result: object = dataclasses.replace(machine.result,
                                                     request_id=active.request_id,
                                                     receipts=receipts, timed_out=timed_out)
            else:
                result = QueryResult(active.request_id, params.query_id, params.participants,
                                     machine.survivors, params.ring_bits, params.vector_length,
                                     machine.result.to_bytes(), receipts,
                                     machine.commitments(), timed_out)
            active.bytes_to_researcher += await researcher.send(result)
            log.info("query %s done over %d of %d nodes in %.0f ms; bytes from nodes %d, to "
                     "nodes %d, to the researcher %d", params.query_id.hex()[:8],
                     len(machine.survivors), len(params.participants),
                     (time.perf_counter() - active.started) * 1000, active.bytes_from_nodes,
                     active.bytes_to_nodes, active.bytes_to_researcher)
        except Exception as exc:  # keep serving; tell the researcher without internals
            log.exception("round %s failed", params.query_id.hex()[:8])
            with contextlib.suppress(Exception):  # and the nodes, as far as they can hear
                await self._broadcast(params, RoundAborted(params.query_id, params.round,
                                                           InternalError.code))
            await researcher.send(ErrorNotice(active.request_id, "internal",
                                              public_text(exc)))
        finally:
            self.rounds.pop(params.query_id, None)

    async def _await_stage(self, active: ActiveRound) -> None:
        deadline = asyncio.get_running_loop().time() + self.stage_timeout_s
        machine = active.machine
        while not machine.complete and active.refusal is None and not active.cancelled:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                for name in list(machine.expected):
                    log.warning("%s timed out in stage %s", name, machine.stage.value)
                    machine.drop(name)
                    active.timed_out.add(name)
                return
            active.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(active.changed.wait(), remaining)

    async def _send_to(self, name: str, msg: object) -> int:
        session = self.sessions.get(name)
        if session is None:
            for active in self.rounds.values():
                active.machine.drop(name)
            return 0
        return await session.send(msg)

    async def _broadcast(self, params: RoundParams, msg: object) -> None:
        for name in params.participants:
            await self._send_to(name, msg)


#: beside aggregator.json: the newest ledger head of every node, one receipt line each
HEADS_FILE = "ledger-heads.jsonl"


def _load_heads(path: Path | None, manifest: Manifest) -> dict[str, HeadReceipt]:
    """The heads kept before a restart, by node (a receipt names its node's key); a file
    that does not parse is ignored, with a warning, rather than trusted."""
    if path is None or not path.exists():
        return {}
    owners = {key.raw: name for name, key in manifest.verify_keys().items()}
    try:
        receipts = load_receipts(path)
    except PrivacyError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return {}
    heads: dict[str, HeadReceipt] = {}
    for receipt in receipts:
        name = owners.get(receipt.node_key)
        if name is not None and (name not in heads or receipt.seq > heads[name].seq):
            heads[name] = receipt
    return heads


def _store_heads(path: Path | None, heads: dict[str, HeadReceipt]) -> None:
    """Replace the heads file atomically (0600), one receipt per node."""
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    write_receipts(tmp, (heads[name] for name in sorted(heads)))
    tmp.replace(path)


def run_aggregator(config_path: Path, *, port: int | None = None,
                   ready_file: Path | None = None, stage_timeout_s: float | None = None,
                   software: str = "unknown") -> None:
    """Entry point of `fedtally aggregator serve`."""
    from aggregator.config import load_aggregator_config

    config = load_aggregator_config(config_path)
    service = AggregatorService(config.manifest, host=config.host,
                                port=config.port if port is None else port,
                                ssl_context=config.ssl_context,
                                certificate_fingerprint=config.certificate_fingerprint,
                                max_unauthenticated=config.max_unauthenticated,
                                stage_timeout_s=stage_timeout_s,
                                heads_path=config_path.resolve().parent / HEADS_FILE,
                                software=software)

    def ready(bound: int) -> None:
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": bound, "pid": os.getpid()}))
            tmp.replace(ready_file)

    async def main() -> None:
        # SIGTERM (a service manager's stop) as Ctrl-C: connections are closed with a close
        # frame (1001, going away), so members read a stop, not a broken connection
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.serve(ready, stop)
        log.info("aggregator stopped")

    asyncio.run(main())
