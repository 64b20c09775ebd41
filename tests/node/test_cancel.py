"""A researcher's cancel at the node: only the query's own researcher can cancel it (the
aggregator, which relays the cancel, cannot forge one, nor can another researcher), and it
refunds a DP charge only while the node's contribution has not left. A cancel after the
release refunds nothing, so cancelling is no way to get noisy answers for free. Run on the
real service object and its ledger (its websocket replaced by a recorder)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from crypto.keyfile import read_key_file
from node.service import NodeService
from protocol.codec import encode
from protocol.messages import AdvertiseKeys, RoundAborted
from protocol.service_messages import CancelQuery, QueryRefused, cancel_statement
from support import Recorder, announce_query, hospital_service

NODES = ["hosp_a", "hosp_b", "hosp_c"]
POLICY = {"budgets": {"*": {"*": {"rho": 10.0}}}}
RHO = 0.25


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    return hospital_service(tmp_path_factory.mktemp("fed"), ["alice", "bob"], seed=13,
                            policy=POLICY)


def _root(service: NodeService) -> Path:
    return service.config.ledger.parent.parent


def _sign(service: NodeService, who: str, query_id: bytes) -> bytes:
    identity = read_key_file(_root(service) / "keys" / f"{who}.key").identity
    return identity.sign(cancel_statement(service.config.me.manifest.federation_id, query_id,
                                          who))


def _spent(service: NodeService) -> float:
    assert service.budget is not None
    return sum(line["spent_rho"] for line in service.budget.summary("alice"))


def _announced(service: NodeService) -> tuple[bytes, Recorder]:
    """A DP count admitted and charged, its first message (the keys) sent, nothing released."""
    query_id, announce = announce_query(service, {"mode": "dp", "rho": RHO})
    connection = Recorder()
    asyncio.run(service._handle(connection, announce))
    assert isinstance(connection.sent[0], AdvertiseKeys), connection.sent
    assert query_id in service.rounds and service.rounds[query_id].charge is not None
    return query_id, connection


def test_a_cancel_signed_by_the_researcher_refunds_before_release(
        service, caplog: pytest.LogCaptureFixture) -> None:
    spent = _spent(service)
    query_id, connection = _announced(service)
    assert _spent(service) == pytest.approx(spent + RHO)
    cancel = CancelQuery("alice", query_id, _sign(service, "alice", query_id))
    asyncio.run(service._handle(connection, encode(cancel)))
    assert query_id not in service.rounds
    assert _spent(service) == pytest.approx(spent)
    assert not any(isinstance(m, QueryRefused) for m in connection.sent)
    # the same cancel again (a replay by the aggregator) changes nothing
    asyncio.run(service._handle(connection, encode(cancel)))
    assert _spent(service) == pytest.approx(spent)
    # the aggregator's abort that follows is expected: no warning for the operator
    with caplog.at_level(logging.WARNING, logger="fedtally.node"):
        asyncio.run(service._handle(connection, encode(RoundAborted(query_id, 0, "cancelled"))))
    assert "unknown query" not in caplog.text


@pytest.mark.parametrize("forgery", ["another researcher", "a signature over another query",
                                     "a name the signer is not"])
def test_only_the_queries_researcher_can_cancel_it(service, forgery: str) -> None:
    spent = _spent(service)
    query_id, connection = _announced(service)
    other_id = bytes(16) if query_id != bytes(16) else b"\x01" * 16
    cancel = {
        # bob is a researcher of the federation too, but the query is alice's
        "another researcher": CancelQuery("bob", query_id, _sign(service, "bob", query_id)),
        # alice's signature, but for another query (a cancel cannot be moved)
        "a signature over another query": CancelQuery("alice", query_id,
                                                      _sign(service, "alice", other_id)),
        # bob signs and claims to be alice (what a forging aggregator would try)
        "a name the signer is not": CancelQuery("alice", query_id,
                                                _sign(service, "bob", query_id)),
    }[forgery]
    asyncio.run(service._handle(connection, encode(cancel)))
    assert query_id in service.rounds  # the round goes on
    assert _spent(service) == pytest.approx(spent + RHO)  # and its charge stands
    service.rounds.pop(query_id)


def test_a_cancel_after_release_refunds_nothing(service) -> None:
    """Once the contribution left (the ledger's release, made just before it is sent), the
    charge stands: a researcher who saw the answer cannot cancel it afterwards."""
    spent = _spent(service)
    query_id, connection = _announced(service)
    flight = service.rounds[query_id]
    flight.leaving()  # what the node does just before its masked input leaves
    cancel = CancelQuery("alice", query_id, _sign(service, "alice", query_id))
    asyncio.run(service._handle(connection, encode(cancel)))
    assert query_id not in service.rounds
    assert _spent(service) == pytest.approx(spent + RHO)


def test_a_lost_connection_refunds_only_what_did_not_leave(service) -> None:
    """The aggregator goes away mid-round: a charge whose contribution had not left is
    refunded, one whose contribution left stands."""
    spent = _spent(service)
    unreleased, _ = _announced(service)
    released, _ = _announced(service)
    service.rounds[released].leaving()
    assert _spent(service) == pytest.approx(spent + 2 * RHO)
    service._abandon_rounds()
    assert not service.rounds
    assert _spent(service) == pytest.approx(spent + RHO)
