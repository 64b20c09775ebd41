"""Bad input at the services: every kind gets a typed error and the services keep serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import fedtally
from crypto.identity import SigningIdentity
from crypto.keyfile import KeyFile, read_key_file, write_key_file
from crypto.randomness import SeededRandom
from crypto.tls import certificate_fingerprint, client_ssl_context
from fedtally.synthetic import three_hospitals
from node.transport import open_session
from protocol.codec import decode, encode
from protocol.errors import AuthenticationError
from protocol.messages import AdvertiseKeys
from protocol.service_messages import (
    Catalog,
    CatalogRequest,
    Challenge,
    ErrorNotice,
    Hello,
    QueryRequest,
    QueryResult,
    hello_statement,
)
from protocol.signed_query import SignedQuery, signed_query_statement
from protocol.transport import MAX_FRAME
from stats.query import QuerySpec


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fedtally.Federation]:
    data = three_hospitals(seed=3, scale=0.05)
    with fedtally.local_federation(data, workdir=tmp_path_factory.mktemp("bad")) as federation:
        yield federation


def _workdir(fed: fedtally.Federation) -> Path:
    return fed.local.workdir


def _alice(fed: fedtally.Federation) -> KeyFile:
    return read_key_file(_workdir(fed) / "keys" / "alice.key")


async def _session(fed: fedtally.Federation, key: KeyFile | None = None):
    key = key or _alice(fed)
    return await open_session(fed.local.url, client_ssl_context(_workdir(fed) / "tls" / "ca.pem"),
                              name=key.name, role=key.role, identity=key.identity,
                              federation_id=fed.manifest.federation_id)


async def _exchange(connection, frame: bytes | str) -> object:
    await connection.send(frame)
    return decode(await asyncio.wait_for(connection.recv(), 10), MAX_FRAME)


def _still_serving(fed: fedtally.Federation) -> None:
    assert fed.count() > 0


@pytest.mark.parametrize(("frame", "code"), [
    (b"\x00" * 40, "decode"),  # not a fedtally frame
    (encode(CatalogRequest(bytes(16)))[:-3], "decode"),  # truncated
    (encode(CatalogRequest(bytes(16))) + b"junk", "decode"),  # trailing bytes
    (b"FTLY\x09\x01\x00\x19" + bytes(16), "decode"),  # unsupported version
    (b"FTLY\x01\x01\xff\xff", "decode"),  # unknown message type
    ("a text frame", "unexpected_message"),
])
def test_malformed_frames_get_a_typed_notice_and_the_connection_survives(
        fed: fedtally.Federation, frame: bytes | str, code: str) -> None:
    async def scenario() -> None:
        connection, _ = await _session(fed)
        try:
            reply = await _exchange(connection, frame)
            assert isinstance(reply, ErrorNotice) and reply.code == code
            again = await _exchange(connection, encode(CatalogRequest(bytes(range(16)))))
            assert isinstance(again, Catalog)
        finally:
            await connection.close()

    asyncio.run(scenario())
    _still_serving(fed)


def test_a_message_a_researcher_may_not_send(fed: fedtally.Federation) -> None:
    advert = AdvertiseKeys(bytes(16), 0, "alice", bytes(32), bytes(32), bytes(32), bytes(64))

    async def scenario() -> None:
        connection, _ = await _session(fed)
        try:
            reply = await _exchange(connection, encode(advert))
            assert isinstance(reply, ErrorNotice) and reply.code == "unexpected_message"
        finally:
            await connection.close()

    asyncio.run(scenario())
    _still_serving(fed)


def test_an_oversized_frame_closes_that_connection_only(fed: fedtally.Federation) -> None:
    async def scenario() -> None:
        connection, _ = await _session(fed)
        await connection.send(b"\x00" * (MAX_FRAME + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # too big

    asyncio.run(scenario())
    _still_serving(fed)


def _raw_hello(fed: fedtally.Federation, name: str, role: str, identity: SigningIdentity,
               certificate: str | None = None) -> object:
    """A hello signed by hand; ``certificate`` is the TLS certificate's fingerprint it binds
    (by default the aggregator's own, as an honest member sees it)."""
    seen = certificate or certificate_fingerprint(
        (_workdir(fed) / "tls" / "aggregator.pem").read_bytes())

    async def scenario() -> object:
        ssl = client_ssl_context(_workdir(fed) / "tls" / "ca.pem")
        async with connect(fed.local.url, ssl=ssl, max_size=MAX_FRAME) as connection:
            challenge = decode(await connection.recv(), MAX_FRAME)
            assert isinstance(challenge, Challenge)
            signature = identity.sign(hello_statement(
                challenge.federation_id, challenge.nonce, name, role, seen))
            return await _exchange(connection, encode(Hello(name, role, signature)))

    return asyncio.run(scenario())


def test_unknown_member_is_refused(fed: fedtally.Federation) -> None:
    stranger = SigningIdentity.generate(SeededRandom(1))
    reply = _raw_hello(fed, "mallory", "researcher", stranger)
    assert isinstance(reply, ErrorNotice) and reply.code == "authentication"
    _still_serving(fed)


def test_bad_signature_is_refused(fed: fedtally.Federation) -> None:
    impostor = SigningIdentity.generate(SeededRandom(2))
    reply = _raw_hello(fed, "alice", "researcher", impostor)
    assert isinstance(reply, ErrorNotice) and reply.code == "authentication"
    _still_serving(fed)


def test_a_hello_bound_to_another_tls_endpoint_is_refused(fed: fedtally.Federation) -> None:
    """A signed hello covers the certificate its TLS session presented: one obtained
    through another endpoint (a relay) does not verify at the aggregator."""
    reply = _raw_hello(fed, "alice", "researcher", _alice(fed).identity, certificate="ab" * 32)
    assert isinstance(reply, ErrorNotice) and reply.code == "authentication"
    _still_serving(fed)  # (the honest binding is what every other connection uses)


def test_a_member_claiming_another_role_is_refused(fed: fedtally.Federation) -> None:
    reply = _raw_hello(fed, "alice", "node", _alice(fed).identity)
    assert isinstance(reply, ErrorNotice) and reply.code == "authentication"


def test_researcher_not_in_the_manifest(fed: fedtally.Federation, tmp_path: Path) -> None:
    key = tmp_path / "mallory.key"
    write_key_file(key, KeyFile("mallory", "researcher", fed.manifest.federation_id,
                                SigningIdentity.generate(SeededRandom(3))))
    with pytest.raises(AuthenticationError, match="mallory"):
        fedtally.connect(fed.local.url, key, _workdir(fed) / "federation.json",
                         authority=fed.manifest.authority_fingerprint)
    _still_serving(fed)


def _signed_query(fed: fedtally.Federation, key: KeyFile, signer: SigningIdentity | None = None,
                  researcher: str | None = None) -> SignedQuery:
    model = next(iter(fed.data_models().values()))
    spec = QuerySpec("count", model.name, model.datasets()).canonical()
    from stats.datamodel import PlanModel
    from stats.planner import layout

    plan = layout(QuerySpec.from_bytes(spec), PlanModel(model), fed.manifest.max_rows_per_node,
                  verifiable=fed.manifest.verifiable_totals)
    query_id = SeededRandom(time.time_ns()).bytes(16)
    issued = int(time.time() * 1000)
    name = researcher or key.name
    statement = signed_query_statement(name, fed.manifest.federation_id, query_id, issued, spec,
                                       plan.length, plan.ring_bits)
    signature = (signer or key.identity).sign(statement)
    return SignedQuery(name, fed.manifest.federation_id, query_id, issued, spec, plan.length,
                       plan.ring_bits, signature)


def test_replayed_and_forged_queries_are_refused(fed: fedtally.Federation) -> None:
    key = _alice(fed)
    query = _signed_query(fed, key)
    forged = _signed_query(fed, key, signer=SigningIdentity.generate(SeededRandom(4)))

    async def scenario() -> None:
        connection, _ = await _session(fed)
        try:
            first = await _exchange(connection, encode(QueryRequest(bytes(16), query)))
            while not isinstance(first, QueryResult | ErrorNotice):
                first = decode(await asyncio.wait_for(connection.recv(), 30), MAX_FRAME)
            assert isinstance(first, QueryResult)
            replay = await _exchange(connection, encode(QueryRequest(bytes(range(16)), query)))
            assert isinstance(replay, ErrorNotice) and replay.code == "replay"
            fake = await _exchange(connection, encode(QueryRequest(bytes(16), forged)))
            assert isinstance(fake, ErrorNotice) and fake.code == "authentication"
        finally:
            await connection.close()

    asyncio.run(scenario())
    _still_serving(fed)


def test_an_empty_result_set_counts_zero_and_its_statistics_are_refused(
        fed: fedtally.Federation) -> None:
    assert fed.count(filters="age > 1000") == 0
    with pytest.raises(fedtally.QueryError, match="no rows: the filters leave none"):
        fed.descriptive_stats(["age"], filters="age > 1000")
