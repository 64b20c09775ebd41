"""Design terms: the columns of a model matrix, as plain JSON that nodes evaluate.

    {"const": 1}                         the intercept
    {"var": "age"}                       a numeric variable
    {"var": "age", "transform": "log"}   a transformed numeric variable (log, exp, sqrt)
    {"var": "sex", "level": "F"}         the indicator of one level of a categorical variable
    {"product": [term, term, ...]}       an interaction

Categorical levels come from the data model (never from a node's data), so every node
builds the same columns. Rows with a missing value in any variable a design uses are left
out (complete cases), as statsmodels does by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from protocol.errors import QueryError
from stats.plans import ModelView, check_variable

MAX_TERMS = 256
#: whitelisted transforms of numeric variables (nodes apply them; nothing is evaluated)
TRANSFORMS = ("log", "exp", "sqrt")
MAX_FACTORS = 4
Term = dict[str, Any]


def check_term(term: Any, model: ModelView, depth: int = 0) -> None:
    if not isinstance(term, dict):
        raise QueryError("a design term is a JSON object")
    if set(term) == {"const"}:
        if term["const"] != 1:
            raise QueryError("the intercept term is {\"const\": 1}")
        return
    if set(term) in ({"var"}, {"var", "transform"}):
        check_variable(model, term["var"], numeric=True)
        if term.get("transform", "log") not in TRANSFORMS:
            raise QueryError(f"transforms are {', '.join(TRANSFORMS)}")
        return
    if set(term) == {"var", "level"}:
        check_variable(model, term["var"], numeric=False)
        if term["level"] not in model.levels(term["var"]):
            raise QueryError(f"{term['level']!r} is not a level of {term['var']!r}")
        return
    if set(term) == {"product"}:
        factors = term["product"]
        if depth or not isinstance(factors, list) or not 2 <= len(factors) <= MAX_FACTORS:
            raise QueryError(f"an interaction has 2 to {MAX_FACTORS} plain factors")
        for factor in factors:
            check_term(factor, model, depth + 1)
        return
    raise QueryError(f"unknown design term {term!r}")


def check_terms(terms: Any, model: ModelView) -> list[Term]:
    if not isinstance(terms, list) or not 0 < len(terms) <= MAX_TERMS:
        raise QueryError(f"a design has 1 to {MAX_TERMS} terms")
    for term in terms:
        check_term(term, model)
    return terms


def term_variables(term: Term) -> list[str]:
    if "product" in term:
        return [v for factor in term["product"] for v in term_variables(factor)]
    return [term["var"]] if "var" in term else []


def design_variables(terms: Sequence[Term]) -> list[str]:
    """Every variable a design reads, once, in first-use order."""
    seen: dict[str, None] = {}
    for term in terms:
        for variable in term_variables(term):
            seen.setdefault(variable)
    return list(seen)


def term_name(term: Term) -> str:
    """statsmodels-style column names: Intercept, age, sex[T.F], age:sex[T.F]."""
    if "const" in term:
        return "Intercept"
    if "product" in term:
        return ":".join(term_name(f) for f in term["product"])
    if "level" in term:
        return f"{term['var']}[T.{term['level']}]"
    if "transform" in term:
        return f"{term['transform']}({term['var']})"
    return str(term["var"])


def dummies(variable: str, model: ModelView, reference: str | None = None) -> list[Term]:
    """Indicator terms of every level but the reference (the first level by default)."""
    levels = model.levels(variable)
    base = levels[0] if reference is None else reference
    if base not in levels:
        raise QueryError(f"{base!r} is not a level of {variable!r}")
    return [{"var": variable, "level": level} for level in levels if level != base]
