"""A researcher attacks a real federation: every attack class the disclosure review found,
each aimed at patient P, run against two federations whose rows differ only in P's values.
Each test asserts that what the researcher receives (values, errors and their text, budget
spent) is the same in both runs, and that the federation still answers a plain count().

The attacks and the rule that stops each are listed in threat_model.md ("What one query can
and cannot learn")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from disclosure.scenario import observe

import fedtally
from protocol.errors import QueryError

Call = Callable[[fedtally.Federation], Any]


def same_for_both(pair: dict[str, fedtally.Federation], call: Call) -> tuple[Any, ...]:
    """What the researcher sees in run A, after checking run B shows exactly the same, and
    that both federations still answer."""
    seen = {run: observe(lambda fed=fed: call(fed)) for run, fed in pair.items()}
    assert seen["A"] == seen["B"], "the answer depends on patient P's values"
    for fed in pair.values():
        assert fed.count() > 0
    return seen["A"]


def test_missing_value_cohort(real_pair) -> None:
    """Many rows whose glucose is missing, and P: the cohort passes min_row_count, but one
    value enters the sums. The count of values is a cell of its own, below the threshold,
    and the sums go with it."""
    cohort = "glucose is null or age > 95"
    seen = same_for_both(real_pair, lambda fed: fed.descriptive_stats(["glucose"],
                                                                       filters=cohort))
    assert seen[0] == "answer"
    same_for_both(real_pair, lambda fed: fed.ttest_onesample("glucose", filters=cohort))


def test_margin_minus_the_other_groups(real_pair) -> None:
    """P is the only patient of sex U (and the only one whose arm is missing): nodes release
    disjoint groups only, so the "all" row is the sum of the released groups and never
    holds a withheld one."""
    same_for_both(real_pair, lambda fed: fed.descriptive_stats(["nihss", "age"], by="sex"))
    same_for_both(real_pair, lambda fed: fed.descriptive_stats(["nihss", "age"], by="arm"))


def test_bisecting_the_range_with_the_out_of_range_count(real_pair) -> None:
    """P's age (99 in run A, 97 in run B) is the maximum. The last bin [90, 98] holds P alone
    in run B, the rows out of range are P alone in run A: both are cells below the
    threshold, and the count of cells read as zero does not tell them apart."""
    same_for_both(real_pair, lambda fed: fed.histogram("age", bins=10, range=(18, 98)))
    same_for_both(real_pair, lambda fed: fed.histogram("age", bins=[18, 60, 90, 98]))


def _newton_sums(beta: list[float]) -> Call:
    """One logistic Newton step at a coefficient vector the researcher signs."""
    terms = [{"const": 1}, {"var": "age"}, {"var": "nihss"}]

    def call(fed: fedtally.Federation) -> Any:
        stat = fed.statistic("logistic_regression", kind="logistic",
                             parameters={"terms": terms, "beta": beta,
                                         "outcome": {"var": "stroke", "positive": "yes"}})
        return stat.values

    return call


def test_weighted_sums_at_a_chosen_beta(real_pair) -> None:
    """beta = (-99, 1, 0): p(1 - p) is 1/4 for P (age 99) and below 1.3e-4 for every other
    row (age 90 or less), so the weighted cross-products would be P's covariates. Their
    effective sample size is about 1: withheld. A steeper beta is refused before any row is
    read: it leaves the data model's ranges."""
    same_for_both(real_pair, _newton_sums([-99.0, 1.0, 0.0]))
    seen = same_for_both(real_pair, _newton_sums([-990.0, 10.0, 0.0]))
    assert seen[0] == "refused" and "declared ranges" in seen[3]


def test_the_same_step_at_beta_zero_is_answered(real_pair) -> None:
    """The guard costs nothing to an ordinary fit: at beta = 0 every weight is 1/4."""
    values = {run: _newton_sums([0.0, 0.0, 0.0])(fed) for run, fed in real_pair.items()}
    assert any(values["A"]) and any(values["B"])


def test_a_transform_error_is_not_an_oracle(real_pair) -> None:
    """log(smoker) of P (0 in run A, 1 in run B), in a cohort of P alone: a value a
    transform cannot take is missing, never an error that depends on the row."""
    terms = [{"const": 1}, {"var": "smoker", "transform": "log"}, {"var": "nihss"}]

    def call(fed: fedtally.Federation) -> Any:
        return fed.statistic("linear_regression", kind="crossprod", filters="age > 95",
                             parameters={"terms": terms}).values

    same_for_both(real_pair, call)


