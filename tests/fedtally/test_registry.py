"""The catalog is the registry: every registered method is offered, with the kinds the
nodes' own table (``stats.kinds.METHOD_KINDS``) grants it, and nothing else is offered;
every Exareme2 adapter names the registered method that answers it. A method is one
module of ``fedtally/methods`` named after it, holding its Exareme2 adapters too; the
other modules there hold what several methods share."""

from __future__ import annotations

import inspect
import pkgutil

import pytest

from fedtally import methods as method_package
from fedtally.analyses import Analyses
from fedtally.catalog import Catalog
from fedtally.exareme2 import handlers
from fedtally.methods.registry import catalog_method, handles, methods
from stats.kinds import KINDS, METHOD_KINDS

#: methods every federation has on Analyses itself, not in a method module
CORE = frozenset({"count", "descriptive_stats"})
#: the modules of fedtally/methods that are not one method's: the registry, and what
#: several methods share (each named for what it holds)
SHARED = frozenset({"registry", "common", "sums", "ttests", "tables", "anova", "naive_bayes",
                    "folds", "scatter", "regression", "newton", "survival"})


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
    answered_by = {algorithm: adapter.method for algorithm, adapter in handlers().items()}
    assert all(adapter.algorithm == algorithm for algorithm, adapter in handlers().items())
    offered = set(methods()) | CORE
    assert {a: m for a, m in answered_by.items() if m not in offered} == {}


def test_every_method_module_registers_one_method_named_like_it() -> None:
    modules = {info.name for info in pkgutil.iter_modules(method_package.__path__)}
    registered: dict[str, list[str]] = {}
    for name, m in methods().items():
        registered.setdefault(m.function.__module__.removeprefix("fedtally.methods."),
                              []).append(name)
    assert SHARED <= modules
    assert registered == {module: [module] for module in sorted(modules - SHARED)}


def test_every_exareme2_adapter_sits_in_its_methods_module() -> None:
    homes = {algorithm: adapter.function.__module__ for algorithm, adapter in handlers().items()}
    assert homes == {algorithm: "fedtally.exareme2" if adapter.method in CORE
                     else f"fedtally.methods.{adapter.method}"
                     for algorithm, adapter in handlers().items()}


def test_an_algorithm_has_one_adapter() -> None:
    def ttest_paired() -> dict[str, str]:  # another adapter of a handled algorithm
        return {}

    with pytest.raises(TypeError, match="two Exareme2 adapters handle ttest_paired"):
        handles("ttest_paired", method="ttest_paired")(ttest_paired)
    with pytest.raises(TypeError, match="names its algorithms"):
        handles(method="ttest_paired")
    assert handlers()["ttest_paired"].function is not ttest_paired
