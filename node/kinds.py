"""How a node computes each statistic kind of :mod:`engine.kinds` on its rows.

Each function returns the slot values it knows (ints for counts, floats for this node's
local sums) and how many rows it used; :mod:`node.statistics` encodes them into the
layout and applies the node's small-cohort rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from engine.design import Term, design_variables
from engine.errors import QueryError
from engine.kinds import axes_of, folds_of, outcome_of, survival_of
from engine.plans import Key, groups
from engine.query import QuerySpec
from node.datamodel import DATASET, DataModel


class PlanModel:
    """Adapts a :class:`DataModel` to the engine's ``ModelView`` protocol."""

    def __init__(self, model: DataModel) -> None:
        self.model = model

    def datasets(self) -> tuple[str, ...]:
        return self.model.datasets()

    def has_variable(self, code: str) -> bool:
        return code in self.model.variables

    def is_numeric(self, code: str) -> bool:
        return self.model.variable(code).is_numeric

    def levels(self, code: str) -> tuple[str, ...]:
        return self.model.variable(code).enumerations

    def bounds(self, code: str) -> tuple[float, float] | None:
        variable = self.model.variable(code)
        if variable.min is None or variable.max is None:
            return None
        return variable.min, variable.max


@dataclass
class Computed:
    values: dict[Key, int | float] = field(default_factory=dict)
    #: rows the statistic used (after complete-case selection): the node's cohort size
    rows: int = 0
    #: cells zeroed because they were smaller than the node's small-cell threshold
    suppressed: int = 0


Compute = Callable[[QuerySpec, pd.DataFrame, DataModel, int], Computed]
COMPUTERS: dict[str, Compute] = {}


def computes(kind: str) -> Callable[[Compute], Compute]:
    def add(fn: Compute) -> Compute:
        COMPUTERS[kind] = fn
        return fn

    return add


# --- shared helpers -----------------------------------------------------------------------


def numeric(rows: pd.DataFrame, variable: str) -> np.ndarray:
    return pd.to_numeric(rows[variable], errors="coerce").to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)


def level_codes(rows: pd.DataFrame, variable: str, levels: tuple[str, ...]) -> np.ndarray:
    """Index of each row's level in the model's levels; -1 for missing or unknown."""
    return pd.Categorical(rows[variable].astype("string"), categories=list(levels)).codes


def present(rows: pd.DataFrame, variables: list[str]) -> np.ndarray:
    mask = np.ones(len(rows), dtype=bool)
    for variable in variables:
        mask &= rows[variable].notna().to_numpy()
    return mask


def _column(term: Term, rows: pd.DataFrame, model: DataModel) -> np.ndarray:
    if "const" in term:
        return np.ones(len(rows))
    if "product" in term:
        out = np.ones(len(rows))
        for factor in term["product"]:
            out = out * _column(factor, rows, model)
        return out
    if "level" in term:
        return (rows[term["var"]].astype("string") == term["level"]).to_numpy(
            dtype=np.float64, na_value=0.0)
    values = numeric(rows, term["var"])
    transform = term.get("transform")
    if transform is not None:
        with np.errstate(all="ignore"):
            values = TRANSFORMS[transform](values)
        if not np.all(np.isfinite(values[~np.isnan(values)])):
            raise QueryError(f"{transform}({term['var']}) is not finite for some rows")
    return values


TRANSFORMS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt}


