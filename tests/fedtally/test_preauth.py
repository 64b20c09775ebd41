"""Before a connection authenticates, the aggregator lets it send a Hello and nothing larger,
keeps at most a configured number of such connections, and times them out; after it, a
member gets full-size frames. Run on the real aggregator service over loopback TLS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from aggregator import service as aggregator_service
from aggregator.config import load_aggregator_config
from aggregator.service import AggregatorService
from crypto.keyfile import read_key_file
from crypto.randomness import SeededRandom
from crypto.tls import client_ssl_context
from fedtally.federation import init_federation
from node.transport import open_session
from protocol.codec import decode
from protocol.service_messages import Catalog, CatalogRequest
from protocol.transport import MAX_FRAME


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed")
    init_federation(root, ["a", "b", "c"], ["alice"], rng=SeededRandom(8))
    return root


def _run(root: Path, scenario, *, cap: int = 2) -> None:  # noqa: ANN001
    config = load_aggregator_config(root / "aggregator.json")
    service = AggregatorService(config.manifest, host="127.0.0.1", port=0,
                                ssl_context=config.ssl_context,
                                certificate_fingerprint=config.certificate_fingerprint,
                                max_unauthenticated=cap)

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
        server = asyncio.create_task(service.serve(ready.set_result, stop))
        port = await ready
        try:
            await scenario(f"wss://127.0.0.1:{port}", client_ssl_context(root / "tls" / "ca.pem"))
        finally:
            stop.set()
            await server

    asyncio.run(main())


def test_a_frame_larger_than_a_hello_closes_an_unauthenticated_connection(root: Path) -> None:
    async def scenario(url: str, ssl: object) -> None:
        async with connect(url, ssl=ssl, max_size=MAX_FRAME) as raw:
            await raw.recv()  # the challenge
            await raw.send(b"\x00" * 4096)
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(raw.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        # an authenticated member may send large frames: a researcher's catalog request and
        # its answer pass (and a 64 KiB frame is not refused for its size)
        key = read_key_file(root / "keys" / "alice.key")
        connection, _ = await open_session(url, ssl, name="alice", role="researcher",
                                           identity=key.identity,
                                           federation_id=key.federation_id)
        try:
            await connection.send(b"\x00" * 65536)  # undecodable: a typed notice, not a close
            assert decode(await connection.recv(), MAX_FRAME).code == "decode"
        finally:
            await connection.close()

    _run(root, scenario)


def test_unauthenticated_connections_are_capped_and_timed_out(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aggregator_service, "AUTH_TIMEOUT_S", 1.0)

    async def scenario(url: str, ssl: object) -> None:
        idle = [await connect(url, ssl=ssl) for _ in range(2)]
        for raw in idle:
            await raw.recv()  # challenges: both are authenticating
        turned_away = await connect(url, ssl=ssl)
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(turned_away.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        for raw in idle:  # the authentication timeout frees their places
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(raw.recv(), 10)
        key = read_key_file(root / "keys" / "alice.key")
        connection, _ = await open_session(url, ssl, name="alice", role="researcher",
                                           identity=key.identity,
                                           federation_id=key.federation_id)
        try:
            from protocol.codec import encode

            await connection.send(encode(CatalogRequest(bytes(16))))
            assert isinstance(decode(await connection.recv(), MAX_FRAME), Catalog)
        finally:
            await connection.close()

    _run(root, scenario)
