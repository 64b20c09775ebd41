"""The node service: connects out to the aggregator (hospital firewalls allow outbound
only), reconnects with exponential backoff and jitter, and answers queries through the
engine's state machine. A failure that trying again cannot mend (a certificate that does not
verify, an identity the aggregator refuses, another federation or protocol) stops the node
with a one-line error instead of retrying forever.

The node loads and validates its data at start-up and refuses to serve invalid data. Each
query is admitted (signature, freshness, policy, plan, parameters) before anything is
computed; refusals carry a typed, public-safe reason. Statistics and masking run in a
worker thread so keepalive pings continue during long computations.

Queries are computed one at a time (in the order announced), but the node keeps reading
while one computes: a cancel, the aggregator's abort of that round, the connection closing
or the node stopping interrupt the computation in its engine (:mod:`node.time_limit`),
and a query waiting its turn ends when its turn comes, right after its admission and
charge (see :mod:`node.lifecycle` for the charge). Other rounds' steps, budget requests and
pings are answered meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from crypto import partial_proof, plaintext_proof
from crypto.errors import CryptoError
from crypto.paillier import FastEncryptor
from crypto.randomness import RandomSource, SystemRandom, uniform_below
from node.admission import MAX_CLOCK_SKEW_MS, ReplayGuard
from node.budget import BudgetKeeper
from node.config import NodeConfig, check_source_datasets, load_model, load_node_config
from node.datasource import load_all
from node.lifecycle import InFlight, RoundNode, begin
from node.session import Contribution, LoadedData, NodeSession
from node.sql import duckdb_rows, postgres_rows
from node.sql.store import SqlRows
from node.time_limit import RoundEnd
from node.transport import CONNECT_ERRORS, explain_failure, open_session
from node.validation import check_valid, coerce
from privacy.errors import LedgerKeyChanged, PrivacyError
from privacy.head import HeadReceipt
from protocol.codec import canonical_json, decode, encode
from protocol.errors import (
    AuthenticationError,
    ConfigurationError,
    FedtallyError,
    InternalError,
    QueryError,
    QueryStopped,
    ReplayError,
)
from protocol.messages import MaskedInput, RoundAborted, SecAggMessage
from protocol.paillier_messages import EncryptedInput
from protocol.paillier_node import PaillierNode
from protocol.secagg_node import SecAggNode
from protocol.service_messages import (
    BudgetQuery,
    BudgetReport,
    CancelQuery,
    ErrorNotice,
    LedgerHead,
    NodeInfo,
    QueryAnnounce,
    QueryRefused,
    budget_statement,
    cancel_statement,
)
from protocol.transport import MAX_FRAME, public_text
from stats.datamodel import DataModel

log = logging.getLogger("fedtally.node")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
#: a connection that lasted this long resets the backoff (a shorter one does not, so a
#: connection that keeps being dropped right after it opens cannot make the node spin)
STABLE_CONNECTION_S = 30.0
#: how long a budget report waits for computations being stopped (their refunds) to end
STOPPING_WAIT_S = 5.0
#: what carries the node's (masked or encrypted) statistic: the budget is released first
CONTRIBUTIONS = (MaskedInput, EncryptedInput)


def _query_id(msg: object) -> bytes | None:
    """The query a message belongs to, if any."""
    if isinstance(msg, QueryAnnounce):
        return msg.query.query_id
    if isinstance(msg, SecAggMessage):
        return msg.query_id
    return None


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": the n-th wait is uniform in [c/2, c) with
    c = min(start * 2^n, maximum), so nodes restarted together spread out and no wait
    collapses to nothing. The jitter times reconnections; it is no secret (any source does;
    the OS's is at hand)."""

    start: float = BACKOFF_START_S
    maximum: float = BACKOFF_MAX_S
    rng: RandomSource = field(default_factory=SystemRandom)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.start * 2.0 ** self.attempt, self.maximum)
        self.attempt = min(self.attempt + 1, 62)
        fraction = uniform_below(self.rng, 1 << 20) / (1 << 20)
        return ceiling / 2 * (1 + fraction)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class Computing:
    """An announced query waiting its turn, or computing: who signed it, and the event
    that stops it (its round ended)."""

    announce: QueryAnnounce
    stop: RoundEnd = field(default_factory=RoundEnd)


