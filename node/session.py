"""One node's query lifecycle, without I/O: the websocket service and the in-memory simulator
both run it, so they refuse and answer alike.

1. :meth:`NodeSession.plan`: every check that needs no row (policy, exact-access grant,
   the plan itself with its parameter bounds, the honest nodes a DP round guarantees,
   resources, the encodable range of every sum, the filter). A refusal here says nothing
   about the rows, and in DP mode costs nothing.
2. :meth:`NodeSession.charge`: in DP mode the query is recorded and its budget charged,
   durably, before any row is read.
3. :meth:`NodeSession.compute`: the rows. Nothing here fails because of a row's value; if
   anything fails anyway, the operator's log gets the traceback, the researcher gets
   :class:`InternalError` with a fixed text, and the charge stands (the failure might
   depend on the data, so refunding it would answer a question for free).
4. :meth:`NodeSession.answered` just before the contribution leaves (it releases a DP
   charge, or records an exact answer) gives the ledger's signed head to send with it; a
   round that fails before that is refunded (round failures do not depend on the rows), and
   a query refused before any entry is recorded with its reason (:meth:`refused`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from crypto.encoding import RingVector
from crypto.randomness import RandomSource, SystemRandom
from node.budget import Asked, BudgetKeeper, held_of
from node.policy import Policy
from node.rowstore import FrameRows, RowStore
from node.statistics import LocalSummary, local_vector
from node.time_limit import RoundEnd, TimeLimit
from privacy.head import HeadReceipt
from privacy.ledger import ChargeReceipt
from protocol.errors import FedtallyError, InternalError, QueryError, QueryStopped
from stats import filters
from stats.datamodel import DataModel, PlanModel
from stats.kinds import KINDS
from stats.planner import layout
from stats.plans import REAL_INT_BITS, Key, Layout
from stats.query import QuerySpec
from stats.verified_totals import commit_vector

log = logging.getLogger("fedtally.node")

#: working memory a slot of the layout costs a node (Slot objects, dict entries, ints)
SLOT_BYTES = 512


def _power_of_two_above(value: float) -> float:
    """The magnitude a node plans with for a variable without declared bounds: its largest
    |value| rounded up to a power of two, so the plan says as little as possible about it."""
    return 0.0 if value <= 0 else 2.0 ** math.ceil(math.log2(value))


@dataclass
class LoadedData:
    """A node's validated rows and its data model. ``rows`` is a DataFrame kept in memory;
    ``store``, where given instead, keeps them elsewhere (DuckDB) and computes there."""

    model: DataModel
    rows: pd.DataFrame | None = None
    #: per numeric variable, the largest |value| a row can hold: the declared bound, or the
    #: node's own largest |value| rounded up to a power of two (see threat_model.md)
    magnitudes: dict[str, float] = field(default_factory=dict)
    store: RowStore | None = None

    def __post_init__(self) -> None:
        if self.store is None:
            if self.rows is None:
                raise ValueError("LoadedData needs rows or a store")
            self.store = FrameRows(self.rows, self.model)
        if self.magnitudes:
            return
        for code, variable in self.model.variables.items():
            if not variable.is_numeric:
                continue
            if variable.min is not None and variable.max is not None:
                self.magnitudes[code] = max(abs(variable.min), abs(variable.max))
            else:
                self.magnitudes[code] = _power_of_two_above(
                    self.rows_store.largest_magnitude(code))

    @property
    def rows_store(self) -> RowStore:
        assert self.store is not None
        return self.store

    @property
    def row_count(self) -> int:
        return self.rows_store.count()

    @property
    def held(self) -> list[str]:
        return self.rows_store.held()

    def catalog(self) -> dict[str, object]:
        return {"data_models": {self.model.name: {"model": self.model.to_json(),
                                                  "datasets_held": self.held}}}


@dataclass(frozen=True)
class Contribution:
    """What a node puts into a round: its vector, what its log says, its commitment."""

    vector: RingVector
    summary: LocalSummary
    #: Pedersen commitment to the vector (b"" where the plan is not verifiable)
    commitment: bytes


@dataclass
class NodeSession:
    name: str
    data: LoadedData
    policy: Policy
    budget: BudgetKeeper
    max_rows_per_node: int
    #: honest contributors a DP round's noise is calibrated for (the manifest's)
    dp_honest_nodes: int = 1
    #: nodes that may collude with the aggregator (the manifest's c)
    max_colluding_nodes: int = 0
    #: mask mode: contributors commit to their vectors (protocol/commitment.py)
    verifiable: bool = False
    #: randomness for commitment blindings (the OS CSPRNG; seeded in tests)
    rng: RandomSource = field(default_factory=SystemRandom)

    def plan(self, spec: QuerySpec, researcher: str, *, threshold: int,
             stop: RoundEnd | None = None) -> Layout:
        """Every check that needs no row; the query's layout. ``threshold`` is the fewest
        nodes the round can end with (its signed threshold). ``stop``: as for
        :meth:`compute` (the range check may take a pass over the rows)."""
        policy, model = self.policy, self.data.model
        policy.check_method(spec.method)
        if spec.privacy["mode"] == "exact":
            policy.check_exact(researcher)
        elif threshold - self.max_colluding_nodes < self.dp_honest_nodes:
            raise QueryError(f"the round may end with {threshold} nodes, of which "
                             f"{self.max_colluding_nodes} may collude: fewer than the "
                             f"{self.dp_honest_nodes} honest ones its noise is calibrated for")
        if spec.data_model != model.name:
            raise QueryError(f"this node serves data model {model.name}, not {spec.data_model}")
        if self.data.row_count > self.max_rows_per_node:
            raise QueryError(f"this node holds more rows than the federation's "
                             f"max_rows_per_node ({self.max_rows_per_node}); it cannot answer")
        view = PlanModel(model)
        plan = layout(spec, view, self.max_rows_per_node, honest_nodes=self.dp_honest_nodes,
                      max_slots=policy.max_slots, verifiable=self.verifiable)
        kind = KINDS[spec.kind]
        working = self.data.rows_store.working_rows(spec)
        memory = kind.row_cost(spec, view) * working + plan.length * SLOT_BYTES
        if memory > policy.max_query_memory_mb * (1 << 20):
            raise QueryError(f"this query would need about {memory >> 20} MiB at this node; "
                             f"its policy allows {policy.max_query_memory_mb} MiB per query")
        # a round trip to a hospital's database: after every refusal that needs nothing,
        # before the range check's pass over the rows and before any charge
        self.data.rows_store.check_available()
        if plan.noise is None:
            self._check_range(spec, plan, stop)
        if spec.filters is not None:
            filters.from_json(spec.filters).check(model)
        return plan

    def _check_range(self, spec: QuerySpec, plan: Layout, stop: RoundEnd | None = None
                     ) -> None:
        """No exact sum can leave the encodable range |S| < 2^REAL_INT_BITS, whatever the
        filter selects: each real slot's bound is rows x its row bound at the node's
        magnitudes, or, where that does not fit and the kind gives them, the sum of |terms|
        over every row of the query's datasets. A refusal never depends on the filter, so
        it cannot single out a row."""
        kind = KINDS[spec.kind]
        view = PlanModel(self.data.model)
        bound = kind.row_bound(spec, view, lambda code: self.data.magnitudes.get(code, 0.0))
        rows = max(self.data.row_count, 1)
        limit = 2.0 ** REAL_INT_BITS
        sums: dict[Key, float] | None = None
        for slot in plan.slots:
            if not slot.real or rows * bound(slot.key) < limit:
                continue
            if sums is None:  # the exact bound costs a pass over the rows: only when needed
                sums = self._abs_sums(spec, stop)
            if not sums.get(slot.key, math.inf) < limit:
                what = (kind.describe(spec, view, slot.key) if kind.describe is not None
                        else "sums of " + (", ".join(kind.summed(spec, view)) or "its variables"))
                raise QueryError(f"{what} could exceed the exactly encodable range "
                                 f"|sum| < 2^{REAL_INT_BITS} (about {limit:.2g}) at this node; "
                                 "declare its variables' min and max in the data model (a "
                                 "declared variable is centred and scaled), or rescale it")

    def _abs_sums(self, spec: QuerySpec, stop: RoundEnd | None) -> dict[Key, float]:
        """The store's sums of |terms|; its engine failing (out of memory on a very wide
        query) is a refusal the lifecycle records, with the failure in the log only."""
        if stop is not None and stop.is_set():
            raise QueryStopped(stop.why)
        limit = TimeLimit(self.data.rows_store, self.policy.max_query_seconds, stop)
        try:
            with limit:
                return self.data.rows_store.abs_sums(spec)
        except FedtallyError:
            raise
        except Exception:
            raise self._failure(limit, stop, "the sums of |terms| that bound a query's "
                                "range") from None

    def _failure(self, limit: TimeLimit, stop: RoundEnd | None,
                 what: str) -> QueryStopped | InternalError:
        """What the researcher reads of a failure while computing on the rows: that its
        round ended (the computation was stopped), that the node's time limit stopped it
        (which the time the node took tells anyway), or the fixed text (the failure itself
        goes to the log only)."""
        if stop is not None and limit.cause == "stop":
            log.info("%s: the query's round ended; computing it was stopped", what)
            return QueryStopped(stop.why)
        if not limit.reached:
            log.exception("%s failed", what)
            return InternalError()
        log.warning("%s: stopped at the policy's max_query_seconds (%g s)", what,
                    limit.seconds)
        return InternalError(f"the node stopped computing at its time limit "
                             f"(max_query_seconds, {limit.seconds:g} s)")

    def asked(self, spec: QuerySpec, researcher: str, query_id: bytes,
              digest: bytes) -> Asked:
        """The query as the ledger records it (the datasets of it this node holds)."""
        return Asked(spec, researcher, query_id, digest, held_of(spec, self.data.held))

    def charge(self, asked: Asked, plan: Layout) -> ChargeReceipt | None:
        """DP: record the query and charge it before any row is read."""
        return self.budget.charge(asked, plan)

    def answered(self, asked: Asked, charge: ChargeReceipt | None) -> HeadReceipt:
        """Just before the contribution leaves: the ledger's signed head to send with it."""
        return self.budget.answered(asked, charge)

    def refused(self, asked: Asked, code: str) -> None:
        self.budget.refused(asked, code)

    def refund(self, charge: ChargeReceipt | None, why: str) -> None:
        self.budget.refund(charge, why)

    def compute(self, spec: QuerySpec, plan: Layout, query_id: bytes,
                stop: RoundEnd | None = None) -> Contribution:
        """This node's vector, and its commitment to it where the plan is verifiable;
        never an error that depends on a row (see the module doc). ``stop``, once set (the
        query's round ended), interrupts the computation: :class:`QueryStopped`."""
        policy = self.policy
        assert policy.small_cell_threshold is not None
        limit = TimeLimit(self.data.rows_store, policy.max_query_seconds, stop)
        try:
            with limit:
                vector, summary = local_vector(
                    spec, plan, self.data.rows_store, self.data.model,
                    min_row_count=policy.min_row_count,
                    small_cell_threshold=policy.small_cell_threshold)
        except Exception:
            raise self._failure(limit, stop, f"query {query_id.hex()[:8]} ({spec.method}): "
                                "computing the contribution") from None
        log.info("query %s (%s): %d rows, contributed=%s, %d cells read as zero (%d withheld)",
                 query_id.hex()[:8], spec.method, summary.rows, summary.contributed,
                 summary.cells_below_threshold, summary.cells_withheld)
        if not plan.verifiable:
            return Contribution(vector, summary, b"")
        values = [int(v) for v in vector.to_signed()]
        commitment = commit_vector(values, plan, self.rng)
        vector = RingVector.from_ints(plan.ring_bits, np.array(values, dtype=object))
        return Contribution(vector, summary, commitment)
