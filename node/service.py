"""The node service: connects out to the aggregator (hospital firewalls allow outbound
only), reconnects with backoff, and answers queries through the engine's state machine.

The node loads and validates its data at start-up and refuses to serve invalid data. Each
query is admitted (signature, freshness, policy, plan, parameters) before anything is
computed; refusals carry a typed, public-safe reason. Statistics and masking run in a
worker thread so keepalive pings continue during long computations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from crypto import partial_proof
from crypto.errors import CryptoError
from crypto.paillier import FastEncryptor
from crypto.randomness import SystemRandom
from engine.codec import decode, encode
from engine.errors import (
    ConfigurationError,
    FedtallyError,
    InternalError,
    QueryError,
    ReplayError,
)
from engine.messages import MaskedInput, SecAggMessage
from engine.paillier_messages import EncryptedInput
from engine.paillier_node import PaillierNode
from engine.query import canonical_json
from engine.secagg_node import SecAggNode
from engine.service_messages import (
    BudgetQuery,
    BudgetReport,
    ErrorNotice,
    LedgerHead,
    NodeInfo,
    QueryAnnounce,
    QueryRefused,
    budget_statement,
)
from engine.transport import MAX_FRAME, public_text
from node.admission import MAX_CLOCK_SKEW_MS, ReplayGuard, admit, authenticate
from node.budget import Asked, BudgetKeeper
from node.config import NodeConfig, load_model, load_node_config
from node.datasource import load_all
from node.session import Contribution, LoadedData, NodeSession
from node.sql import duckdb_rows
from node.transport import open_session
from node.validation import check_valid, coerce
from privacy.errors import PrivacyError
from privacy.head import HeadReceipt
from privacy.ledger import ChargeReceipt

log = logging.getLogger("fedtally.node")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
_JITTER = SystemRandom()
#: what carries the node's (masked or encrypted) statistic: the budget is released first
CONTRIBUTIONS = (MaskedInput, EncryptedInput)
RoundNode = SecAggNode | PaillierNode


def _query_id(msg: object) -> bytes | None:
    """The query a message belongs to, if any."""
    if isinstance(msg, QueryAnnounce):
        return msg.query.query_id
    if isinstance(msg, SecAggMessage):
        return msg.query_id
    return None


def _jitter() -> float:
    """A factor in [0.5, 1.5) so that nodes restarted together do not reconnect in step."""
    return 0.5 + _JITTER.below(1000) / 1000


@dataclass
class InFlight:
    """A query this node is answering: the ledger's view of it, its charge, its round."""

    asked: Asked
    #: a DP charge, released just before the contribution leaves
    charge: ChargeReceipt | None = None
    #: whether the ledger holds an entry for the query yet (DP: from the charge on)
    recorded: bool = False
    node: RoundNode | None = None


