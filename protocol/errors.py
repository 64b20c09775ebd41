"""The project's error hierarchy, split by fault (as h11 splits Local/RemoteProtocolError).

Every error that can reach a researcher or a peer has a stable ``code`` and a ``public``
message written for that audience. Exception text is never sent over the wire: only the
code and, where the class says it is safe, the curated public message.
"""

from __future__ import annotations


class FedtallyError(Exception):
    """Base of every error fedtally raises on purpose."""

    code: str = "error"
    #: whether ``str(self)`` may be shown to a remote party (it names no secret, no row value)
    public: bool = False


# --- our own misuse -----------------------------------------------------------------------


class LocalError(FedtallyError):
    """The caller of this process misused an API (bad argument, wrong stage)."""

    code = "local"


class ConfigurationError(LocalError):
    code = "configuration"
    public = True


class InvalidRoundParameters(LocalError, ValueError):
    """Round parameters no secure sum can run with (too few participants, a ring or vector
    out of range, an impossible neighbour count). Decoded from a peer, the codec turns it
    into a :class:`DecodeError`."""

    code = "invalid_round_parameters"


# --- a peer misbehaved ----------------------------------------------------------------------


class RemoteProtocolError(FedtallyError):
    """A peer (node, aggregator or researcher) sent something the protocol does not allow."""

    code = "protocol"
    public = True


class DecodeError(RemoteProtocolError):
    """A frame could not be decoded: malformed, truncated, oversized or of an unknown type."""

    code = "decode"


class UnexpectedMessage(RemoteProtocolError):
    """A well-formed message arrived in a stage whose transition table does not allow it."""

    code = "unexpected_message"


class ReplayError(RemoteProtocolError):
    """A message belongs to another query or round than the one it was sent into."""

    code = "replay"


class AuthenticationError(RemoteProtocolError):
    """A signature did not verify, or a sender is not the member it claims to be."""

    code = "authentication"


class DuplicateMember(AuthenticationError):
    """A node connected under a name whose established connection is alive: the established
    one stays, the newcomer is refused (two processes share one node's key)."""

    code = "duplicate_member"


class ParameterMismatch(RemoteProtocolError):
    """Peers disagree on the round parameters (detected through signatures or derivation)."""

    code = "parameter_mismatch"


class InconsistentView(RemoteProtocolError):
    """The aggregator presented lists that contradict each other or the node's own view."""

    code = "inconsistent_view"


# --- the protocol had to stop -----------------------------------------------------------------


class ProtocolAbort(FedtallyError):
    """A round stopped before anything was released (e.g. too few survivors)."""

    code = "abort"
    public = True


class ThresholdNotMet(ProtocolAbort):
    """Fewer than ``threshold`` participants remain at some stage."""

    code = "threshold_not_met"


class AbortedByPeer(ProtocolAbort):
    """The aggregator or a node announced that the round is aborted."""

    code = "aborted_by_peer"


# --- queries and data --------------------------------------------------------------------


class QueryError(FedtallyError):
    """A query cannot be answered as asked (unknown variable, invalid filter, ...)."""

    code = "query"
    public = True


class DataError(FedtallyError):
    """A node's data or data model is invalid; the node refuses to serve it."""

    code = "data"
    public = True



class InternalError(FedtallyError):
    """A node failed while computing on its rows. What failed is in the node operator's log;
    the researcher is told only this code and a fixed text, since anything more could depend
    on a row. In DP mode the charge stands: the failure might depend on the data."""

    code = "internal"
    public = True

    def __init__(self, message: str = "the node could not compute its contribution") -> None:
        super().__init__(message)


class QueryStopped(FedtallyError):
    """A node stopped computing a query because its round had ended (the researcher
    cancelled it, the aggregator aborted it, or the connection closed): nothing is sent,
    and a DP charge ends as the round's end would have found it once computed (refunded in
    mask mode, standing in Paillier mode: :mod:`node.lifecycle`)."""

    code = "stopped"

    def __init__(self, why: str = "the query's round ended") -> None:
        super().__init__(f"{why} while the node computed its contribution")
        #: how the round ended (the ledger's refund reason says it)
        self.why = why


class ServiceUnavailable(FedtallyError):
    """The aggregator cannot be reached or the connection was lost mid-request."""

    code = "unavailable"
    public = True


class DegenerateInput(QueryError):
    """The data cannot support the analysis as asked (no residual degrees of freedom, a
    single group, a constant column, perfect separation, too few rows...)."""

    code = "degenerate"


class BudgetExhausted(QueryError):
    """A node's privacy budget for (researcher, dataset) cannot pay for the query; the
    message names what remains. Nothing was released."""

    code = "budget_exhausted"
