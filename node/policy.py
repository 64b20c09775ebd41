"""The node's policy: what this institution agrees to answer, read from a JSON file.

The policy is the node's own: nothing the aggregator or a researcher says overrides it.
It is strict about its input (unknown keys, wrong types and duplicate keys are errors) so
that a typo can never silently loosen it, and it has a canonical digest that ledger entries
and signed manifests bind to. Budgets are only parsed and stored here; the privacy ledger
enforces them.

File format (every key optional)::

    {
      "allowed_algorithms": ["linear_regression", "ttest_onesample"] | "*",
      "min_row_count": 10,
      "small_cell_threshold": 10,
      "allow_exact": true,
      "budgets": {"alice": {"edsd0": {"rho": 0.5}, "*": {"rho": 0.1}}, "*": {"*": {"rho": 0.05}}}
    }

In ``budgets`` a ``"*"`` dataset is the budget of every dataset not listed for that
researcher, and a ``"*"`` researcher gives every researcher not listed their *own* such
budget (it is not one shared pool).
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

from engine.errors import ConfigurationError, QueryError

__all__ = ["ANY", "Budget", "Policy"]

ANY = "*"
DEFAULT_MIN_ROW_COUNT = 10  # as the MIP
_KEYS = frozenset(
    {"allowed_algorithms", "min_row_count", "small_cell_threshold", "allow_exact", "budgets"}
)
_BUDGET_KEYS = frozenset({"rho"})
_MAX_NAME = 256


@dataclass(frozen=True)
class Budget:
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
    """What this node answers. ``allowed_algorithms`` is ``None`` when every one is allowed."""

    allowed_algorithms: frozenset[str] | None = None
    min_row_count: int = DEFAULT_MIN_ROW_COUNT
    allow_exact: bool = True
    budgets: Mapping[str, Mapping[str, Budget]] = field(default_factory=dict)
    #: cells (counts) below this are suppressed; defaults to ``min_row_count``
    small_cell_threshold: int | None = None

    def __post_init__(self) -> None:
        if self.allowed_algorithms is not None:
            if isinstance(self.allowed_algorithms, str):
                raise ConfigurationError("allowed_algorithms must be a collection of names")
            names = frozenset(self.allowed_algorithms)
            for name in names:
                _check_name(name, "an allowed algorithm")
            object.__setattr__(self, "allowed_algorithms", names)
        _check_count(self.min_row_count, "min_row_count")
        if self.small_cell_threshold is None:
            object.__setattr__(self, "small_cell_threshold", self.min_row_count)
        _check_count(self.small_cell_threshold, "small_cell_threshold")
        if not isinstance(self.allow_exact, bool):
            raise ConfigurationError("allow_exact must be true or false")
        frozen: dict[str, Mapping[str, Budget]] = {}
        for researcher, per_dataset in self.budgets.items():
            _check_name(researcher, "a researcher")
            inner: dict[str, Budget] = {}
            for dataset, budget in per_dataset.items():
                _check_name(dataset, "a dataset")
                if not isinstance(budget, Budget):
                    raise ConfigurationError("budgets must hold Budget values")
                inner[dataset] = budget
            frozen[researcher] = MappingProxyType(inner)
        object.__setattr__(self, "budgets", MappingProxyType(frozen))

    def __hash__(self) -> int:
        return hash(self.digest())

    # --- reading --------------------------------------------------------------------------

    @classmethod
    def default(cls) -> Policy:
        """Every algorithm, at least 10 rows, exact answers allowed, no budgets."""
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
            raise ConfigurationError(f"policy file {path} is not valid JSON") from exc
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
        unknown = set(obj) - _KEYS
        if unknown:
            raise ConfigurationError(
                f"unknown policy keys {sorted(map(str, unknown))}; allowed: {sorted(_KEYS)}"
            )
        algorithms = obj.get("allowed_algorithms", ANY)
        if algorithms == ANY:
            allowed = None
        elif isinstance(algorithms, list):
            allowed = frozenset(algorithms)
        else:
            raise ConfigurationError('allowed_algorithms must be a list of names or "*"')
        return cls(
            allowed_algorithms=allowed,
            min_row_count=obj.get("min_row_count", DEFAULT_MIN_ROW_COUNT),
            allow_exact=obj.get("allow_exact", True),
            budgets=_budgets(obj.get("budgets", {})),
            small_cell_threshold=obj.get("small_cell_threshold"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON form with every default filled in (what :meth:`digest` hashes)."""
        return {
            "allowed_algorithms": (
                ANY if self.allowed_algorithms is None else sorted(self.allowed_algorithms)
            ),
            "min_row_count": self.min_row_count,
            "small_cell_threshold": self.small_cell_threshold,
            "allow_exact": self.allow_exact,
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

    def check_algorithm(self, name: str) -> None:
        """Raise :class:`QueryError` unless this node runs the algorithm ``name``."""
        if self.allowed_algorithms is None or name in self.allowed_algorithms:
            return
        raise QueryError(f"this node's policy does not allow the algorithm {str(name)[:64]!r}")

    def budget_for(self, researcher: str, dataset: str) -> Budget | None:
        """The budget of (researcher, dataset), falling back to ``"*"``; ``None`` if none."""
        for who in (researcher, ANY):
            per_dataset = self.budgets.get(who)
            if per_dataset is None:
                continue
            for what in (dataset, ANY):
                if what in per_dataset:
                    return per_dataset[what]
            return None
        return None


def _budgets(raw: Any) -> dict[str, dict[str, Budget]]:
    if not isinstance(raw, Mapping):
        raise ConfigurationError("budgets must be an object {researcher: {dataset: {rho}}}")
    out: dict[str, dict[str, Budget]] = {}
    for researcher, per_dataset in raw.items():
        if not isinstance(per_dataset, Mapping):
            raise ConfigurationError(f"budgets of {researcher!r} must be an object by dataset")
        inner: dict[str, Budget] = {}
        for dataset, entry in per_dataset.items():
            where = f"budget of {researcher!r} on {dataset!r}"
            if not isinstance(entry, Mapping):
                raise ConfigurationError(f"{where} must be an object like {{\"rho\": 0.5}}")
            unknown = set(entry) - _BUDGET_KEYS
            if unknown or "rho" not in entry:
                raise ConfigurationError(f"{where} must have exactly the key 'rho'")
            try:
                inner[dataset] = Budget(entry["rho"])
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from exc
        out[researcher] = inner
    return out


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