def design(terms: list[Term], rows: pd.DataFrame, model: DataModel,
           extra: list[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """The model matrix over complete cases (every variable of the design and ``extra``
    present), and the complete-case mask over ``rows``. Column-major, so that the Gram
    products below read each column contiguously."""
    mask = present(rows, design_variables(terms) + list(extra))
    complete = rows if mask.all() else rows[mask]
    matrix = np.empty((len(complete), len(terms)), dtype=np.float64, order="F")
    for i, term in enumerate(terms):
        matrix[:, i] = _column(term, complete, model)
    return matrix, mask


def gram(matrix: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """XᵀX (or XᵀWX) through BLAS's symmetric rank-k update: half the work of X.T @ X."""
    from scipy.linalg.blas import dsyrk

    if matrix.shape[0] == 0:
        return np.zeros((matrix.shape[1], matrix.shape[1]))
    scaled = matrix if weights is None else matrix * np.sqrt(weights)[:, None]
    upper = dsyrk(1.0, np.asfortranarray(scaled), trans=1)
    return np.triu(upper) + np.triu(upper, 1).T


def fold_numbers(rows: pd.DataFrame | pd.Index, folds: int, seed: int) -> np.ndarray:
    """A fixed fold for each row from its position in the node's data (splitmix64)."""
    index = rows.index if isinstance(rows, pd.DataFrame) else rows
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) + np.uint64(seed & (2**64 - 1))
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(folds)).astype(np.int64)


def _fold_masks(spec: QuerySpec, rows: pd.Index, train: bool) -> list[tuple[Any, np.ndarray]]:
    """(fold, row mask) pairs: all rows without folds; else each fold's rows (or, with
    ``train``, every row outside the fold)."""
    folds = folds_of(spec)
    if folds == [None]:
        return [(None, np.ones(len(rows), dtype=bool))]
    numbers = fold_numbers(rows, len(folds), int(spec.parameters.get("fold_seed", 0)))
    return [(f, (numbers != f) if train else (numbers == f)) for f in folds]


def outcome(spec: QuerySpec, rows: pd.DataFrame, model: DataModel) -> tuple[np.ndarray, str]:
    variable, positive = outcome_of(spec, PlanModel(model))
    if positive is None:
        y = numeric(rows, variable)
        valid = y[~np.isnan(y)]
        if valid.size and not np.all((valid == 0) | (valid == 1)):
            raise QueryError(f"the outcome {variable!r} must hold only 0 and 1")
        return y, variable
    values = rows[variable].astype("string")
    y = (values == positive).to_numpy(dtype=np.float64, na_value=np.nan)
    y[values.isna().to_numpy()] = np.nan
    return y, variable


def _triangle(matrix: np.ndarray, key: tuple[Any, ...], out: dict[Key, int | float]) -> None:
    p = matrix.shape[0]
    for i in range(p):
        for j in range(i, p):
            out[(*key, i, j)] = float(matrix[i, j])


# --- the kinds ----------------------------------------------------------------------------


@computes("count")
def _count(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    counts = rows[DATASET].value_counts()
    return Computed({("rows", d): int(counts.get(d, 0)) for d in spec.datasets}, len(rows))


@computes("moments")
def _moments(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    out = Computed(rows=len(rows))
    view = PlanModel(model)
    values = {v: numeric(rows, v) for v in spec.variables if view.is_numeric(v)}
    has = {v: rows[v].notna().to_numpy() for v in spec.variables if v not in values}
    dataset_codes = level_codes(rows, DATASET, spec.datasets)
    levels = view.levels(spec.by) if spec.by else ()
    by_codes = level_codes(rows, spec.by, levels) if spec.by else None
    for d_index, dataset in enumerate(spec.datasets):
        in_dataset = dataset_codes == d_index
        for group in groups(spec, view):
            selected = in_dataset
            if group is not None and by_codes is not None:
                selected = selected & (by_codes == levels.index(group))
            n = int(selected.sum())
            if 0 < n < small:
                out.suppressed += 1
                continue
            out.values[("rows", dataset, group)] = n
            for variable in spec.variables:
                cell = (dataset, group, variable)
                if variable in values:
                    column = values[variable][selected]
                    finite = column[~np.isnan(column)]
                    out.values[("count", *cell)] = int(finite.size)
                    out.values[("sum", *cell)] = float(np.sum(finite))
                    out.values[("sumsq", *cell)] = float(np.dot(finite, finite))
                else:
                    out.values[("count", *cell)] = int(has[variable][selected].sum())
    return out


def _indicator(term: Term) -> bool:
    if "level" in term:
        return True
    return "product" in term and all(_indicator(f) for f in term["product"])


@computes("crossprod")
def _crossprod(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    terms = spec.parameters["terms"]
    matrix, mask = design(terms, rows, model)
    out = Computed(rows=int(mask.sum()))
    # an indicator's diagonal entry is a cell count: a node with a small cell releases none
    # of the matrix (the same rule as for tables)
    for i, term in enumerate(terms):
        if _indicator(term) and 0 < int(matrix[:, i].sum()) < small:
            out.suppressed += 1
    if out.suppressed:
        out.rows = 0
        return out
    for fold, in_fold in _fold_masks(spec, rows.index[mask], train=False):
        part = matrix if in_fold.all() else matrix[in_fold]
        out.values[("n", fold)] = int(part.shape[0])
        _triangle(gram(part), ("xx", fold), out.values)
    return out


@computes("regression_eval")
def _regression_eval(spec: QuerySpec, rows: pd.DataFrame, model: DataModel,
                     small: int) -> Computed:
    y_name = spec.parameters["y"]
    matrix, mask = design(spec.parameters["terms"], rows, model, [y_name])
    y = numeric(rows[mask], y_name)
    out = Computed(rows=int(mask.sum()))
    for (fold, in_fold), beta in zip(_fold_masks(spec, rows.index[mask], train=False),
                                     spec.parameters["betas"], strict=True):
        yf = y[in_fold]
        residual = yf - matrix[in_fold] @ np.asarray(beta, dtype=np.float64)
        out.values[("n", fold)] = int(yf.size)
        out.values[("sy", fold)] = float(yf.sum())
        out.values[("syy", fold)] = float(yf @ yf)
        out.values[("se", fold)] = float(residual.sum())
        out.values[("see", fold)] = float(residual @ residual)
        out.values[("sae", fold)] = float(np.abs(residual).sum())
    return out


def _logistic_parts(matrix: np.ndarray, y: np.ndarray, beta: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, float]:
    eta = matrix @ beta
    softplus = np.logaddexp(0.0, eta)  # log(1 + e^eta), without overflow
    prob = np.exp(eta - softplus)  # the logistic function
    loglik = float(y @ eta - softplus.sum())
    return eta, prob, loglik


@computes("logistic")
def _logistic(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    y_all, y_name = outcome(spec, rows, model)
    matrix, mask = design(spec.parameters["terms"], rows, model, [y_name])
    y = y_all[mask]
    out = Computed(rows=int(mask.sum()))
    betas = spec.parameters.get("betas") or [spec.parameters["beta"]]
    for (fold, in_fold), beta in zip(_fold_masks(spec, rows.index[mask], train=True), betas,
                                     strict=True):
        part, yf = (matrix, y) if in_fold.all() else (matrix[in_fold], y[in_fold])
        _, prob, loglik = _logistic_parts(part, yf, np.asarray(beta, dtype=np.float64))
        out.values[("n", fold)] = int(yf.size)
        out.values[("ysum", fold)] = int(yf.sum())
        out.values[("loglik", fold)] = loglik
        for i, g in enumerate(part.T @ (yf - prob)):
            out.values[("grad", fold, i)] = float(g)
        _triangle(gram(part, prob * (1.0 - prob)), ("hess", fold), out.values)
    return out


@computes("logistic_eval")
def _logistic_eval(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    y_all, y_name = outcome(spec, rows, model)
    matrix, mask = design(spec.parameters["terms"], rows, model, [y_name])
    y = y_all[mask]
    out = Computed(rows=int(mask.sum()))
    for (fold, in_fold), beta in zip(_fold_masks(spec, rows.index[mask], train=False),
                                     spec.parameters["betas"], strict=True):
        part, yf = matrix[in_fold], y[in_fold]
        _, prob, loglik = _logistic_parts(part, yf, np.asarray(beta, dtype=np.float64))
        predicted, actual = prob >= 0.5, yf == 1
        out.values[("tp", fold)] = int(np.sum(predicted & actual))
        out.values[("fp", fold)] = int(np.sum(predicted & ~actual))
        out.values[("tn", fold)] = int(np.sum(~predicted & ~actual))
        out.values[("fn", fold)] = int(np.sum(~predicted & actual))
        out.values[("loglik", fold)] = loglik
    return out


def bin_codes(spec: QuerySpec, rows: pd.DataFrame, model: DataModel) -> tuple[np.ndarray, list[int]]:
    """Flat cell index of each row (-1 when any axis value is missing or out of range)."""
    view = PlanModel(model)
    sizes = [n for _, n in axes_of(spec, view)]
    flat = np.zeros(len(rows), dtype=np.int64)
    valid = np.ones(len(rows), dtype=bool)
    for axis, size in zip(spec.parameters["axes"], sizes, strict=True):
        if "edges" in axis:
            edges = np.asarray(axis["edges"], dtype=np.float64)
            values = numeric(rows, axis["var"])
            # numpy.histogram's bins: [a, b) each, the last one [a, b] closed
            codes = np.searchsorted(edges, values, side="right") - 1
            codes[values == edges[-1]] = size - 1
            ok = ~np.isnan(values) & (values >= edges[0]) & (values <= edges[-1])
        else:
            codes = level_codes(rows, axis["var"], view.levels(axis["var"])).astype(np.int64)
            ok = codes >= 0
        valid &= ok
        flat = flat * size + np.where(ok, codes, 0)
    return np.where(valid, flat, -1), sizes


@computes("counts")
def _counts(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    flat, sizes = bin_codes(spec, rows, model)
    total = math.prod(sizes)
    counts = np.bincount(flat[flat >= 0], minlength=total)
    out = Computed(rows=int((flat >= 0).sum()))
    out.values[("excluded",)] = int((flat < 0).sum())
    for index in range(total):
        n = int(counts[index])
        if 0 < n < small:
            out.suppressed += 1
            continue
        cell = []
        for size in reversed(sizes):
            index, r = divmod(index, size)
            cell.append(r)
        out.values[("cell", *reversed(cell))] = n
    return out


@computes("kmeans")
def _kmeans(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    mask = present(rows, list(spec.variables))
    points = np.column_stack([numeric(rows[mask], v) for v in spec.variables])
    centers = np.asarray(spec.parameters["centers"], dtype=np.float64)
    distances = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2)
    nearest = distances.argmin(axis=1) if len(points) else np.zeros(0, dtype=np.int64)
    out = Computed(rows=int(mask.sum()))
    out.values[("inertia",)] = float(distances.min(axis=1).sum()) if len(points) else 0.0
    for c in range(len(centers)):
        members = points[nearest == c]
        if 0 < members.shape[0] < small:  # a tiny cluster's mean is nearly a patient's row
            out.suppressed += 1
            continue
        out.values[("n", c)] = int(members.shape[0])
        for j, s in enumerate(members.sum(axis=0)):
            out.values[("sum", c, j)] = float(s)
    return out


@computes("survival")
def _survival(spec: QuerySpec, rows: pd.DataFrame, model: DataModel, small: int) -> Computed:
    view = PlanModel(model)
    duration, event, grid = survival_of(spec, view)
    mask = present(rows, [duration, event] + ([spec.by] if spec.by else []))
    part = rows[mask]
    times = numeric(part, duration)
    if view.is_numeric(event):
        happened = numeric(part, event)
        if not np.all((happened == 0) | (happened == 1)):
            raise QueryError(f"the event variable {event!r} must hold only 0 and 1")
        happened = happened == 1
    else:
        happened = (part[event].astype("string") == spec.parameters["event_level"]).to_numpy(
            dtype=bool, na_value=False)
    interval = np.searchsorted(np.asarray(grid), times, side="left")
    out = Computed(rows=int(mask.sum()))
    levels = view.levels(spec.by) if spec.by else ()
    by_codes = level_codes(part, spec.by, levels) if spec.by else None
    size = len(grid) + 1
    for group in groups(spec, view):
        selected = np.ones(len(part), dtype=bool)
        if group is not None and by_codes is not None:
            selected = by_codes == levels.index(group)
        n = int(selected.sum())
        if 0 < n < small:  # a small group is not released, even as a curve
            out.suppressed += 1
            continue
        events = np.bincount(interval[selected & happened], minlength=size)
        censored = np.bincount(interval[selected & ~happened], minlength=size)
        for j in range(size):
            out.values[("events", group, j)] = int(events[j])
            out.values[("censored", group, j)] = int(censored[j])
    return out


@computes("gaussian_nb_predict")
def _gaussian_nb_predict(spec: QuerySpec, rows: pd.DataFrame, model: DataModel,
                         small: int) -> Computed:
    mask = present(rows, list(spec.variables))
    points = np.column_stack([numeric(rows[mask], v) for v in spec.variables])
    theta = np.asarray(spec.parameters["theta"], dtype=np.float64)
    var = np.asarray(spec.parameters["var"], dtype=np.float64)
    log_prior = np.asarray(spec.parameters["log_prior"], dtype=np.float64)
    # joint log-likelihood per class, as scikit-learn's GaussianNB
    log_like = -0.5 * (np.log(2 * np.pi * var).sum(axis=1)[None, :]
                       + (((points[:, None, :] - theta[None, :, :]) ** 2) / var[None, :, :])
                       .sum(axis=2))
    predicted = np.argmax(log_like + log_prior[None, :], axis=1) if len(points) else \
        np.zeros(0, dtype=np.int64)
    counts = np.bincount(predicted, minlength=len(log_prior))
    out = Computed(rows=int(mask.sum()))
    for c, n in enumerate(counts):
        if 0 < n < small:
            out.suppressed += 1
            continue
        out.values[("predicted", c)] = int(n)
    return out
