"""High-water marks: a small file remembering the largest value seen per name, so a value
that goes backwards (a rolled-back, re-signed document) is refused.

A member keeps one beside its config: the highest manifest version seen per federation.
Written atomically (old file or new, never half); a missing file means nothing seen yet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from crypto.errors import CryptoError
from crypto.keyfile import atomic_write

__all__ = ["HighWaterError", "RolledBack", "raise_high_water"]

MAX_FILE_BYTES = 1 << 16
PUBLIC_MODE = 0o644


class HighWaterError(CryptoError):
    """The high-water file cannot be read or written."""


class RolledBack(CryptoError):
    """A value is lower than one already seen under the same name."""

    def __init__(self, name: str, value: int, seen: int) -> None:
        super().__init__(f"{name}: {value} is lower than {seen}, already seen")
        self.name, self.value, self.seen = name, value, seen


def raise_high_water(path: str | os.PathLike[str], name: str, value: int) -> int:
    """Refuse ``value`` if ``path`` records a higher one for ``name`` (RolledBack); otherwise
    record ``value`` (if higher) and return the mark now in force."""
    target = Path(path)
    marks = _read(target)
    seen = marks.get(name, 0)
    if value < seen:
        raise RolledBack(name, value, seen)
    if value > seen:
        marks[name] = value
        try:
            atomic_write(target, (json.dumps(marks, sort_keys=True) + "\n").encode(),
                         mode=PUBLIC_MODE)
        except OSError as exc:
            raise HighWaterError(f"cannot write {target}: {exc.strerror}") from None
    return max(value, seen)


def _read(path: Path) -> dict[str, int]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise HighWaterError(f"cannot read {path}: {exc.strerror}") from None
    try:
        marks = json.loads(data) if len(data) <= MAX_FILE_BYTES else None
    except ValueError:
        marks = None
    if not isinstance(marks, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in marks.items()):
        raise HighWaterError(f"{path} is not a high-water file (a JSON object of counts); "
                             "restore it from backup rather than deleting it")
    return marks
