"""The aggregator's operator surface, on the real service over loopback TLS: the health
endpoint (tiny, constant, names nobody, no new unauthenticated resource), the status members
ask for (versions, last seen; researchers counted, not named), one live connection per node
name (a second is refused by name, a dead one replaced), and a cancel that only the query's
own researcher can make."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_module
from pathlib import Path
from types import SimpleNamespace

import pytest

from aggregator import service as aggregator_service
from aggregator.config import load_aggregator_config
from aggregator.service import AggregatorService, Session
from crypto.keyfile import read_key_file
from crypto.randomness import SeededRandom
from crypto.tls import client_ssl_context
from fedtally.federation import init_federation
from node.transport import open_session
from protocol.codec import decode, encode
from protocol.errors import ConfigurationError, DuplicateMember
from protocol.service_messages import (
    CancelQuery,
    MemberInfo,
    Status,
    StatusRequest,
    cancel_statement,
)
from protocol.transport import MAX_FRAME


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed")
    init_federation(root, ["a", "b", "c"], ["alice", "bob"], rng=SeededRandom(9))
    return root


def _service(root: Path, **options: object) -> AggregatorService:
    config = load_aggregator_config(root / "aggregator.json")
    return AggregatorService(config.manifest, host="127.0.0.1", port=0,
                             ssl_context=config.ssl_context,
                             certificate_fingerprint=config.certificate_fingerprint,
                             software="7.7.7", **options)  # type: ignore[arg-type]


def _run(root: Path, scenario, **options: object) -> AggregatorService:  # noqa: ANN001
    service = _service(root, **options)

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
        server = asyncio.create_task(service.serve(ready.set_result, stop))
        port = await ready
        try:
            await scenario(port, client_ssl_context(root / "tls" / "ca.pem"), service)
        finally:
            stop.set()
            await server

    asyncio.run(main())
    return service


async def _session(root: Path, port: int, ssl: object, name: str, role: str,
                   software: str | None = None):  # noqa: ANN202
    key = read_key_file(root / "keys" / f"{name}.key")
    connection, _ = await open_session(f"wss://127.0.0.1:{port}", ssl, name=name, role=role,
                                       identity=key.identity, federation_id=key.federation_id,
                                       software=software)
    return connection


async def _health(port: int, root: Path, path: str = "/healthz") -> tuple[str, bytes]:
    context = ssl_module.create_default_context(cafile=str(root / "tls" / "ca.pem"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                 .encode())
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.decode(), body


def test_health_is_constant_tiny_and_names_nobody(root: Path) -> None:
    bodies = []

    async def scenario(port: int, ssl: object, service: AggregatorService) -> None:
        head, body = await _health(port, root)
        bodies.append(body)
        assert head.startswith("HTTP/1.1 200")
        assert "no-store" in head
        node = await _session(root, port, ssl, "a", "node", "7.7.7")
        alice = await _session(root, port, ssl, "alice", "researcher")
        try:
            for path in ("/healthz", "/healthz?verbose=1"):
                head, body = await _health(port, root, path)
                bodies.append(body)
        finally:
            await node.close()
            await alice.close()
        # another path gets no page: only the websocket handshake, which refuses plain GET
        head, body = await _health(port, root, "/status")
        assert not head.startswith("HTTP/1.1 200")
        assert b"alice" not in body

    _run(root, scenario)
    for body in bodies:
        assert len(body) < 64
        assert set(json.loads(body)) == {"status", "uptime_s"}
        assert not any(word in body for word in (b"alice", b"7.7.7", b'"a"', b"node"))
    # the same shape whoever is connected: only the uptime differs
    assert {tuple(json.loads(b)) for b in bodies} == {("status", "uptime_s")}


def test_status_shows_versions_and_counts_researchers_without_naming_them(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregator_service, "STATUS_PING_TIMEOUT_S", 0.3)

    async def ask(alice) -> Status:  # noqa: ANN001
        await alice.send(encode(StatusRequest(b"\x05" * 16)))
        status = decode(await asyncio.wait_for(alice.recv(), 10), MAX_FRAME)
        assert isinstance(status, Status)
        return status

    async def scenario(port: int, ssl: object, service: AggregatorService) -> None:
        node = await _session(root, port, ssl, "a", "node", "9.9.9")
        alice = await _session(root, port, ssl, "alice", "researcher", "1.2.3")
        try:
            status = await ask(alice)
            # the node sends a frame, as it would in another researcher's round, then
            # answers no ping: its "last seen" stays the last answered ping, so the status
            # does not tell when rounds run
            await node.send(encode(MemberInfo("9.9.9")))
            await asyncio.sleep(0.1)
            node.transport.pause_reading()
            later = await ask(alice)
        finally:
            node.transport.resume_reading()
            await node.close()
            await alice.close()
        first_seen = {n.name: n.last_seen_ms for n in status.nodes}["a"]
        assert {n.name: n.last_seen_ms for n in later.nodes}["a"] == first_seen
        assert status.software == "7.7.7" and status.now_ms >= status.started_at_ms
        by_name = {n.name: n for n in status.nodes}
        assert set(by_name) == {"a", "b", "c"}
        assert by_name["a"].online and by_name["a"].software == "9.9.9"
        assert by_name["a"].latency_us > 0 and by_name["a"].last_seen_ms > 0
        assert not by_name["b"].online and by_name["b"].connected_at_ms == 0
        assert status.researchers_online == 1 and status.auditors_online == 0
        assert b"alice" not in encode(status)

    _run(root, scenario)


def test_a_second_connection_as_a_live_node_is_refused_by_name(root: Path) -> None:
    async def scenario(port: int, ssl: object, service: AggregatorService) -> None:
        first = await _session(root, port, ssl, "b", "node")
        try:
            with pytest.raises(DuplicateMember, match="node b is connected already"):
                await _session(root, port, ssl, "b", "node")
            assert service.sessions["b"].connection is not None
            # the first connection still works
            await first.send(encode(StatusRequest(b"\x01" * 16)))
        finally:
            await first.close()

    _run(root, scenario)


def test_a_dead_connection_is_replaced(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregator_service, "DUPLICATE_PING_TIMEOUT_S", 0.5)

    async def scenario(port: int, ssl: object, service: AggregatorService) -> None:
        stale = await _session(root, port, ssl, "c", "node")
        stale.transport.pause_reading()  # a hung process: it answers no ping any more
        fresh = await _session(root, port, ssl, "c", "node")
        try:
            assert service.sessions["c"].connection is not None
            assert len([s for s in service.sessions.values() if s.name == "c"]) == 1
        finally:
            await fresh.close()
            stale.transport.abort()

    _run(root, scenario)


def _signed_cancel(root: Path, signer: str, claimed: str, query_id: bytes,
                   federation_id: str) -> CancelQuery:
    key = read_key_file(root / "keys" / f"{signer}.key")
    return CancelQuery(claimed, query_id, key.identity.sign(
        cancel_statement(federation_id, query_id, claimed)))


def test_only_the_queries_researcher_can_cancel_it(root: Path) -> None:
    service = _service(root)
    federation = service.manifest.federation_id
    alice = Session("alice", "researcher", None)  # type: ignore[arg-type]
    bob = Session("bob", "researcher", None)  # type: ignore[arg-type]
    query_id = b"\x07" * 16

    def running() -> SimpleNamespace:
        # the fields of an ActiveRound the cancel handler reads and sets
        active = SimpleNamespace(researcher=alice, cancelled=False, cancel=None,
                                 changed=asyncio.Event())
        service.rounds[query_id] = active  # type: ignore[assignment]
        return active

    attempts = {
        "bob, for alice's query": (bob, _signed_cancel(root, "bob", "bob", query_id,
                                                       federation)),
        "bob's signature under alice's name": (alice, _signed_cancel(root, "bob", "alice",
                                                                     query_id, federation)),
        "alice's cancel of another query": (alice, CancelQuery(
            "alice", query_id, _signed_cancel(root, "alice", "alice", b"\x08" * 16,
                                              federation).signature)),
        "alice's cancel for another federation": (alice, _signed_cancel(
            root, "alice", "alice", query_id, "another-federation")),
    }
    for what, (session, cancel) in attempts.items():
        active = running()
        asyncio.run(service._on_cancel(session, cancel))
        assert not active.cancelled and active.cancel is None, what
    active = running()
    genuine = _signed_cancel(root, "alice", "alice", query_id, federation)
    asyncio.run(service._on_cancel(alice, genuine))
    assert active.cancelled and active.cancel == genuine


def test_a_plain_https_client_cannot_hold_the_health_endpoint_open(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never finishes its request is closed by the handshake timeout,
    like any other unauthenticated connection: the endpoint adds no resource a stranger
    can hold."""
    monkeypatch.setattr(aggregator_service, "AUTH_TIMEOUT_S", 1.0)

    async def scenario(port: int, ssl: object, service: AggregatorService) -> None:
        context = ssl_module.create_default_context(cafile=str(root / "tls" / "ca.pem"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        writer.write(b"GET /heal")  # and nothing more
        await writer.drain()
        started = asyncio.get_running_loop().time()
        with contextlib.suppress(ConnectionError):
            reply = await asyncio.wait_for(reader.read(), 10)  # the server closes it
            assert b"200" not in reply
        assert asyncio.get_running_loop().time() - started < 5
        writer.close()

    _run(root, scenario)


@pytest.mark.parametrize(("host", "says"), [
    ("192.0.2.1", "is not an address of this machine"),  # TEST-NET-1: nobody's address
    ("no-such-host.invalid", "does not resolve"),
])
def test_a_host_it_cannot_listen_on_is_one_line_with_a_hint(root: Path, host: str,
                                                            says: str) -> None:
    service = _service(root)
    service.host = host
    with pytest.raises(ConfigurationError, match=says) as refused:
        asyncio.run(service.serve())
    assert "\n" not in str(refused.value) and "aggregator.json" in str(refused.value)
