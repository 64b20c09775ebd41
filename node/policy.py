"""The node's policy: what this institution agrees to answer, read from a JSON file.

The policy is the node's own: nothing the aggregator or a researcher says overrides it.
It is strict about its input (unknown keys, wrong types and duplicate keys are errors) so
that a typo can never silently loosen it, and it has a canonical digest that ledger entries
and signed manifests bind to. Budgets are only parsed and stored here; the privacy ledger
enforces them.

File format (every key optional)::

    {
      "allowed_methods": ["linear_regression", "ttest_onesample"] | "*",
      "min_row_count": 10,
      "small_cell_threshold": 10,
      "exact_access": ["alice"] | "*",
      "budgets": {"alice": {"edsd0": {"rho": 0.5}, "*": {"rho": 0.1}}, "*": {"*": {"rho": 0.05}}},
      "budget_groups": {"edsd": ["edsd0", "edsd1"]},
      "max_slots": 100000,
      "max_query_memory_mb": 1024,
      "max_queries_in_flight": 16,
      "max_query_seconds": 600
    }

In ``budgets`` a ``"*"`` dataset is the budget of every dataset not listed for that
researcher, and a ``"*"`` researcher gives every researcher not listed their *own* such
budget (it is not one shared pool).

``exact_access`` names the researchers who may receive exact (noise-free) answers, or
``"*"`` for every researcher. Its default follows the policy: everyone when the policy sets
no budgets, nobody when it does (a node that meters differential privacy does not also
answer exactly unless it says so).

``budget_groups`` puts datasets that share patients under one budget: a query on any of
them is charged once to the group (budgets name the group). Datasets not in a group are
charged on their own, as usual.

``max_slots``, ``max_query_memory_mb`` and ``max_queries_in_flight`` bound what one query
(and all queries at once) may cost the node; a query above them is refused before any row is
read, naming the limit. ``max_query_seconds`` bounds how long one computation on the rows
may run where SQL computes it (DuckDB, PostgreSQL, Spark): the engine is interrupted then,
and the query refused as ``internal`` (a DP charge stands, as for any failure on the rows).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from privacy.accounting import DPRequest, InvalidPrivacyRequest
from privacy.policy_terms import ANY, current_keys, granted
from protocol.errors import ConfigurationError, QueryError
from stats.suggest import check_keys, json_failure

__all__ = ["ANY", "BudgetGrant", "Policy"]

DEFAULT_MIN_ROW_COUNT = 10  # as the MIP
DEFAULT_MAX_SLOTS = 100_000
DEFAULT_MAX_QUERY_MEMORY_MB = 1024
DEFAULT_MAX_QUERIES_IN_FLIGHT = 16
DEFAULT_MAX_QUERY_SECONDS = 600
#: a week: beyond it a limit is a typo, not a choice
_MOST_QUERY_SECONDS = 7 * 24 * 3600
_KEYS = frozenset(
    {"allowed_methods", "min_row_count", "small_cell_threshold", "exact_access", "budgets",
     "budget_groups", "max_slots", "max_query_memory_mb", "max_queries_in_flight",
     "max_query_seconds"}
)
#: the exact_access default: decided by whether the policy sets budgets
_UNSET: frozenset[str] = frozenset({"\0unset"})
_MAX_NAME = 256


@dataclass(frozen=True)
class BudgetGrant:
    """A zero-concentrated DP budget (rho), for one researcher on one dataset."""

    rho: float

    def __post_init__(self) -> None:
        if isinstance(self.rho, bool) or not isinstance(self.rho, int | float):
            raise ConfigurationError("a budget's rho must be a number")
        if not math.isfinite(self.rho) or self.rho < 0:
            raise ConfigurationError("a budget's rho must be finite and not negative")
        object.__setattr__(self, "rho", float(self.rho))


@dataclass(frozen=True)
class Policy:
    """What this node answers. ``allowed_methods`` is ``None`` when every one is allowed."""

    allowed_methods: frozenset[str] | None = None
    min_row_count: int = DEFAULT_MIN_ROW_COUNT
    budgets: Mapping[str, Mapping[str, BudgetGrant]] = field(default_factory=dict)
    #: cells (counts) below this are suppressed; defaults to ``min_row_count``
    small_cell_threshold: int | None = None
    #: researchers granted exact answers; None for every researcher (see the module doc)
    exact_access: frozenset[str] | None = _UNSET
    #: group name -> datasets charged as one budget
    budget_groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    max_slots: int = DEFAULT_MAX_SLOTS
    max_query_memory_mb: int = DEFAULT_MAX_QUERY_MEMORY_MB
    max_queries_in_flight: int = DEFAULT_MAX_QUERIES_IN_FLIGHT
    #: seconds one computation on the rows may take in a SQL engine
    max_query_seconds: float = DEFAULT_MAX_QUERY_SECONDS
    #: dataset -> its budget group (derived from budget_groups)
    _accounts: Mapping[str, str] = field(init=False, repr=False, compare=False,
                                         default_factory=dict)

    def __post_init__(self) -> None:
        if self.allowed_methods is not None:
            if isinstance(self.allowed_methods, str):
                raise ConfigurationError("allowed_methods must be a collection of names")
            names = frozenset(self.allowed_methods)
            for name in names:
                _check_name(name, "an allowed method")
            object.__setattr__(self, "allowed_methods", names)
        _check_count(self.min_row_count, "min_row_count")
        if self.small_cell_threshold is None:
            object.__setattr__(self, "small_cell_threshold", self.min_row_count)
        _check_count(self.small_cell_threshold, "small_cell_threshold")
        for name in ("max_slots", "max_query_memory_mb", "max_queries_in_flight"):
            _check_count(getattr(self, name), name)
        seconds = self.max_query_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not 0.001 <= seconds <= _MOST_QUERY_SECONDS:
            raise ConfigurationError(f"max_query_seconds must be a number of seconds from "
                                     f"0.001 to {_MOST_QUERY_SECONDS} (a week)")
        object.__setattr__(self, "max_query_seconds", float(seconds))
        if self.exact_access is _UNSET:
            object.__setattr__(self, "exact_access", frozenset() if self.budgets else None)
        elif self.exact_access is not None:
            if isinstance(self.exact_access, str):
                raise ConfigurationError('exact_access must be a list of researchers or "*"')
            granted = frozenset(self.exact_access)
            for name in granted:
                _check_name(name, "a researcher granted exact answers")
            object.__setattr__(self, "exact_access", granted)
        accounts: dict[str, str] = {}
        groups: dict[str, frozenset[str]] = {}
        for group, members in self.budget_groups.items():
            _check_name(group, "a budget group")
            if isinstance(members, str) or not members:
                raise ConfigurationError(f"budget group {group!r} must list datasets")
            for dataset in members:
                _check_name(dataset, f"a dataset of budget group {group!r}")
                if dataset in accounts:
                    raise ConfigurationError(f"dataset {dataset!r} is in two budget groups")
                accounts[dataset] = group
            groups[group] = frozenset(members)
        object.__setattr__(self, "budget_groups", MappingProxyType(groups))
        object.__setattr__(self, "_accounts", MappingProxyType(accounts))
        frozen: dict[str, Mapping[str, BudgetGrant]] = {}
        for researcher, per_dataset in self.budgets.items():
            _check_name(researcher, "a researcher")
            inner: dict[str, BudgetGrant] = {}
            for dataset, budget in per_dataset.items():
                _check_name(dataset, "a dataset")
                if not isinstance(budget, BudgetGrant):
                    raise ConfigurationError("budgets must hold BudgetGrant values")
                inner[dataset] = budget
            frozen[researcher] = MappingProxyType(inner)
        object.__setattr__(self, "budgets", MappingProxyType(frozen))

    def __hash__(self) -> int:
        return hash(self.digest())

    # --- reading --------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Policy:
        """Every method, at least 10 rows, exact answers allowed, no budgets."""
        return cls()

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Read a policy JSON file; :class:`ConfigurationError` naming the file if invalid."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read policy file {path}") from exc
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicates)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigurationError(f"policy file {path} is not valid JSON"
                                     f"{json_failure(exc)}") from exc
        except ConfigurationError as exc:
            raise ConfigurationError(f"policy file {path}: {exc}") from exc
        try:
            return cls.from_dict(obj)
        except ConfigurationError as exc:
            raise ConfigurationError(f"policy file {path}: {exc}") from exc

    @classmethod
    def from_dict(cls, obj: Any) -> Policy:
        if not isinstance(obj, Mapping):
            raise ConfigurationError("a policy must be a JSON object")
        obj = current_keys(obj, ConfigurationError)  # "allowed_algorithms" still reads
        check_keys(obj, _KEYS, "policy")
        methods = obj.get("allowed_methods", ANY)
        if methods == ANY:
            allowed = None
        elif isinstance(methods, list):
            allowed = frozenset(methods)
        else:
            raise ConfigurationError('allowed_methods must be a list of names or "*"')
        exact = obj.get("exact_access", _UNSET)
        if exact == ANY:
            exact = None
        elif exact is not _UNSET and not isinstance(exact, list):
            raise ConfigurationError('exact_access must be a list of researchers or "*"')
        groups = obj.get("budget_groups", {})
        if not isinstance(groups, Mapping) or not all(isinstance(v, list)
                                                       for v in groups.values()):
            raise ConfigurationError("budget_groups must be an object {group: [datasets]}")
        return cls(
            allowed_methods=allowed,
            min_row_count=obj.get("min_row_count", DEFAULT_MIN_ROW_COUNT),
            budgets=_budgets(obj.get("budgets", {})),
            small_cell_threshold=obj.get("small_cell_threshold"),
            exact_access=exact,
            budget_groups=groups,
            max_slots=obj.get("max_slots", DEFAULT_MAX_SLOTS),
            max_query_memory_mb=obj.get("max_query_memory_mb", DEFAULT_MAX_QUERY_MEMORY_MB),
            max_queries_in_flight=obj.get("max_queries_in_flight",
                                          DEFAULT_MAX_QUERIES_IN_FLIGHT),
            max_query_seconds=obj.get("max_query_seconds", DEFAULT_MAX_QUERY_SECONDS),
        )

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON form with every default filled in (what :meth:`digest` hashes)."""
        return {
            "allowed_methods": (
                ANY if self.allowed_methods is None else sorted(self.allowed_methods)
            ),
            "min_row_count": self.min_row_count,
            "small_cell_threshold": self.small_cell_threshold,
            "exact_access": ANY if self.exact_access is None else sorted(self.exact_access),
            "budget_groups": {g: sorted(m) for g, m in sorted(self.budget_groups.items())},
            "max_slots": self.max_slots,
            "max_query_memory_mb": self.max_query_memory_mb,
            "max_queries_in_flight": self.max_queries_in_flight,
            "max_query_seconds": self.max_query_seconds,
            "budgets": {
                researcher: {dataset: {"rho": b.rho} for dataset, b in per_dataset.items()}
                for researcher, per_dataset in self.budgets.items()
            },
        }

    def digest(self) -> str:
        """SHA-256 (hex) of the canonical JSON: sorted keys, no spaces, UTF-8."""
        text = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
            allow_nan=False,
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # --- questions --------------------------------------------------------------------------

    def check_method(self, name: str) -> None:
        """Raise :class:`QueryError` unless this node runs the method ``name``."""
        if self.allowed_methods is None or name in self.allowed_methods:
            return
        raise QueryError(f"this node's policy does not allow the method {str(name)[:64]!r}")

    def check_exact(self, researcher: str) -> None:
        """Raise :class:`QueryError` unless ``researcher`` may receive exact answers."""
        if self.exact_access is None or researcher in self.exact_access:
            return
        raise QueryError("this node's policy does not grant you exact (noise-free) answers; "
                         "ask with privacy=fedtally.DP(...)")

    def account_of(self, dataset: str) -> str:
        """The budget a dataset is charged to: its group's, or its own."""
        return self._accounts.get(dataset, dataset)

    def budget_for(self, researcher: str, dataset: str) -> BudgetGrant | None:
        """The budget of (researcher, dataset), falling back to ``"*"``; ``None`` if none."""
        return granted(self.budgets, researcher, dataset)


