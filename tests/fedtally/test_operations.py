"""An operator's tools, on real processes over loopback TLS: `fedtally --version`,
`fedtally status`, the aggregator's health endpoint, one-line start-up errors with a hint,
a second node with the same identity refused by name, a node that does not retry a
certificate that cannot verify, and Ctrl-C of a DP query cancelling it everywhere before any
node released, which leaves every budget unchanged."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import fedtally
from crypto.randomness import SeededRandom
from fedtally.federation import init_federation
from fedtally.synthetic import stroke_model, three_hospitals
from fedtally.version import SOURCE_VERSION
from support import PROJECT_ROOT

POLICY = {"budgets": {"alice": {"*": {"rho": 1.0}}}, "exact_access": ["alice"]}
NODES = ("hosp_a", "hosp_b", "hosp_c")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[fedtally.Federation]:
    workdir = tmp_path_factory.mktemp("ops")
    data = three_hospitals(seed=5, scale=0.05)
    assert tuple(data) == NODES
    # a long stage timeout: a paused node holds its round until the researcher cancels
    with fedtally.local_federation(data, stroke_model(), workdir=workdir, policy=POLICY,
                                   stage_timeout_s=60) as client:
        yield client


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another federation: its own authority, CA and aggregator certificate."""
    root = tmp_path_factory.mktemp("other")
    init_federation(root, ["x", "y", "z"], ["bob"], rng=SeededRandom(41))
    return root


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedtally", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    """The error a command printed: one line, no traceback."""
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("fedtally: error:")]
    assert len(errors) == 1, out.stderr
    return errors[0]


def bundle(fed: fedtally.Federation) -> str:
    return str(fed.local.workdir / "researchers" / "alice.json")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_version_is_the_package_version() -> None:
    out = cli("--version")
    assert out.returncode == 0
    declared = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out.stdout.strip() == f"fedtally {declared}"
    assert fedtally.__version__ == declared
    assert SOURCE_VERSION == declared  # what a checkout run without installing reports


def test_status_shows_nodes_online_their_versions_and_the_aggregator_uptime(fed) -> None:
    out = cli("status", "--federation", bundle(fed), "--aggregator-url", fed.local.url,
              "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["aggregator"]["software"] == fedtally.__version__
    assert status["aggregator"]["uptime_s"] > 0
    assert [n["name"] for n in status["nodes"]] == sorted(NODES)
    for node in status["nodes"]:
        assert node["online"] and node["software"] == fedtally.__version__
        assert node["connected_at"] <= node["last_seen"] <= status["now"] + 1
        assert node["latency_ms"] > 0  # pinged for the status
    assert status["researchers_online"] >= 1
    table = cli("status", "--federation", bundle(fed), "--aggregator-url", fed.local.url)
    assert table.returncode == 0, table.stderr
    assert "3 of 3 nodes online" in table.stdout
    assert all(name in table.stdout for name in NODES)


def test_health_endpoint_is_tiny_and_names_nobody(fed) -> None:
    context = ssl.create_default_context(cafile=str(fed.local.workdir / "tls" / "ca.pem"))
    with urllib.request.urlopen(f"https://127.0.0.1:{fed.local.aggregator_port}/healthz",
                                context=context, timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/json"
        body = reply.read()
    assert len(body) < 100
    assert set(json.loads(body)) == {"status", "uptime_s"}
    text = body.decode()
    assert not any(name in text for name in (*NODES, "alice", fedtally.__version__))
    # any other plain HTTP request is not answered with content (websocket handshake only)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"https://127.0.0.1:{fed.local.aggregator_port}/status",
                               context=context, timeout=10)
    assert refused.value.code >= 400


def test_a_port_in_use_is_one_line_with_a_hint(fed) -> None:
    out = cli("aggregator", "serve", "--config", str(fed.local.workdir / "aggregator.json"),
              "--port", str(fed.local.aggregator_port))
    assert out.returncode == 2
    assert "port is in use" in one_line_error(out)


def test_an_unresolvable_listen_host_is_one_line_with_a_hint(fed, tmp_path: Path) -> None:
    config = json.loads((fed.local.workdir / "aggregator.json").read_text())
    base = fed.local.workdir
    for key, value in config.items():  # paths stay valid from the copy's folder
        if isinstance(value, str) and (base / value).exists():
            config[key] = str((base / value).resolve())
    config["host"] = "no-such-host.invalid"
    (tmp_path / "aggregator.json").write_text(json.dumps(config))
    out = cli("aggregator", "serve", "--config", str(tmp_path / "aggregator.json"),
              "--port", "0")
    assert out.returncode == 2
    assert "does not resolve" in one_line_error(out)


def test_a_missing_ca_file_is_one_line_with_a_hint(fed, tmp_path: Path) -> None:
    node_dir = fed.local.workdir / "hosp_a"
    config = json.loads((node_dir / "node.json").read_text())
    config["ca"] = str(tmp_path / "missing-ca.pem")
    broken = node_dir / "node-missing-ca.json"
    broken.write_text(json.dumps(config))
    try:
        out = cli("node", "serve", "--config", str(broken))
    finally:
        broken.unlink()
    assert out.returncode == 2
    line = one_line_error(out)
    assert "missing-ca.pem" in line and "tls/ca.pem" in line
    with pytest.raises(fedtally.ConfigurationError, match="ca= names"):
        fedtally.connect(bundle=bundle(fed), ca=tmp_path / "missing-ca.pem")


def test_a_wrong_ca_in_connect_is_one_line_with_a_hint(fed, other: Path) -> None:
    pins = json.loads(Path(bundle(fed)).read_text())
    workdir = fed.local.workdir
    with pytest.raises(fedtally.AuthenticationError, match="Pass ca= the tls/ca.pem") as wrong:
        client = fedtally.connect(fed.local.url, workdir / "keys" / "alice.key",
                                  workdir / "federation.json", authority=pins["authority"],
                                  ca=other / "tls" / "ca.pem")
        client.catalog()
    assert "\n" not in str(wrong.value)


def test_connection_errors_give_the_reason(fed) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(fedtally.ServiceUnavailable,
                       match="connection refused: nothing listens on 127.0.0.1"):
        fedtally.connect(f"wss://127.0.0.1:{port}", bundle=bundle(fed), timeout_s=30)
    with pytest.raises(fedtally.ServiceUnavailable, match="does not resolve"):
        fedtally.connect("wss://no-such-host.invalid:8765", bundle=bundle(fed), timeout_s=30)


def test_a_node_does_not_retry_a_certificate_that_cannot_verify(fed, other: Path,
                                                               tmp_path: Path) -> None:
    """The node reaches an aggregator of another federation: its certificate is signed by
    another CA, which no retry can mend. The node stops with one line naming its CA file."""
    ready = tmp_path / "ready"
    aggregator = subprocess.Popen(
        [sys.executable, "-m", "fedtally", "aggregator", "serve", "--config",
         str(other / "aggregator.json"), "--port", "0", "--ready-file", str(ready),
         "--log-level", "WARNING"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, cwd=other)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert aggregator.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        port = json.loads(ready.read_text())["port"]
        started = time.monotonic()
        out = cli("node", "serve", "--config", str(fed.local.workdir / "hosp_a" / "node.json"),
                  "--aggregator-url", f"wss://127.0.0.1:{port}", "--log-level", "ERROR",
                  timeout=120)
    finally:
        aggregator.terminate()
        aggregator.wait(10)
    assert out.returncode == 2
    line = one_line_error(out)
    assert "certificate verification failed" in line and "ca.pem" in line
    assert "retrying in" not in out.stderr and "not retrying" in out.stderr
    assert " INFO " not in out.stderr  # --log-level ERROR: only the error was logged
    assert time.monotonic() - started < 60


def test_a_second_node_with_the_same_identity_is_refused_by_name(fed, tmp_path: Path) -> None:
    log_file = tmp_path / "second.log"
    node_dir = fed.local.workdir / "hosp_b"
    first_log = fed.local.log("hosp_b")
    out = cli("node", "serve", "--config", str(node_dir / "node.json"), "--aggregator-url",
              fed.local.url, "--log-file", str(log_file), "--log-level", "INFO", timeout=120)
    assert out.returncode == 1
    line = one_line_error(out)
    assert "hosp_b" in line and "second" in line
    assert "hosp_b" in log_file.read_text()  # the log went to the file
    assert "Traceback" not in log_file.read_text()
    # the established node stayed connected: no flapping
    assert fed.local.nodes["hosp_b"].poll() is None
    assert "lost the aggregator connection" not in fed.local.log("hosp_b")[len(first_log):]
    assert "hosp_b" in fed.catalog()["nodes"]


def test_an_unwritable_log_file_is_one_line(fed, tmp_path: Path) -> None:
    out = cli("node", "serve", "--config", str(fed.local.workdir / "hosp_a" / "node.json"),
              "--log-file", str(tmp_path / "no-such-folder" / "node.log"))
    assert out.returncode == 2
    assert "cannot write the log file" in one_line_error(out)


def _ledger_kinds(ledger: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        return db.execute("SELECT kind, reason FROM entries ORDER BY seq").fetchall()


#: the researcher's script; Ctrl-C restored first: a job a shell starts in the background
#: (as a CI runner may start the suite) inherits SIGINT ignored, and Python then raises no
#: KeyboardInterrupt (this test hung 30 s in such a run)
CLIENT = """
import signal
import sys
import fedtally
signal.signal(signal.SIGINT, signal.default_int_handler)
with fedtally.connect(sys.argv[1], bundle=sys.argv[2], timeout_s=300) as fed:
    print("asking", flush=True)
    fed.count(privacy=fedtally.DP(rho=0.3))