@dataclass
class NodeService:
    config: NodeConfig
    data: LoadedData
    guard: ReplayGuard | None = None
    rounds: dict[bytes, InFlight] = field(default_factory=dict)
    budget: BudgetKeeper | None = None
    #: Paillier mode: the fixed-base randomness table, built once per process
    encryptor: FastEncryptor | None = None
    session: NodeSession = field(init=False)

    def __post_init__(self) -> None:
        if self.guard is None:  # kept beside the ledger, so it survives a restart
            self.guard = ReplayGuard(path=self.config.ledger.parent / "seen-queries.db")
        if self.budget is None:
            self.budget = open_ledger(self.config, self.guard)
        manifest = self.config.me.manifest
        self.session = NodeSession(self.config.me.name, self.data, self.config.policy,
                                   self.budget, manifest.max_rows_per_node,
                                   manifest.dp_honest_nodes, manifest.max_colluding_nodes,
                                   verifiable=manifest.verifiable_totals)
        key = self.config.me.manifest.paillier_key
        if key is not None and self.encryptor is None:
            # the fixed-base tables, once per process: encryption randomness and proofs
            self.encryptor = FastEncryptor(key.threshold.public, SystemRandom())
            partial_proof.prepare(key.threshold)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Stay connected until ``stop`` is set, reconnecting with exponential backoff."""
        stop = stop or asyncio.Event()
        delay = BACKOFF_START_S
        me = self.config.me
        while not stop.is_set():
            try:
                connection, welcome = await open_session(
                    self.config.aggregator_url, self.config.ssl_context, name=me.name,
                    role="node", identity=me.identity, federation_id=me.manifest.federation_id)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed,
                    FedtallyError) as exc:
                log.warning("cannot reach the aggregator (%s); retrying in %.1fs",
                            type(exc).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay * _jitter())
                delay = min(delay * 2, BACKOFF_MAX_S)
                continue
            delay = BACKOFF_START_S
            log.info("connected to the aggregator as %s", me.name)
            try:
                await connection.send(encode(NodeInfo(canonical_json(self.data.catalog()))))
                await self._serve(connection, stop)
            except ConnectionClosed:
                log.warning("lost the aggregator connection")
            finally:
                await connection.close()
                self.rounds.clear()

    async def _serve(self, connection: ClientConnection, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiver = asyncio.ensure_future(connection.recv())
                done, _ = await asyncio.wait({receiver, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    receiver.cancel()
                    return
                await self._handle(connection, receiver.result())
        finally:
            stopper.cancel()

    async def _handle(self, connection: ClientConnection, frame: bytes | str) -> None:
        try:
            msg = decode(frame if isinstance(frame, bytes) else frame.encode(), MAX_FRAME)
        except FedtallyError as exc:
            log.warning("undecodable frame from the aggregator: %s", exc)
            return
        try:
            if isinstance(msg, QueryAnnounce):
                await self._on_announce(connection, msg)
            elif isinstance(msg, BudgetQuery):
                await self._on_budget(connection, msg)
            elif isinstance(msg, SecAggMessage):
                await self._on_secagg(connection, msg)
            elif isinstance(msg, ErrorNotice):
                log.warning("the aggregator reports %s: %s", msg.code, msg.message)
            else:
                log.warning("ignoring unexpected %s", type(msg).__name__)
        except ConnectionClosed:
            raise
        except Exception:  # a query never takes the node down: log it, keep serving
            log.exception("unexpected failure handling %s", type(msg).__name__)
            query_id = _query_id(msg)
            if query_id is not None:
                self.rounds.pop(query_id, None)
                await connection.send(encode(QueryRefused(query_id, InternalError.code,
                                                          public_text(InternalError()))))

    async def _on_announce(self, connection: ClientConnection, msg: QueryAnnounce) -> None:
        query_id = msg.query.query_id
        try:
            if len(self.rounds) >= self.config.policy.max_queries_in_flight:
                raise QueryError(f"this node is answering {len(self.rounds)} queries already "
                                 "(its policy's max_queries_in_flight); try again shortly")
            flight, first, head = await asyncio.to_thread(self._begin, msg)
        except FedtallyError as exc:
            log.info("refused query %s: %s", query_id.hex()[:8], exc)
            await connection.send(encode(QueryRefused(query_id, exc.code, public_text(exc))))
            return
        self.rounds[query_id] = flight
        await connection.send(encode(first))
        await self._send_head(connection, query_id, head)

    def _begin(self, msg: QueryAnnounce) -> tuple[InFlight, SecAggMessage, HeadReceipt | None]:
        """Admit, charge, compute, and make the round's first message (in Paillier mode
        that is already the encrypted contribution: it is recorded in the ledger first).
        Every authenticated query the node refuses is recorded with its reason."""
        assert self.guard is not None
        query = msg.query
        spec = authenticate(self.config.me, query, int(time.time() * 1000))
        flight = InFlight(self.session.asked(spec, query.researcher, query.query_id,
                                             query.digest))
        try:
            admitted = admit(self.config.me, query, msg.params, self.session, self.guard,
                             spec=spec)
            if self.config.me.manifest.paillier_key is not None \
                    and query.reply_key == bytes(32):
                raise QueryError("a query to a Paillier federation must carry the "
                                 "researcher's reply key")
            # charged (durably) before any row is read; a failure while computing keeps it
            flight.charge = self.session.charge(flight.asked, admitted.layout)
            flight.recorded = admitted.layout.noise is not None
            contribution = self.session.compute(spec, admitted.layout, query.query_id)
            flight.node = self._round_node(msg, contribution)
            first = flight.node.start()
        except FedtallyError as exc:
            self._failed(flight, exc)
            raise
        head = self._answered(flight) if isinstance(first, CONTRIBUTIONS) else None
        return flight, first, head

    def _failed(self, flight: InFlight, exc: FedtallyError) -> None:
        """The ledger's side of a query that ends without a contribution: a DP charge is
        refunded unless the failure happened while computing on the rows (InternalError:
        it might depend on them); a query with no entry yet is recorded as refused with
        its reason (a replay's entry exists already)."""
        if flight.recorded:
            if not isinstance(exc, InternalError):
                self.session.refund(flight.charge, f"the round ended ({exc.code}) before "
                                                   "the contribution was sent")
            return
        if not isinstance(exc, ReplayError):
            self.session.refused(flight.asked, exc.code)

    def _answered(self, flight: InFlight) -> HeadReceipt:
        """Just before the contribution leaves: the ledger entry, and the head to send."""
        head = self.session.answered(flight.asked, flight.charge)
        flight.recorded = True
        flight.charge = None
        assert self.guard is not None
        self.guard.remember_head(head.seq, head.hash)
        return head

    async def _send_head(self, connection: ClientConnection, query_id: bytes,
                         head: HeadReceipt | None) -> None:
        if head is not None:
            await connection.send(encode(LedgerHead(query_id, head.to_json())))

    async def _on_budget(self, connection: ClientConnection, msg: BudgetQuery) -> None:
        me = self.config.me
        try:
            member = me.manifest.member(msg.researcher, "researcher")
            member.verify_key.verify(budget_statement(me.manifest.federation_id,
                                                      msg.request_id, msg.researcher,
                                                      msg.issued_at_ms), msg.signature)
        except (FedtallyError, CryptoError):
            log.warning("ignored a budget query that does not verify")
            return
        now = int(time.time() * 1000)
        assert self.guard is not None
        try:  # signed requests are fresh and answered once: a replayed one is ignored
            if abs(now - msg.issued_at_ms) > MAX_CLOCK_SKEW_MS:
                raise ReplayError("the budget query is too old (or from the future)")
            self.guard.check_and_remember(msg.request_id, now)
        except ReplayError as exc:
            log.warning("ignored a budget query: %s", exc)
            return
        assert self.budget is not None
        lines = await asyncio.to_thread(self.budget.summary, msg.researcher)
        await connection.send(encode(BudgetReport(msg.request_id, canonical_json(lines))))

    def _round_node(self, msg: QueryAnnounce, contribution: Contribution) -> RoundNode:
        me = self.config.me
        key = me.manifest.paillier_key
        vector = contribution.vector
        if key is None:
            return SecAggNode(msg.params, me.name, me.identity, me.manifest.verify_keys(),
                              vector, SystemRandom(), contribution.commitment)
        share, encryptor = self.config.key_share, self.encryptor
        if share is None or encryptor is None:
            raise ConfigurationError("this node has no share of the federation's key")
        return PaillierNode(msg.params, me.name, me.identity, me.manifest.verify_keys(), vector,
                            key, share, encryptor, msg.query.reply_key, SystemRandom(),
                            decrypt_workers=self.config.decrypt_workers)

    def _step(self, flight: InFlight, msg: SecAggMessage
              ) -> tuple[SecAggMessage | None, HeadReceipt | None]:
        """One state-machine step; a contribution is recorded in the ledger first."""
        assert flight.node is not None
        try:
            reply = flight.node.receive(msg)
        except FedtallyError as exc:
            self._failed(flight, exc)
            raise
        head = self._answered(flight) if isinstance(reply, CONTRIBUTIONS) else None
        return reply, head

    async def _on_secagg(self, connection: ClientConnection, msg: SecAggMessage) -> None:
        flight = self.rounds.get(msg.query_id)
        if flight is None:
            log.warning("message for unknown query %s ignored", msg.query_id.hex()[:8])
            return
        try:
            reply, head = await asyncio.to_thread(self._step, flight, msg)
        except FedtallyError as exc:
            self.rounds.pop(msg.query_id, None)
            assert flight.node is not None
            if flight.node.stage.value == "aborted":
                log.info("query %s aborted by the aggregator", msg.query_id.hex()[:8])
                return
            log.warning("refusing to continue query %s: %s", msg.query_id.hex()[:8], exc)
            await connection.send(encode(QueryRefused(msg.query_id, exc.code, public_text(exc))))
            return
        if flight.node is not None and flight.node.finished:
            self.rounds.pop(msg.query_id, None)
        if reply is not None:
            await connection.send(encode(reply))
        await self._send_head(connection, msg.query_id, head)


def open_ledger(config: NodeConfig, guard: ReplayGuard) -> BudgetKeeper:
    """The node's ledger, after checking it is not older than the receipts the node handed
    out: a node on a rolled-back or lost ledger would forget what researchers spent."""
    path = config.ledger
    last = guard.last_head()
    if last is not None and not path.exists():
        raise ConfigurationError(
            f"the ledger {path} is missing, but this node has handed out receipts up to "
            f"entry {last[0]}: restore the newest copy of it (a node cannot forget what "
            "researchers spent); to start a new ledger on purpose, move seen-queries.db "
            "aside as well")
    keeper = BudgetKeeper(path, config.me.identity, config.policy)
    if last is not None:
        try:
            keeper.ledger.check_extends(last)
        except PrivacyError:
            keeper.close()
            raise ConfigurationError(
                f"the ledger {path} is older than the receipts this node handed out (up to "
                f"entry {last[0]}): it was rolled back or replaced; restore its newest copy "
                "(to start a new ledger on purpose, move both files aside)") from None
    return keeper


def load_data(config: NodeConfig) -> LoadedData:
    """Load and validate. CSV and Parquet files go to DuckDB (validated there in SQL, by
    counts per column) unless the configuration asks for pandas; SQL tables are read into
    pandas, validated row by row. Raises DataError naming the problems."""
    if config.model_path is None:
        raise ConfigurationError("the node configuration names no data_model")
    model = load_model(config.model_path)
    if config.row_store == "duckdb" and duckdb_rows.supports(config.sources):
        return LoadedData(model, store=duckdb_rows.DuckRows.load(config.sources, model))
    rows = load_all(config.sources)
    check_valid(rows, model)
    return LoadedData(model, coerce(rows, model))


def run_node(config_path: str, *, aggregator_url: str | None = None) -> None:
    """Entry point of `fedtally node serve`. SIGTERM and SIGINT stop it cleanly: the ledger
    is closed, which folds its write-ahead log into ledger.db."""
    config = load_node_config(Path(config_path), aggregator_url=aggregator_url)
    data = load_data(config)
    service = NodeService(config, data)
    log.info("node %s serving %d rows of %s", config.me.name, data.row_count, data.model.name)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await service.run(stop)

    try:
        asyncio.run(serve())
    finally:
        assert service.budget is not None
        service.budget.close()


