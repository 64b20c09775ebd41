"""The catalog's registry: every method declares itself where it is written, with the
statistic kinds it asks the nodes for::

    @catalog_method(kinds=("moments",))
    def ttest_onesample(fed: Analyses, y: str, mu: float = 0.0, ...) -> TTestResult:

The catalog (:class:`fedtally.catalog.Catalog`) offers exactly the registered methods, and
tests hold the rest to the registry: the nodes' own table of methods and kinds
(``stats.kinds.METHOD_KINDS``, which a node operator's policy is written against, so it is
kept where the nodes read it), the README's method table, and the disclosure and Paillier
test lists. Every module in this package is imported by :func:`methods`, so a new method
in a new module registers too.

A method module also holds the method's Exareme2 adapter, registered the same way::

    @handles("ttest_paired", method="ttest_paired")
    def _ttest_paired(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:

:func:`fedtally.exareme2.run_exareme2` answers every algorithm of :func:`adapters`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
H = TypeVar("H", bound=Callable[..., dict[str, Any]])


@dataclass(frozen=True)
class Method:
    """One catalog method: its name (the function's), the function of a federation, and
    the statistic kinds it asks for (the first is its default)."""

    name: str
    function: Callable[..., Any]
    kinds: tuple[str, ...]


_REGISTRY: dict[str, Method] = {}


def catalog_method(*, kinds: tuple[str, ...]) -> Callable[[F], F]:
    """Register the decorated function as a catalog method using ``kinds``."""
    if not kinds or not all(isinstance(k, str) and k for k in kinds):
        raise TypeError("a catalog method names the statistic kinds it uses")

    def register(function: F) -> F:
        name = function.__name__
        known = _REGISTRY.get(name)
        if known is not None and known.function.__qualname__ != function.__qualname__:
            raise TypeError(f"two catalog methods are named {name}")
        _REGISTRY[name] = Method(name, function, tuple(kinds))
        return function

    return register


def _import_every_module() -> None:
    package = importlib.import_module(__package__ or "fedtally.methods")
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def methods() -> dict[str, Method]:
    """Every registered method by name (imports every module of this package first)."""
    _import_every_module()
    return dict(sorted(_REGISTRY.items()))


@dataclass(frozen=True)
class Adapter:
    """An Exareme2 algorithm we answer: its name (Exareme2's, from its URL), the catalog
    method that answers it (the only method the adapter asks the nodes for), and the
    function of a federation and a parsed request that returns Exareme2's result shape."""

    algorithm: str
    method: str
    function: Callable[..., dict[str, Any]]


_ADAPTERS: dict[str, Adapter] = {}


def handles(*algorithms: str, method: str) -> Callable[[H], H]:
    """Register the decorated function as the adapter of Exareme2's ``algorithms``,
    answered with the catalog's ``method``."""
    if not algorithms or not method:
        raise TypeError("an Exareme2 adapter names its algorithms and the method answering them")

    def register(function: H) -> H:
        for algorithm in algorithms:
            known = _ADAPTERS.get(algorithm)
            if known is not None and known.function.__qualname__ != function.__qualname__:
                raise TypeError(f"two Exareme2 adapters handle {algorithm}")
            _ADAPTERS[algorithm] = Adapter(algorithm, method, function)
        return function

    return register


def adapters() -> dict[str, Adapter]:
    """Every registered Exareme2 adapter by algorithm (imports every module of this package
    first; an adapter registered outside it counts once its module is imported)."""
    _import_every_module()
    return dict(sorted(_ADAPTERS.items()))
