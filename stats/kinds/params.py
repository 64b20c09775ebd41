"""The parameters kinds read from a query, checked at planning, before any row is touched.

Every check here depends on the query and the public data model only, so a refusal says
nothing about a node's rows. Parameters that could aim at single rows are bounded by the
data model's declared ranges: coefficient vectors may not push the linear predictor past
:data:`MAX_LINEAR_PREDICTOR` anywhere in the declared box, centres and class means lie in
it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from protocol.errors import QueryError
from stats.design import Term, check_terms
from stats.plans import ModelView, check_variable

if TYPE_CHECKING:
    from stats.query import QuerySpec

MAX_FOLDS = 20
MAX_CELLS = 1 << 20
MAX_CENTERS = 100
MAX_GRID = 100_000
#: the largest |x . beta| a coefficient vector may reach over the data model's declared
#: ranges: far beyond any fit (probabilities within e^-200 of 0 or 1), yet it keeps a
#: researcher from choosing coefficients as extreme as they like
MAX_LINEAR_PREDICTOR = 200.0
#: smallest positive float64's log, so |log x| of any positive float is at most this
_LOG_FLOOR = 745.2


def param(spec: QuerySpec, name: str, default: Any = None) -> Any:
    value = spec.parameters.get(name, default)
    if value is None:
        raise QueryError(f"{spec.method} needs the parameter {name!r}")
    return value


#: the magnitudes a researcher's number may have where it enters a row's arithmetic (a
#: centre or scale, a class mean or variance, a cluster centre, a coefficient), besides 0:
#: float32's normal range. A product or quotient of such a number and a row's value can then
#: leave the double range (underflow to 0, overflow to inf) only where the row's value is
#: itself extreme, so no number a researcher picks makes one patient's row do it where the
#: others do not: PostgreSQL raises there (C gives 0 or inf), and the node then computes
#: the query on fetched rows, which takes longer, telling by its time what P's value is
ARITHMETIC_MAGNITUDES = (2.0 ** -126, 2.0 ** 126)


def check_magnitudes(values: Sequence[float], what: str) -> None:
    """Each of ``values`` is 0 or within :data:`ARITHMETIC_MAGNITUDES` in magnitude."""
    low, high = ARITHMETIC_MAGNITUDES
    for value in values:
        if value != 0 and not low <= abs(value) <= high:
            raise QueryError(f"{what} must be 0 or of magnitude between 2^-126 and 2^126 "
                             f"({value:g} is not): a number further out could make one "
                             "row's arithmetic leave the range of doubles")


def number_list(value: Any, what: str, length: int | None = None) -> list[float]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) and
                                              not isinstance(v, bool) and math.isfinite(v)
                                              for v in value):
        raise QueryError(f"{what} must be a list of finite numbers")
    if length is not None and len(value) != length:
        raise QueryError(f"{what} must have {length} entries")
    return [float(v) for v in value]


def folds_of(spec: QuerySpec) -> list[int | None]:
    """``[None]`` without cross-validation, else the fold numbers."""
    k = spec.parameters.get("folds")
    if k is None:
        return [None]
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_FOLDS:
        raise QueryError(f"folds must be an integer in [2, {MAX_FOLDS}]")
    seed = spec.parameters.get("fold_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise QueryError("fold_seed must be an integer in [0, 2^63)")
    return list(range(k))


def terms_of(spec: QuerySpec, model: ModelView) -> list[Term]:
    return check_terms(param(spec, "terms"), model)


def triangle(p: int) -> Iterator[tuple[int, int]]:
    for i in range(p):
        for j in range(i, p):
            yield i, j


def declared_magnitude(model: ModelView, variable: str) -> float | None:
    """max(|min|, |max|) of a variable the data model bounds, else None."""
    pair = model.bounds(variable)
    return None if pair is None else max(abs(pair[0]), abs(pair[1]))


def term_bound(term: Term, magnitude: Any) -> float:
    """The largest |value| a design term takes on a row, given each variable's magnitude
    (``magnitude(code)``); infinite where it has none (exp of a large bound)."""
    if "const" in term or "level" in term:
        return 1.0
    if "product" in term:
        return math.prod(term_bound(f, magnitude) for f in term["product"])
    bound = float(magnitude(term["var"]))
    transform = term.get("transform")
    if transform == "log":
        return max(_LOG_FLOOR, math.log(bound)) if bound > 0 else _LOG_FLOOR
    if transform == "exp":
        return math.exp(bound) if bound < 709 else math.inf
    if transform == "sqrt":
        return math.sqrt(bound)
    return bound


def check_betas(spec: QuerySpec, model: ModelView, terms: Sequence[Term],
                betas: Any, folds: list[int | None]) -> list[list[float]]:
    """One coefficient vector per fold, each keeping |x . beta| within
    :data:`MAX_LINEAR_PREDICTOR` over the declared ranges (terms whose variables declare no
    range are left out of the bound: nothing public bounds them)."""
    if not isinstance(betas, list) or len(betas) != len(folds):
        raise QueryError("give one coefficient vector (beta, or betas with folds) per fold")
    out = [number_list(beta, "a coefficient vector", len(terms)) for beta in betas]
    bounds = [_declared_term_bound(t, model) for t in terms]
    for beta in out:
        check_magnitudes(beta, "a coefficient")
        reach = sum(abs(b) * bound for b, bound in zip(beta, bounds, strict=True)
                    if bound is not None)
        if reach > MAX_LINEAR_PREDICTOR:
            raise QueryError(f"the coefficients reach |x . beta| = {reach:.3g} within the data "
                             f"model's declared ranges; at most {MAX_LINEAR_PREDICTOR:g} is "
                             "allowed (a fit this extreme has diverged)")
    return out


def _declared_term_bound(term: Term, model: ModelView) -> float | None:
    missing = []

    def magnitude(code: str) -> float:
        value = declared_magnitude(model, code)
        if value is None:
            missing.append(code)
            return 0.0
        return value

    bound = term_bound(term, magnitude)
    return None if missing else bound


def check_in_box(model: ModelView, variables: Sequence[str], point: Sequence[float],
                 what: str) -> None:
    """A researcher's point (a centre, a class mean) lies in the declared ranges."""
    for variable, value in zip(variables, point, strict=True):
        pair = model.bounds(variable)
        if pair is not None and not pair[0] <= value <= pair[1]:
            raise QueryError(f"{what} puts {variable!r} at {value:g}, outside its declared "
                             f"range [{pair[0]:g}, {pair[1]:g}]")


