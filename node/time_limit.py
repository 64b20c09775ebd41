"""How long one computation on the rows may run: past the policy's ``max_query_seconds`` the
row store's engine is interrupted, so that one costly query (a wide model on many rows) does
not hold the node for hours. The computing thread then sees the engine's error, and the
query is refused as ``internal``, its DP charge standing (how long a query runs may depend
on the rows)."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from node.rowstore import RowStore

log = logging.getLogger("fedtally.node")

#: while the limit is passed, the engine is interrupted again this often (seconds): an
#: interrupt that falls between two statements of a query may stop neither
REPEAT_S = 0.2


class TimeLimit:
    """A context: past ``seconds`` the store's running statement is interrupted, and again
    every :data:`REPEAT_S` until the context ends; never after it ends, so the next
    query is not touched. :attr:`reached` says whether the limit was passed."""

    def __init__(self, store: RowStore, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.reached = False
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._watch = threading.Thread(target=self._run, name="fedtally-time-limit",
                                       daemon=True)

    def __enter__(self) -> TimeLimit:
        self._watch.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        with self._lock:  # an interrupt in progress ends before the next statement runs
            self._ended.set()
        self._watch.join()

    def _run(self) -> None:
        if self._ended.wait(self.seconds):
            return
        while True:
            with self._lock:
                if self._ended.is_set():
                    return
                self.reached = True
                try:
                    self.store.interrupt()
                except Exception:  # e.g. the database cannot be reached to cancel
                    log.exception("interrupting a query past its time limit failed")
            if self._ended.wait(REPEAT_S):
                return
