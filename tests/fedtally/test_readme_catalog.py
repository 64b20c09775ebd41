"""The README's catalog table against the code: it names every method of the catalog (the
catalog offering exactly the methods nodes know, ``stats.kinds.METHOD_KINDS``), and its DP
column says which of them answer a DP request (each is asked once, with a budget
nothing exhausts) and which refuse it by name."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import fedtally
from fedtally.catalog import Catalog
from fedtally.synthetic import stroke_model, three_hospitals
from stats.kinds import METHOD_KINDS
from tests.support import PROJECT_ROOT

#: Catalog members that are metadata, or the low-level entry every method goes through
NOT_IN_TABLE = frozenset({"catalog", "data_models", "datasets", "model", "receipts", "scope",
                          "statistic"})
P = fedtally.DP(rho=1.0)
ASK_WITH_DP: dict[str, Callable[[Any], Any]] = {
    "count": lambda fed: fed.count(privacy=P),
    "descriptive_stats": lambda fed: fed.descriptive_stats(["age"], privacy=P),
    "histogram": lambda fed: fed.histogram("age", bins=4, range=(18, 98), privacy=P),
    "contingency_table": lambda fed: fed.contingency_table("sex", "dataset", privacy=P),
    "chi_square": lambda fed: fed.chi_square("sex", "dataset", privacy=P),
    "ttest_onesample": lambda fed: fed.ttest_onesample("nihss", privacy=P),
    "ttest_paired": lambda fed: fed.ttest_paired("nihss", "age", privacy=P),
    "ttest_independent": lambda fed: fed.ttest_independent("nihss", "sex", "F", "M",
                                                           privacy=P),
    "anova_oneway": lambda fed: fed.anova_oneway("nihss", "sex", privacy=P),
    "anova_twoway": lambda fed: fed.anova_twoway("nihss", "sex", "dataset", privacy=P),
    "pearson_correlation": lambda fed: fed.pearson_correlation(["age", "nihss"], privacy=P),
    "linear_regression": lambda fed: fed.linear_regression("nihss", ["age"], privacy=P),
    "logistic_regression": lambda fed: fed.logistic_regression("sex", ["age"], "F",
                                                               privacy=P),
    "linear_regression_cv": lambda fed: fed.linear_regression_cv("nihss", ["age"], n_splits=2,
                                                                 privacy=P),
    "logistic_regression_cv": lambda fed: fed.logistic_regression_cv(
        "sex", ["age"], "F", n_splits=2, privacy=P),
    "pca": lambda fed: fed.pca(["age", "nihss"], privacy=P),
    "kmeans": lambda fed: fed.kmeans(["age", "nihss"], 2, privacy=P),
    "naive_bayes_gaussian": lambda fed: fed.naive_bayes_gaussian("sex", ["age"], privacy=P),
    "naive_bayes_categorical": lambda fed: fed.naive_bayes_categorical("sex", ["dataset"],
                                                                       privacy=P),
    "kaplan_meier": lambda fed: fed.kaplan_meier("days_to_event", "death",
                                                 times=[0, 180, 365], privacy=P),
    "logrank_test": lambda fed: fed.logrank_test("days_to_event", "death", "sex",
                                                 times=[0, 180, 365], privacy=P),
}


def readme_table() -> dict[str, str]:
    """method -> its DP cell, from the README's catalog table."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| method | returns | DP |"):]
    table = table[:table.index("\n\n")]
    cells = {}
    for line in table.splitlines()[2:]:
        first, *_, dp, _ = line.split("|")[1:]
        for name in re.findall(r"`(\w+)", first):
            cells[name] = dp.strip()
    return cells


@pytest.fixture(scope="module")
def fed() -> fedtally.SimulatedFederation:
    return fedtally.SimulatedFederation(three_hospitals(seed=4, scale=0.2), stroke_model(),
                                        seed=4, budget=fedtally.DP(rho=1000.0))


def test_the_table_names_every_method_of_the_catalog() -> None:
    public = {name for name in dir(Catalog)
              if not name.startswith("_") and callable(getattr(Catalog, name))}
    assert NOT_IN_TABLE <= public, "a helper was renamed: update NOT_IN_TABLE"
    assert set(readme_table()) == public - NOT_IN_TABLE
    assert set(ASK_WITH_DP) == public - NOT_IN_TABLE - {"run_exareme2"}
    # what nodes know (and policies allow) is what the catalog offers, no more, no less
    assert set(ASK_WITH_DP) == set(METHOD_KINDS)


@pytest.mark.parametrize("method", sorted(ASK_WITH_DP))
def test_the_dp_column_says_what_the_method_does(fed: fedtally.SimulatedFederation,
                                                 method: str) -> None:
    says = readme_table()[method]
    assert says in ("yes", "no"), f"{method}: the DP column reads {says!r}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fedtally.IncompleteAnswer)
        if says == "yes":
            ASK_WITH_DP[method](fed)
        else:
            with pytest.raises(fedtally.QueryError, match=f"^{method} gives exact answers only"):
                ASK_WITH_DP[method](fed)
