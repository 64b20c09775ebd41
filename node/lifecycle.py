"""One query at one node, from its announcement until its contribution leaves: admit,
charge, compute, record, or refuse and refund. No I/O: the node service drives it over its
websocket and the simulator drives it in memory, so both admit, charge, record and refund
alike (a query the simulator answers is one a real node answers, and the other way round).

The ledger's rules it keeps:

- a query that fails authentication has no entry (nobody is known to have asked);
- every authenticated query a node refuses is an entry with its reason;
- a DP query is charged, durably, before any row is read; an exact one is recorded just
  before its contribution leaves;
- a DP charge is refunded when the round ends before the contribution left, unless the
  failure happened while computing on the rows (InternalError: it might depend on them);
  a computation stopped because its round ended (QueryStopped: cancelled, aborted, the
  connection closed; also a query whose round ended while it waited its turn, admitted and
  charged when its turn comes, so that it cannot be replayed) ends as the round's end would
  have found it once computed, so that how long it computed never shows in the ledger:
  refunded where the contribution leaves at a later stage (mask mode), standing where it
  leaves as soon as it is computed (Paillier mode: ``stop_keeps_charge``);
- a replay has its entry already and gets no second one.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.admission import NodeIdentity, ReplayGuard, admit, authenticate
from node.budget import Asked
from node.session import Contribution, NodeSession
from node.time_limit import RoundEnd
from privacy.head import HeadReceipt
from privacy.ledger import ChargeReceipt
from protocol.errors import FedtallyError, InternalError, QueryStopped, ReplayError
from protocol.paillier_node import PaillierNode
from protocol.params import RoundParams
from protocol.secagg_node import SecAggNode
from protocol.signed_query import SignedQuery

RoundNode = SecAggNode | PaillierNode


@dataclass
class InFlight:
    """A query this node is answering: the ledger's view of it, its charge, its round."""

    session: NodeSession
    guard: ReplayGuard
    asked: Asked
    #: a DP charge, released just before the contribution leaves
    charge: ChargeReceipt | None = None
    #: whether the ledger holds an entry for the query yet (DP: from the charge on)
    recorded: bool = False
    #: the round's state machine, once the service or the simulator made one
    node: RoundNode | None = None
    #: a stopped computation keeps its charge (the contribution would have left as soon as
    #: it was computed: Paillier mode)
    stop_keeps_charge: bool = False

    def failed(self, exc: FedtallyError) -> None:
        """The query ends without a contribution (see the module doc for the ledger's side)."""
        if self.recorded:
            kept = isinstance(exc, InternalError) or (isinstance(exc, QueryStopped)
                                                      and self.stop_keeps_charge)
            if not kept:
                why = exc.why if isinstance(exc, QueryStopped) else f"the round ended ({exc.code})"
                self.refund(f"{why} before the contribution was sent")
            return
        if not isinstance(exc, ReplayError):
            self.session.refused(self.asked, exc.code)

    def leaving(self) -> HeadReceipt:
        """Just before the contribution leaves: its ledger entry (a DP charge is released,
        an exact answer recorded), and the signed head to send with it, kept durably first."""
        head = self.session.answered(self.asked, self.charge)
        self.recorded = True
        self.charge = None
        self.guard.remember_head(head.seq, head.hash)
        return head

    def refund(self, why: str) -> None:
        """Refund the DP charge, if one is still held (nothing left the node)."""
        charge, self.charge = self.charge, None
        self.session.refund(charge, why)


def begin(me: NodeIdentity, query: SignedQuery, params: RoundParams, session: NodeSession,
          guard: ReplayGuard, now_ms: int, stop: RoundEnd | None = None,
          stop_keeps_charge: bool = False) -> tuple[InFlight, Contribution]:
    """Authenticate, admit (every check that needs no row), charge, and compute this node's
    contribution; a refusal is recorded before it is raised. ``stop``: set when the query's
    round ends meanwhile (the computation is then interrupted, or not begun, once charged:
    QueryStopped; see the module doc for its charge)."""
    spec = authenticate(me, query, now_ms)
    flight = InFlight(session, guard,
                      session.asked(spec, query.researcher, query.query_id, query.digest),
                      stop_keeps_charge=stop_keeps_charge)
    try:
        admitted = admit(me, query, params, session, guard, now_ms, spec=spec, stop=stop)
        # charged (durably) before any row is read; a failure while computing keeps it
        flight.charge = session.charge(flight.asked, admitted.layout)
        flight.recorded = admitted.layout.noise is not None
        if stop is not None and stop.is_set():
            raise QueryStopped(stop.why)
        contribution = session.compute(spec, admitted.layout, query.query_id, stop)
    except FedtallyError as exc:
        flight.failed(exc)
        raise
    return flight, contribution
