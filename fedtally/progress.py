"""``progress=True``: a progress bar (tqdm) over the secure-sum rounds of one call.

Iterative methods (logistic regression's Newton rounds, k-means, cross-validation folds) run
one round per step; the bar advances once per round, out of ``max_iter`` when the method has
one. tqdm is imported only when a bar is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from protocol.errors import ConfigurationError

_BAR: ContextVar[Any] = ContextVar("fedtally_progress", default=None)


@contextlib.contextmanager
def bar(enabled: bool, description: str, total: int | None = None) -> Iterator[None]:
    """While the block runs, every secure-sum round advances a bar (when ``enabled``)."""
    if not enabled or _BAR.get() is not None:
        yield
        return
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - tqdm is a dependency
        raise ConfigurationError("progress=True needs tqdm: pip install tqdm") from exc
    shown = tqdm(total=total, desc=description, unit="round", leave=True)
    token = _BAR.set(shown)
    try:
        yield
    finally:
        _BAR.reset(token)
        shown.close()


def tick() -> None:
    """One secure-sum round done."""
    shown = _BAR.get()
    if shown is not None:
        shown.update(1)
