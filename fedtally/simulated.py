"""A whole federation in this process: the real node code (validation, filters, policy,
statistics) and real secure-sum rounds (keys, shares, masks, unmasking) run in memory, with
no sockets or processes. For fast tests, notebooks and validation suites; the numbers are
the ones a networked federation returns for the same rows.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from crypto.encoding import RingVector
from crypto.identity import SigningIdentity
from crypto.keyagreement import X25519KeyPair
from crypto.paillier import DEFAULT_KEY_BITS, MIN_KEY_BITS, FastEncryptor
from crypto.randomness import RandomSource, SeededRandom, SystemRandom
from crypto.threshold_paillier import KeyShare
from fedtally.catalog import Catalog
from fedtally.dp import BUDGET_DELTA, DP, budget_frame, trial_policy
from fedtally.federation import deal_paillier
from fedtally.receipts import Receipts
from node.admission import NodeIdentity, ReplayGuard
from node.budget import BudgetKeeper
from node.lifecycle import InFlight, begin
from node.policy import Policy
from node.session import Contribution, LoadedData, NodeSession
from node.validation import check_valid, coerce
from protocol.errors import (
    ConfigurationError,
    FedtallyError,
    InternalError,
    ProtocolAbort,
)
from protocol.manifest import (
    DEFAULT_PARAMETERS,
    PROTECTIONS,
    Manifest,
    check_federation_size,
    manifest_body,
    sign_manifest,
)
from protocol.messages import SignedCommitment
from protocol.paillier_key import FederationKey
from protocol.paillier_result import open_result
from protocol.params import RoundParams
from protocol.service_messages import QueryResult
from protocol.signed_query import SignedQuery, signed_query_statement
from protocol.simulate import run_paillier_round, run_round
from stats.datamodel import DATASET, DataModel
from stats.plans import Layout
from stats.query import QuerySpec
from stats.verified_totals import check_result

FEDERATION_ID = "simulated"


def _memory_backed() -> str | None:
    """Where temporary ledgers go: memory-backed storage where the system has it. They are
    deleted with the federation, so syncing them to disk buys nothing and costs a quarter
    of each round."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


