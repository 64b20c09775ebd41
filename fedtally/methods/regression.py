"""What the regressions (and their cross-validations) share: input and rank checks on exact
cross-products, the exact least-squares fit, and the shapes of coefficient tables.

**The least-squares fit** (:func:`ols_fit`) takes one round: the secure sum of the
cross-products of the design ``[Intercept, predictors..., y]`` (the ``crossprod`` kind).
Split as ``[[X'X, X'y], [y'X, y'y]]`` it is all OLS needs. The totals are exact (the sum of
the nodes' float64 sums), and everything up to the residual sum of squares is computed
from them in rational arithmetic: ``beta = (X'X)^-1 X'y`` and ``SSR = y'y - beta' X'y``, so
no cancellation happens outside the nodes' own float64 sums. The statistics are the usual
ones (Greene, *Econometric Analysis*, ch. 4-5; statsmodels' ``OLSResults``): ``bse`` from
``SSR / df_resid * diag((X'X)^-1)``, t tests on ``df_resid = n - p`` degrees of freedom, the
overall F test of every slope against the intercept-only model, and the Gaussian
log-likelihood ``-n/2 (log(2 pi) + log(SSR/n) + 1)``.

**Levels.** Categorical predictors are coded against the data model's first level. A level
absent from the selected rows gives an all-zero indicator, seen in the exact totals; it is
left out, and if the reference level itself is absent the first present level becomes the
reference, as patsy does on the pooled rows. A column that is constant or a linear
combination of the others (to float64 precision: ``1 - R^2 < 1e-10`` against the earlier
columns) raises :class:`DegenerateInput`, naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd

from fedtally.analyses import Analyses
from fedtally.methods.common import exact_inverse, predictor_terms
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.design import Term
from stats.suggest import unknown

#: a column whose residual after regression on the earlier columns keeps less than this
#: share of its sum of squares is constant or collinear to float64 precision (a constant
#: column's float64 sums over 3 x 10^6 rows leave ~1e-13; a real column closer to constant
#: than 1e-10 cannot be resolved from raw float64 sums anyway)
RANK_TOL = 1e-10

Matrix = list[list[Fraction]]


def who(stat: Statistic) -> str:
    """Who contributed to a round, for error messages."""
    f = stat.federation
    return f"{f['nodes_contributing']} of {f['nodes_answered']} nodes contributed"


def check_inputs(view: PlanModel, y: str, x: Sequence[str] | str) -> list[str]:
    """The predictor list, after checking it names known, distinct variables other than y."""
    predictors = [x] if isinstance(x, str) else list(x)
    if not view.has_variable(y):
        raise QueryError(unknown("variable", y, view.variable_names()))
    if not predictors:
        raise QueryError("give at least one predictor in x")
    if len(set(predictors)) != len(predictors):
        raise QueryError("a predictor is listed twice in x")
    if y in predictors:
        raise QueryError(f"{y!r} is the outcome; it cannot also be a predictor")
    for variable in predictors:
        if not view.has_variable(variable):
            raise QueryError(unknown("variable", variable, view.variable_names()))
    return predictors


def sub_matrix(matrix: Sequence[Sequence[Fraction]], keep: Sequence[int]) -> Matrix:
    return [[matrix[i][j] for j in keep] for i in keep]


def present_terms(terms: Sequence[Term], gram: Sequence[Sequence[Fraction]]) -> list[int]:
    """Indices of the terms to keep: indicators of levels absent from the rows (zero on the
    diagonal of the Gram matrix) are dropped, and where a variable's reference level is
    absent its first present level becomes the reference (patsy's coding of the pooled
    rows). ``gram[0]`` is the intercept row, so ``gram[0][k]`` counts the rows of level k."""
    n = gram[0][0]
    keep = [k for k in range(len(terms)) if "level" not in terms[k]]
    variables = dict.fromkeys(t["var"] for t in terms if "level" in t)
    for variable in variables:
        own = [k for k, t in enumerate(terms) if t.get("var") == variable and "level" in t]
        present = [k for k in own if gram[k][k] != 0]
        if present and sum(gram[0][k] for k in present) == n:
            present = present[1:]  # the reference level has no rows
        if not present:
            raise DegenerateInput(f"{variable!r} takes a single level in the selected rows: "
                                  "it is constant")
        keep.extend(present)
    return sorted(keep)


def check_rank(gram: Sequence[Sequence[Fraction]], labels: Sequence[str],
               what: str = "", floors: Sequence[Fraction] | None = None) -> None:
    """Raise DegenerateInput if a column is constant or collinear with the earlier ones.

    Symmetric elimination in term order, in exact arithmetic: the k-th pivot over the k-th
    column's sum of squares is ``1 - R^2`` of column k on the columns before it, which a
    constant column (after the intercept) or a linear combination brings to the rounding
    level of the nodes' float64 sums. ``floors`` are the sums of squares the nodes
    rounded against (about the centres they used, :meth:`Statistic.about_centre`; the
    diagonal where nothing was centred), so the test does not depend on the data's
    location."""
    p = len(gram)
    work = [list(row) for row in gram]
    for k in range(p):
        diagonal = gram[k][k]
        if diagonal == 0:
            raise DegenerateInput(f"{labels[k]} is zero on every row{what}")
        pivot = work[k][k]
        floor = diagonal if floors is None else floors[k]
        if pivot <= 0 or pivot / floor < RANK_TOL:
            earlier = "the intercept" if k == 1 else "the earlier columns"
            raise DegenerateInput(f"{labels[k]} is constant or a linear combination of "
                                  f"{earlier}{what}: the design is singular")
        for i in range(k + 1, p):
            if work[i][k] != 0:
                factor = work[i][k] / pivot
                for j in range(k + 1, p):
                    work[i][j] -= factor * work[k][j]


def diag_float(matrix: Matrix, scale: Fraction = Fraction(1)) -> np.ndarray:
    return np.array([float(matrix[i][i] * scale) for i in range(len(matrix))])


def covariance_frame(inverse: Matrix, scale: Fraction, labels: Sequence[str]) -> pd.DataFrame:
    values = np.array([[float(v * scale) for v in row] for row in inverse])
    return pd.DataFrame(values, index=list(labels), columns=list(labels))


def interval(params: pd.Series, bse: pd.Series, quantile: float) -> pd.DataFrame:
    """statsmodels' ``conf_int()`` shape: columns 0 (lower) and 1 (upper)."""
    return pd.DataFrame({0: params - quantile * bse, 1: params + quantile * bse})


