"""A node reads on while it computes a query: the researcher's cancel, the aggregator's abort
of that round, or the connection closing stop the computation in its engine (DuckDB here)
and refund its DP charge (nothing left the node); a query still waiting its turn is dropped
before anything is charged; a cancel only the query's researcher signed counts; budget
requests are answered meanwhile. Run on the real service object, its data in DuckDB and its
ledger, reading from a queue in place of its websocket."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from node.service import NodeService
from protocol.codec import encode
from protocol.messages import AdvertiseKeys, RoundAborted
from protocol.service_messages import BudgetReport, CancelQuery, QueryRefused
from support import Recorder, announce_query, hospital_service
from tests.fedtally.test_operations import _ledger_kinds as _entries
from tests.node.test_cancel import _sign, _spent
from tests.node.test_service_failures import _budget_query

RHO = 0.1
VARIABLES = ["age", "nihss", "onset_to_door_min", "mrs_90d", "days_to_event"]
#: a regression on 56 terms (every product of up to three variables): about 4 s over the
#: node's 300,000 rows on a 2-core machine, long enough to be stopped midway
TERMS = [{"const": 1}] + [{"var": v} for v in VARIABLES] + [
    {"product": [{"var": v} for v in chosen]}
    for degree in (2, 3) for chosen in itertools.combinations_with_replacement(VARIABLES, degree)]
SLOW = dict(method="linear_regression", variables=("death",), parameters={"terms": TERMS})


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    return hospital_service(tmp_path_factory.mktemp("fed"), ["alice", "bob"], seed=17,
                            policy={"budgets": {"*": {"*": {"rho": 10.0}}}}, scale=100)


class Feed(Recorder):
    """The node's websocket: what the test puts in the inbox is read, None closes it."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def recv(self) -> bytes:
        frame = await self.inbox.get()
        if frame is None:
            raise ConnectionClosed(None, None)
        return frame

    def about(self, query_id: bytes) -> list[object]:
        return [m for m in self.sent if getattr(m, "query_id", None) == query_id]


