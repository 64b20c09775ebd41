"""How long one computation on the rows may run, and stopping it early: past the policy's
``max_query_seconds``, or once its round has ended (the researcher cancelled, the
aggregator aborted, the connection closed), the row store's engine is interrupted, so that
one costly query (a wide model on many rows) does not hold the node. The computing thread
then sees the engine's error: past the limit the query is refused as ``internal``, its DP
charge standing (how long a query runs may depend on the rows); a stopped one ends as its
round did (see :mod:`node.lifecycle`)."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from node.rowstore import RowStore

log = logging.getLogger("fedtally.node")

#: how often the watch looks at the stop event, and interrupts again once it interrupts:
#: an interrupt that falls between two statements of a query may stop neither (seconds)
REPEAT_S = 0.2


class RoundEnd(threading.Event):
    """Set when a query's round ends while the node has not answered it; :attr:`why` says
    how (the researcher cancelled it, the aggregator aborted it, the connection closed)."""

    def __init__(self) -> None:
        super().__init__()
        self.why = "the query's round ended"

    def end(self, why: str) -> None:
        """The round ended (the first reason given is kept)."""
        if not self.is_set():
            self.why = why
            self.set()


class TimeLimit:
    """A context: past ``seconds``, or once ``stop`` is set, the store's running statement
    is interrupted, and again every :data:`REPEAT_S` until the context ends; never after it
    ends, so the next query is not touched. :attr:`cause` says what first interrupted it
    (``"limit"`` or ``"stop"``), or None: nothing did, or the store cannot be interrupted
    (pandas), so that a failure is told apart from an interruption, whichever came first."""

    def __init__(self, store: RowStore, seconds: float, stop: RoundEnd | None = None) -> None:
        self.store = store
        self.seconds = seconds
        self.stop = stop
        self.cause: str | None = None
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._watch = threading.Thread(target=self._run, name="fedtally-time-limit",
                                       daemon=True)

    @property
    def reached(self) -> bool:
        """The limit interrupted the computation (before any stop did)."""
        return self.cause == "limit"

    def __enter__(self) -> TimeLimit:
        self._deadline = time.monotonic() + self.seconds
        self._watch.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        with self._lock:  # an interrupt in progress ends before the next statement runs
            self._ended.set()
        self._watch.join()

    def _due(self) -> str | None:
        """Why the computation should be interrupted now, if it should."""
        if self.stop is not None and self.stop.is_set():
            return "stop"
        return "limit" if time.monotonic() >= self._deadline else None

    def _run(self) -> None:
        interrupting = False
        while True:
            if interrupting:
                wait = REPEAT_S
            else:
                left = self._deadline - time.monotonic()
                wait = max(0.0, left if self.stop is None else min(left, REPEAT_S))
            if self._ended.wait(wait):
                return
            with self._lock:
                if self._ended.is_set():
                    return
                due = self._due()
                if due is None:
                    continue
                interrupting = True
                try:
                    if self.store.interrupt() and self.cause is None:
                        self.cause = due
                except Exception:  # e.g. the database cannot be reached to cancel
                    log.exception("interrupting a query's computation failed")
