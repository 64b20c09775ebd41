"""Query specifications: what a researcher asks, in a canonical form every party can hash.

A :class:`QuerySpec` is plain data (strings, tuples, a filter tree as canonical JSON). It is
signed by the researcher inside a :class:`SignedQuery`; nodes verify the signature against
the federation manifest, so the aggregator can neither forge nor alter a query.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.codec import CODE_PATTERN, canonical_json
from protocol.errors import QueryError
from protocol.signed_query import MAX_SPEC_BYTES

MAX_VARIABLES = 512
MAX_DATASETS = 512
PRIVACY_MODES = ("exact", "dp")
MAX_RHO = 1e6
MAX_EPSILON = 1e3


def _names(value: Any, what: str, maximum: int) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or len(value) > maximum:
        raise QueryError(f"{what} must be a list of at most {maximum} names")
    for item in value:
        if not isinstance(item, str) or not CODE_PATTERN.fullmatch(item):
            raise QueryError(f"{what}: {item!r} is not a valid name")
    if len(set(value)) != len(value):
        raise QueryError(f"{what} lists a name twice")
    return tuple(value)


def _finite_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def check_privacy_spec(privacy: Any) -> None:
    """``{"mode": "exact"}`` or ``{"mode": "dp", "rho": r, "bounds": {var: [lo, hi]}}``
    (epsilon and delta may ride along for people; rho is what is calibrated and charged).
    Every number is checked here, before any work: finite, of the right type, in range."""
    if not isinstance(privacy, Mapping) or privacy.get("mode") not in PRIVACY_MODES:
        raise QueryError(f"privacy mode must be one of {PRIVACY_MODES}")
    if privacy["mode"] == "exact":
        if set(privacy) != {"mode"}:
            raise QueryError("exact mode takes no privacy parameters")
        return
    unknown = set(privacy) - {"mode", "rho", "epsilon", "delta", "bounds"}
    if unknown:
        raise QueryError(f"unknown privacy fields {sorted(unknown)}")
    rho = privacy.get("rho")
    if not _finite_number(rho) or not 0 < rho <= MAX_RHO:
        raise QueryError(f"a DP query needs a number rho in (0, {MAX_RHO:g}]")
    epsilon = privacy.get("epsilon")
    if epsilon is not None and not (_finite_number(epsilon) and 0 < epsilon <= MAX_EPSILON):
        raise QueryError(f"epsilon must be a number in (0, {MAX_EPSILON:g}]")
    delta = privacy.get("delta")
    if delta is not None and not (_finite_number(delta) and 0 < delta < 1):
        raise QueryError("delta must be a number in (0, 1)")
    bounds = privacy.get("bounds", {})
    if not isinstance(bounds, Mapping) or len(bounds) > MAX_VARIABLES:
        raise QueryError("bounds map variables to [low, high]")
    for variable, pair in bounds.items():
        if (not isinstance(variable, str) or not isinstance(pair, list | tuple)
                or len(pair) != 2 or not all(_finite_number(v) for v in pair)
                or not pair[0] < pair[1]):
            raise QueryError(f"bounds of {str(variable)[:64]!r} must be [low, high] with "
                             "finite numbers and low < high")


@dataclass(frozen=True)
class QuerySpec:
    """What a researcher asks. ``method`` is the catalog's method (what policies allow and
    ledgers record); ``kind`` is the sufficient statistic the nodes compute for it (see
    :mod:`stats.kinds`); ``parameters`` are the kind's own (plain JSON)."""

    method: str
    data_model: str
    datasets: tuple[str, ...]
    variables: tuple[str, ...] = ()
    by: str | None = None
    #: canonical JSON of a filter tree (stats/filters.py's to_json form), or None
    filters: Any = None
    privacy: Mapping[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    kind: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from stats.kinds import METHOD_KINDS  # the registry imports this module

        if not isinstance(self.method, str) or self.method not in METHOD_KINDS:
            raise QueryError(f"unknown method {self.method!r}; known: "
                             f"{', '.join(sorted(METHOD_KINDS))}")
        allowed = METHOD_KINDS[self.method]
        if not self.kind:
            object.__setattr__(self, "kind", allowed[0])
        if self.kind not in allowed:
            raise QueryError(f"{self.method} does not use statistic {self.kind!r}")
        if not isinstance(self.data_model, str) or not 0 < len(self.data_model) <= 128:
            raise QueryError("data_model must be a short string")
        object.__setattr__(self, "datasets", _names(self.datasets, "datasets", MAX_DATASETS))
        object.__setattr__(self, "variables", _names(self.variables, "variables", MAX_VARIABLES))
        if not self.datasets:
            raise QueryError("a query needs at least one dataset")
        if self.by is not None:
            _names([self.by], "by", 1)
            if self.by in self.variables:
                raise QueryError(f"{self.by!r} cannot be both a variable and the grouping")
        check_privacy_spec(self.privacy)
        if not isinstance(self.parameters, Mapping):
            raise QueryError("parameters must be a JSON object")
        try:
            canonical_json(dict(self.parameters))
        except (TypeError, ValueError) as exc:
            raise QueryError("parameters must be plain, finite JSON") from exc

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "kind": self.kind, "data_model": self.data_model,
                "datasets": list(self.datasets), "variables": list(self.variables),
                "by": self.by, "filters": self.filters, "privacy": dict(self.privacy),
                "parameters": dict(self.parameters)}

    def canonical(self) -> bytes:
        return canonical_json(self.to_json())

    @classmethod
    def from_json(cls, obj: Any) -> QuerySpec:
        if not isinstance(obj, dict):
            raise QueryError("a query specification is a JSON object")
        allowed = {"method", "kind", "data_model", "datasets", "variables", "by", "filters",
                   "privacy", "parameters"}
        unknown = set(obj) - allowed
        if unknown:
            raise QueryError(f"unknown query fields: {sorted(unknown)}")
        try:
            return cls(method=obj["method"], data_model=obj["data_model"],
                       datasets=obj["datasets"], variables=obj.get("variables", ()),
                       by=obj.get("by"), filters=obj.get("filters"),
                       privacy=obj.get("privacy", {"mode": "exact"}), kind=obj.get("kind", ""),
                       parameters=obj.get("parameters", {}))
        except KeyError as exc:
            raise QueryError(f"query specification lacks {exc.args[0]!r}") from exc

    @classmethod
    def from_bytes(cls, raw: bytes) -> QuerySpec:
        if len(raw) > MAX_SPEC_BYTES:
            raise QueryError("query specification too large")
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise QueryError("query specification is not valid JSON") from exc
        spec = cls.from_json(obj)
        if spec.canonical() != raw:
            raise QueryError("query specification is not in canonical form")
        return spec