async def _until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def _serving(service: NodeService, feed: Feed) -> tuple[asyncio.Event, asyncio.Task[Any]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(service._serve(feed, stop))  # type: ignore[arg-type]


#: every slow query's announce, by query id (to replay one)
_ANNOUNCED: dict[bytes, bytes] = {}


async def _slow_queries(service: NodeService, feed: Feed, n: int
                        ) -> tuple[list[bytes], float]:
    """``n`` slow DP queries announced, the first charged and computing, the others waiting
    their turn; and what was spent before."""
    spent = _spent(service)
    announced = []
    for _ in range(n):
        query_id, frame = announce_query(service, {"mode": "dp", "rho": RHO}, **SLOW)
        _ANNOUNCED[query_id] = frame
        await feed.inbox.put(frame)
        announced.append(query_id)
    await _until(lambda: _spent(service) > spent)
    return announced, spent


def _ledger_kinds(service: NodeService) -> list[tuple[str, str]]:
    return _entries(service.config.ledger)


def _cancel(service: NodeService, who: str, query_id: bytes, claimed: str = "alice") -> bytes:
    return encode(CancelQuery(claimed, query_id, _sign(service, who, query_id)))


def test_a_cancel_stops_the_computation_and_refunds_while_the_node_reads_on(
        service: NodeService, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        feed = Feed()
        stop, serving = _serving(service, feed)
        (slow,), spent = await _slow_queries(service, feed, 1)
        # a budget request is answered while the query computes
        await feed.inbox.put(_budget_query(service, service.config.ledger.parent.parent,
                                           int(time.time() * 1000), b"\x07" * 16))
        await _until(lambda: any(isinstance(m, BudgetReport) for m in feed.sent))
        assert slow in service.computing
        await feed.inbox.put(_cancel(service, "alice", slow))
        await _until(lambda: slow not in service.computing)
        assert feed.about(slow) == []  # nothing sent: no keys, no refusal
        assert _spent(service) == pytest.approx(spent)  # refunded
        # the aggregator's abort that follows is expected; the node serves the next query
        await feed.inbox.put(encode(RoundAborted(slow, 0, "cancelled")))
        count, frame = announce_query(service, {"mode": "dp", "rho": RHO})
        await feed.inbox.put(frame)
        await _until(lambda: bool(feed.about(count)))
        assert isinstance(feed.about(count)[0], AdvertiseKeys)
        service.rounds.pop(count)
        stop.set()
        await serving

    with caplog.at_level(logging.INFO, logger="fedtally.node"):
        asyncio.run(scenario())
    assert "computing it was stopped" in caplog.text  # interrupted, not run to its end
    assert "unknown query" not in caplog.text


def test_a_query_cancelled_as_it_waits_its_turn_ends_then_and_cannot_be_replayed(
        service: NodeService, caplog: pytest.LogCaptureFixture) -> None:
    """Its turn comes: it is admitted (so the aggregator cannot announce it again: helper-25
    found a query dropped unadmitted computed and charged on a replay), charged and
    refunded, as a query whose computation was stopped. Only its researcher's cancel
    counts."""
    async def scenario() -> None:
        feed = Feed()
        stop, serving = _serving(service, feed)
        (first, second), spent = await _slow_queries(service, feed, 2)
        assert first in service.computing and second in service.computing
        # bob's cancels of alice's query: signed by bob, or claiming to be alice
        await feed.inbox.put(_cancel(service, "bob", first, claimed="bob"))
        await feed.inbox.put(_cancel(service, "bob", first))
        await feed.inbox.put(_cancel(service, "alice", second))
        await _until(lambda: second not in service.computing)
        assert isinstance(feed.about(first)[0], AdvertiseKeys)  # the first ran to its end
        assert feed.about(second) == []
        assert _spent(service) == pytest.approx(spent + RHO)  # the second: refunded
        await feed.inbox.put(_ANNOUNCED[second])  # the aggregator replays it
        await _until(lambda: bool(feed.about(second)))
        [refusal] = feed.about(second)
        assert isinstance(refusal, QueryRefused) and refusal.code == "replay"
        assert _spent(service) == pytest.approx(spent + RHO)
        service.rounds.pop(first)
        stop.set()
        await serving

    with caplog.at_level(logging.INFO, logger="fedtally.node"):
        asyncio.run(scenario())
    assert caplog.text.count("ignored a cancel") == 2
    refunds = [reason for kind, reason in _ledger_kinds(service) if kind == "refund"]
    assert "cancelled by its researcher alice (signed) before the contribution was sent" \
        in refunds


@pytest.mark.parametrize("ending", ["the aggregator aborts the round", "the connection closes",
                                    "the node stops"])
def test_the_round_ending_otherwise_stops_the_computation_too(
        service: NodeService, caplog: pytest.LogCaptureFixture, ending: str) -> None:
    async def scenario() -> None:
        feed = Feed()
        stop, serving = _serving(service, feed)
        (slow,), spent = await _slow_queries(service, feed, 1)
        if ending == "the aggregator aborts the round":
            await feed.inbox.put(encode(RoundAborted(slow, 0, "timeout")))
            await _until(lambda: slow not in service.computing)
            stop.set()
            await serving
        elif ending == "the connection closes":
            await feed.inbox.put(None)
            with pytest.raises(ConnectionClosed):
                await serving
        else:
            stop.set()
            await serving
        # _serve returns only once the computation ended, refunded
        assert slow not in service.computing
        assert _spent(service) == pytest.approx(spent)
        assert not any(isinstance(m, QueryRefused | AdvertiseKeys) for m in feed.about(slow))

    with caplog.at_level(logging.INFO, logger="fedtally.node"):
        asyncio.run(scenario())
    assert "computing it was stopped" in caplog.text


@pytest.fixture(scope="module")
def paillier(tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    return hospital_service(tmp_path_factory.mktemp("paillier"), ["alice"], seed=19,
                            policy={"budgets": {"*": {"*": {"rho": 10.0}}}}, scale=100,
                            protection="paillier", paillier_bits=2048)


def test_in_paillier_mode_a_stopped_computation_keeps_its_charge(
        paillier: NodeService, caplog: pytest.LogCaptureFixture) -> None:
    """There the contribution is released as soon as it is computed, so a cancel after the
    computation refunds nothing; one that stops it, or drops it before its turn, must not
    refund either, or the ledger would tell whether the node had finished computing (and so
    how long it took, which may depend on its rows)."""
    async def scenario() -> None:
        feed = Feed()
        stop, serving = _serving(paillier, feed)
        (first, second), spent = await _slow_queries(paillier, feed, 2)
        await feed.inbox.put(_cancel(paillier, "alice", second))  # waiting its turn
        await feed.inbox.put(_cancel(paillier, "alice", first))  # computing
        await _until(lambda: not paillier.computing)
        assert feed.about(first) == [] and feed.about(second) == []
        assert _spent(paillier) == pytest.approx(spent + 2 * RHO)
        stop.set()
        await serving

    with caplog.at_level(logging.INFO, logger="fedtally.node"):
        asyncio.run(scenario())
    assert "computing it was stopped" in caplog.text
    assert "dropped" not in caplog.text


@pytest.fixture(scope="module")
def paillier_pandas(tmp_path_factory: pytest.TempPathFactory) -> NodeService:
    return hospital_service(tmp_path_factory.mktemp("paillier-pandas"), ["alice"], seed=23,
                            policy={"budgets": {"*": {"*": {"rho": 10.0}}}}, scale=30,
                            row_store="pandas", protection="paillier", paillier_bits=2048)


def test_in_paillier_mode_a_round_ending_as_its_computation_ends_records_no_release(
        paillier_pandas: NodeService, caplog: pytest.LogCaptureFixture) -> None:
    """pandas cannot be interrupted: a cancel read while it computes lets the computation
    end, and only then stops the query. Its charge stands, as any stopped Paillier query's,
    but the ledger records no release of a contribution that was never sent (it did, before
    the stop was looked at between computing and recording)."""
    service = paillier_pandas

    async def scenario() -> None:
        feed = Feed()
        stop, serving = _serving(service, feed)
        [query], spent = await _slow_queries(service, feed, 1)
        await feed.inbox.put(_cancel(service, "alice", query))
        await _until(lambda: not service.computing)
        assert feed.about(query) == []
        assert _spent(service) == pytest.approx(spent + RHO)
        stop.set()
        await serving

    with caplog.at_level(logging.INFO, logger="fedtally.node"):
        asyncio.run(scenario())
    assert "computing it was stopped" not in caplog.text  # pandas ran to its end
    assert [kind for kind, _ in _ledger_kinds(service)
            if kind in ("charge", "release", "refund")] == ["charge"]


def test_a_budget_asked_right_after_a_cancel_reads_the_refund(
        service: NodeService) -> None:
    """The researcher reads a refusal (or cancels) and asks for the budget at once: the
    report waits for the computation being stopped, so it never shows a charge about to be
    refunded (a reviewer read those as budget burnt by other nodes' refusals)."""
    async def scenario() -> None:
        feed = Feed()
        stop, serving = _serving(service, feed)
        (slow,), spent = await _slow_queries(service, feed, 1)
        await feed.inbox.put(_cancel(service, "alice", slow))
        await feed.inbox.put(_budget_query(service, service.config.ledger.parent.parent,
                                           int(time.time() * 1000), b"\x09" * 16))
        await _until(lambda: any(isinstance(m, BudgetReport) for m in feed.sent))
        [report] = [m for m in feed.sent if isinstance(m, BudgetReport)
                    and m.request_id == b"\x09" * 16]
        lines = json.loads(report.report)
        assert sum(line["spent_rho"] for line in lines) == pytest.approx(spent)
        stop.set()
        await serving

    asyncio.run(scenario())
