"""A whole federation in this process: the real node code (validation, filters, policy,
statistics) and real secure-sum rounds (keys, shares, masks, unmasking) run in memory, with
no sockets or processes. For fast tests, notebooks and validation suites; the numbers are
the ones a networked federation returns for the same rows.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from crypto.identity import SigningIdentity
from crypto.randomness import RandomSource, SeededRandom, SystemRandom
from engine.errors import ConfigurationError, ProtocolAbort, QueryError
from engine.manifest import round_threshold
from engine.params import RoundParams
from engine.plans import Layout
from engine.query import QuerySpec, canonical_json
from engine.service_messages import QueryResult
from engine.simulate import run_round
from fedtally.catalog import Catalog
from node.budget import BudgetKeeper
from node.datamodel import DATASET, DataModel
from node.policy import Policy
from node.statistics import local_vector
from node.validation import check_valid, coerce

FEDERATION_ID = "simulated"


class SimulatedFederation(Catalog):
    """``data`` maps node names to DataFrames (a missing ``dataset`` column gets the node's
    name). ``data_model`` defaults to one inferred from all the data (trial use only)."""

    def __init__(self, data: Mapping[str, pd.DataFrame], data_model: DataModel | None = None, *,
                 policy: Policy | None = None, threshold_fraction: float = 2 / 3,
                 seed: int | None = None, researcher: str = "alice",
                 ledger_dir: str | Path | None = None) -> None:
        if len(data) < 2:
            raise ConfigurationError("a federation needs at least two nodes")
        frames = {}
        for name, frame in data.items():
            frame = frame.copy()
            if DATASET not in frame.columns:
                frame[DATASET] = name
            frames[name] = frame
        self._model = data_model or DataModel.infer(pd.concat(frames.values(), ignore_index=True),
                                                   code="local", version="1")
        self._models = {self._model.name: self._model}
        self.policy = policy or Policy.default()
        self._rows = {}
        for name, frame in frames.items():
            check_valid(frame, self._model)
            self._rows[name] = coerce(frame, self._model).reset_index(drop=True)
        self._rng: RandomSource = SeededRandom(seed) if seed is not None else SystemRandom()
        self._identities = {name: SigningIdentity.generate(self._rng) for name in sorted(frames)}
        self._fraction = threshold_fraction
        self.researcher = researcher
        # one privacy ledger per node, as real nodes keep (a temporary folder by default)
        self._ledger_tmp = None if ledger_dir else tempfile.TemporaryDirectory(prefix="ledgers-")
        folder = Path(ledger_dir or self._ledger_tmp.name)  # type: ignore[union-attr]
        folder.mkdir(parents=True, exist_ok=True)
        self.budgets = {name: BudgetKeeper(folder / f"{name}.db", self._identities[name],
                                           self.policy) for name in sorted(frames)}

    def catalog(self) -> dict[str, Any]:
        # the rows never change here, so the catalog is built once
        if getattr(self, "_catalog", None) is not None:
            return self._catalog
        nodes = {}
        for name, rows in self._rows.items():
            held = sorted(str(d) for d in rows[DATASET].dropna().unique())
            nodes[name] = {"data_models": {self._model.name: {"model": self._model.to_json(),
                                                             "datasets_held": held}}}
        self._catalog: dict[str, Any] | None = {"nodes": nodes, "federation_id": FEDERATION_ID}
        return self._catalog

    def _execute(self, spec: QuerySpec, plan: Layout) -> QueryResult:
        self.policy.check_algorithm(spec.algorithm)
        if spec.privacy.get("mode") == "exact" and not self.policy.allow_exact:
            raise QueryError("the nodes' policy does not allow exact (noise-free) answers")
        names = tuple(sorted(self._rows))
        small = self.policy.small_cell_threshold
        query_id = self._rng.bytes(16)
        receipts = {}
        try:
            for name in names:
                held = sorted(str(d) for d in self._rows[name][DATASET].dropna().unique())
                receipts[name] = self.budgets[name].charge(spec, plan, self.researcher,
                                                           query_id, held)
            values = [local_vector(spec, plan, self._rows[name], self._model,
                                   min_row_count=self.policy.min_row_count,
                                   small_cell_threshold=self.policy.min_row_count
                                   if small is None else small)[0]
                      for name in names]
        except BaseException:
            for name, receipt in receipts.items():
                self.budgets[name].refund(receipt, "refused before anything was computed")
            raise
        for name, receipt in receipts.items():  # the masked inputs leave now
            self.budgets[name].release(receipt)
        n = len(names)
        threshold = round_threshold(self._fraction, n)
        params = RoundParams(FEDERATION_ID, query_id, 0, names, threshold,
                             plan.length, plan.ring_bits, 0,
                             hashlib.sha256(canonical_json(spec.to_json())).digest())
        transcript = run_round(values, params, identities=self._identities, rng=self._rng)
        result = transcript.result
        if result is None:
            raise transcript.aggregator.error or ProtocolAbort("the round did not complete")
        return QueryResult(bytes(16), params.query_id, names, transcript.aggregator.survivors,
                           plan.ring_bits, plan.length, result.to_bytes())

    def budget(self) -> pd.DataFrame:
        """Spent and remaining rho per node and dataset for this researcher."""
        rows = [{"node": name, **line} for name, keeper in sorted(self.budgets.items())
                for line in keeper.summary(self.researcher)]
        frame = pd.DataFrame(rows, columns=["node", "researcher", "dataset", "spent_rho",
                                            "limit_rho", "remaining_rho"])
        return frame.set_index(["node", "dataset"])
