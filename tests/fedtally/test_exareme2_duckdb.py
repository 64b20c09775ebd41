"""The Exareme2 cases on DuckDB nodes: every node's vector, round after round, is the same
integers as the pandas node's over the same CSV files (so every answer is the same too).

A sample of the cases (the first few of each expected-results file, three nodes) keeps this
fast; tests/fedtally/test_exareme2.py checks the answers themselves against Exareme2's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedtally.exareme2 import run_exareme2
from fedtally.simulated import SimulatedFederation
from node.datasource import DataSource
from node.session import LoadedData
from node.sql.duckdb_rows import DuckRows
from stats.datamodel import DataModel
from support import EXAREME2, require_shared
from tests.fedtally.test_exareme2 import (
    FILES,
    MIP_POLICY,
    _csvs,
    _split,
    skip_reason,
)

CASES_PER_FILE = 1
FOLDER = "expected"


def _cases() -> list[Any]:
    if not EXAREME2.exists():
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason=f"reference data {EXAREME2} is absent (it ships beside the repository in CI)"))]
    params = []
    for name, algorithm in FILES.items():
        path = EXAREME2 / FOLDER / name
        if not path.exists():
            continue
        cases = json.loads(path.read_text())["test_cases"]
        for i, case in enumerate(cases[:CASES_PER_FILE]):
            if skip_reason(algorithm, FOLDER, name, i, case) is None:
                params.append(pytest.param(algorithm, case,
                                           id=f"{name.split('_expected')[0]}-{i}"))
    return params


_PAIRS: dict[str, tuple[SimulatedFederation, SimulatedFederation, dict[str, list[Any]]]] = {}


def _recording(fed: SimulatedFederation, log: list[Any]) -> None:
    """Log every vector each node contributes, in order."""
    for name, session in fed.sessions.items():
        compute = session.compute

        def recorded(spec: Any, plan: Any, query_id: bytes, stop: Any = None, *,
                     _name: str = name, _compute: Any = compute) -> Any:
            contribution = _compute(spec, plan, query_id, stop)
            log.append((_name, spec.kind, [int(v) for v in contribution.vector.to_signed()]))
            return contribution

        session.compute = recorded  # type: ignore[method-assign]


def _pair(data_model: str) -> tuple[SimulatedFederation, SimulatedFederation,
                                    dict[str, list[Any]]]:
    if data_model not in _PAIRS:
        code, version = data_model.split(":")
        folder = require_shared(EXAREME2) / "data" / f"{code}_v_{version.replace('.', '_')}"
        model = DataModel.from_cdes(folder / "CDEsMetadata.json")
        import pandas as pd

        files = _split(_csvs(folder), "three_nodes")
        frames = {node: pd.concat([DataSource(kind="csv", path=f).load() for f in paths],
                                  ignore_index=True) for node, paths in files.items()}
        # the vectors are compared, not checked against commitments (see test_exareme2)
        pandas = SimulatedFederation(frames, model, seed=1, policy=MIP_POLICY,
                                     max_colluding_nodes=1, verifiable_totals=False)
        duck = SimulatedFederation(frames, model, seed=1, policy=MIP_POLICY,
                                   max_colluding_nodes=1, verifiable_totals=False)
        for node, paths in files.items():
            store = DuckRows.load([DataSource(kind="csv", path=Path(p)) for p in paths], model)
            duck.sessions[node].data = LoadedData(model, store=store)
        logs: dict[str, list[Any]] = {"pandas": [], "duckdb": []}
        _recording(pandas, logs["pandas"])
        _recording(duck, logs["duckdb"])
        _PAIRS[data_model] = (pandas, duck, logs)
    return _PAIRS[data_model]


@pytest.mark.parametrize(("algorithm", "case"), _cases())
def test_exareme2_case_gives_the_same_vectors_on_duckdb(algorithm: str,
                                                         case: dict[str, Any]) -> None:
    request = case["input"]
    pandas, duck, logs = _pair(request["inputdata"]["data_model"])
    for log in logs.values():
        log.clear()
    answers = []
    for fed in (pandas, duck):
        try:
            answers.append(("ok", json.dumps(run_exareme2(fed, request, algorithm=algorithm),
                                             sort_keys=True, default=str)))
        except Exception as exc:  # the same refusal on both is agreement too
            answers.append(("error", f"{type(exc).__name__}: {exc}"))
    assert logs["pandas"], "no node computed anything"
    assert logs["pandas"] == logs["duckdb"]
    assert answers[0] == answers[1]