print("answered", flush=True)
"""


def test_ctrl_c_cancels_a_dp_query_everywhere_and_charges_nothing(fed) -> None:
    """hosp_c is paused, so the round waits in its first stage: hosp_a and hosp_b have
    charged the query and released nothing. Ctrl-C in the researcher's process sends the
    signed cancel; every node, hosp_c included once it resumes, refunds."""
    workdir = fed.local.workdir
    before = {n: len(_ledger_kinds(workdir / n / "ledger.db")) for n in NODES}
    assert fed.budget()["spent_rho"].sum() == 0  # no DP query before this one
    paused = fed.local.nodes["hosp_c"]
    paused.send_signal(signal.SIGSTOP)
    client = subprocess.Popen([sys.executable, "-c", CLIENT, fed.local.url, bundle(fed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=workdir, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.monotonic() + 60
        charged = {"hosp_a": False, "hosp_b": False}
        while not all(charged.values()):
            assert client.poll() is None and time.monotonic() < deadline, client.stderr
            for node in charged:
                kinds = [k for k, _ in _ledger_kinds(workdir / node / "ledger.db")[before[node]:]]
                charged[node] = "charge" in kinds
            time.sleep(0.1)
        client.send_signal(signal.SIGINT)
        _, stderr = client.communicate(timeout=30)
        assert client.returncode != 0 and "KeyboardInterrupt" in stderr
    finally:
        paused.send_signal(signal.SIGCONT)
        if client.poll() is None:
            client.kill()
            client.wait(10)
    deadline = time.monotonic() + 60
    while True:
        entries = {n: _ledger_kinds(workdir / n / "ledger.db")[before[n]:] for n in NODES}
        if all(any(k == "refund" for k, _ in e) for e in entries.values()):
            break
        assert time.monotonic() < deadline, entries
        time.sleep(0.2)
    for node, new in entries.items():
        kinds = [k for k, _ in new]
        assert "release" not in kinds, (node, new)
        assert kinds.count("charge") == kinds.count("refund"), (node, new)
        assert any("cancelled by its researcher alice" in reason for _, reason in new), new
    after = fed.budget()
    assert set(after.index.get_level_values("node")) == set(NODES)
    assert (after["spent_rho"] == 0).all() and (after["remaining_rho"] == 1.0).all(), after
    assert "cancelled by alice" in fed.local.log("aggregator")


def test_a_query_that_times_out_at_the_client_is_cancelled_and_charges_nothing(fed) -> None:
    """The client's own timeout cancels like Ctrl-C: hosp_c is paused, the researcher gives
    up after 3 s, and every node refunds the DP charge it made."""
    workdir = fed.local.workdir
    before = {n: len(_ledger_kinds(workdir / n / "ledger.db")) for n in NODES}
    spent = fed.budget()["spent_rho"].sum()
    paused = fed.local.nodes["hosp_c"]
    paused.send_signal(signal.SIGSTOP)
    try:
        with fedtally.connect(fed.local.url, bundle=bundle(fed), timeout_s=3) as impatient:
            with pytest.raises(fedtally.ServiceUnavailable, match="did not answer in time"):
                impatient.count(privacy=fedtally.DP(rho=0.2))
    finally:
        paused.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 60
    while True:
        entries = {n: _ledger_kinds(workdir / n / "ledger.db")[before[n]:] for n in NODES}
        kinds = {n: [k for k, _ in e] for n, e in entries.items()}
        if all("charge" in k and k.count("charge") == k.count("refund") for k in kinds.values()):
            break
        assert time.monotonic() < deadline, entries
        time.sleep(0.2)
    assert not any("release" in k for k in kinds.values()), kinds
    assert fed.budget()["spent_rho"].sum() == pytest.approx(spent)


def test_status_shows_a_node_that_went_away_and_fails_for_monitoring(fed) -> None:
    from fedtally.local import wait_for_nodes

    fed.local.kill_node("hosp_a")
    try:
        deadline = time.monotonic() + 30
        while "hosp_a" in fed.catalog()["nodes"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        out = cli("status", "--federation", bundle(fed), "--aggregator-url", fed.local.url,
                  "--json", "--fail-offline")
        assert out.returncode == 1, out.stderr
        gone = {n["name"]: n for n in json.loads(out.stdout)["nodes"]}["hosp_a"]
        assert not gone["online"] and gone["software"] == fedtally.__version__
        assert gone["connected_at"] <= gone["last_seen"]  # when it disconnected
        assert gone["latency_ms"] is None
        table = cli("status", "--federation", bundle(fed), "--aggregator-url", fed.local.url)
        assert table.returncode == 0 and "2 of 3 nodes online" in table.stdout
        [line] = [row for row in table.stdout.splitlines() if row.startswith("hosp_a ")]
        # not connected: no "connected ... ago" beside OFFLINE, but when it was last seen
        assert line.split()[1:4] == ["OFFLINE", fedtally.__version__, "-"] and "ago" in line
    finally:
        fed.local.start_node("hosp_a")
        wait_for_nodes(fed, set(NODES), fed.local)
