"""A whole federation on this machine: one aggregator process and one process per node,
talking TLS websockets over loopback. For trying fedtally and for end-to-end tests.

``local_federation`` runs the same set-up an operator would (``federation init``, then
``aggregator serve`` and ``node serve`` as separate processes) and returns a connected
client. With ``data_model=None`` the data model is inferred from the data itself: its
bounds and category lists then reveal each column's range and values to every member,
which is fine for a local trial and never for real sensitive data.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from crypto.paillier import DEFAULT_KEY_BITS
from fedtally.client import Federation, connect
from fedtally.dp import DP, trial_policy
from fedtally.federation import init_federation
from node.datasource import DataSource
from protocol.errors import ConfigurationError, DataError, ServiceUnavailable
from stats.datamodel import DATASET, DataModel

STARTUP_TIMEOUT_S = 60.0
DataLike = pd.DataFrame | str | Path | Mapping[str, Any]


@dataclass
class LocalProcesses:
    """Handles on the processes of a local federation (tests kill and restart nodes)."""

    workdir: Path
    aggregator_port: int = 0
    stage_timeout_s: float | None = None
    aggregator: subprocess.Popen[bytes] | None = None
    nodes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self, name: str) -> str:
        path = self._log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def _log_path(self, name: str) -> Path:
        return self.workdir / ("aggregator.log" if name == "aggregator" else f"{name}/node.log")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self._log_path(name).open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            return subprocess.Popen([sys.executable, "-m", "fedtally", *args], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    cwd=self.workdir)
        finally:
            log.close()

    def start_aggregator(self) -> None:
        ready = self.workdir / "aggregator.ready"
        ready.unlink(missing_ok=True)
        self.aggregator = self._spawn("aggregator", [
            "aggregator", "serve", "--config", str(self.workdir / "aggregator.json"),
            "--port", str(self.aggregator_port), "--ready-file", str(ready),
            *(["--stage-timeout", str(self.stage_timeout_s)] if self.stage_timeout_s else [])])
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ready.exists():
            if self.aggregator.poll() is not None:
                raise ServiceUnavailable("the aggregator exited at start-up:\n"
                                         + _tail(self.log("aggregator")))
            if time.monotonic() > deadline:
                raise ServiceUnavailable("the aggregator did not start in time")
            time.sleep(0.05)
        self.aggregator_port = json.loads(ready.read_text())["port"]

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.aggregator_port}"

    def start_node(self, name: str) -> None:
        self.nodes[name] = self._spawn(name, [
            "node", "serve", "--config", str(self.workdir / name / "node.json"),
            "--aggregator-url", self.url])

    def kill_node(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        process = self.nodes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def restart_node(self, name: str) -> None:
        if self.nodes[name].poll() is None:
            self.kill_node(name)
        self.start_node(name)

    def check_alive(self) -> None:
        for name, process in self.nodes.items():
            if process.poll() is not None:
                raise DataError(f"node {name} exited at start-up: " + _tail(self.log(name)))

    def stop(self) -> None:
        processes = [*self.nodes.values(), *([self.aggregator] if self.aggregator else [])]
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _write_node_data(name: str, data: DataLike, folder: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """The node's data source entry, and the rows to infer a data model from: a
    DataFrame's own (typed) columns, or a file's rows read by the node's own loader, so
    that inference and the node's validation parse every value alike (stats/numbers.py)."""
    if isinstance(data, pd.DataFrame):
        frame = data.copy()
        if DATASET not in frame.columns:
            frame[DATASET] = name
        # float64 is what the node reads back: a float32 written as its own shortest
        # decimal would be read as another float64 than the frame holds
        floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c].dtype)]
        if floats:
            frame[floats] = frame[floats].astype("float64")
        frame.to_csv(folder / "data.csv", index=False)
        return {"kind": "csv", "path": "data.csv", "dataset": name}, frame
    if isinstance(data, Mapping):  # a data source entry as node.json takes it (a SQL table)
        entry = {"dataset": name, **data}
        try:
            frame = DataSource.from_config(entry).load()
        except DataError as exc:
            raise DataError(f"data for {name}: {exc}") from exc
        return entry, frame
    path = Path(data).resolve()
    if not path.is_file():
        raise ConfigurationError(f"data for {name}: {path} is not a file")
    kind = "parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv"
    entry = {"kind": kind, "path": str(path), "dataset": name}
    try:
        frame = DataSource.from_config(entry).load()
    except DataError as exc:
        raise DataError(f"data for {name}: {exc}") from exc
    return entry, frame