def check_binary(model: ModelView, variable: str, level: Any, what: str) -> str | None:
    """A variable the kind treats as 0/1: a categorical one with the level that counts as 1,
    or a numeric one whose declared range lies within [0, 1]. Nothing about the rows is
    checked: a numeric value other than 0 or 1 counts as missing (frame.binary). Returns
    the level (None for numeric)."""
    check_variable(model, variable)
    if model.is_numeric(variable):
        if level not in (None, 1):
            raise QueryError(f"a numeric {what} ({variable}) holds 0/1")
        pair = model.bounds(variable)
        if pair is None or pair[0] < 0 or pair[1] > 1:
            raise QueryError(f"the {what} {variable!r} must be declared binary: min 0 and "
                             "max 1 in the data model (or make it categorical and name the "
                             "level that counts)")
        return None
    if level is None or str(level) not in model.levels(variable):
        raise QueryError(f"name the level of the categorical {what} {variable!r} that counts "
                         f"(one of {list(model.levels(variable))})")
    return str(level)


def outcome_of(spec: QuerySpec, model: ModelView) -> tuple[str, str | None]:
    """The binary outcome: a categorical variable and its positive level, or a numeric
    variable declared 0/1 (level None)."""
    outcome = param(spec, "outcome")
    if not isinstance(outcome, dict) or "var" not in outcome or set(outcome) - {"var", "positive"}:
        raise QueryError('outcome is {"var": code, "positive": level}')
    variable = outcome["var"]
    return variable, check_binary(model, variable, outcome.get("positive"), "outcome")


def axes_of(spec: QuerySpec, model: ModelView) -> list[tuple[str, int]]:
    """(variable, number of bins) per axis of a table."""
    axes = param(spec, "axes")
    if not isinstance(axes, list) or not 0 < len(axes) <= 4:
        raise QueryError("a table has 1 to 4 axes")
    out = []
    for axis in axes:
        if not isinstance(axis, dict) or "var" not in axis or set(axis) - {"var", "edges"}:
            raise QueryError('an axis is {"var": code} or {"var": code, "edges": [...]}')
        variable = axis["var"]
        if "edges" in axis:
            check_variable(model, variable, numeric=True)
            edges = number_list(axis["edges"], "bin edges")
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise QueryError("bin edges must be at least two increasing numbers")
            if len(edges) - 1 > MAX_CELLS:
                raise QueryError(f"at most {MAX_CELLS} bins are allowed")
            out.append((variable, len(edges) - 1))
        else:
            check_variable(model, variable, numeric=False)
            if not model.levels(variable):  # free text: nothing to count in, not "no rows"
                raise QueryError(f"{variable!r} is free text: the data model lists no "
                                 "categories for it, so a table has no cells to count it in")
            out.append((variable, len(model.levels(variable))))
    total = math.prod(n for _, n in out)
    if total > MAX_CELLS:
        raise QueryError(f"the table has {total} cells; at most {MAX_CELLS} are allowed")
    return out


def cells_of(sizes: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every cell of a table with these axis sizes, in row-major order."""
    total = math.prod(sizes)
    for flat in range(total):
        cell = []
        for size in reversed(sizes):
            flat, r = divmod(flat, size)
            cell.append(r)
        yield tuple(reversed(cell))


def survival_of(spec: QuerySpec, model: ModelView) -> tuple[str, str, str | None, list[float]]:
    """(duration, event, event level or None for a 0/1 event, time grid)."""
    duration, event = param(spec, "duration"), param(spec, "event")
    check_variable(model, duration, numeric=True)
    level = check_binary(model, event, spec.parameters.get("event_level"), "event")
    grid = number_list(param(spec, "grid"), "the time grid")
    if not 0 < len(grid) <= MAX_GRID or any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise QueryError(f"the time grid is 1 to {MAX_GRID} increasing times")
    return duration, event, level, grid


def check_numeric(model: ModelView, variables: Sequence[str], what: str) -> None:
    if not variables:
        raise QueryError(f"{what} needs variables")
    for v in variables:
        check_variable(model, v, numeric=True)
