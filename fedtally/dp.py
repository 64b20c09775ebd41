"""``fedtally.DP``: a differential-privacy request, as people state it.

    fed.count(privacy=fedtally.DP(epsilon=1.0, delta=1e-6))
    fed.descriptive_stats(["age"], privacy=fedtally.DP(rho=0.05, bounds={"age": (18, 100)}))

Accounting is in zero-concentrated DP: (epsilon, delta) is converted to the largest rho that
implies it (Canonne, Kamath, Steinke 2020, Corollary 13), and rho is what nodes calibrate
their noise to and charge to their budgets. ``bounds`` are clipping bounds (the
sensitivity) for variables whose data model declares no min/max.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from privacy.accounting import DPRequest, InvalidPrivacyRequest, epsilon_from_rho
from protocol.errors import QueryError

#: a released DP value whose noise standard deviation exceeds this fraction of the value
#: itself comes with a :class:`fedtally.NoiseDominates` warning (set it to ``math.inf`` to
#: silence them)
NOISE_WARNING_FRACTION = 0.5


class DP:
    def __init__(self, *, epsilon: float | None = None, delta: float | None = None,
                 rho: float | None = None,
                 bounds: Mapping[str, tuple[float, float]] | None = None) -> None:
        try:
            self._request = DPRequest(epsilon=epsilon, delta=delta, rho=rho)
        except InvalidPrivacyRequest as exc:
            raise QueryError(str(exc)) from exc
        self.epsilon = epsilon
        self.delta = delta
        self.bounds = {str(k): (float(v[0]), float(v[1])) for k, v in (bounds or {}).items()}
        for name, (low, high) in self.bounds.items():
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise QueryError(f"bounds of {name!r} must be finite with low < high")

    @property
    def rho(self) -> float:
        return self._request.rho

    def epsilon_at(self, delta: float) -> float:
        return epsilon_from_rho(self.rho, delta)

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"mode": "dp", "rho": self.rho}
        if self.epsilon is not None:
            spec["epsilon"] = self.epsilon
        if self.delta is not None:
            spec["delta"] = self.delta
        if self.bounds:
            spec["bounds"] = {k: list(v) for k, v in sorted(self.bounds.items())}
        return spec

    def __repr__(self) -> str:
        shown = f"epsilon={self.epsilon}, delta={self.delta}" if self.epsilon is not None \
            else f"rho={self.rho}"
        return f"DP({shown})"


def privacy_spec(privacy: Any) -> dict[str, Any]:
    """The query's privacy field from what a caller passed."""
    if privacy is None or privacy == "exact" or privacy == {"mode": "exact"}:
        return {"mode": "exact"}
    if isinstance(privacy, DP):
        return privacy.to_spec()
    raise QueryError("privacy must be None / 'exact' or a fedtally.DP(...)")


#: the delta at which ``fed.budget()`` shows budgets as epsilon
BUDGET_DELTA = 1e-6
BUDGET_COLUMNS = ["node", "researcher", "dataset", "spent_rho", "limit_rho", "remaining_rho",
                  "spent_epsilon", "limit_epsilon", "remaining_epsilon"]


def budget_frame(rows: list[dict[str, Any]], delta: float = BUDGET_DELTA) -> pd.DataFrame:
    """Budget lines (per node and dataset, in rho) as a DataFrame, with each amount also as
    the epsilon it gives at ``delta`` (rhos add up across queries; epsilons do not, which
    is why the ledger counts rho). A ``"*"`` dataset is the budget of each dataset the node
    does not name."""
    if not 0 < delta < 1:
        raise QueryError("delta must be between 0 and 1")

    def epsilon(rho: Any) -> float:
        return math.nan if rho is None else epsilon_from_rho(float(rho), delta) \
            if rho > 0 else 0.0

    out = []
    for row in rows:
        out.append({**row, **{f"{what}_epsilon": epsilon(row.get(f"{what}_rho"))
                              for what in ("spent", "limit", "remaining")}})
    frame = pd.DataFrame(out, columns=BUDGET_COLUMNS).set_index(["node", "dataset"])
    frame.attrs["delta"] = delta
    return frame


def trial_policy(budget: DP | None, researcher: str,
                 policy: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """A local trial's node policy with ``budget`` granted to ``researcher`` on every
    dataset (``local_federation(..., budget=DP(epsilon=1, delta=1e-6))``); exact answers
    stay open to them, as on a trial federation without budgets."""
    if budget is None:
        return None if policy is None else dict(policy)
    if not isinstance(budget, DP):
        raise QueryError("budget must be a fedtally.DP(...)")
    out = dict(policy or {})
    out["budgets"] = {**dict(out.get("budgets", {})), researcher: {"*": {"rho": budget.rho}}}
    out.setdefault("exact_access", [researcher])
    return out
