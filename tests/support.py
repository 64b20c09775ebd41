"""Shared test helpers: locations of reference data, CI-sized example counts."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
WYCHEPROOF = SHARED / "vectors" / "wycheproof"
EXAREME2 = SHARED / "peer" / "exareme2"
VECTORS = PROJECT_ROOT / "tests" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: fuzzed inputs per codec fuzz test: the issue asks for at least 10,000 in CI
FUZZ_EXAMPLES = 10_000 if IN_CI else 1_500


def wait_until(holds: Callable[[], object], what: str, timeout_s: float = 20.0,
               every_s: float = 0.1) -> None:
    """Poll until ``holds()`` is true; fail naming ``what`` after ``timeout_s``. For what a
    process does just after it answers (a node's ledger entry, an aggregator's log line)."""
    deadline = time.monotonic() + timeout_s
    while not holds():
        assert time.monotonic() < deadline, f"{what} (waited {timeout_s:g} s)"
        time.sleep(every_s)


def require_shared(path: Path) -> Path:
    """Skip (with the reason) where ../shared is absent, as in a user's own clone."""
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (it ships beside the repository in CI)")
    return path


def exareme2_three_node_split(model_folder: str = "dementia_v_0_1"):  # noqa: ANN201
    """The MIP data model and its CSVs split over three nodes as Exareme2 splits them: node
    1 takes every ``*0.csv``, the others the rest round-robin; ``*-test.csv`` kept aside.
    Skips (with the reason) where the reference data is absent."""
    import pandas as pd

    from node.datasource import DataSource
    from stats.datamodel import DataModel

    folder = require_shared(EXAREME2 / "data" / model_folder)
    model = DataModel.from_cdes(folder / "CDEsMetadata.json")
    files = sorted(p for p in folder.glob("*.csv") if not p.stem.endswith("-test"))
    nodes: dict[str, list[Path]] = {"node1": [f for f in files if f.stem.endswith("0")],
                                    "node2": [], "node3": []}
    for i, f in enumerate(f for f in files if not f.stem.endswith("0")):
        nodes[("node2", "node3")[i % 2]].append(f)
    # read as a node reads a CSV source (node.datasource), not with pandas' own parser
    frames = {node: pd.concat([DataSource(kind="csv", path=f).load() for f in paths],
                              ignore_index=True) for node, paths in nodes.items()}
    return model, frames


def declared_model(frame, code: str = "local", version: str = "1"):  # noqa: ANN001, ANN201
    """A data model written for these rows: inferred from them, then declared, as a data
    owner does after reviewing the guess (bounds and levels become public facts, which is
    what differential privacy needs: DP refuses a model still marked as inferred)."""
    import dataclasses

    from stats.datamodel import DataModel

    return dataclasses.replace(DataModel.infer(frame, code=code, version=version),
                               inferred=False)


def node_session(model, rows, root, *, name: str = "node", identity=None, policy=None,  # noqa: ANN001, ANN201
                 max_colluding_nodes: int = 1, verifiable: bool = False):
    """A node's query lifecycle (node.session.NodeSession) over these rows, with a real
    ledger in ``root``: what admission tests plan and refuse through."""
    import time

    from crypto.identity import SigningIdentity
    from crypto.randomness import SeededRandom
    from node.budget import BudgetKeeper
    from node.policy import Policy
    from node.session import LoadedData, NodeSession

    policy = policy or Policy.default()
    identity = identity or SigningIdentity.generate(SeededRandom(time.time_ns()))
    budget = BudgetKeeper(root / f"ledger-{name}-{time.time_ns()}.db", identity, policy)
    return NodeSession(name, LoadedData(model, rows), policy, budget, 1 << 24, 1,
                       max_colluding_nodes, verifiable)


