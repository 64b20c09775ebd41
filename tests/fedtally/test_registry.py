"""The catalog is the registry: every registered method is offered, with the kinds the
nodes' own table (``stats.kinds.METHOD_KINDS``) grants it, and nothing else is offered;
every Exareme2 handler names the registered method that answers it."""

from __future__ import annotations

import inspect

import pytest

from fedtally.analyses import Analyses
from fedtally.catalog import Catalog
from fedtally.exareme2 import ANSWERED_BY, HANDLERS
from fedtally.methods.registry import catalog_method, methods
from stats.kinds import KINDS, METHOD_KINDS

#: methods every federation has on Analyses itself, not in a method module
CORE = frozenset({"count", "descriptive_stats"})


def test_the_nodes_know_exactly_the_registered_methods_with_the_same_kinds() -> None:
    registered = {name: m.kinds for name, m in methods().items()}
    assert registered == {name: kinds for name, kinds in METHOD_KINDS.items()
                          if name not in CORE}
    assert CORE <= set(METHOD_KINDS)
    assert all(hasattr(Analyses, name) for name in CORE)
    assert {kind for kinds in registered.values() for kind in kinds} <= set(KINDS)


def test_every_registered_method_is_a_catalog_method_of_the_same_function() -> None:
    for name, m in methods().items():
        offered = getattr(Catalog, name)
        assert inspect.unwrap(offered) is m.function, name
        assert offered.__doc__ == m.function.__doc__


def test_a_method_names_its_kinds_and_its_name_once() -> None:
    with pytest.raises(TypeError, match="names the statistic kinds"):
        catalog_method(kinds=())

    def ttest_onesample() -> None:  # another function under a registered name
        """Not the t-test."""

    with pytest.raises(TypeError, match="two catalog methods are named ttest_onesample"):
        catalog_method(kinds=("moments",))(ttest_onesample)
    assert methods()["ttest_onesample"].function is not ttest_onesample


def test_every_exareme2_handler_is_answered_by_a_registered_method() -> None:
    assert set(ANSWERED_BY) == set(HANDLERS)
    offered = set(methods()) | CORE
    assert {a: m for a, m in ANSWERED_BY.items() if m not in offered} == {}
