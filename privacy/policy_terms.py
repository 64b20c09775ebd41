"""The node's policy as its ledger records it, and the terms the ledger and auditors read.

A ``policy`` entry holds the node's whole policy as canonical JSON (sorted keys, no spaces,
UTF-8, the form ``node.policy.Policy.digest`` hashes) and its SHA-256. The ledger and the
auditor read the same few terms from it, with the node policy's own rules:

- ``budgets``: ``{researcher: {dataset: {"rho": r}}}``; a ``"*"`` dataset is the budget of
  every dataset not listed for that researcher, a ``"*"`` researcher gives every researcher
  not listed their own such budget. No entry: no budget (a DP query is refused).
- ``budget_groups``: ``{group: [datasets]}``; a dataset of a group is charged to the group's
  budget (datasets that share patients), any other to its own.
- ``exact_access`` (``"*"``, the default, or a list of researchers) and
  ``allowed_methods`` (``"*"``, the default, or a list): what the node may answer at all.
- ``reporting_delta`` (default 1e-6): the delta at which the ledger states epsilon when the
  request names none.

Other keys (``min_row_count``, ...) are recorded as they are, for people to read.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeVar

from privacy.errors import InvalidRequest, PrivacyError
from privacy.units import budget_nano

ANY = "*"

Grant = TypeVar("Grant")


def granted(budgets: Mapping[str, Mapping[str, Grant]], researcher: str,
            dataset: str) -> Grant | None:
    """The budget a policy grants (researcher, dataset): the researcher's own entry, else
    the ``"*"`` researcher's; within it the dataset's, else ``"*"``. ``None`` when none is
    granted. The node's policy and the auditor's reading of it both decide by this."""
    for who in (researcher, ANY):
        per_dataset = budgets.get(who)
        if per_dataset is None:
            continue
        for what in (dataset, ANY):
            if what in per_dataset:
                return per_dataset[what]
        return None
    return None
#: policy keys renamed since ledgers first recorded policies: old name -> current name
RENAMED_KEYS: Mapping[str, str] = MappingProxyType({"allowed_algorithms": "allowed_methods"})


def current_keys(policy: Mapping[str, Any], error: type[Exception]) -> dict[str, Any]:
    """``policy`` with renamed keys under their current names (a policy written, or a
    ledger recorded, before a rename still reads the same); ``error`` if both are given."""
    current = dict(policy)
    for old, new in RENAMED_KEYS.items():
        if old in current:
            if new in current:
                raise error(f"the policy gives both {old!r} and its current name {new!r}")
            current[new] = current.pop(old)
    return current


DEFAULT_REPORTING_DELTA = 1e-6
MAX_POLICY_BYTES = 1024 * 1024


def canonical_policy(policy: Mapping[str, Any]) -> str:
    """The canonical JSON text of a policy; :class:`InvalidRequest` if it is not plain JSON."""
    if not isinstance(policy, Mapping):
        raise InvalidRequest("a policy is a JSON object")
    try:
        text = json.dumps(dict(policy), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRequest(f"a policy must be plain, finite JSON ({exc})") from exc
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise InvalidRequest(f"a policy is at most {MAX_POLICY_BYTES} bytes of JSON")
    return text


def policy_digest(text: str) -> str:
    """SHA-256 (hex) of the canonical text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class PolicyTerms:
    """A policy as recorded: its canonical text and digest, and the terms read from it."""

    text: str
    digest: str
    budgets: Mapping[str, Mapping[str, int]]  # nano-rho, rounded down
    exact_access: frozenset[str] | None  # None: every researcher
    allowed_methods: frozenset[str] | None  # None: every method
    reporting_delta: float
    #: dataset -> the budget group it is charged to
    groups: Mapping[str, str]

    @classmethod
    def from_mapping(cls, policy: Mapping[str, Any]) -> PolicyTerms:
        """Read a policy (the node's ``Policy.to_dict()``); :class:`InvalidRequest` if a term
        the ledger reads is malformed."""
        return cls._parse(canonical_policy(policy))

    @classmethod
    def from_text(cls, text: str) -> PolicyTerms:
        """Read a recorded policy; :class:`InvalidRequest` unless ``text`` is canonical."""
        if not isinstance(text, str):
            raise InvalidRequest("a recorded policy is JSON text")
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequest("the recorded policy is not valid JSON") from exc
        if canonical_policy(obj) != text:
            raise InvalidRequest("the recorded policy is not in canonical JSON form")
        return cls._parse(text)

    @classmethod
    def _parse(cls, text: str) -> PolicyTerms:
        obj = current_keys(json.loads(text), InvalidRequest)
        exact = obj.get("exact_access", ANY)
        if exact == ANY:
            exact_access = None
        elif isinstance(exact, list) and all(isinstance(r, str) for r in exact):
            exact_access = frozenset(exact)
        else:
            raise InvalidRequest('the policy\'s exact_access is "*" or a list of researchers')
        methods = obj.get("allowed_methods", ANY)
        if methods == ANY:
            allowed = None
        elif isinstance(methods, list) and all(isinstance(m, str) for m in methods):
            allowed = frozenset(methods)
        else:
            raise InvalidRequest('the policy\'s allowed_methods is "*" or a list of names')
        delta = obj.get("reporting_delta", DEFAULT_REPORTING_DELTA)
        if isinstance(delta, bool) or not isinstance(delta, int | float) \
                or not (math.isfinite(delta) and 0 < delta < 1):
            raise InvalidRequest("the policy's reporting_delta must be in (0, 1)")
        return cls(text, policy_digest(text), _budgets(obj.get("budgets", {})), exact_access,
                   allowed, float(delta), _groups(obj.get("budget_groups", {})))

    def budget_nano(self, researcher: str, dataset: str) -> int | None:
        """The budget of (researcher, dataset) in nano-rho; ``None`` when none is granted."""
        return granted(self.budgets, researcher, dataset)

    def allows(self, method: str) -> bool:
        return self.allowed_methods is None or method in self.allowed_methods

    def exact_for(self, researcher: str) -> bool:
        """Whether ``researcher`` may receive exact answers."""
        return self.exact_access is None or researcher in self.exact_access

    def accounts(self, datasets: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """The budgets a DP answer on ``datasets`` is charged to, each once, sorted."""
        return tuple(sorted({self.groups.get(d, d) for d in datasets}))


def _groups(raw: object) -> Mapping[str, str]:
    if not isinstance(raw, dict) or not all(
            isinstance(v, list) and all(isinstance(d, str) for d in v) for v in raw.values()):
        raise InvalidRequest("the policy's budget_groups are {group: [datasets]}")
    out: dict[str, str] = {}
    for group, members in raw.items():
        for dataset in members:
            if dataset in out:
                raise InvalidRequest(f"the policy puts {dataset!r} in two budget groups")
            out[dataset] = group
    return MappingProxyType(out)


def _budgets(raw: object) -> Mapping[str, Mapping[str, int]]:
    if not isinstance(raw, dict):
        raise InvalidRequest("the policy's budgets are {researcher: {dataset: {\"rho\": r}}}")
    out: dict[str, Mapping[str, int]] = {}
    for researcher, per_dataset in raw.items():
        if not isinstance(per_dataset, dict):
            raise InvalidRequest(f"the policy's budgets of {researcher!r} are by dataset")
        inner: dict[str, int] = {}
        for dataset, budget in per_dataset.items():
            if not isinstance(budget, dict) or set(budget) != {"rho"} \
                    or isinstance(budget["rho"], bool) \
                    or not isinstance(budget["rho"], int | float):
                raise InvalidRequest(f"the policy's budget of {researcher!r} on {dataset!r} "
                                     "is {\"rho\": r}")
            try:
                inner[dataset] = budget_nano(budget["rho"])
            except PrivacyError as exc:
                raise InvalidRequest(f"the policy's budget of {researcher!r} on {dataset!r}: "
                                     f"{exc}") from exc
        out[researcher] = MappingProxyType(inner)
    return MappingProxyType(out)
