"""The MIP's own validation suite (Exareme2's expected results), run through run_exareme2
with the data split as Exareme2 splits it: over one node, and over three nodes (node 1 takes
every ``*0.csv``, the others the rest round-robin). ``*-test.csv`` files are kept aside.

One node: a federation needs two members, so the second node holds no rows (it contributes
zeros); the sums are those of a single node holding all the data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fedtally.exareme2 import NOT_RELEASED, is_close, run_exareme2
from fedtally.simulated import SimulatedFederation
from node.datamodel import DataModel
from node.datasource import DataSource
from node.policy import Policy
from support import EXAREME2, require_shared

SPLITS = ("one_node", "three_nodes")
MIP_POLICY = Policy(min_row_count=10, small_cell_threshold=1)
#: expected-results file -> Exareme2 algorithm name
FILES = {
    "descriptive_stats_expected.json": "descriptive_stats",
}


def _csvs(model_folder: Path) -> list[Path]:
    return sorted(p for p in model_folder.glob("*.csv") if not p.stem.endswith("-test"))


def _split(files: list[Path], split: str) -> dict[str, list[Path]]:
    if split == "one_node":
        return {"node1": files, "node2": []}
    nodes: dict[str, list[Path]] = {"node1": [f for f in files if f.stem.endswith("0")],
                                    "node2": [], "node3": []}
    rest = [f for f in files if not f.stem.endswith("0")]
    for i, f in enumerate(rest):
        nodes[("node2", "node3")[i % 2]].append(f)
    return nodes


_FEDERATIONS: dict[tuple[str, str], SimulatedFederation] = {}


def federation(data_model: str, split: str) -> SimulatedFederation:
    key = (data_model, split)
    if key not in _FEDERATIONS:
        code, version = data_model.split(":")
        folder = require_shared(EXAREME2) / "data" / f"{code}_v_{version.replace('.', '_')}"
        model = DataModel.from_cdes(folder / "CDEsMetadata.json")
        frames = {}
        for node, files in _split(_csvs(folder), split).items():
            loaded = [DataSource(kind="csv", path=f).load() for f in files]
            frames[node] = (pd.concat(loaded, ignore_index=True) if loaded
                            else pd.DataFrame({c: pd.Series(dtype="string")
                                               for c in model.variables}))
        # the MIP's rule: a node answers only with at least 10 rows; it does not suppress
        # single cells, so neither do we here (our default does, see the policy docs)
        _FEDERATIONS[key] = SimulatedFederation(frames, model, seed=1, policy=MIP_POLICY)
    return _FEDERATIONS[key]


def _cases() -> list[Any]:
    if not EXAREME2.exists():
        return [pytest.param(None, None, None, marks=pytest.mark.skip(
            reason=f"reference data {EXAREME2} is absent (it ships beside the repository in CI)"))]
    params = []
    for folder in ("expected", "expected-prod"):
        for name, algorithm in FILES.items():
            path = EXAREME2 / folder / name
            if not path.exists():
                continue
            for i, case in enumerate(json.loads(path.read_text())["test_cases"]):
                for split in SPLITS:
                    params.append(pytest.param(algorithm, case, split,
                                               id=f"{folder}/{algorithm}-{i}-{split}"))
    return params


# --- comparisons ----------------------------------------------------------------------------


def _compare_descriptive(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    for part in ("variable_based", "model_based"):
        expected = {(r["variable"], r["dataset"]): r["data"] for r in theirs[part]}
        got = {(r["variable"], r["dataset"]): r["data"] for r in ours[part]}
        assert set(got) == set(expected), part
        for key, want in expected.items():
            have = got[key]
            if want is None or have is None:
                assert want is None and have is None, (part, key, have, want)
                continue
            for field, value in want.items():
                if field in NOT_RELEASED:
                    continue  # deliberately not released: NOT_RELEASED says why
                if field == "counts":
                    assert have["counts"] == {k: v for k, v in value.items() if v}, (part, key)
                    continue
                assert is_close(have[field], value), (part, key, field, have[field], value)


COMPARE: dict[str, Callable[[dict[str, Any], dict[str, Any]], None]] = {
    "descriptive_stats": _compare_descriptive,
}


@pytest.mark.parametrize(("algorithm", "case", "split"), _cases())
def test_exareme2_case(algorithm: str, case: dict[str, Any], split: str) -> None:
    fed = federation(case["input"]["inputdata"]["data_model"], split)
    ours = run_exareme2(fed, case["input"], algorithm=algorithm)
    theirs = case.get("output")
    COMPARE[algorithm](ours, theirs)


def test_every_number_compared_is_finite_or_deliberately_absent() -> None:
    assert all(not isinstance(v, float) or not math.isnan(v) for v in NOT_RELEASED)
