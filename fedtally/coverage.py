"""Whom an answer covers, and the warnings that say when it does not cover everything asked.

Every result carries a ``federation`` record (see :func:`record`): the nodes asked, those that
answered and those that contributed, the datasets asked and covered, and the node-level cells
that read 0. Whenever the answer does not cover everything asked the client warns with
:class:`IncompleteAnswer`, or raises :class:`IncompleteAnswerError` when the call or the
connection is ``strict``.

Everything here is computed from what the researcher received: the aggregator's catalog
(which online node holds which dataset: metadata), the result's participant and survivor
lists, and the released totals (``nodes_contributing``, ``cells_below_threshold``). Nothing
comes from a node's rows, so nothing here reveals more than the released totals.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from protocol.errors import FedtallyError, QueryError
from protocol.service_messages import QueryResult

__all__ = ["IncompleteAnswer", "IncompleteAnswerError", "NoiseDominates", "Scope", "record"]

TIMED_OUT = "did not answer within the stage timeout"
LEFT = "left during the query (disconnected or refused)"
OFFLINE = "no online node holds it"


class IncompleteAnswer(UserWarning):
    """The answer does not cover everything asked: a dataset's node is down, did not answer
    in time, or contributed nothing (its cohort was below its minimum row count), or some
    cells read 0 (below a node's small-cell threshold, or empty: the two are not told apart).
    The text names the datasets not covered; ``result.federation`` has the details."""


class NoiseDominates(UserWarning):
    """A differentially private value whose noise standard deviation exceeds a stated fraction
    (``fedtally.dp.NOISE_WARNING_FRACTION``) of the value itself: read it as noise."""


class IncompleteAnswerError(QueryError):
    """Raised instead of :class:`IncompleteAnswer` under ``strict=True``."""

    code = "incomplete"


@dataclass(frozen=True)
class Scope:
    """The datasets a query was asked for, and which online nodes held each when it was sent
    (from the aggregator's catalog: metadata only)."""

    asked: tuple[str, ...]
    holders: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def offline(self) -> tuple[str, ...]:
        """Asked datasets no online node holds: they are left out of the query."""
        return tuple(d for d in self.asked if not self.holders.get(d))

    @property
    def sent(self) -> tuple[str, ...]:
        return tuple(d for d in self.asked if self.holders.get(d))


def record(scope: Scope | None, reply: QueryResult, contributing: int,
           cells_below_threshold: int) -> dict[str, Any]:
    """The ``federation`` record of one query (see the module notes)."""
    participants, survivors = set(reply.participants), set(reply.survivors)
    timed_out = set(reply.timed_out)
    not_answering = {n: (TIMED_OUT if n in timed_out else LEFT)
                     for n in sorted(participants - survivors)}
    out: dict[str, Any] = {
        "nodes_asked": len(reply.participants), "nodes_answered": len(reply.survivors),
        "nodes_contributing": contributing, "cells_below_threshold": cells_below_threshold,
        "nodes_not_answering": not_answering}
    if scope is None:
        out["nodes_without_contribution"] = max(0, len(survivors) - contributing)
        return out
    missing: dict[str, str] = {d: OFFLINE for d in scope.offline}
    for dataset in scope.sent:
        gone = [n for n in scope.holders[dataset] if n in not_answering]
        if gone:
            missing[dataset] = "; ".join(f"node {n} {not_answering[n]}" for n in gone)
    # nodes that answered and hold an asked dataset, yet released nothing: an empty cohort
    # or one below the node's min_row_count (a node holding none of them contributes 0)
    holding = {n for d in scope.sent for n in scope.holders[d] if n in survivors}
    out.update(datasets_asked=list(scope.asked),
               datasets_covered=[d for d in scope.asked if d not in missing],
               datasets_not_covered=missing,
               nodes_without_contribution=max(0, len(holding) - contributing))
    return out


#: what to do about cells read as 0, by the query's kind (where there is a lever)
CELL_HINTS = {"survival": "a coarser time grid (times=[...]) puts more events and "
                          "censorings in each cell; on the default whole-unit grid, where "
                          "each day's count at each node is small, a curve can show far "
                          "fewer events than there were"}


def cells_read_zero(federation: Mapping[str, Any]) -> int:
    """The node-level cells that read 0 and may be a gap (below a threshold, or empty): the
    cells of datasets a node does not hold are empty by construction, and left out."""
    return int(federation.get("cells_below_threshold", 0)
               - federation.get("cells_of_datasets_not_held", 0))


def problems(federation: Mapping[str, Any], kind: str | None = None) -> list[str]:
    """What an answer with this ``federation`` record does not cover, one sentence each
    (empty when it covers everything asked); ``kind``, the query's, adds what to do about
    cells read as 0 where there is something (:data:`CELL_HINTS`)."""
    out = [f"dataset {d!r}: {why}" for d, why in federation.get("datasets_not_covered",
                                                                 {}).items()]
    if "datasets_not_covered" not in federation:  # no scope: name the nodes instead
        out += [f"node {n} {why}" for n, why in federation.get("nodes_not_answering",
                                                               {}).items()]
    out += [f"dataset {d!r}: released no rows (none matched, or its node's cohort was "
            "below its minimum row count)" for d in federation.get("datasets_without_rows", [])]
    silent = federation.get("nodes_without_contribution", 0)
    if silent > 0:
        out.append(f"{silent} answering node(s) holding the datasets contributed nothing "
                   "(their cohort was empty or below their minimum row count)")
    cells = cells_read_zero(federation)
    if cells > 0:
        hint = CELL_HINTS.get(kind or "")
        out.append(f"{cells} node-level cell(s) read 0 (below a node's small-cell threshold, "
                   "or empty: the two are not told apart)" + (f"; {hint}" if hint else ""))
    return out


def message(notes: Sequence[str], not_covered: Sequence[str]) -> str:
    named = (f"datasets not covered: {', '.join(not_covered)}; " if not_covered
             else "every dataset asked answered, but ")
    return "incomplete answer: " + named + "; ".join(dict.fromkeys(notes))


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside fedtally
    (the researcher's line), for ``warnings.warn`` called from the frame asking."""
    inside = (os.path.dirname(os.path.abspath(__file__)),
              os.path.abspath(contextlib.__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


# --- per-call options: strict, progress -------------------------------------------------

_STRICT: ContextVar[bool | None] = ContextVar("fedtally_strict", default=None)
#: notes gathered during one call (several rounds give one warning); None outside a call
_NOTES: ContextVar[list[tuple[str, list[str]]] | None] = ContextVar("fedtally_notes",
                                                                    default=None)
#: the rho of each DP statistic released during one call; None outside a call
_SPENT: ContextVar[list[float] | None] = ContextVar("fedtally_spent", default=None)


def strict_now(default: bool) -> bool:
    value = _STRICT.get()
    return default if value is None else value


def report(notes: list[str], not_covered: Sequence[str], *, strict: bool) -> None:
    """Warn (or raise, when strict) about one query's gaps; inside a call, gather them so
    that the call warns once."""
    if not notes:
        return
    if strict:
        raise IncompleteAnswerError(message(notes, not_covered))
    gathered = _NOTES.get()
    if gathered is not None:
        gathered.append((", ".join(not_covered), notes))
        return
    warnings.warn(message(notes, not_covered), IncompleteAnswer, stacklevel=user_stacklevel())


def released_dp(rho: float) -> None:
    """A DP statistic of the current call was released (charged at its nodes)."""
    spent = _SPENT.get()
    if spent is not None:
        spent.append(rho)


@contextlib.contextmanager
def call(strict: bool | None) -> Iterator[None]:
    """One researcher call: ``strict`` for its queries, and one warning for all of them.
    An error after the call released DP statistics says what they cost (the nodes charged
    it whatever the error: the noise left them)."""
    outer = _NOTES.get()
    strict_token = _STRICT.set(strict if strict is not None else _STRICT.get())
    notes_token = _NOTES.set([] if outer is None else outer)
    spent_token = _SPENT.set([] if outer is None else _SPENT.get())
    try:
        yield
        gathered = _NOTES.get() if outer is None else None
    except FedtallyError as exc:
        spent = _SPENT.get()
        if outer is None and spent and exc.args and isinstance(exc.args[0], str):
            exc.args = (f"{exc.args[0]} (this call's {len(spent)} released DP "
                        f"statistic(s) cost rho {sum(spent):.4g} at each node holding "
                        "the datasets: it stays spent)", *exc.args[1:])
        raise
    finally:
        _STRICT.reset(strict_token)
        _NOTES.reset(notes_token)
        _SPENT.reset(spent_token)
    if gathered:
        datasets = [d for names, _ in gathered for d in names.split(", ") if d]
        notes = [n for _, ns in gathered for n in ns]
        warnings.warn(message(notes, list(dict.fromkeys(datasets))), IncompleteAnswer,
                      stacklevel=user_stacklevel())
