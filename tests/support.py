"""Shared test helpers: locations of reference data, CI-sized example counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
WYCHEPROOF = SHARED / "vectors" / "wycheproof"
EXAREME2 = SHARED / "peer" / "exareme2"
VECTORS = PROJECT_ROOT / "tests" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: hypothesis examples for fuzzing the codec: the issue asks for at least 10,000 in CI
FUZZ_EXAMPLES = 10_000 if IN_CI else 1_500


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

    from node.datamodel import DataModel

    folder = require_shared(EXAREME2 / "data" / model_folder)
    model = DataModel.from_cdes(folder / "CDEsMetadata.json")
    files = sorted(p for p in folder.glob("*.csv") if not p.stem.endswith("-test"))
    nodes: dict[str, list[Path]] = {"node1": [f for f in files if f.stem.endswith("0")],
                                    "node2": [], "node3": []}
    for i, f in enumerate(f for f in files if not f.stem.endswith("0")):
        nodes[("node2", "node3")[i % 2]].append(f)
    frames = {node: pd.concat([pd.read_csv(f) for f in paths], ignore_index=True)
              for node, paths in nodes.items()}
    return model, frames


def declared_model(frame, code: str = "local", version: str = "1"):  # noqa: ANN001, ANN201
    """A data model written for these rows: inferred from them, then declared, as a data
    owner does after reviewing the guess (bounds and levels become public facts, which is
    what differential privacy needs: DP refuses a model still marked as inferred)."""
    import dataclasses

    from node.datamodel import DataModel

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
