"""The researcher's client: a synchronous API over one authenticated websocket.

An event loop runs in a background thread; every public method sends one signed request and
waits for its answer. Queries are signed with the researcher's manifest key, so neither the
aggregator nor anyone else can alter them on the way to the nodes. Ctrl-C (or the client's
timeout) while a query runs cancels it everywhere: the aggregator aborts its round, and a
node that has not sent its contribution yet refunds its DP charge.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from crypto.errors import CryptoError
from crypto.highwater import raise_high_water
from crypto.keyagreement import X25519KeyPair
from crypto.keyfile import KeyFile, read_key_file
from crypto.randomness import SystemRandom
from crypto.tls import certificate_fingerprint, client_ssl_context
from fedtally.catalog import Catalog
from fedtally.dp import BUDGET_DELTA, budget_frame
from fedtally.receipts import Receipts
from fedtally.version import software_version
from node.transport import CONNECT_ERRORS, explain_failure, open_session
from protocol.codec import decode, encode
from protocol.commitment import ForgedTotal
from protocol.errors import (
    AuthenticationError,
    ConfigurationError,
    FedtallyError,
    InconsistentView,
    ServiceUnavailable,
)
from protocol.manifest import Manifest, pinned_manifest
from protocol.paillier_messages import PaillierResult
from protocol.paillier_result import open_result
from protocol.service_messages import (
    BudgetQuery,
    BudgetReport,
    CancelQuery,
    CatalogRequest,
    ErrorNotice,
    Progress,
    QueryRequest,
    QueryResult,
    Status,
    StatusRequest,
    budget_statement,
    cancel_statement,
)
from protocol.service_messages import Catalog as CatalogReply
from protocol.signed_query import SignedQuery, signed_query_statement
from protocol.transport import MAX_FRAME, error_from_notice
from stats.datamodel import DataModel
from stats.plans import Layout
from stats.query import QuerySpec
from stats.suggest import json_failure
from stats.verified_totals import check_result

log = logging.getLogger("fedtally.client")
T = TypeVar("T")
DEFAULT_TIMEOUT_S = 600.0
#: how long an interrupted client waits to hand its cancel to the connection
CANCEL_SEND_TIMEOUT_S = 5.0

#: signals the researcher's own thread must receive (Ctrl-C, kill)
INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


def loop_thread(loop: asyncio.AbstractEventLoop) -> threading.Thread:
    """Run ``loop`` in a daemon thread that never receives Ctrl-C. The kernel may hand a
    process's signal to any thread that does not block it; one that landed on the loop's
    thread would leave the caller's thread waiting on its query until the query ended,
    instead of cancelling it at once."""
    def run() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
        loop.run_forever()

    thread = threading.Thread(target=run, name="fedtally-client", daemon=True)
    thread.start()
    return thread


#: the members that connect with this client (an auditor sees the catalog and the status)
CLIENT_ROLES = ("researcher", "auditor")


class Federation(Catalog):
    """A connection to a federation, as a researcher (or as an auditor: read-only)."""

    def __init__(self, url: str, key: KeyFile, manifest: Manifest, ssl_context: Any, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 progress: Callable[[str], None] | None = None,
                 receipts_path: Path | None = None, ca_path: Path | None = None) -> None:
        member = manifest.member(key.name)
        if member.role not in CLIENT_ROLES or member.verify_key != key.identity.verify_key:
            raise AuthenticationError(f"{key.name} is not a researcher with this key")
        self.url = url
        self.name = key.name
        #: "researcher", or "auditor": who may only see the catalog and the status
        self.role = member.role
        self.manifest = manifest
        self._receipts = Receipts({name: manifest.member(name).verify_key.raw
                                   for name in manifest.nodes()}, receipts_path)
        self._key = key
        self._ssl = ssl_context
        self._ca_path = ca_path
        self._timeout = timeout_s
        self._progress = progress
        self._rng = SystemRandom()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = loop_thread(self._loop)
        self._connection: ClientConnection | None = None
        self._pending: dict[bytes, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._models: dict[str, DataModel] = {}
        self.max_rows_per_node = manifest.max_rows_per_node
        self.dp_honest_nodes = manifest.dp_honest_nodes
        self.verifiable_totals = manifest.verifiable_totals
        self.local: Any = None  # set by local_federation: handles on the local processes
        self.nodes_online: tuple[str, ...] = ()
        self._call(self._ensure_connected())

    # --- plumbing ------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None, *,
              cancels: bytes | None = None) -> T:
        """Run ``coro`` on the client's loop and wait for it. Interrupted (Ctrl-C) or out
        of time, a query (``cancels``: its query id) is cancelled everywhere before the
        interruption goes on."""
        if self._closed:
            coro.close()
            raise ServiceUnavailable("this federation connection is closed (its `with` block "
                                     "ended, or close() was called): connect again")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout or self._timeout)
        except TimeoutError:
            future.cancel()
            self._cancel(cancels)
            raise ServiceUnavailable("the federation did not answer in time") from None
        except KeyboardInterrupt:
            future.cancel()
            self._cancel(cancels)
            raise

    def _cancel(self, query_id: bytes | None) -> None:
        """Send the signed cancel of query ``query_id``; the aggregator aborts the round and
        passes it on to the nodes (best effort: if the connection is gone, the aggregator
        has aborted the round already)."""
        if query_id is None:
            return
        signature = self._key.identity.sign(
            cancel_statement(self.manifest.federation_id, query_id, self.name))

        async def send() -> None:
            if self._connection is not None:
                await self._connection.send(encode(CancelQuery(self.name, query_id,
                                                               signature)))

        sent = asyncio.run_coroutine_threadsafe(send(), self._loop)
        try:
            sent.result(CANCEL_SEND_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - interrupted already; the disconnect cancels too
            sent.cancel()
            log.warning("could not send the cancellation; closing the connection cancels "
                        "the query instead")
            with contextlib.suppress(Exception):
                self._call(self._disconnect(), timeout=CANCEL_SEND_TIMEOUT_S)
        else:
            log.info("query cancelled")

    async def _disconnect(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def _ensure_connected(self) -> None:
        if self._connection is not None:
            return
        try:
            self._connection, welcome = await open_session(
                self.url, self._ssl, name=self.name, role=self.role,
                identity=self._key.identity, federation_id=self.manifest.federation_id,
                software=software_version())
        except CONNECT_ERRORS as exc:
            failure = explain_failure(exc, self.url, name=self.name,
                                      ca=str(self._ca_path) if self._ca_path else None)
            raise failure.error from exc
        self.nodes_online = welcome.nodes_online
        self._reader = asyncio.create_task(self._read(self._connection))

    async def _read(self, connection: ClientConnection) -> None:
        try:
            async for frame in connection:
                if not isinstance(frame, bytes):
                    continue
                try:
                    msg = decode(frame, MAX_FRAME)
                except FedtallyError as exc:
                    log.warning("undecodable frame from the aggregator: %s", exc)
                    continue
                self._deliver(msg)
        except ConnectionClosed:
            pass
        finally:
            if self._connection is connection:
                self._connection = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ServiceUnavailable("the connection was lost"))
            self._pending.clear()

    def _deliver(self, msg: object) -> None:
        request_id = getattr(msg, "request_id", None)
        if isinstance(msg, Progress):
            if self._progress:
                self._progress(f"{msg.stage} (waiting for {msg.waiting_for} node(s))")
            return
        future = self._pending.pop(request_id, None) if request_id else None
        if future is None or future.done():
            if isinstance(msg, ErrorNotice):
                log.warning("the aggregator reports %s: %s", msg.code, msg.message)
            return
        if isinstance(msg, ErrorNotice):
            future.set_exception(error_from_notice(msg))
        else:
            future.set_result(msg)

    async def _request(self, make: Callable[[bytes], object]) -> Any:
        await self._ensure_connected()
        assert self._connection is not None
        request_id = self._rng.bytes(16)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._connection.send(encode(make(request_id)))
            return await future
        except ConnectionClosed as exc:
            raise ServiceUnavailable("the connection was lost") from exc
        finally:
            self._pending.pop(request_id, None)

    def close(self) -> None:
        async def shutdown() -> None:
            if self._connection is not None:
                await self._connection.close()
            if self._reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader

        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._call(shutdown(), timeout=10)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- metadata --------------------------------------------------------------------------

    def catalog(self) -> dict[str, Any]:
        """Raw catalog: per online node, its data models and the datasets it holds."""
        reply: CatalogReply = self._call(self._request(CatalogRequest))
        catalog = json.loads(reply.catalog)
        for node in catalog["nodes"].values():
            for name, entry in node["data_models"].items():
                self._models.setdefault(name, DataModel.from_json(entry["model"]))
        return catalog

    def status(self) -> dict[str, Any]:
        """The aggregator's view of the federation: its version and uptime, every node
        (online, version, connected since, last seen, ping round trip) and how many
        researchers and auditors are connected. See ``fedtally status``."""
        reply: Status = self._call(self._request(StatusRequest))
        return status_dict(reply)

    def budget(self, delta: float = BUDGET_DELTA) -> pd.DataFrame:
        """Your privacy budgets at every online node, per dataset: every budget granted to
        you (spent or not), spent and remaining, in rho and as epsilon at ``delta``.
        ``attrs["nodes_not_answering"]`` names the nodes that did not report in time."""
        self._researcher_only("budgets")

        def ask(request_id: bytes) -> BudgetQuery:
            issued = int(time.time() * 1000)
            statement = budget_statement(self.manifest.federation_id, request_id, self.name,
                                         issued)
            return BudgetQuery(request_id, self.name, issued, self._key.identity.sign(statement))

        reply: BudgetReport = self._call(self._request(ask))
        body = json.loads(reply.report)
        rows = [{"node": node, **line} for node, lines in sorted(body["nodes"].items())
                for line in lines]
        frame = budget_frame(rows, delta)
        frame.attrs["nodes_not_answering"] = body["missing"]
        return frame

    def _researcher_only(self, what: str) -> None:
        if self.role != "researcher":
            raise AuthenticationError(f"{self.name} is an auditor: it sees the catalog and "
                                      f"the status, not {what}")

    def _execute(self, spec: QuerySpec, plan: Layout) -> QueryResult:
        self._researcher_only("queries")
        raw_spec = spec.canonical()
        query_id = self._rng.bytes(16)
        issued = int(time.time() * 1000)
        # fresh per query: in Paillier mode the nodes seal their partial decryptions to it
        reply = X25519KeyPair.generate(self._rng)
        statement = signed_query_statement(self.name, self.manifest.federation_id, query_id,
                                           issued, raw_spec, plan.length, plan.ring_bits,
                                           reply_key=reply.public)
        query = SignedQuery(self.name, self.manifest.federation_id, query_id, issued, raw_spec,
                            plan.length, plan.ring_bits, self._key.identity.sign(statement),
                            reply.public)
        answer = self._call(self._request(lambda rid: QueryRequest(rid, query)),
                            cancels=query_id)
        if isinstance(answer, PaillierResult):
            return self._open(answer, query, reply)
        if self.manifest.paillier_key is not None:
            raise InconsistentView("a Paillier federation's aggregator sent a plain total")
        try:  # the total must open what its contributors committed to (verifiable plans)
            check_result(answer, plan, query.digest, self.manifest.verify_keys())
        except ForgedTotal as exc:
            raise ForgedTotal(f"query {query_id.hex()[:8]}: {exc}") from None
        return answer

    def _open(self, answer: PaillierResult, query: SignedQuery,
              reply: X25519KeyPair) -> QueryResult:
        key = self.manifest.paillier_key
        if key is None:
            raise InconsistentView("a Paillier result from a federation without a key")
        total = open_result(answer, query_digest=query.digest, key=key,
                            members=self.manifest.verify_keys(), reply_key=reply,
                            workers=min(8, os.cpu_count() or 1))
        p = answer.params
        return QueryResult(answer.request_id, p.query_id, p.participants, answer.contributors,
                           p.ring_bits, p.vector_length, total.to_bytes(), answer.receipts,
                           timed_out=answer.timed_out)


def connect(url: str | None = None, identity: str | Path | None = None,
            federation: str | Path | None = None, *, authority: str | None = None,
            tls_ca: str | None = None, ca: str | Path | None = None,
            bundle: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
            progress: Callable[[str], None] | None = None, strict: bool = False) -> Federation:
    """Connect as a researcher.

    ``bundle`` is the file ``federation init`` wrote for you (``researchers/<name>.json``):
    it names the aggregator's URL, your key, the manifest and the CA file, and pins the
    federation's trust roots. Without it, give ``url``, ``identity`` and ``federation`` and
    pin the authority yourself: ``authority`` is the SHA-256 fingerprint of the authority's
    key that init printed (and ``tls_ca`` the CA certificate's). A manifest signed by any
    other authority, or a CA file other than the pinned one, is refused. ``ca`` defaults to
    ``tls/ca.pem`` beside the manifest.

    With a bundle, a ``url`` or ``ca`` given too overrides the bundle's (an aggregator that
    moved, a CA file kept elsewhere; the CA must still be the pinned one).

    ``strict=True``: every answer that does not cover everything asked raises
    :class:`fedtally.IncompleteAnswerError` instead of warning (each call may override it
    with its own ``strict=``).
    """
    if bundle is not None:  # a url or ca given too overrides the bundle's
        bundle_url, identity, federation, bundle_ca, authority, tls_ca = \
            _read_bundle(Path(bundle))
        url, ca = url or bundle_url, ca or bundle_ca
    if url is None or identity is None or federation is None:
        raise ConfigurationError("give a bundle, or url, identity and federation")
    if authority is None:
        raise ConfigurationError("pin the federation authority: pass authority=<fingerprint> "
                                 "(federation init prints it), or bundle=researchers/<you>.json")
    manifest_path = Path(federation)
    default_ca = manifest_path.resolve().parent / "tls" / "ca.pem"
    ca_path = Path(ca) if ca else default_ca
    try:
        ca_pem = ca_path.read_bytes()
        manifest = pinned_manifest(
            manifest_path.read_bytes(),
            {"authority": authority, "tls_ca": tls_ca or certificate_fingerprint(ca_pem)},
            ca_pem_fingerprint=certificate_fingerprint(ca_pem), source=str(manifest_path),
            # beside the key, like the receipts: keys/alice.key -> keys/alice.manifest-versions
            remember_version=partial(raise_high_water,
                                     Path(identity).with_suffix(".manifest-versions")))
    except OSError as exc:
        hint = (f" (ca= names the federation's CA certificate; by default {default_ca})"
                if Path(exc.filename or "") == ca_path else "")
        raise ConfigurationError(f"cannot read {exc.filename}: {exc.strerror}{hint}") from exc
    except ssl.CertificateError:
        raise ConfigurationError(f"{ca_path} is not a certificate") from None
    except AuthenticationError as exc:
        _explain_wrong_ca(manifest_path, ca_path, ca_pem, exc)
        raise
    try:
        key = read_key_file(Path(identity))
    except CryptoError as exc:
        raise ConfigurationError(str(exc)) from None
    if not url.startswith("wss://"):
        raise ConfigurationError("the aggregator URL must be wss:// (TLS is required)")
    # the receipts file sits beside the key: keys/alice.key -> keys/alice.receipts
    client = Federation(url, key, manifest, client_ssl_context(ca_path), timeout_s=timeout_s,
                        progress=progress, receipts_path=Path(identity).with_suffix(".receipts"),
                        ca_path=ca_path)
    client.strict = strict
    return client


def status_dict(reply: Status) -> dict[str, Any]:
    """A :class:`Status` as plain data: times in Unix seconds (None for never), the
    aggregator's uptime, and per node whether it is online, its version, since when it is
    connected (or when it was last connected), when it was last seen and its round trip."""
    def seconds(ms: int) -> float | None:
        return ms / 1000 if ms else None

    return {
        "aggregator": {"software": reply.software, "started_at": seconds(reply.started_at_ms),
                       "uptime_s": max(0, reply.now_ms - reply.started_at_ms) / 1000},
        "now": reply.now_ms / 1000,
        "nodes": [{"name": n.name, "online": n.online, "software": n.software or None,
                   "connected_at": seconds(n.connected_at_ms),
                   "last_seen": seconds(n.last_seen_ms),
                   "latency_ms": n.latency_us / 1000 if n.latency_us else None}
                  for n in reply.nodes],
        "researchers_online": reply.researchers_online,
        "auditors_online": reply.auditors_online,
    }


def _explain_wrong_ca(manifest_path: Path, ca_path: Path, ca_pem: bytes,
                      refused: AuthenticationError) -> None:
    """A refused manifest whose CA is not the CA file given: the usual cause is a ``ca=``
    of another federation, which deserves a hint rather than two fingerprints."""
    try:
        named = Manifest.from_bytes(manifest_path.read_bytes(), source=str(manifest_path)).tls_ca
    except (FedtallyError, OSError):
        return
    if named is not None and named != certificate_fingerprint(ca_pem):
        raise AuthenticationError(
            f"the CA certificate file {ca_path} is not the one of the federation in "
            f"{manifest_path} (it names CA {named[:16]}...): refusing it. Pass ca= the "
            "tls/ca.pem that `federation init` wrote for this federation, or connect with "
            "bundle=researchers/<you>.json") from refused


def _read_bundle(path: Path) -> tuple[str, Path, Path, Path, str, str]:
    """(url, identity, federation, ca, authority, tls_ca) from a researcher's bundle; paths
    are relative to the bundle's folder."""
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON{json_failure(exc)}") from None
    keys = ("url", "identity", "federation", "ca", "authority", "tls_ca")
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in keys):
        raise ConfigurationError(f"{path}: a bundle names {', '.join(keys)}")
    base = path.resolve().parent
    return (raw["url"], base / raw["identity"], base / raw["federation"], base / raw["ca"],
            raw["authority"], raw["tls_ca"])
