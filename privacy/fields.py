"""Validation of the values that go into ledger entries (shared by writer and verifier).

Each function returns the canonical stored form or raises :class:`InvalidRequest`, so the
ledger never writes a value the verifier would not read back identically.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from datetime import datetime

from privacy.errors import InvalidRequest

HEX = re.compile(r"(?:[0-9a-f]{2}){1,128}")
REASON = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|\+00:00)")
MAX_NAME = 256
MAX_TEXT = 1024
MAX_JSON = 64 * 1024
MAX_NAMES = 512


def canonical_json(value: object, what: str) -> str:
    """Sorted keys, no spaces, UTF-8, finite numbers only: the one JSON form we store."""
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(f"{what} must be plain, finite JSON") from exc
    if len(text.encode("utf-8")) > MAX_JSON:
        raise InvalidRequest(f"{what} is longer than {MAX_JSON} bytes of JSON")
    return text


def json_value(text: str, what: str) -> object:
    """Parse stored JSON and check it is in canonical form."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"{what} is not valid JSON") from exc
    if canonical_json(value, what) != text:
        raise InvalidRequest(f"{what} is not in canonical JSON form")
    return value


def name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME \
            or not value.isprintable():
        raise InvalidRequest(f"{what} must be a non-empty printable name of at most "
                             f"{MAX_NAME} characters")
    return value


def names(values: Sequence[str], what: str, *, empty: bool = False) -> tuple[str, ...]:
    """A list of distinct names, order kept."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidRequest(f"{what} must be a list of names")
    out = tuple(name(v, what) for v in values)
    if not out and not empty:
        raise InvalidRequest(f"{what}: at least one is needed")
    if len(out) > MAX_NAMES:
        raise InvalidRequest(f"{what}: at most {MAX_NAMES}")
    if len(set(out)) != len(out):
        raise InvalidRequest(f"{what}: a name is listed twice")
    return out


def hex_text(value: object, what: str, *, empty: bool = False) -> str:
    if empty and value == "":
        return ""
    if not isinstance(value, str) or not HEX.fullmatch(value.lower()):
        raise InvalidRequest(f"{what} must be hex (at most 128 bytes)")
    return value.lower()


def reason_code(value: object) -> str:
    if not isinstance(value, str) or not REASON.fullmatch(value):
        raise InvalidRequest("a reason code is lowercase letters, digits, '-', '_', '.'")
    return value


def one_line(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT \
            or not value.isprintable():
        raise InvalidRequest(f"{what} must be one printable line of at most {MAX_TEXT} "
                             "characters")
    return value.strip()


def time_text(value: object) -> str:
    """ISO 8601 UTC text, checked to be a real time."""
    if not isinstance(value, str) or not TIME.fullmatch(value):
        raise InvalidRequest("times are ISO 8601 UTC, e.g. 2025-01-31T12:00:00.000000Z")
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"{value!r} is not a valid time") from exc
    return value


def moment(value: str) -> datetime:
    """The instant of a stored time (for ordering; text order differs across forms)."""
    return datetime.fromisoformat(time_text(value))


def real(value: object, what: str, *, positive: bool = True) -> float:
    """A finite float (> 0 when ``positive``), from a number or its stored decimal text."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a number")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequest(f"{what} must be a number") from exc
    if not math.isfinite(x) or (positive and x <= 0):
        raise InvalidRequest(f"{what} must be finite{' and > 0' if positive else ''}")
    return x


def count(value: object, what: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise InvalidRequest(f"{what} must be a whole number in [1, {top}]")
    return value