def _budgets(raw: Any) -> dict[str, dict[str, BudgetGrant]]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError("budgets must be an object {researcher: {dataset: {rho}}}")
    out: dict[str, dict[str, BudgetGrant]] = {}
    for researcher, per_dataset in raw.items():
        if not isinstance(per_dataset, Mapping):
            raise ConfigurationError(f"budgets of {researcher!r} must be an object by dataset")
        inner: dict[str, BudgetGrant] = {}
        for dataset, entry in per_dataset.items():
            where = f"budget of {researcher!r} on {dataset!r}"
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"{where} must be an object like {{\"rho\": 0.5}}")
            if set(entry) not in ({"rho"}, {"epsilon", "delta"}):
                raise ConfigurationError(f"{where} must have exactly the key 'rho', or the "
                                         "keys 'epsilon' and 'delta'")
            try:
                inner[dataset] = BudgetGrant(entry["rho"] if "rho" in entry
                                        else _rho_of(entry["epsilon"], entry["delta"]))
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from exc
        out[researcher] = inner
    return out


def _rho_of(epsilon: Any, delta: Any) -> float:
    """An (epsilon, delta) budget as the largest rho that implies it (Canonne, Kamath,
    Steinke 2020, Cor. 13): the ledger keeps budgets in rho."""
    for value, name in ((epsilon, "epsilon"), (delta, "delta")):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigurationError(f"a budget's {name} must be a number")
    try:
        return DPRequest(epsilon=float(epsilon), delta=float(delta)).rho
    except InvalidPrivacyRequest as exc:
        raise ConfigurationError(str(exc)) from None


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name or len(name) > _MAX_NAME:
        raise ConfigurationError(f"{what} must be named by a non-empty string")


def _check_count(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{what} must be a whole number of at least 1")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigurationError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out
