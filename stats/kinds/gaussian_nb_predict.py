"""``gaussian_nb_predict``: how many complete-case rows a fitted Gaussian naive Bayes model
(it comes with the query) assigns to each class. Classes partition the complete rows;
each count is a cell. Class means must lie in the data model's declared ranges."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from protocol.errors import QueryError
from stats.kinds.base import Computed, Guard, Kind, unit_bound
from stats.kinds.frame import CHUNK_ROWS, numeric, present
from stats.kinds.params import MAX_CENTERS, check_in_box, check_numeric, number_list, param
from stats.plans import Disclosure, ModelView, Slot

if TYPE_CHECKING:
    from stats.query import QuerySpec


def _classes(spec: QuerySpec, model: ModelView) -> int:
    check_numeric(model, spec.variables, "the model")
    classes = param(spec, "classes")
    if not isinstance(classes, list) or not 0 < len(classes) <= MAX_CENTERS:
        raise QueryError(f"classes must be a list of 1 to {MAX_CENTERS} labels")
    p = len(spec.variables)
    for name in ("theta", "var"):
        rows = param(spec, name)
        if not isinstance(rows, list) or len(rows) != len(classes):
            raise QueryError(f"{name} must have one row per class")
        for row in rows:
            values = number_list(row, name, p)
            if name == "var" and min(values) <= 0:
                raise QueryError("variances must be positive")
            if name == "theta":
                check_in_box(model, spec.variables, values, "a class mean")
    number_list(param(spec, "log_prior"), "log_prior", len(classes))
    return len(classes)


def _layout(spec: QuerySpec, model: ModelView) -> list[Slot]:
    return [Slot(("predicted", c), False, Disclosure.ROWS, ("predicted", c))
            for c in range(_classes(spec, model))]


def _compute(spec: QuerySpec, rows: pd.DataFrame, model: ModelView) -> Computed:
    mask = present(rows, list(spec.variables))
    complete = rows[mask]
    points = np.column_stack([numeric(complete, v) for v in spec.variables])
    theta = np.asarray(spec.parameters["theta"], dtype=np.float64)
    var = np.asarray(spec.parameters["var"], dtype=np.float64)
    log_prior = np.asarray(spec.parameters["log_prior"], dtype=np.float64)
    constant = np.log(2 * np.pi * var).sum(axis=1)
    predicted = np.zeros(len(points), dtype=np.int64)
    for start in range(0, len(points), CHUNK_ROWS):
        chunk = points[start:start + CHUNK_ROWS]
        # joint log-likelihood per class, as scikit-learn's GaussianNB
        log_like = -0.5 * (constant[None, :] + (((chunk[:, None, :] - theta[None, :, :]) ** 2)
                                                / var[None, :, :]).sum(axis=2))
        predicted[start:start + CHUNK_ROWS] = np.argmax(log_like + log_prior[None, :], axis=1)
    counts = np.bincount(predicted, minlength=len(log_prior))
    out = Computed(rows=len(points))
    for c, n in enumerate(counts):
        out.values[("predicted", c)] = int(n)
        out.guards[("predicted", c)] = {Guard.ROWS: int(n)}
    return out


KIND = Kind("gaussian_nb_predict", _layout, _compute, unit_bound,
            size=lambda spec, model: _classes(spec, model),
            row_cost=lambda spec, model: 8 * (2 * len(spec.variables) + 4))
