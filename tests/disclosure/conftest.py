"""Two real federations (processes, TLS websockets) over the two versions of the attacked
registry, started once for the disclosure tests, and their in-memory twins."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from disclosure.scenario import model, registry

import fedtally
from fedtally.simulated import SimulatedFederation
from node.policy import Policy

#: the defaults (10 rows, cells of 10), a DP budget, and exact answers for everyone
POLICY = {"budgets": {"alice": {"*": {"rho": 10.0}}}, "exact_access": "*"}


@pytest.fixture(scope="session")
def real_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, fedtally.Federation]]:
    with contextlib.ExitStack() as stack:
        feds = {run: stack.enter_context(fedtally.local_federation(
            registry(run), model(), workdir=tmp_path_factory.mktemp(f"run{run}"),
            policy=POLICY, stage_timeout_s=10)) for run in ("A", "B")}
        yield feds


@pytest.fixture(scope="session")
def simulated_pair() -> dict[str, SimulatedFederation]:
    return {run: SimulatedFederation(registry(run), model(), seed=1,
                                     policy=Policy.from_dict(POLICY)) for run in ("A", "B")}
