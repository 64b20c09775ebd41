"""The node's policy file: strict parsing, defaults, canonical digest, method checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from node.policy import BudgetGrant, Policy
from protocol.errors import ConfigurationError, QueryError

FULL = {
    "allowed_methods": ["linear_regression", "ttest_onesample"],
    "min_row_count": 20,
    "exact_access": [],
    "budgets": {
        "alice": {"edsd0": {"rho": 0.5}, "*": {"rho": 0.1}},
        "*": {"*": {"rho": 0.05}},
    },
    "small_cell_threshold": 5,
}


def _write(tmp_path: Path, obj: Any) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_defaults_follow_the_mip() -> None:
    policy = Policy.default()
    assert policy.allowed_methods is None
    assert (policy.min_row_count, policy.small_cell_threshold) == (10, 10)
    assert policy.exact_access is None  # every researcher, while no budgets are set
    assert dict(policy.budgets) == {}
    policy.check_method("anything")
    assert Policy.from_dict({}) == policy
    assert Policy.from_dict({"min_row_count": 15}).small_cell_threshold == 15


def test_full_file(tmp_path: Path) -> None:
    policy = Policy.from_file(_write(tmp_path, FULL))
    assert policy.allowed_methods == frozenset({"linear_regression", "ttest_onesample"})
    assert (policy.min_row_count, policy.small_cell_threshold) == (20, 5)
    assert policy.exact_access == frozenset()
    assert policy.budgets["alice"]["edsd0"] == BudgetGrant(0.5)
    assert policy.to_dict()["budgets"] == FULL["budgets"]
    assert Policy.from_dict(policy.to_dict()) == policy


def test_budget_lookup_falls_back_to_wildcards() -> None:
    policy = Policy.from_dict(FULL)
    assert policy.budget_for("alice", "edsd0") == BudgetGrant(0.5)
    assert policy.budget_for("alice", "ppmi0") == BudgetGrant(0.1)
    assert policy.budget_for("bob", "ppmi0") == BudgetGrant(0.05)
    only = Policy.from_dict({"budgets": {"alice": {"edsd0": {"rho": 1}}}})
    assert only.budget_for("alice", "ppmi0") is None and only.budget_for("bob", "edsd0") is None


def test_a_policy_written_with_the_old_key_name_reads_the_same() -> None:
    """"allowed_algorithms" was renamed "allowed_methods" (one word per concept): a policy
    file written before still gives the same policy, and digest; both names is an error."""
    old = Policy.from_dict({"allowed_algorithms": ["pca"], "min_row_count": 5})
    new = Policy.from_dict({"allowed_methods": ["pca"], "min_row_count": 5})
    assert old == new and old.digest() == new.digest()
    assert "allowed_algorithms" not in old.to_dict()
    with pytest.raises(ConfigurationError, match="both 'allowed_algorithms' and its current"):
        Policy.from_dict({"allowed_algorithms": ["pca"], "allowed_methods": ["pca"]})


def test_check_method() -> None:
    policy = Policy.from_dict(FULL)
    policy.check_method("linear_regression")
    with pytest.raises(QueryError, match="does not allow the method 'pca'") as info:
        policy.check_method("pca")
    assert info.value.public
    assert Policy.from_dict({"allowed_methods": "*"}).allowed_methods is None
    with pytest.raises(QueryError):
        Policy.from_dict({"allowed_methods": []}).check_method("pca")


def test_digest_is_canonical() -> None:
    default = Policy.default().digest()
    assert len(default) == 64 and default == Policy.from_dict({}).digest()
    explicit = {"min_row_count": 10, "small_cell_threshold": 10, "exact_access": "*",
                "allowed_methods": "*", "budgets": {}, "budget_groups": {},
                "max_slots": 100_000, "max_query_memory_mb": 1024, "max_queries_in_flight": 16,
                "max_query_seconds": 600}
    assert Policy.from_dict(explicit).digest() == default
    reordered = dict(reversed(list(FULL.items())))
    reordered["allowed_methods"] = list(reversed(FULL["allowed_methods"]))
    assert Policy.from_dict(reordered).digest() == Policy.from_dict(FULL).digest()
    assert Policy.from_dict({"min_row_count": 11}).digest() != default
    assert Policy.from_dict({"budgets": {"a": {"*": {"rho": 1}}}}).digest() != default


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"min_rows": 5}, "unknown policy keys"),
        ({"min_row_count": "10"}, "min_row_count"),
        ({"min_row_count": True}, "min_row_count"),
        ({"min_row_count": 0}, "min_row_count"),
        ({"min_row_count": 9.5}, "min_row_count"),
        ({"small_cell_threshold": -1}, "small_cell_threshold"),
        ({"allow_exact": True}, "unknown policy keys"),
        ({"exact_access": "yes"}, "exact_access"),
        ({"exact_access": [3]}, "researcher"),
        ({"budget_groups": {"g": "a"}}, "budget_groups"),
        ({"budget_groups": {"g": []}}, "must list datasets"),
        ({"budget_groups": {"g": ["a"], "h": ["a"]}}, "two budget groups"),
        ({"max_slots": 0}, "max_slots"),
        ({"max_query_memory_mb": "1"}, "max_query_memory_mb"),
        ({"max_query_seconds": 0}, "max_query_seconds"),
        ({"max_query_seconds": "60"}, "max_query_seconds"),
        ({"max_query_seconds": True}, "max_query_seconds"),
        ({"max_query_seconds": float("nan")}, "max_query_seconds"),
        ({"max_query_seconds": 1e9}, "a week"),
        ({"allowed_methods": "pca"}, "allowed_methods"),
        ({"allowed_methods": ["pca", 3]}, "method"),
        ({"budgets": []}, "budgets"),
        ({"budgets": {"alice": 1}}, "alice"),
        ({"budgets": {"alice": {"d": 0.5}}}, "rho"),
        ({"budgets": {"alice": {"d": {"rho": -1}}}}, "not negative"),
        ({"budgets": {"alice": {"d": {"rho": True}}}}, "number"),
        ({"budgets": {"alice": {"d": {"rho": 1, "epsilon": 1}}}}, "exactly the key 'rho'"),
        ([], "JSON object"),
    ],
)
def test_invalid_policies(obj: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Policy.from_dict(obj)


def test_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read policy file"):
        Policy.from_file(tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        Policy.from_file(_write(tmp_path, "{"))
    with pytest.raises(ConfigurationError, match=r"not valid JSON \(line 2, column 2: "
                                                 r"Expecting ',' delimiter\)"):
        Policy.from_file(_write(tmp_path, '{"min_row_count": 5\n "small_cell_threshold": 5}'))
    with pytest.raises(ConfigurationError, match="'min_row_count' appears twice"):
        Policy.from_file(_write(tmp_path, '{"min_row_count": 50, "min_row_count": 1}'))
    with pytest.raises(ConfigurationError, match="not negative"):
        Policy.from_file(_write(tmp_path, '{"budgets": {"a": {"d": {"rho": NaN}}}}'))
    with pytest.raises(ConfigurationError, match=r"policy\.json: unknown policy keys"):
        Policy.from_file(_write(tmp_path, {"allow_everything": True}))


def test_exact_answers_are_a_grant_once_budgets_are_set() -> None:
    """A node that meters DP does not also answer exactly unless its policy says whom to."""
    metered = Policy.from_dict({"budgets": {"alice": {"*": {"rho": 1}}}})
    with pytest.raises(QueryError, match="exact"):
        metered.check_exact("alice")
    granted = Policy.from_dict({"budgets": {"alice": {"*": {"rho": 1}}},
                                "exact_access": ["alice"]})
    granted.check_exact("alice")
    with pytest.raises(QueryError, match="exact"):
        granted.check_exact("bob")
    Policy.from_dict({"budgets": {"alice": {"*": {"rho": 1}}}, "exact_access": "*"}) \
        .check_exact("bob")
    Policy.default().check_exact("anyone")


def test_budget_groups_charge_datasets_sharing_patients_once() -> None:
    policy = Policy.from_dict({"budget_groups": {"edsd": ["edsd0", "edsd1"]},
                               "budgets": {"alice": {"edsd": {"rho": 0.5}}}})
    assert policy.account_of("edsd0") == policy.account_of("edsd1") == "edsd"
    assert policy.account_of("ppmi0") == "ppmi0"
    assert policy.budget_for("alice", policy.account_of("edsd1")) == BudgetGrant(0.5)
    assert Policy.from_dict(policy.to_dict()) == policy