class Recorder:
    """Stands in for a node's websocket: keeps the messages the node sends, decoded."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    async def send(self, frame: bytes) -> None:
        from protocol.codec import decode

        self.sent.append(decode(frame, 1 << 24))


def hospital_service(root: Path, researchers: list[str], *, seed: int,  # noqa: ANN201
                     policy: dict | None = None, scale: float = 0.02,
                     row_store: str = "duckdb", **federation: object):
    """A NodeService for hosp_a of a fresh three-hospital federation in ``root`` (synthetic
    stroke rows, 3,000 x ``scale`` of them, kept in ``row_store``; ``federation``:
    init_federation's options; no aggregator: the caller drives it with messages)."""
    import json

    from crypto.randomness import SeededRandom
    from fedtally.federation import init_federation
    from fedtally.synthetic import stroke_model, three_hospitals
    from node.config import load_node_config
    from node.service import NodeService, load_data

    init_federation(root, ["hosp_a", "hosp_b", "hosp_c"], researchers, rng=SeededRandom(seed),
                    **federation)  # type: ignore[arg-type]
    three_hospitals(scale=scale)["hosp_a"].to_csv(root / "hosp_a" / "data.csv", index=False)
    (root / "model.json").write_text(json.dumps(stroke_model().to_json()))
    config_path = root / "hosp_a" / "node.json"
    config = json.loads(config_path.read_text())
    config.update(data=[{"kind": "csv", "path": "data.csv"}], data_model="../model.json",
                  row_store=row_store)
    if policy is not None:
        (root / "policy.json").write_text(json.dumps(policy))
        config["policy"] = "../policy.json"
    config_path.write_text(json.dumps(config))
    loaded = load_node_config(config_path, aggregator_url="wss://127.0.0.1:1")
    return NodeService(loaded, load_data(loaded))


def model_with_unused_level(pooled, variable: str = "g",  # noqa: ANN001, ANN201
                            levels: tuple[str, ...] = ("a", "b", "c", "zz")):
    """The model inferred from ``pooled``, with ``variable``'s levels set to ``levels``:
    by default one more ("zz") than any row has, so that empty levels are exercised."""
    import dataclasses

    from stats.datamodel import DataModel

    inferred = DataModel.infer(pooled, code="test", version="1")
    variables = dict(inferred.variables)
    variables[variable] = dataclasses.replace(variables[variable], enumerations=levels,
                                              enumeration_labels=())
    return DataModel(code="test", version="1", variables=variables)


def announce_query(service, privacy: dict | None = None,  # noqa: ANN001
                   researcher: str = "alice", **query: object) -> tuple[bytes, bytes]:
    """(query id, frame) of a count (or the query ``query`` states: method, variables,
    parameters) over the three hospitals, signed by ``researcher`` and announced as the
    aggregator would to ``service`` (a :func:`hospital_service`)."""
    import time

    from crypto.keyfile import read_key_file
    from crypto.randomness import SeededRandom
    from fedtally.synthetic import stroke_model
    from protocol.codec import encode
    from protocol.params import RoundParams
    from protocol.service_messages import QueryAnnounce
    from protocol.signed_query import SignedQuery, signed_query_statement
    from stats.datamodel import PlanModel
    from stats.planner import layout
    from stats.query import QuerySpec

    nodes = ("hosp_a", "hosp_b", "hosp_c")
    manifest = service.config.me.manifest
    spec = QuerySpec(query.pop("method", "count"), "stroke:1", nodes,  # type: ignore[arg-type]
                     privacy=privacy or {"mode": "exact"}, **query)  # type: ignore[arg-type]
    plan = layout(spec, PlanModel(stroke_model()), manifest.max_rows_per_node,
                  verifiable=manifest.verifiable_totals)
    root = service.config.ledger.parent.parent
    identity = read_key_file(root / "keys" / f"{researcher}.key").identity
    query_id = SeededRandom(time.time_ns()).bytes(16)
    issued = int(time.time() * 1000)
    raw = spec.canonical()
    # a Paillier federation seals partial decryptions to the researcher's reply key
    reply_key = bytes(range(32)) if manifest.paillier_key is not None else bytes(32)
    statement = signed_query_statement(researcher, manifest.federation_id, query_id, issued,
                                       raw, plan.length, plan.ring_bits, reply_key=reply_key)
    query = SignedQuery(researcher, manifest.federation_id, query_id, issued, raw, plan.length,
                        plan.ring_bits, identity.sign(statement), reply_key)
    params = RoundParams(manifest.federation_id, query_id, 0, nodes,
                         manifest.threshold_for(len(nodes)), plan.length, plan.ring_bits, 0,
                         query.digest, max_colluding=manifest.max_colluding_nodes)
    return query_id, encode(QueryAnnounce(query, params))


def keep_rows_in_duckdb(fed, folder: Path) -> None:  # noqa: ANN001
    """Move every node of a SimulatedFederation to a DuckDB row store: its validated rows
    written to Parquet (exact float64), loaded as a node loads a file. The same queries
    then run through the SQL the node compiles, on the same values."""
    from node.datasource import DataSource
    from node.session import LoadedData
    from node.sql.duckdb_rows import DuckRows

    folder.mkdir(parents=True, exist_ok=True)
    for name, session in fed.sessions.items():
        path = folder / f"{name}.parquet"
        session.data.rows.to_parquet(path, index=False)
        store = DuckRows.load([DataSource(kind="parquet", path=path)], session.data.model)
        session.data = LoadedData(session.data.model, store=store)


def within_chance(ratio: float, draws: int, alpha: float = 1e-4) -> None:
    """Assert that ``ratio`` (an empirical spread over the reported noise std, from
    ``draws`` draws) is within the chance bounds of a chi-square at ``alpha``: a correctly
    reported Gaussian spread falls outside them once in 1/alpha runs (100 draws:
    0.74-1.28; 200: 0.81-1.20). Fixed bounds of 15% failed correct releases about once in
    250 runs."""
    from scipy import stats

    low = math.sqrt(stats.chi2.ppf(alpha / 2, draws) / draws)
    high = math.sqrt(stats.chi2.isf(alpha / 2, draws) / draws)
    assert low <= ratio <= high, (ratio, draws, low, high)
