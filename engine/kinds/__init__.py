"""The sufficient statistics nodes compute, one layout per kind, and which algorithms use
which kinds (nodes refuse a query whose kind does not belong to its algorithm, so a policy
that allows an algorithm allows exactly its statistics).

Every kind's parameters are plain JSON inside the signed query. Layouts depend only on the
specification and the data model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from engine.design import Term, check_terms, design_variables
from engine.errors import QueryError
from engine.plans import Key, ModelView, Slot, check_variable, groups, variable_bound

if TYPE_CHECKING:
    from engine.query import QuerySpec

LayoutFn = Callable[["QuerySpec", ModelView], list[Slot]]
KINDS: dict[str, LayoutFn] = {}

MAX_FOLDS = 20
MAX_CELLS = 1 << 20
MAX_CENTERS = 100
MAX_GRID = 100_000

#: algorithm -> statistic kinds it may ask for (the first is its default)
ALGORITHM_KINDS: dict[str, tuple[str, ...]] = {
    "count": ("count",),
    "descriptive_stats": ("moments", "counts"),
    "histogram": ("counts",),
    "contingency_table": ("counts",),
    "chi_square": ("counts",),
    "ttest_onesample": ("moments",),
    "ttest_paired": ("crossprod",),
    "ttest_independent": ("moments",),
    "anova_oneway": ("moments",),
    "anova_twoway": ("crossprod",),
    "pearson_correlation": ("crossprod",),
    "linear_regression": ("crossprod",),
    "linear_regression_cv": ("crossprod", "regression_eval"),
    "logistic_regression": ("logistic",),
    "logistic_regression_cv": ("logistic", "logistic_eval"),
    "pca": ("crossprod",),
    "kmeans": ("kmeans", "moments"),
    "naive_bayes_gaussian": ("moments", "gaussian_nb_predict"),
    "naive_bayes_categorical": ("counts",),
    "kaplan_meier": ("survival",),
    "logrank_test": ("survival",),
}


def register(kind: str) -> Callable[[LayoutFn], LayoutFn]:
    def add(fn: LayoutFn) -> LayoutFn:
        KINDS[kind] = fn
        return fn

    return add


def _param(spec: QuerySpec, name: str, default: Any = None) -> Any:
    value = spec.parameters.get(name, default)
    if value is None:
        raise QueryError(f"{spec.algorithm} needs the parameter {name!r}")
    return value


def _number_list(value: Any, what: str, length: int | None = None) -> list[float]:
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
    if not isinstance(k, int) or not 2 <= k <= MAX_FOLDS:
        raise QueryError(f"folds must be an integer in [2, {MAX_FOLDS}]")
    if not isinstance(spec.parameters.get("fold_seed", 0), int):
        raise QueryError("fold_seed must be an integer")
    return list(range(k))


def _check_betas(betas: Any, folds: list[int | None], p: int) -> None:
    """One coefficient vector of length p per fold."""
    if not isinstance(betas, list) or len(betas) != len(folds):
        raise QueryError("give one coefficient vector (beta, or betas with folds) per fold")
    for beta in betas:
        _number_list(beta, "a coefficient vector", p)


def _triangle(p: int) -> Iterator[tuple[int, int]]:
    for i in range(p):
        for j in range(i, p):
            yield i, j


def outcome_of(spec: QuerySpec, model: ModelView) -> tuple[str, str | None]:
    """The binary outcome: a categorical variable and its positive level, or a numeric
    variable holding 0/1 (level None)."""
    outcome = _param(spec, "outcome")
    if not isinstance(outcome, dict) or "var" not in outcome or set(outcome) - {"var", "positive"}:
        raise QueryError('outcome is {"var": code, "positive": level}')
    variable = outcome["var"]
    check_variable(model, variable)
    positive = outcome.get("positive")
    if model.is_numeric(variable):
        if positive not in (None, 1):
            raise QueryError(f"a numeric outcome ({variable}) must hold 0/1")
        return variable, None
    if positive not in model.levels(variable):
        raise QueryError(f"{positive!r} is not a level of {variable!r}")
    return variable, str(positive)


@register("count")
def _count(spec: QuerySpec, model: ModelView) -> list[Slot]:
    return [Slot(("rows", d), False) for d in spec.datasets]


@register("moments")
def _moments(spec: QuerySpec, model: ModelView) -> list[Slot]:
    if not spec.variables:
        raise QueryError(f"{spec.algorithm} needs at least one variable")
    slots = []
    for d in spec.datasets:
        for g in groups(spec, model):
            slots.append(Slot(("rows", d, g), False))
            for v in spec.variables:
                slots.append(Slot(("count", d, g, v), False))
                if model.is_numeric(v):
                    slots.append(Slot(("sum", d, g, v), True))
                    slots.append(Slot(("sumsq", d, g, v), True))
    return slots


@register("crossprod")
def _crossprod(spec: QuerySpec, model: ModelView) -> list[Slot]:
    p = len(check_terms(_param(spec, "terms"), model))
    slots = []
    for f in folds_of(spec):
        slots.append(Slot(("n", f), False))
        slots += [Slot(("xx", f, i, j), True) for i, j in _triangle(p)]
    return slots


@register("regression_eval")
def _regression_eval(spec: QuerySpec, model: ModelView) -> list[Slot]:
    """Per fold, on the rows of that fold: residual sums for a fitted linear model."""
    p = len(check_terms(_param(spec, "terms"), model))
    check_variable(model, _param(spec, "y"), numeric=True)
    folds = folds_of(spec)
    _check_betas(_param(spec, "betas"), folds, p)
    slots = []
    for f in folds:
        slots.append(Slot(("n", f), False))
        slots += [Slot((name, f), True) for name in ("sy", "syy", "se", "see", "sae")]
    return slots


@register("logistic")
def _logistic(spec: QuerySpec, model: ModelView) -> list[Slot]:
    p = len(check_terms(_param(spec, "terms"), model))
    outcome_of(spec, model)
    folds = folds_of(spec)
    _check_betas(spec.parameters.get("betas") if folds != [None] else [_param(spec, "beta")],
                 folds, p)
    slots = []
    for f in folds:
        slots += [Slot(("n", f), False), Slot(("ysum", f), False), Slot(("loglik", f), True)]
        slots += [Slot(("grad", f, i), True) for i in range(p)]
        slots += [Slot(("hess", f, i, j), True) for i, j in _triangle(p)]
    return slots


@register("logistic_eval")
def _logistic_eval(spec: QuerySpec, model: ModelView) -> list[Slot]:
    """Per fold, on the rows of that fold: the confusion matrix at probability 0.5 and the
    log-likelihood of a fitted model."""
    p = len(check_terms(_param(spec, "terms"), model))
    outcome_of(spec, model)
    folds = folds_of(spec)
    _check_betas(_param(spec, "betas"), folds, p)
    slots = []
    for f in folds:
        slots += [Slot((name, f), False) for name in ("tp", "fp", "tn", "fn")]
        slots.append(Slot(("loglik", f), True))
    return slots


def axes_of(spec: QuerySpec, model: ModelView) -> list[tuple[str, int]]:
    """(variable, number of bins) per axis of a table."""
    axes = _param(spec, "axes")
    if not isinstance(axes, list) or not 0 < len(axes) <= 4:
        raise QueryError("a table has 1 to 4 axes")
    out = []
    for axis in axes:
        if not isinstance(axis, dict) or "var" not in axis or set(axis) - {"var", "edges"}:
            raise QueryError('an axis is {"var": code} or {"var": code, "edges": [...]}')
        variable = axis["var"]
        if "edges" in axis:
            check_variable(model, variable, numeric=True)
            edges = _number_list(axis["edges"], "bin edges")
            if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
                raise QueryError("bin edges must be at least two increasing numbers")
            out.append((variable, len(edges) - 1))
        else:
            check_variable(model, variable, numeric=False)
            out.append((variable, len(model.levels(variable))))
    return out


def cells_of(spec: QuerySpec, model: ModelView) -> Iterator[tuple[int, ...]]:
    sizes = [n for _, n in axes_of(spec, model)]
    total = math.prod(sizes)
    if total > MAX_CELLS:
        raise QueryError(f"the table has {total} cells; at most {MAX_CELLS} are allowed")
    for flat in range(total):
        cell = []
        for size in reversed(sizes):
            flat, r = divmod(flat, size)
            cell.append(r)
        yield tuple(reversed(cell))


@register("counts")
def _counts(spec: QuerySpec, model: ModelView) -> list[Slot]:
    slots = [Slot(("cell", *cell), False) for cell in cells_of(spec, model)]
    return slots + [Slot(("excluded",), False)]


@register("kmeans")
def _kmeans(spec: QuerySpec, model: ModelView) -> list[Slot]:
    if not spec.variables:
        raise QueryError("kmeans needs variables")
    for v in spec.variables:
        check_variable(model, v, numeric=True)
    centers = _param(spec, "centers")
    if not isinstance(centers, list) or not 0 < len(centers) <= MAX_CENTERS:
        raise QueryError(f"centers must be a list of 1 to {MAX_CENTERS} points")
    for center in centers:
        _number_list(center, "a center", len(spec.variables))
    slots = [Slot(("inertia",), True)]
    for c in range(len(centers)):
        slots.append(Slot(("n", c), False))
        slots += [Slot(("sum", c, j), True) for j in range(len(spec.variables))]
    return slots


def survival_of(spec: QuerySpec, model: ModelView) -> tuple[str, str, list[float]]:
    duration, event = _param(spec, "duration"), _param(spec, "event")
    check_variable(model, duration, numeric=True)
    check_variable(model, event)
    grid = _number_list(_param(spec, "grid"), "the time grid")
    if not 0 < len(grid) <= MAX_GRID or any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise QueryError(f"the time grid is 1 to {MAX_GRID} increasing times")
    if not model.is_numeric(event) and spec.parameters.get("event_level") not in model.levels(event):
        raise QueryError(f"name the event_level of the categorical {event!r}")
    return duration, event, grid


@register("survival")
def _survival(spec: QuerySpec, model: ModelView) -> list[Slot]:
    _, _, grid = survival_of(spec, model)
    slots = []
    # interval j holds times in (grid[j-1], grid[j]]; j = 0 is up to grid[0]; the last,
    # j = len(grid), holds times past the grid (at risk until its end, never an event time)
    for g in groups(spec, model):
        for j in range(len(grid) + 1):
            slots += [Slot(("events", g, j), False), Slot(("censored", g, j), False)]
    return slots


@register("gaussian_nb_predict")
def _gaussian_nb_predict(spec: QuerySpec, model: ModelView) -> list[Slot]:
    """How many complete-case rows a fitted Gaussian naive Bayes model assigns to each
    class (rows with every feature present; the model comes with the query)."""
    if not spec.variables:
        raise QueryError("the model needs features")
    for v in spec.variables:
        check_variable(model, v, numeric=True)
    classes = _param(spec, "classes")
    if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CENTERS:
        raise QueryError(f"classes must be a list of 1 to {MAX_CENTERS} labels")
    p = len(spec.variables)
    for name in ("theta", "var"):
        rows = _param(spec, name)
        if not isinstance(rows, list) or len(rows) != len(classes):
            raise QueryError(f"{name} must have one row per class")
        for row in rows:
            values = _number_list(row, name, p)
            if name == "var" and min(values) <= 0:
                raise QueryError("variances must be positive")
    _number_list(_param(spec, "log_prior"), "log_prior", len(classes))
    return [Slot(("predicted", c), False) for c in range(len(classes))]


# --- differential privacy: per kind, each slot's per-row bound and how many slots one row
# can change (add/remove-one-row neighbours). Kinds absent here do not offer DP yet. ---------

DPProfile = Callable[["QuerySpec", ModelView], tuple[Callable[[Key], float], int]]
DP_PROFILES: dict[str, DPProfile] = {}


def dp_profile(kind: str) -> Callable[[DPProfile], DPProfile]:
    def add(fn: DPProfile) -> DPProfile:
        DP_PROFILES[kind] = fn
        return fn

    return add


def _unit(_: Key) -> float:
    return 1.0


@dp_profile("count")
def _count_dp(spec: QuerySpec, model: ModelView) -> tuple[Callable[[Key], float], int]:
    return _unit, 1


@dp_profile("counts")
def _counts_dp(spec: QuerySpec, model: ModelView) -> tuple[Callable[[Key], float], int]:
    return _unit, 1  # a row falls in exactly one cell, or is excluded


@dp_profile("survival")
def _survival_dp(spec: QuerySpec, model: ModelView) -> tuple[Callable[[Key], float], int]:
    return _unit, 2 if spec.by else 1  # one interval cell in "all" and one in its group


@dp_profile("moments")
def _moments_dp(spec: QuerySpec, model: ModelView) -> tuple[Callable[[Key], float], int]:
    bound = {v: variable_bound(spec, model, v) for v in spec.variables if model.is_numeric(v)}

    def scale(key: Key) -> float:
        if key[0] == "sum":
            return bound[str(key[3])]
        if key[0] == "sumsq":
            return bound[str(key[3])] ** 2
        return 1.0

    per_group = 1 + sum(3 if v in bound else 1 for v in spec.variables)
    return scale, per_group * (2 if spec.by else 1)


def _term_bound(term: Term, spec: QuerySpec, model: ModelView) -> float:
    if "const" in term or "level" in term:
        return 1.0
    if "product" in term:
        return math.prod(_term_bound(f, spec, model) for f in term["product"])
    if "transform" in term:
        raise QueryError("transformed terms have no declared bounds; DP needs raw variables")
    return variable_bound(spec, model, term["var"])


@dp_profile("crossprod")
def _crossprod_dp(spec: QuerySpec, model: ModelView) -> tuple[Callable[[Key], float], int]:
    if folds_of(spec) != [None]:
        raise QueryError("cross-validation does not offer differential privacy yet")
    terms = spec.parameters["terms"]
    design_variables(terms)
    bounds = [_term_bound(t, spec, model) for t in terms]

    def scale(key: Key) -> float:
        if key[0] == "xx":
            return bounds[int(key[2])] * bounds[int(key[3])]
        return 1.0

    p = len(terms)
    return scale, 1 + p * (p + 1) // 2
