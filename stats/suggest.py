"""What to tell a person about names and files they typed: "did you mean" hints (variables,
datasets, data models, levels, configuration keys), and where their JSON fails."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping

from protocol.errors import ConfigurationError


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """``"; did you mean 'age'?"`` naming up to three close choices, or ``""`` when none is
    close. Case is ignored first (``'Age'`` finds ``'age'``), then spelling."""
    options = [str(c) for c in choices]
    text = str(name)
    folded = [c for c in options if c.casefold() == text.casefold()]
    close = folded or difflib.get_close_matches(text, options, n=3, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {' or '.join(repr(c) for c in close)}?"


def unknown(what: str, name: object, choices: Iterable[object], where: str = "") -> str:
    """The text of an unknown-name error: ``unknown variable 'agee' in m:1; did you mean
    'age'?``."""
    place = f" in {where}" if where else ""
    return f"unknown {what} {str(name)[:80]!r}{place}{did_you_mean(name, choices)}"


def check_keys(obj: Mapping[str, object], allowed: Iterable[str], what: str) -> None:
    """Refuse a key ``obj`` does not know (a typo would otherwise drop what it sets
    without a word): ConfigurationError naming it, a close key and every allowed one."""
    known = sorted(allowed)
    unknown = sorted(str(k) for k in obj if k not in known)
    if unknown:
        hints = "".join(did_you_mean(k, known) for k in unknown[:3])
        raise ConfigurationError(f"unknown {what} keys {unknown}{hints}; allowed: {known}")


def json_failure(exc: BaseException) -> str:
    """Where a JSON text a person wrote fails to parse, as ``" (line 3, column 5: Expecting
    ',' delimiter)"``, or ``""`` when the error does not say."""
    if isinstance(exc, json.JSONDecodeError):
        return f" (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    return ""