def check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise QueryError("alpha must be between 0 and 1")


@dataclass(frozen=True)
class OLSFit:
    """Exact OLS from a cross-product matrix: what both the plain fit and CV folds need."""

    n: int
    beta: list[Fraction]
    inverse: Matrix  # (X'X)^-1
    ssr: Fraction
    centered_tss: Fraction


def ols_fit(cross: Sequence[Sequence[Fraction]], n: int, labels: Sequence[str],
            what: str = "", floors: Sequence[Fraction] | None = None) -> OLSFit:
    """OLS from the exact cross-products of ``[Intercept, predictors..., y]`` (y last);
    ``floors`` as for :func:`check_rank`, one per column."""
    p = len(cross) - 1
    if n == 0:
        raise DegenerateInput(f"no complete rows{what}: every row misses a variable or is "
                              "filtered out")
    if n <= p:
        raise DegenerateInput(f"{n} rows for {p} coefficients{what}: no residual degrees "
                              "of freedom")
    xx = sub_matrix(cross, range(p))
    xy = [cross[i][p] for i in range(p)]
    yy = cross[p][p]
    check_rank(xx, labels, what, None if floors is None else floors[:p])
    inverse = exact_inverse(xx)
    beta = [sum((a * b for a, b in zip(row, xy, strict=True)), Fraction(0)) for row in inverse]
    ssr = yy - sum((b * c for b, c in zip(beta, xy, strict=True)), Fraction(0))
    centered_tss = yy - xy[0] * xy[0] / n  # xy[0] is the sum of y (the intercept column)
    if centered_tss <= 0 or centered_tss / (yy if floors is None else floors[p]) < RANK_TOL:
        raise DegenerateInput(f"the outcome is constant{what}")
    if ssr <= 0 or ssr / centered_tss < RANK_TOL:
        raise DegenerateInput(f"the predictors fit the outcome exactly (R^2 = 1){what}")
    return OLSFit(n, beta, inverse, ssr, centered_tss)


def linear_terms(fed: Analyses, y: str, x: Sequence[str] | str, data_model: str | None
                 ) -> tuple[list[Term], list[str]]:
    """The design ``[Intercept, predictors..., y]`` (y last) for the crossprod kind, and the
    variables it reads."""
    view = PlanModel(fed.model(data_model))
    predictors = check_inputs(view, y, x)
    if not view.is_numeric(y):
        raise QueryError(f"{y!r} is categorical; linear regression needs a numeric outcome")
    return predictor_terms(predictors, view) + [{"var": y}], [y, *predictors]
