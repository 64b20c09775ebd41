"""How a node reconnects: exponential backoff with jitter, reset only by a connection that
lasted; what a failure to connect means (one line, a reason, a hint) and which failures
are permanent, so that the node stops instead of retrying what no retry can mend."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidURI
from websockets.frames import Close

from crypto.randomness import SeededRandom
from fedtally.federation import init_federation
from fedtally.synthetic import stroke_model, three_hospitals
from node.config import load_node_config
from node.service import BACKOFF_MAX_S, Backoff, NodeService, load_data
from node.transport import explain_failure
from protocol.errors import (
    AuthenticationError,
    ConfigurationError,
    DuplicateMember,
    ServiceUnavailable,
)

URL = "wss://aggregator.example:8765"


def test_backoff_doubles_with_jitter_up_to_a_ceiling_and_resets() -> None:
    backoff = Backoff(start=0.5, maximum=8.0, rng=SeededRandom(1))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [min(0.5 * 2 ** n, 8.0) for n in range(10)]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay < ceiling  # never nothing, never past the ceiling
    assert len({round(d / c, 6) for d, c in zip(delays, ceilings, strict=True)}) > 5  # jitter
    backoff.reset()
    assert 0.25 <= backoff.next_delay() < 0.5


def test_nodes_restarted_together_spread_out() -> None:
    first = [Backoff(rng=SeededRandom(seed)).next_delay() for seed in range(20)]
    assert max(first) - min(first) > 0.1
    assert all(d < BACKOFF_MAX_S for d in first)


def _cert_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code, exc.verify_message, exc.reason = code, message, "CERTIFICATE_VERIFY_FAILED"
    return exc


def _refused_by_aggregator(exc: AuthenticationError) -> AuthenticationError:
    exc.remote_code = exc.code  # type: ignore[attr-defined]  # as error_from_notice marks it
    return exc


@pytest.mark.parametrize(("exc", "permanent", "says"), [
    (_cert_error(20, "unable to get local issuer certificate"), True,
     "not signed by the CA file ca.pem"),
    (_cert_error(62, "Hostname mismatch"), True, "not valid for 'aggregator.example'"),
    (_cert_error(10, "certificate has expired"), True, "has expired"),
    (_refused_by_aggregator(AuthenticationError("unknown member")), True, "refused hosp_a"),
    (DuplicateMember("node hosp_a is connected already"), True, "connected already"),
    (ConnectionRefusedError(111, "Connection refused"), False, "nothing listens on "
                                                               "aggregator.example:8765"),
    (socket.gaierror(-2, "Name or service not known"), False, "does not resolve"),
    (TimeoutError(), False, "no answer within"),
    (ConnectionClosedError(Close(1013, "busy"), None), False, "busy"),
    (InvalidURI("https://aggregator.example", "scheme isn't ws or wss"), True,
     "not a valid wss:// URL"),
])
def test_a_failure_is_one_line_with_its_reason(exc: BaseException, permanent: bool,
                                               says: str) -> None:
    failure = explain_failure(exc, URL, name="hosp_a", ca="ca.pem")
    assert failure.permanent is permanent
    text = str(failure.error)
    assert says in text and "\n" not in text
    assert type(exc).__name__ not in text  # a reason, not a class name
    if permanent:
        assert isinstance(failure.error, ConfigurationError | AuthenticationError)
    else:
        assert isinstance(failure.error, ServiceUnavailable)


class CountingBackoff(Backoff):
    def __init__(self, stop: asyncio.Event, attempts: int) -> None:
        super().__init__(start=0.01, maximum=0.05, rng=SeededRandom(2))
        self.stop, self.attempts, self.delays = stop, attempts, []

    def next_delay(self) -> float:
        delay = super().next_delay()
        self.delays.append(delay)
        if len(self.delays) >= self.attempts:
            self.stop.set()
        return delay


def test_a_node_retries_a_transient_failure_with_backoff(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    init_federation(tmp_path, ["hosp_a", "hosp_b", "hosp_c"], ["alice"], rng=SeededRandom(5))
    three_hospitals(scale=0.02)["hosp_a"].to_csv(tmp_path / "hosp_a" / "data.csv", index=False)
    (tmp_path / "model.json").write_text(json.dumps(stroke_model().to_json()))
    config_path = tmp_path / "hosp_a" / "node.json"
    config = json.loads(config_path.read_text())
    config.update(data=[{"kind": "csv", "path": "data.csv"}], data_model="../model.json")
    config_path.write_text(json.dumps(config))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = load_node_config(config_path, aggregator_url=f"wss://127.0.0.1:{port}")
    service = NodeService(config, load_data(config))

    async def main() -> CountingBackoff:
        stop = asyncio.Event()
        backoff = CountingBackoff(stop, attempts=4)
        await asyncio.wait_for(service.run(stop, backoff), 30)
        return backoff

    with caplog.at_level("WARNING", logger="fedtally.node"):
        backoff = asyncio.run(main())
    assert len(backoff.delays) == 4
    assert "connection refused: nothing listens on" in caplog.text
    assert "ConnectionRefusedError" not in caplog.text


def test_a_version_the_wire_does_not_allow_is_stated_as_unknown() -> None:
    from node.transport import _member_info
    from protocol.codec import decode
    from protocol.service_messages import MemberInfo

    assert decode(_member_info("0.2.0.dev3+g1a2b3c"), 1024) == MemberInfo("0.2.0.dev3+g1a2b3c")
    assert decode(_member_info("0.1 (patched by IT)"), 1024) == MemberInfo("unknown")
    assert decode(_member_info("9" * 200), 1024) == MemberInfo("unknown")