def _model(data_model: DataModel | str | Path | None, frames: list[pd.DataFrame]) -> DataModel:
    if isinstance(data_model, DataModel):
        return data_model
    if data_model is not None:
        from node.config import load_model

        return load_model(Path(data_model))
    return DataModel.infer(pd.concat(frames, ignore_index=True), code="local", version="1")


@contextlib.contextmanager
def local_federation(data: Mapping[str, DataLike], data_model: DataModel | str | Path | None = None,
                     workdir: str | Path | None = None, *, researcher: str = "alice",
                     policy: Mapping[str, Any] | None = None, timeout_s: float = 120.0,
                     stage_timeout_s: float | None = None, protection: str = "mask",
                     paillier_bits: int = DEFAULT_KEY_BITS,
                     decryption_threshold: int | None = None,
                     max_colluding_nodes: int = 1,
                     verifiable_totals: bool = True, budget: DP | None = None,
                     strict: bool = False) -> Iterator[Federation]:
    """Start a federation of ``len(data)`` nodes on loopback and yield a connected client.

    ``protection`` is ``"mask"`` (pairwise masks) or ``"paillier"`` (threshold Paillier
    with a ``paillier_bits`` key; any ``decryption_threshold`` nodes decrypt, by default
    the least quorum above (N + c)/2). ``max_colluding_nodes`` is the manifest's c (two
    nodes need 0: one could always subtract its own input from the total).

    ``data`` maps node names to a DataFrame, a CSV/Parquet path, or a data source entry as
    ``node.json`` takes it (``{"kind": "sql", "url": ..., "table": ...}``: a PostgreSQL
    table is then computed in its database). Leaving the block stops
    every process; a temporary ``workdir`` is removed, a given one is kept (with logs).

    ``budget=fedtally.DP(epsilon=1, delta=1e-6)`` (or ``DP(rho=...)``) grants the researcher
    that privacy budget on every dataset at every node, for trying differential privacy
    (it needs a written data model: an inferred one offers none); exact answers stay open.
    ``strict=True`` makes every incomplete answer an error (see ``Federation.strict``).
    """
    policy = trial_policy(budget, researcher, policy)
    if len(data) < 2:
        raise ConfigurationError("a federation needs at least two nodes")
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="fedtally-")) if own_dir else Path(workdir).resolve()
    processes = LocalProcesses(root, stage_timeout_s=stage_timeout_s)
    client: Federation | None = None
    try:
        init_federation(root, list(data), [researcher], aggregator_host="127.0.0.1",
                        force=not own_dir, protection=protection, paillier_bits=paillier_bits,
                        decryption_threshold=decryption_threshold,
                        max_colluding_nodes=max_colluding_nodes,
                        verifiable_totals=verifiable_totals)
        frames = []
        entries = {}
        for name, item in data.items():
            entries[name], frame = _write_node_data(name, item, root / name)
            frames.append(frame)
        model = _model(data_model, frames)
        (root / "datamodel.json").write_text(json.dumps(model.to_json(), indent=1))
        if policy is not None:
            (root / "policy.json").write_text(json.dumps(dict(policy), indent=1))
        for name in data:
            config_path = root / name / "node.json"
            config = json.loads(config_path.read_text())
            config.update(data=[entries[name]], data_model="../datamodel.json",
                          policy="../policy.json" if policy is not None else None)
            config_path.write_text(json.dumps(config, indent=1))
        processes.start_aggregator()
        for name in data:
            processes.start_node(name)
        pins = json.loads((root / "researchers" / f"{researcher}.json").read_text())
        client = connect(processes.url, root / "keys" / f"{researcher}.key",
                         root / "federation.json", authority=pins["authority"],
                         tls_ca=pins["tls_ca"], timeout_s=timeout_s)
        client.local = processes
        client.strict = strict
        wait_for_nodes(client, set(data), processes)
        yield client
    finally:
        if client is not None:
            client.close()
        processes.stop()
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def wait_for_nodes(client: Federation, names: set[str], processes: LocalProcesses | None = None,
                   timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Block until every node in ``names`` is online (a node that died raises its error)."""
    deadline = time.monotonic() + timeout_s
    while True:
        online = set(client.catalog()["nodes"])
        if names <= online:
            return
        if processes is not None:
            processes.check_alive()
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"nodes {sorted(names - online)} did not come online")
        time.sleep(0.1)