def test_a_dp_refusal_is_not_an_oracle_and_costs_nothing(real_pair) -> None:
    """A DP Kaplan-Meier on an event column holding 2 for P in run A: the event must be
    declared binary, which is checked at planning, before any charge; so the refusal and
    the budget are the same in both runs (a refund after a data-dependent error made each
    such yes/no answer free)."""
    before = {run: fed.budget()["spent_rho"].sum() for run, fed in real_pair.items()}
    seen = same_for_both(real_pair, lambda fed: fed.kaplan_meier(
        "days", "status_raw", privacy=fedtally.DP(rho=0.1)))
    assert seen[0] == "refused" and "declared binary" in seen[3]
    after = {run: fed.budget()["spent_rho"].sum() for run, fed in real_pair.items()}
    assert before == after


def test_a_sparse_numeric_column(real_pair) -> None:
    """prior_strokes is 0 for everyone but P: the mean over all rows is P's value divided by
    a public count, and a cross-product with it is P's value times another. The count of
    non-zero terms guards every sum."""
    same_for_both(real_pair, lambda fed: fed.descriptive_stats(["prior_strokes"]))
    same_for_both(real_pair, lambda fed: fed.linear_regression("nihss", ["prior_strokes",
                                                                         "age"]))


def _raw(fed: fedtally.Federation, privacy: dict[str, Any], parameters: dict[str, Any] | None
         = None, algorithm: str = "count") -> Any:
    """Sign and send a query specification as bytes the researcher wrote by hand: the
    client's own checks are bypassed, the node's are what is tested."""
    import json

    from stats.plans import Layout

    class Handmade:
        def canonical(self) -> bytes:
            spec = {"method": algorithm, "kind": "", "data_model": "attack:1",
                    "datasets": ["a", "b", "c"], "variables": [], "by": None,
                    "filters": None, "privacy": privacy, "parameters": parameters or {}}
            return json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()

    return fed._execute(Handmade(), Layout((), 64))  # type: ignore[arg-type]


@pytest.mark.parametrize("privacy", [
    {"mode": "dp", "rho": 1.0, "epsilon": "1e10000000"},
    {"mode": "dp", "rho": 1.0, "delta": 2.0},
    {"mode": "dp", "rho": 1.0, "bounds": {"age": [0, 0]}},
    {"mode": "dp", "rho": "1"},
])
def test_numbers_in_a_handmade_request_are_checked_first(real_pair, privacy) -> None:
    """Numbers are validated before any work: a node never builds 10^10000000, never
    divides by a bound of 0, and goes on serving."""
    seen = same_for_both(real_pair, lambda fed: _raw(fed, privacy))
    assert seen[0] == "refused" and seen[2] == "query"


def test_dp_clipping_bounds_of_zero_width(real_pair) -> None:
    seen = same_for_both(real_pair, lambda fed: fed.descriptive_stats(
        ["age"], privacy=fedtally.DP(rho=0.1, bounds={"age": (1e-300, 2e-300)})))
    assert seen[0] == "refused" and "bounds" in seen[3]


def test_a_huge_table_is_refused_before_any_work(real_pair) -> None:
    """A table of a million cells (1,000 bins by 1,000) would cost every node hundreds of
    MiB: the policy's max_slots refuses it from the query alone."""
    edges = [18 + 0.082 * i for i in range(1001)]
    axes = [{"var": "age", "edges": edges}, {"var": "nihss", "edges": edges}]
    seen = same_for_both(real_pair, lambda fed: fed.statistic(
        "histogram", kind="counts", parameters={"axes": axes}).values)
    assert seen[0] == "refused" and "at most" in seen[3]


def test_many_centres_are_computed_in_bounded_memory(real_pair) -> None:
    """k-means with 100 centres runs in chunks of rows; the nodes answer (most clusters are
    below the threshold, so the client finds too few released rows) and keep serving."""
    for fed in real_pair.values():
        with pytest.raises(fedtally.DegenerateInput, match="clusters but only"):
            fed.kmeans(["age", "nihss"], 100, max_iter=1)
        assert fed.count() > 0


def test_the_nodes_kept_serving(real_pair) -> None:
    """After every attack above, each node process is alive."""
    for fed in real_pair.values():
        for name, process in fed.local.nodes.items():
            assert process.poll() is None, name
        assert fed.count(filters="age > 30") > 0
    with pytest.raises(QueryError):
        real_pair["A"].descriptive_stats(["no_such_variable"])