class SimulatedFederation(Catalog):
    """``data`` maps node names to DataFrames (a missing ``dataset`` column gets the node's
    name). ``data_model`` defaults to one inferred from all the data (trial use only).

    ``protection="paillier"`` runs Paillier-mode rounds instead of masked ones: a
    ``paillier_bits`` key is dealt among the nodes (any ``decryption_threshold`` decrypt,
    by default the least quorum above (N + c)/2) and the researcher side opens the sealed
    partials.

    ``verifiable_totals=False`` turns off the nodes' commitments (mask mode), as
    ``federation init --no-verifiable-totals`` does: the researcher then cannot tell a
    forged total from a true one, and rounds cost about half as much.

    Thresholds follow ``max_colluding_nodes`` (c) exactly as in a real federation
    (:func:`protocol.manifest.round_threshold`), and, as ``federation init`` does, a
    federation too small for c is refused: two nodes need ``max_colluding_nodes=0``.
    """

    def __init__(self, data: Mapping[str, pd.DataFrame], data_model: DataModel | None = None, *,
                 policy: Policy | None = None, threshold_fraction: float = 2 / 3,
                 seed: int | None = None, researcher: str = "alice",
                 ledger_dir: str | Path | None = None, protection: str = "mask",
                 paillier_bits: int = DEFAULT_KEY_BITS,
                 decryption_threshold: int | None = None,
                 max_colluding_nodes: int = DEFAULT_PARAMETERS["max_colluding_nodes"],
                 budget: DP | None = None, strict: bool = False,
                 verifiable_totals: bool = True) -> None:
        if len(data) < 2:
            raise ConfigurationError("a federation needs at least two nodes")
        if isinstance(max_colluding_nodes, bool) or not isinstance(max_colluding_nodes, int) \
                or max_colluding_nodes < 0:
            raise ConfigurationError("max_colluding_nodes must be an integer >= 0")
        check_federation_size(len(data), max_colluding_nodes, self.dp_honest_nodes,
                              "this federation")
        self.max_colluding_nodes = max_colluding_nodes
        frames = {}
        for name, frame in data.items():
            frame = frame.copy()
            if DATASET not in frame.columns:
                frame[DATASET] = name
            frames[name] = frame
        self._model = data_model or DataModel.infer(pd.concat(frames.values(), ignore_index=True),
                                                   code="local", version="1")
        self._models = {self._model.name: self._model}
        if budget is not None:  # a trial budget for the researcher (see local_federation)
            policy = Policy.from_dict(trial_policy(
                budget, researcher, policy.to_dict() if policy is not None else None))
        self.policy = policy or Policy.default()
        self.strict = strict
        self._rows = {}
        for name, frame in frames.items():
            check_valid(frame, self._model)
            self._rows[name] = coerce(frame, self._model).reset_index(drop=True)
        self._rng: RandomSource = SeededRandom(seed) if seed is not None else SystemRandom()
        self._identities = {name: SigningIdentity.generate(self._rng) for name in sorted(frames)}
        self._researcher_key = SigningIdentity.generate(self._rng)
        self._receipts = Receipts({name: identity.verify_key.raw
                                   for name, identity in self._identities.items()})
        self.researcher = researcher
        if not isinstance(verifiable_totals, bool):
            raise ConfigurationError("verifiable_totals must be true or false")
        self.verifiable_totals = protection == "mask" and verifiable_totals
        self.manifest = self._manifest(threshold_fraction)
        # one privacy ledger per node, as real nodes keep (a temporary folder by default)
        self._ledger_tmp = None if ledger_dir else tempfile.TemporaryDirectory(
            prefix="ledgers-", dir=_memory_backed())
        folder = Path(ledger_dir or self._ledger_tmp.name)  # type: ignore[union-attr]
        folder.mkdir(parents=True, exist_ok=True)
        self.budgets = {name: BudgetKeeper(folder / f"{name}.db", self._identities[name],
                                           self.policy) for name in sorted(frames)}
        # the node code every real node runs, without its websocket
        self._members = {name: identity.verify_key for name, identity in self._identities.items()}
        self.sessions = {name: NodeSession(name, LoadedData(self._model, self._rows[name]),
                                           self.policy, self.budgets[name],
                                           self.max_rows_per_node, self.dp_honest_nodes,
                                           max_colluding_nodes, self.verifiable_totals,
                                           self._rng.child(f"commit-{name}")
                                           if isinstance(self._rng, SeededRandom) else self._rng)
                         for name in sorted(frames)}
        self._me = {name: NodeIdentity(name, identity, self.manifest)
                    for name, identity in self._identities.items()}
        self._guards = {name: ReplayGuard() for name in sorted(frames)}
        if protection not in PROTECTIONS:
            raise ConfigurationError(f"protection must be one of {', '.join(PROTECTIONS)}")
        self.protection = protection
        self._paillier: tuple[FederationKey, dict[str, KeyShare], FastEncryptor] | None = None
        if protection == "paillier":
            names = tuple(sorted(frames))
            # the simulator allows test-sized keys; a manifest needs 2048 bits at least
            _, shares, tp = deal_paillier(list(names), paillier_bits, decryption_threshold,
                                          self._rng, min_bits=MIN_KEY_BITS,
                                          max_colluding=max_colluding_nodes)
            self._paillier = (FederationKey(tp, names), dict(zip(names, shares, strict=True)),
                              FastEncryptor(tp.public, self._rng))
        elif decryption_threshold is not None:
            raise ConfigurationError("a decryption threshold only applies to Paillier mode")

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

    def _manifest(self, threshold_fraction: float) -> Manifest:
        """The federation's signed manifest, as ``federation init`` writes it, so that every
        node admits a query with :func:`node.admission.admit`. It states mask protection in
        Paillier mode too: the simulator allows test-sized keys, which a manifest refuses
        (the one check that reads the key, that a query carries a reply key, holds anyway:
        the simulator always sends one)."""
        authority = SigningIdentity.generate(self._rng)
        members = [*((name, "node", identity.verify_key)
                     for name, identity in self._identities.items()),
                   (self.researcher, "researcher", self._researcher_key.verify_key)]
        body = manifest_body(
            FEDERATION_ID, "2026-01-01T00:00:00Z", "127.0.0.1", 1,
            SigningIdentity.generate(self._rng).verify_key, members,
            {"threshold_fraction": threshold_fraction,
             "max_colluding_nodes": self.max_colluding_nodes,
             "dp_honest_nodes": self.dp_honest_nodes,
             "max_rows_per_node": self.max_rows_per_node,
             "verifiable_totals": self.verifiable_totals})
        return Manifest.from_document(sign_manifest(body, authority),
                                      authority_key=authority.verify_key,
                                      source="the simulated federation")

    def _execute(self, spec: QuerySpec, plan: Layout) -> QueryResult:
        names = tuple(sorted(self._rows))
        query, reply_key, params = self._round(spec, plan)
        # every node admits, charges and computes as a real node does (node.lifecycle); a
        # node's refusal ends the round before anything leaves, and the others refund
        now_ms = int(time.time() * 1000)
        flights: dict[str, InFlight] = {}
        contributions: dict[str, Contribution] = {}
        refusal: Exception | None = None
        for name in names:
            try:
                flights[name], contributions[name] = begin(
                    self._me[name], query, params, self.sessions[name], self._guards[name],
                    now_ms)
            except Exception as exc:  # a bug too ends the round (a real node refuses it)
                refusal = refusal or exc
        if refusal is not None:
            code = refusal.code if isinstance(refusal, FedtallyError) else InternalError.code
            ended = ProtocolAbort(f"the round was aborted: a node refused ({code})")
            for flight in flights.values():
                flight.failed(ended)
            raise refusal
        # the contributions leave now, each recorded in its node's ledger first
        receipts = tuple(flights[name].leaving().to_json() for name in names)
        values = [contributions[name].vector for name in names]
        commitments: tuple[SignedCommitment, ...] = ()
        if self._paillier is not None:
            result, survivors = self._paillier_round(values, params, reply_key)
        else:
            transcript = run_round(values, params, identities=self._identities, rng=self._rng,
                                   commitments={name: contributions[name].commitment
                                                for name in names})
            if transcript.result is None:
                raise transcript.aggregator.error or ProtocolAbort("the round did not complete")
            result, survivors = transcript.result, transcript.aggregator.survivors
            commitments = transcript.aggregator.commitments()
        reply = QueryResult(bytes(16), params.query_id, names, survivors, plan.ring_bits,
                            plan.length, result.to_bytes(), receipts, commitments)
        check_result(reply, plan, query.digest, self._members)
        return reply

    def _round(self, spec: QuerySpec, plan: Layout
               ) -> tuple[SignedQuery, X25519KeyPair, RoundParams]:
        """The researcher's signed query (as the network client sends it), its reply key,
        and the round over every node (as the aggregator announces it)."""
        raw, query_id = spec.canonical(), self._rng.bytes(16)
        issued = int(time.time() * 1000)
        reply = X25519KeyPair.generate(self._rng)
        statement = signed_query_statement(self.researcher, FEDERATION_ID, query_id, issued,
                                           raw, plan.length, plan.ring_bits,
                                           reply_key=reply.public)
        query = SignedQuery(self.researcher, FEDERATION_ID, query_id, issued, raw, plan.length,
                            plan.ring_bits, self._researcher_key.sign(statement), reply.public)
        names = tuple(sorted(self._rows))
        params = RoundParams(FEDERATION_ID, query_id, 0, names,
                             self.manifest.threshold_for(len(names)), plan.length,
                             plan.ring_bits, 0, query.digest,
                             max_colluding=self.max_colluding_nodes)
        return query, reply, params

    def _paillier_round(self, values: list[RingVector], params: RoundParams,
                        reply: X25519KeyPair) -> tuple[RingVector, tuple[str, ...]]:
        assert self._paillier is not None
        key, shares, encryptor = self._paillier
        transcript = run_paillier_round(values, params, identities=self._identities, key=key,
                                        shares=shares, encryptor=encryptor,
                                        reply_key=reply.public, rng=self._rng)
        sealed = transcript.aggregator.result
        if sealed is None:
            raise transcript.aggregator.error or ProtocolAbort("the round did not complete")
        members = {name: identity.verify_key for name, identity in self._identities.items()}
        total = open_result(sealed, query_digest=params.query_digest, key=key,
                            members=members, reply_key=reply)
        return total, sealed.contributors

    def budget(self, delta: float = BUDGET_DELTA) -> pd.DataFrame:
        """Every budget granted to this researcher per node and dataset (spent or not):
        spent and remaining, in rho and as epsilon at ``delta``."""
        rows = [{"node": name, **line} for name, keeper in sorted(self.budgets.items())
                for line in keeper.summary(self.researcher)]
        return budget_frame(rows, delta)
