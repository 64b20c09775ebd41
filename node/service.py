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
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from crypto import partial_proof
from crypto.encoding import RingVector
from crypto.errors import CryptoError
from crypto.paillier import FastEncryptor
from crypto.randomness import SystemRandom
from engine.codec import decode, encode
from engine.errors import ConfigurationError, FedtallyError, InternalError, QueryError
from engine.messages import MaskedInput, SecAggMessage
from engine.paillier_messages import EncryptedInput
from engine.paillier_node import PaillierNode
from engine.query import canonical_json
from engine.secagg_node import SecAggNode
from engine.service_messages import (
    BudgetQuery,
    BudgetReport,
    ErrorNotice,
    NodeInfo,
    QueryAnnounce,
    QueryRefused,
    budget_statement,
)
from engine.transport import MAX_FRAME, public_text
from node.admission import ReplayGuard, admit
from node.budget import BudgetKeeper
from node.config import NodeConfig, load_model, load_node_config
from node.datasource import load_all
from node.session import LoadedData, NodeSession
from node.transport import open_session
from node.validation import check_valid, coerce
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
class NodeService:
    config: NodeConfig
    data: LoadedData
    guard: ReplayGuard | None = None
    rounds: dict[bytes, RoundNode] = field(default_factory=dict)
    #: charges of DP rounds in flight, released just before the masked input leaves
    receipts: dict[bytes, ChargeReceipt] = field(default_factory=dict)
    budget: BudgetKeeper | None = None
    #: Paillier mode: the fixed-base randomness table, built once per process
    encryptor: FastEncryptor | None = None
    session: NodeSession = field(init=False)

    def __post_init__(self) -> None:
        if self.guard is None:  # kept beside the ledger, so it survives a restart
            self.guard = ReplayGuard(path=self.config.ledger.parent / "seen-queries.db")
        if self.budget is None:
            self.budget = BudgetKeeper(self.config.ledger, self.config.me.identity,
                                       self.config.policy)
        manifest = self.config.me.manifest
        self.session = NodeSession(self.config.me.name, self.data, self.config.policy,
                                   self.budget, manifest.max_rows_per_node,
                                   manifest.dp_honest_nodes)
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
            node, first = await asyncio.to_thread(self._begin, msg)
        except FedtallyError as exc:
            log.info("refused query %s: %s", query_id.hex()[:8], exc)
            await connection.send(encode(QueryRefused(query_id, exc.code, public_text(exc))))
            return
        self.rounds[query_id] = node
        await connection.send(encode(first))

    def _begin(self, msg: QueryAnnounce) -> tuple[RoundNode, SecAggMessage]:
        """Admit, charge, compute, and make the round's first message (in Paillier mode
        that is already the encrypted contribution, so the charge is released first)."""
        node = self._prepare(msg)
        query_id = msg.query.query_id
        try:
            first = node.start()
        except FedtallyError:
            assert self.budget is not None
            self.budget.refund(self.receipts.pop(query_id, None),
                               "the node failed before sending its contribution")
            raise
        if isinstance(first, CONTRIBUTIONS):
            assert self.budget is not None
            self.budget.release(self.receipts.pop(query_id, None))
        return node, first

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
        assert self.budget is not None
        lines = await asyncio.to_thread(self.budget.summary, msg.researcher)
        await connection.send(encode(BudgetReport(msg.request_id, canonical_json(lines))))

    def _prepare(self, msg: QueryAnnounce) -> RoundNode:
        assert self.guard is not None
        admitted = admit(self.config.me, msg.query, msg.params, self.session, self.guard)
        query_id = msg.query.query_id
        if self.config.me.manifest.paillier_key is not None and msg.query.reply_key == bytes(32):
            raise QueryError("a query to a Paillier federation must carry the researcher's "
                             "reply key")
        # charged (durably) before any row is read; a failure from here on keeps the charge
        receipt = self.session.charge(admitted.spec, admitted.layout, msg.query.researcher,
                                      query_id)
        vector, _ = self.session.compute(admitted.spec, admitted.layout, query_id)
        node = self._round_node(msg, vector)
        if receipt is not None:
            self.receipts[query_id] = receipt
        return node

    def _round_node(self, msg: QueryAnnounce, vector: RingVector) -> RoundNode:
        me = self.config.me
        key = me.manifest.paillier_key
        if key is None:
            return SecAggNode(msg.params, me.name, me.identity, me.manifest.verify_keys(),
                              vector, SystemRandom())
        share, encryptor = self.config.key_share, self.encryptor
        if share is None or encryptor is None:
            raise ConfigurationError("this node has no share of the federation's key")
        return PaillierNode(msg.params, me.name, me.identity, me.manifest.verify_keys(), vector,
                            key, share, encryptor, msg.query.reply_key, SystemRandom(),
                            decrypt_workers=self.config.decrypt_workers)

    def _step(self, node: RoundNode, msg: SecAggMessage) -> SecAggMessage | None:
        """One state-machine step; a contribution is released in the ledger first."""
        assert self.budget is not None
        try:
            reply = node.receive(msg)
        except FedtallyError:
            self.budget.refund(self.receipts.pop(msg.query_id, None),
                               "the round ended before the masked input was sent")
            raise
        if isinstance(reply, CONTRIBUTIONS):
            self.budget.release(self.receipts.pop(msg.query_id, None))
        return reply

    async def _on_secagg(self, connection: ClientConnection, msg: SecAggMessage) -> None:
        node = self.rounds.get(msg.query_id)
        if node is None:
            log.warning("message for unknown query %s ignored", msg.query_id.hex()[:8])
            return
        try:
            reply = await asyncio.to_thread(self._step, node, msg)
        except FedtallyError as exc:
            self.rounds.pop(msg.query_id, None)
            if node.stage.value == "aborted":
                log.info("query %s aborted by the aggregator", msg.query_id.hex()[:8])
                return
            log.warning("refusing to continue query %s: %s", msg.query_id.hex()[:8], exc)
            await connection.send(encode(QueryRefused(msg.query_id, exc.code, public_text(exc))))
            return
        if node.finished:
            self.rounds.pop(msg.query_id, None)
        if reply is not None:
            await connection.send(encode(reply))


def load_data(config: NodeConfig) -> LoadedData:
    """Load and validate; raises DataError naming every problem (row and column)."""
    rows = load_all(config.sources)
    if config.model_path is None:
        raise ConfigurationError("the node configuration names no data_model")
    model = load_model(config.model_path)
    check_valid(rows, model)
    return LoadedData(model, coerce(rows, model))


def run_node(config_path: str, *, aggregator_url: str | None = None) -> None:
    """Entry point of `fedtally node serve`."""
    config = load_node_config(Path(config_path), aggregator_url=aggregator_url)
    data = load_data(config)
    log.info("node %s serving %d rows of %s", config.me.name, len(data.rows), data.model.name)
    asyncio.run(NodeService(config, data).run())


