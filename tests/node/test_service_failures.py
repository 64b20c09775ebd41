"""A node never crashes on a query: whatever fails while it handles a message is logged for
its operator, refused to the researcher with the fixed `internal` text, and the node goes
on serving the next message. Run on the real service object (its websocket replaced by a
recorder), with a failure injected where no input can cause one any more."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from node.service import NodeService
from protocol.codec import encode
from protocol.service_messages import QueryRefused
from support import Recorder, announce_query, hospital_service

NODES = ["hosp_a", "hosp_b", "hosp_c"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    return hospital_service(tmp_path_factory.mktemp("fed"), ["alice"], seed=3)


def test_an_unexpected_failure_is_refused_as_internal_and_the_node_serves_on(
        service: NodeService, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    connection = Recorder()

    def broken(msg: object, stop: object = None) -> None:
        raise RuntimeError("a secret row value 73.4 in a message no one should see")

    monkeypatch.setattr(service, "_begin", broken)
    with caplog.at_level(logging.ERROR, logger="fedtally.node"):
        asyncio.run(service._handle(connection, announce_query(service)[1]))
    refusal = connection.sent[-1]
    assert isinstance(refusal, QueryRefused) and refusal.code == "internal"
    assert "73.4" not in refusal.message and "row" not in refusal.message
    assert "73.4" in caplog.text  # the operator's log keeps the details
    monkeypatch.undo()
    # the same service answers the next query
    asyncio.run(service._handle(connection, announce_query(service)[1]))
    assert not isinstance(connection.sent[-1], QueryRefused)


def _budget_query(service: NodeService, root: Path, issued_ms: int, request_id: bytes
                  ) -> bytes:
    from crypto.keyfile import read_key_file
    from protocol.service_messages import BudgetQuery, budget_statement

    alice = read_key_file(root / "keys" / "alice.key").identity
    federation = service.config.me.manifest.federation_id
    signature = alice.sign(budget_statement(federation, request_id, "alice", issued_ms))
    return encode(BudgetQuery(request_id, "alice", issued_ms, signature))


def test_a_budget_query_is_answered_once_and_only_while_fresh(service: NodeService) -> None:
    """A signed budget query a day old, or one answered already, is ignored: a malicious
    aggregator cannot replay a researcher's old request."""
    from protocol.service_messages import BudgetReport

    root = service.config.ledger.parent.parent
    connection = Recorder()
    now = int(time.time() * 1000)
    stale = _budget_query(service, root, now - 24 * 3600 * 1000, b"\x01" * 16)
    asyncio.run(service._handle(connection, stale))
    assert connection.sent == []
    fresh = _budget_query(service, root, now, b"\x02" * 16)
    asyncio.run(service._handle(connection, fresh))
    assert isinstance(connection.sent[-1], BudgetReport)
    asyncio.run(service._handle(connection, fresh))  # the same request again
    assert len(connection.sent) == 1


def test_the_end_of_a_round_this_node_left_is_no_warning(
        service: NodeService, caplog: pytest.LogCaptureFixture) -> None:
    """A failed round is ended at every node, those that refused or finished included: no
    warning for the operator. Another message for a query this node does not know is one."""
    from protocol.messages import AdvertiseKeys, RoundAborted

    unknown = b"\x09" * 16
    with caplog.at_level(logging.INFO, logger="fedtally.node"):
        asyncio.run(service._handle(Recorder(), encode(
            RoundAborted(unknown, 0, "threshold_not_met"))))
    assert not caplog.records
    with caplog.at_level(logging.INFO, logger="fedtally.node"):
        asyncio.run(service._handle(Recorder(), encode(
            AdvertiseKeys(unknown, 0, "hosp_b", b"\x01" * 32, b"\x02" * 32, b"\x03" * 32,
                          b"\x04" * 64))))
    assert "unknown query" in caplog.text
