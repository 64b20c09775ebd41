"""A round the aggregator cannot finish ends at every node it asked: each hears RoundAborted
with the round's error code, so that none computes on (up to its max_query_seconds), sends
into a finished round, or holds the round and a mask-mode DP charge until it reconnects.
The real aggregator over loopback TLS; the nodes are bare member connections that read what
they are sent and never answer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from aggregator.service import AggregatorService
from crypto.keyfile import read_key_file
from crypto.randomness import SeededRandom
from fedtally.federation import init_federation
from protocol.codec import decode, encode
from protocol.messages import RoundAborted
from protocol.service_messages import ErrorNotice, NodeInfo, QueryAnnounce, QueryRequest
from protocol.signed_query import SignedQuery, signed_query_statement
from stats.query import QuerySpec
from tests.aggregator.test_operations_service import _run, _session

NODES = ("a", "b", "c")
CATALOG = b'{"data_models":{"m:1":{"datasets_held":["d"],"model":{}}}}'


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fed")
    init_federation(root, list(NODES), ["alice"], rng=SeededRandom(3))
    return root


def _query(root: Path, federation_id: str) -> SignedQuery:
    key = read_key_file(root / "keys" / "alice.key")
    spec = QuerySpec(data_model="m:1", datasets=("d",), method="count").canonical()
    issued = int(time.time() * 1000)
    statement = signed_query_statement("alice", federation_id, b"\x05" * 16, issued, spec,
                                       8, 64, reply_key=bytes(32))
    return SignedQuery("alice", federation_id, b"\x05" * 16, issued, spec, 8, 64,
                       key.identity.sign(statement))


def test_a_round_that_fails_is_ended_at_every_node_it_asked(root: Path) -> None:
    heard: dict[str, list[object]] = {}
    told: list[object] = []

    async def scenario(port: int, ssl: object, service: AggregatorService) -> None:
        nodes = {name: await _session(root, port, ssl, name, "node") for name in NODES}
        for connection in nodes.values():
            await connection.send(encode(NodeInfo(CATALOG)))
        while len(service.catalogs) < len(NODES):
            await asyncio.sleep(0.01)
        alice = await _session(root, port, ssl, "alice", "researcher")
        await alice.send(encode(QueryRequest(b"\x01" * 16,
                                             _query(root, service.manifest.federation_id))))

        async def listen(name: str) -> None:  # announced, then (nobody answering) ended
            heard[name] = []
            while not any(isinstance(m, RoundAborted) for m in heard[name]):
                heard[name].append(decode(await asyncio.wait_for(nodes[name].recv(), 30)))

        await asyncio.gather(*(listen(name) for name in NODES))
        told.append(decode(await asyncio.wait_for(alice.recv(), 30)))

    _run(root, scenario, stage_timeout_s=0.5)
    for name in NODES:
        announce, aborted = heard[name]
        assert isinstance(announce, QueryAnnounce), name
        assert isinstance(aborted, RoundAborted) and aborted.query_id == b"\x05" * 16, name
        assert aborted.code == "threshold_not_met", name
    [notice] = told
    assert isinstance(notice, ErrorNotice) and notice.code == "threshold_not_met"