@dataclass
class NodeService:
    config: NodeConfig
    data: LoadedData
    guard: ReplayGuard | None = None
    rounds: dict[bytes, InFlight] = field(default_factory=dict)
    budget: BudgetKeeper | None = None
    #: Paillier mode: the fixed-base randomness table, built once per process
    encryptor: FastEncryptor | None = None
    #: the fedtally version this node runs (stated to the aggregator for `fedtally status`)
    software: str = "unknown"
    session: NodeSession = field(init=False)
    #: queries cancelled lately: the aggregator's abort that follows a cancel is expected
    cancelled: deque[bytes] = field(default_factory=lambda: deque(maxlen=64))
    #: announced queries not yet answering their round: waiting their turn, or computing
    computing: dict[bytes, Computing] = field(default_factory=dict)
    #: one computation at a time (per event loop: tests run the service in several)
    _turn: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = field(default=None,
                                                                         repr=False)

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
            plaintext_proof.prepare(key.threshold.public)

    async def run(self, stop: asyncio.Event | None = None,
                  backoff: Backoff | None = None) -> None:
        """Stay connected until ``stop`` is set, reconnecting with exponential backoff and
        jitter. A permanent failure (see :func:`node.transport.explain_failure`) raises its
        one-line error instead of retrying."""
        stop = stop or asyncio.Event()
        backoff = backoff or Backoff()
        me, url = self.config.me, self.config.aggregator_url
        ca = str(self.config.ca_path) if self.config.ca_path else None
        while not stop.is_set():
            try:
                connection, welcome = await open_session(
                    url, self.config.ssl_context, name=me.name, role="node",
                    identity=me.identity, federation_id=me.manifest.federation_id,
                    software=self.software)
            except CONNECT_ERRORS as exc:
                failure = explain_failure(exc, url, name=me.name, ca=ca)
                if failure.permanent:
                    log.error("%s; not retrying", failure.error)
                    raise failure.error from None
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.1f s", failure.error, delay)
                await _sleep_unless(stop, delay)
                continue
            log.info("connected to the aggregator at %s as %s", url, me.name)
            opened = time.monotonic()
            try:
                await connection.send(encode(NodeInfo(canonical_json(self.data.catalog()))))
                await self._serve(connection, stop)
            except ConnectionClosed as exc:
                log.warning("lost the aggregator connection (%s)", _close_reason(exc))
            finally:
                await connection.close()
                self._abandon_rounds()
            if stop.is_set():
                break
            if time.monotonic() - opened >= STABLE_CONNECTION_S:
                backoff.reset()
                continue
            delay = backoff.next_delay()
            log.info("reconnecting in %.1f s", delay)
            await _sleep_unless(stop, delay)

    def _abandon_rounds(self) -> None:
        """The connection is gone: the rounds in flight end. A DP charge whose contribution
        has not been handed to the connection is refunded (provably nothing left)."""
        for query_id, flight in self.rounds.items():
            if flight.charge is None:
                continue
            try:
                flight.refund("the connection to the aggregator was lost before the "
                              "contribution was sent")
            except PrivacyError:
                log.exception("query %s: the refund failed; the charge stands",
                              query_id.hex()[:8])
        self.rounds.clear()

    async def _serve(self, connection: ClientConnection, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        announced: set[asyncio.Task[None]] = set()
        try:
            while True:
                receiver = asyncio.ensure_future(connection.recv())
                done, _ = await asyncio.wait({receiver, stopper},
                                             return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    receiver.cancel()
                    return
                msg = _decoded(receiver.result())
                if isinstance(msg, QueryAnnounce) and self._wait_turn(msg):
                    # registered now, so that a cancel read next finds it; computed in its
                    # turn while this loop reads on
                    task = asyncio.create_task(self._dispatch(connection, msg))
                    announced.add(task)
                    task.add_done_callback(partial(_answered, announced))
                elif msg is not None:
                    await self._dispatch(connection, msg)
        finally:
            stopper.cancel()
            # the connection closed or the node stops: what is computing is stopped, and
            # ends (refunded) before the rounds in flight are abandoned
            for computing in self.computing.values():
                computing.stop.end("the connection to the aggregator was lost")
            if announced:
                await asyncio.gather(*announced, return_exceptions=True)

    async def _handle(self, connection: ClientConnection, frame: bytes | str) -> None:
        msg = _decoded(frame)
        if msg is not None:
            await self._dispatch(connection, msg)

    def _wait_turn(self, msg: QueryAnnounce) -> bool:
        """Register an announced query to be computed in its turn (False: one with its id
        is already waiting or computing, and the admission refuses the replay)."""
        query_id = msg.query.query_id
        if query_id in self.computing:
            return False
        self.computing[query_id] = Computing(msg)
        return True

    def _turn_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._turn is None or self._turn[0] is not loop:
            self._turn = (loop, asyncio.Lock())
        return self._turn[1]

    async def _dispatch(self, connection: ClientConnection, msg: object) -> None:
        try:
            if isinstance(msg, QueryAnnounce):
                await self._on_announce(connection, msg)
            elif isinstance(msg, BudgetQuery):
                await self._on_budget(connection, msg)
            elif isinstance(msg, SecAggMessage):
                await self._on_secagg(connection, msg)
            elif isinstance(msg, CancelQuery):
                await self._on_cancel(msg)
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
        # registered by the reading loop, or (a direct call) now; another announce of the
        # same query is a replay
        mine = self._wait_turn(msg) or self.computing[query_id].announce is msg
        computing = self.computing[query_id]
        try:
            if not mine:
                raise ReplayError("this query is being answered already")
            others = len(self.rounds) + len(self.computing) - 1
            if others >= self.config.policy.max_queries_in_flight:
                raise QueryError(f"this node is answering {others} queries already "
                                 "(its policy's max_queries_in_flight); try again shortly")
            async with self._turn_lock():
                # even if its round ended while it waited: admitted (so that a replay of it
                # is refused), charged and ended as any stopped query (node.lifecycle)
                flight, first, head = await asyncio.to_thread(self._begin, msg,
                                                              computing.stop)
        except QueryStopped:
            return  # the lifecycle ended its charge; the round is over: nothing to say
        except FedtallyError as exc:
            log.info("refused query %s: %s", query_id.hex()[:8], exc)
            if not computing.stop.is_set():  # else its round is over: nobody to tell
                await connection.send(encode(QueryRefused(query_id, exc.code,
                                                          public_text(exc))))
            return
        finally:
            if mine:
                del self.computing[query_id]
        if computing.stop.is_set():
            # its round ended after it was computed, as this thread handed it over: nothing
            # is sent (a release already recorded stands: Paillier mode)
            if flight.charge is not None:
                await asyncio.to_thread(flight.refund, f"{computing.stop.why} before the "
                                                       "contribution was sent")
            log.info("query %s: its round ended as it was computed; nothing sent%s",
                     query_id.hex()[:8], "; its contribution was recorded, the charge "
                     "stands" if head is not None else "")
            return
        self.rounds[query_id] = flight
        await connection.send(encode(first))
        await self._send_head(connection, query_id, head)

    def _releases_when_computed(self) -> bool:
        """Paillier mode: the contribution is released (its charge stands) as soon as it is
        computed, so a computation its round's end stops keeps its charge, whenever it
        stopped (how long a node computed must not show in its ledger)."""
        return self.config.me.manifest.paillier_key is not None

    def _stop_computing(self, query_id: bytes, why: str) -> bool:
        """Stop the query if it waits its turn or computes (its round ended)."""
        computing = self.computing.get(query_id)
        if computing is None or computing.stop.is_set():
            return False
        computing.stop.end(why)
        self.cancelled.append(query_id)  # the abort that may follow is expected
        log.info("query %s: %s; stopping its computation", query_id.hex()[:8], why)
        return True

    def _begin(self, msg: QueryAnnounce, stop: RoundEnd | None = None
               ) -> tuple[InFlight, SecAggMessage, HeadReceipt | None]:
        """Admit, charge, compute (:func:`node.lifecycle.begin`), and make the round's first
        message (in Paillier mode that is already the encrypted contribution: it is
        recorded in the ledger first)."""
        assert self.guard is not None
        flight, contribution = begin(self.config.me, msg.query, msg.params, self.session,
                                     self.guard, int(time.time() * 1000), stop,
                                     self._releases_when_computed())
        try:
            flight.node = self._round_node(msg, contribution)
            first = flight.node.start()
            if stop is not None and stop.is_set():
                # its round ended as it was computed: ends as a stopped computation, before
                # the ledger records a release that would not happen
                raise QueryStopped(stop.why)
        except FedtallyError as exc:
            flight.failed(exc)
            raise
        head = flight.leaving() if isinstance(first, CONTRIBUTIONS) else None
        return flight, first, head

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
        # a round that just ended (a node refused, the researcher cancelled) may still be
        # stopping its computation here, its refund landing as it stops: the researcher
        # who asks right after would read a charge about to be refunded
        deadline = time.monotonic() + STOPPING_WAIT_S
        while time.monotonic() < deadline and any(c.stop.is_set()
                                                  for c in self.computing.values()):
            await asyncio.sleep(0.02)
        lines = await asyncio.to_thread(self.budget.summary, msg.researcher)
        await connection.send(encode(BudgetReport(msg.request_id, canonical_json(lines))))

    async def _on_cancel(self, msg: CancelQuery) -> None:
        """The researcher cancelled a query this node is answering. The cancel must be
        signed by the researcher who signed the query (the aggregator only relays it). A DP
        charge is refunded only while the contribution has not left: once it left, the
        charge stands whatever arrives later, so a cancel is no way to get noise for free."""
        flight = self.rounds.get(msg.query_id)
        computing = self.computing.get(msg.query_id)
        if flight is None and computing is None:
            return  # finished, refused, or never ours: nothing to stop
        signer = flight.asked.researcher if flight is not None \
            else computing.announce.query.researcher
        me = self.config.me
        try:
            if msg.researcher != signer:
                raise AuthenticationError("the cancel is not from the query's researcher")
            me.manifest.member(msg.researcher, "researcher").verify_key.verify(
                cancel_statement(me.manifest.federation_id, msg.query_id, msg.researcher),
                msg.signature)
        except (FedtallyError, CryptoError) as exc:
            log.warning("ignored a cancel of query %s: %s", msg.query_id.hex()[:8], exc)
            return
        if flight is None:
            self._stop_computing(msg.query_id,
                                 f"cancelled by its researcher {msg.researcher} (signed)")
            return
        del self.rounds[msg.query_id]
        self.cancelled.append(msg.query_id)
        if flight.charge is None:
            log.info("query %s cancelled by %s%s", msg.query_id.hex()[:8], msg.researcher,
                     "; its contribution had left, the charge stands" if flight.recorded
                     else "")
            return
        await asyncio.to_thread(flight.refund, f"cancelled by its researcher {msg.researcher} "
                                               "(signed) before the contribution was sent")
        log.info("query %s cancelled by %s before the contribution left: refunded",
                 msg.query_id.hex()[:8], msg.researcher)

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
            flight.failed(exc)
            raise
        head = flight.leaving() if isinstance(reply, CONTRIBUTIONS) else None
        return reply, head

    async def _on_secagg(self, connection: ClientConnection, msg: SecAggMessage) -> None:
        flight = self.rounds.get(msg.query_id)
        if flight is None and isinstance(msg, RoundAborted) and self._stop_computing(
                msg.query_id, f"the aggregator aborted the round ({msg.code})"):
            return
        if flight is None:
            if isinstance(msg, RoundAborted):
                # the aggregator ends every node's round when it fails, this node's
                # included after it refused or finished: nothing to do, nothing wrong
                log.debug("query %s: the aggregator ended its round (%s)",
                          msg.query_id.hex()[:8], msg.code)
            elif msg.query_id not in self.cancelled:
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


def _answered(announced: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
    """An announced query's task ended: its failure is read here (a closed connection is
    the reading loop's to report; anything else was refused and logged already)."""
    announced.discard(task)
    if not task.cancelled() and not isinstance(task.exception(), ConnectionClosed | None):
        log.error("answering a query failed", exc_info=task.exception())


def _decoded(frame: bytes | str) -> object | None:
    """The aggregator's message, or None (logged) for a frame that does not decode."""
    try:
        return decode(frame if isinstance(frame, bytes) else frame.encode(), MAX_FRAME)
    except FedtallyError as exc:
        log.warning("undecodable frame from the aggregator: %s", exc)
        return None


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _close_reason(exc: ConnectionClosed) -> str:
    close = exc.rcvd or exc.sent
    if close is None:
        return "no close frame: the network or the aggregator went away"
    if close.code == 1001 and not close.reason:
        return "code 1001: the aggregator stopped"
    return f"code {close.code}" + (f": {close.reason}" if close.reason else "")


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
    try:
        keeper = BudgetKeeper(path, config.me.identity, config.policy,
                              previous=config.previous_identity,
                              manifest_version=config.me.manifest.version)
    except LedgerKeyChanged as exc:
        identity = config.previous_key_path or "the node's key file + '.previous'"
        raise ConfigurationError(
            f"the ledger {path} is signed under this node's previous key "
            f"{exc.ledger_key[:16]}... (its key was rotated): put that key file at "
            f"{identity} (the authority's rotate-key left it as keys/NAME.key.previous) and "
            "start again; never start a new ledger (it would forget what researchers "
            "spent)") from None
    if last is not None:
        try:
            keeper.ledger.check_extends(last)
        except PrivacyError:
            keeper.close()
            raise ConfigurationError(
                f"the ledger {path} is older than the receipts this node handed out (up to "
                f"entry {last[0]}): it was rolled back or replaced; restore its newest copy "
                "(to start a new ledger on purpose, move both files aside)") from None
    if config.previous_identity is not None and config.previous_key_path is not None:
        # only now that the ledger is known to be the newest and under the new key (a
        # rotation entry records it): the retired private key has no use left and is a
        # liability if stolen (a restored older copy would still need it, so not before)
        config.previous_key_path.unlink(missing_ok=True)
        log.info("the node's key was rotated: its ledger records the new key (manifest "
                 "version %d) and the previous key file %s is deleted",
                 config.me.manifest.version, config.previous_key_path)
    return keeper


def load_data(config: NodeConfig) -> LoadedData:
    """Load and validate. CSV and Parquet files go to DuckDB (validated there in SQL, by
    counts per column) unless the configuration asks for pandas; a PostgreSQL table stays
    in its database (validated and computed there, read-only); other SQL tables are read
    into pandas, validated row by row. Raises DataError naming the problems."""
    if config.model_path is None:
        raise ConfigurationError("the node configuration names no data_model")
    model = load_model(config.model_path)
    check_source_datasets(config, model)
    store = sql_store(config, model)
    if store is not None:
        return LoadedData(model, store=store)
    rows = load_all(config.sources)
    check_valid(rows, model)
    return LoadedData(model, coerce(rows, model))


def sql_store(config: NodeConfig, model: DataModel) -> SqlRows | None:
    """The rows checked and kept where SQL computes on them (DuckDB for CSV and Parquet
    files, the hospital's PostgreSQL, Spark), or None where the configuration keeps them in pandas.
    Raises ValidationFailed naming the problems."""
    if config.row_store == "duckdb" and duckdb_rows.supports(config.sources):
        return duckdb_rows.DuckRows.load(config.sources, model)
    if config.row_store == "duckdb" and postgres_rows.supports(config.sources):
        return postgres_rows.PostgresRows.load(config.sources, model)
    if config.row_store == "duckdb" and any(s.kind == "spark" for s in config.sources):
        # imported only here: pyspark is large, and needs Java
        from node.sql import spark_rows

        if not spark_rows.supports(config.sources):
            raise ConfigurationError("a node's spark sources cannot be mixed with other kinds")
        return spark_rows.SparkRows.load(config.sources, model)
    return None


def run_node(config_path: str, *, aggregator_url: str | None = None,
             software: str = "unknown") -> None:
    """Entry point of `fedtally node serve`. SIGTERM and SIGINT stop it cleanly: the ledger
    is closed, which folds its write-ahead log into ledger.db. A permanent connection
    failure raises its one-line error."""
    config = load_node_config(Path(config_path), aggregator_url=aggregator_url)
    data = load_data(config)
    service = NodeService(config, data, software=software)
    log.info("node %s serving %d rows of %s, kept in %s", config.me.name, data.row_count,
             data.model.name, getattr(data.store, "engine", "memory (pandas)"))
    if data.row_count == 0:
        log.warning("the data holds no rows (a file with its header only?): this node "
                    "answers every query with nothing")

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
        log.info("node %s stopped; its ledger is closed", config.me.name)


