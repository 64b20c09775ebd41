"""The centred scatter matrix of complete cases, from one secure cross-product: what Pearson
correlation and principal component analysis share.

Both need only the sums of the complete cases' cross-products: nodes return
``X'X`` for the design ``[Intercept, v_1, ..., v_p]`` (so ``n``, the sums and the sums of
products), and the centred scatter matrix follows exactly, in rational arithmetic:

    S_ij = sum(v_i v_j) - sum(v_i) sum(v_j) / n

Complete cases over *all* the variables are used (a row missing any of them is left out),
as Exareme2 does and as ``DataFrame.dropna()`` followed by scipy / scikit-learn would.
The totals are exact sums of the nodes' float64 sums; because the sums are not centred
before they are added, precision degrades like ``(mean / sd)^2`` for variables far from
zero (harmless on well-scaled data: relative 1e-9 needs ``mean / sd`` below ~1e3).

**Differential privacy** (``privacy=fedtally.DP(...)``, clipping bounds from the data model
or ``DP(bounds=...)``): every total of ``X'X`` is released with its own independent noise,
and everything here is post-processing of those noisy totals. ``n`` is the
inverse-variance average of its two noisy copies (the ``n`` slot and the intercept's
``X'X`` entry). The noise standard deviation of a derived number is given by the delta
method: its gradient with respect to the released totals (:func:`_scatter_jacobian`)
against the noise variance of each total (a first-order approximation, accurate while the
noise is small next to the centred scatter).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import INTERCEPT, triangle
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.suggest import unknown

TOO_NOISY = ("the noisy count is too small for this privacy level: ask with a larger epsilon "
             "or a coarser query")


@dataclass(frozen=True)
class Scatter:
    """Exact complete-case totals: ``n``, the sums and the centred scatter matrix (with DP,
    computed exactly from the noisy released totals; ``n`` is then a Fraction)."""

    variables: tuple[str, ...]
    n: int | Fraction
    sums: list[Fraction]
    scatter: list[list[Fraction]]
    federation: dict[str, int]
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    #: DP only: the noise variance of each released total, in the order of
    #: :func:`scatter_jacobian` (n, the sums, the upper triangle of the cross-products)
    noise_var: np.ndarray | None = None

    @property
    def noisy(self) -> bool:
        return self.noise_var is not None


def numeric_variables(variables: Sequence[str] | str, view: PlanModel, what: str
                      ) -> tuple[str, ...]:
    if isinstance(variables, str):
        variables = [variables]
    names = tuple(variables)
    if not names:
        raise QueryError(f"{what} needs at least one variable")
    if len(set(names)) != len(names):
        raise QueryError(f"{what}: a variable is named twice in {list(names)}")
    for name in names:
        if not view.has_variable(name):
            raise QueryError(unknown("variable", name, view.variable_names()))
        if not view.is_numeric(name):
            raise QueryError(f"{what} needs numeric variables; {name!r} is categorical")
    return names


def query_scatter(fed: Analyses, algorithm: str, variables: tuple[str, ...], *,
                  datasets: Sequence[str] | None, filters: FilterLike,
                  data_model: str | None, privacy: Any = None) -> Scatter:
    terms = [INTERCEPT] + [{"var": v} for v in variables]
    stat = fed.statistic(algorithm, variables=variables, datasets=datasets, filters=filters,
                         data_model=data_model, kind="crossprod", parameters={"terms": terms},
                         privacy=privacy)
    if stat.layout.noise is not None:
        return _noisy_scatter(stat, algorithm, variables)
    n = stat.count(("n", None))
    federation = stat.federation
    if n < 2:
        raise DegenerateInput(
            f"{algorithm} needs at least 2 complete rows; {n} remain after the filter "
            f"(nodes contributing: {federation['nodes_contributing']} of "
            f"{federation['nodes_asked']}: a node whose cohort is below its minimum adds "
            "nothing)")
    xx = triangle(stat, ("xx", None), len(terms))
    sums = [xx[0][i + 1] for i in range(len(variables))]
    scatter = [[xx[i + 1][j + 1] - sums[i] * sums[j] / n for j in range(len(variables))]
               for i in range(len(variables))]
    return Scatter(variables, n, sums, scatter, federation)


def _noisy_scatter(stat: Statistic, algorithm: str, variables: tuple[str, ...]) -> Scatter:
    """The scatter from noisy totals, and the noise variance of each total used."""
    p = len(variables)
    xx = triangle(stat, ("xx", None), p + 1)
    # two independent noisy releases of n: their inverse-variance average is the better
    # estimate (post-processing, so free in privacy)
    first, second = stat.exact(("n", None)), xx[0][0]
    v1, v2 = stat.noise_std(("n", None)) ** 2, stat.noise_std(("xx", None, 0, 0)) ** 2
    weight = Fraction(v2) / (Fraction(v1) + Fraction(v2))
    n = weight * first + (1 - weight) * second
    if n < 2:
        raise DegenerateInput(f"{algorithm}: {TOO_NOISY} (noisy number of complete rows: "
                              f"{float(n):.3g})")
    sums = [xx[0][i + 1] for i in range(p)]
    scatter = [[xx[i + 1][j + 1] - sums[i] * sums[j] / n for j in range(p)] for i in range(p)]
    variance = [v1 * v2 / (v1 + v2)]
    variance += [stat.noise_std(("xx", None, 0, i + 1)) ** 2 for i in range(p)]
    variance += [stat.noise_std(("xx", None, i + 1, j + 1)) ** 2 for i, j in _upper(p)]
    return Scatter(variables, n, sums, scatter, stat.federation, stat.privacy,
                   np.array(variance, dtype=np.float64))


def _upper(p: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(p) for j in range(i, p)]


def scatter_jacobian(s: Scatter) -> np.ndarray:
    """``J[i, j, t] = d S_ij / d total_t`` at the released totals, the totals being
    ``(n, sum_1..sum_p, Q_11, Q_12, ..., Q_pp)`` with ``S_ij = Q_ij - sum_i sum_j / n``."""
    p = len(s.variables)
    n = float(s.n)
    sums = np.array([float(v) for v in s.sums])
    jac = np.zeros((p, p, 1 + p + p * (p + 1) // 2))
    jac[:, :, 0] = np.outer(sums, sums) / (n * n)
    for k in range(p):
        jac[k, :, 1 + k] -= sums / n
        jac[:, k, 1 + k] -= sums / n
    for t, (i, j) in enumerate(_upper(p), start=1 + p):
        jac[i, j, t] = jac[j, i, t] = 1.0
    return jac


def correlation_jacobian(s: Scatter, jac: np.ndarray, *, null: bool = False
                         ) -> np.ndarray:
    """``d r_ij / d total_t`` from the scatter's Jacobian; ``null`` evaluates it at r = 0
    (the noise of r under the hypothesis of no correlation, for the p-values)."""
    p = len(s.variables)
    diag = np.array([float(s.scatter[i][i]) for i in range(p)])
    scale = 1 / np.sqrt(np.outer(diag, diag))
    out = jac * scale[:, :, None]
    if not null:
        # r is evaluated unclamped here: the gradient of the smooth function at the release
        raw = np.array([[float(v) for v in row] for row in s.scatter]) * scale
        relative = jac[np.arange(p), np.arange(p), :] / diag[:, None]  # d S_ii / S_ii
        out -= 0.5 * raw[:, :, None] * (relative[:, None, :] + relative[None, :, :])
    out[np.arange(p), np.arange(p), :] = 0.0  # r_ii = 1 whatever the noise
    return out


def noise_variance(jac: np.ndarray, s: Scatter) -> np.ndarray:
    """Delta-method noise variance of each entry whose gradient is ``jac[..., t]``: the
    totals' noises are independent."""
    assert s.noise_var is not None
    return np.asarray((jac * jac) @ s.noise_var)


def check_noisy_variances(s: Scatter, what: str) -> None:
    """With DP a column's noisy centred sum of squares can reach 0 or below: then no
    correlation or scale is defined, and the noise, not the data, is why."""
    low = [v for i, v in enumerate(s.variables) if s.scatter[i][i] <= 0]
    if low:
        raise DegenerateInput(f"{what}: the noisy variance of {low} is not positive: the "
                              "noise is too large for this privacy level; ask with a larger "
                              "epsilon, over more rows, or with tighter bounds")


def correlation_matrix(s: Scatter, what: str) -> np.ndarray:
    """The correlation matrix, each entry rounded once from its exact square (so within
    about one ulp of the exact value of the totals)."""
    p = len(s.variables)
    constant = [v for i, v in enumerate(s.variables) if s.scatter[i][i] <= 0]
    if constant:
        raise DegenerateInput(f"{what} is undefined for a constant column: {constant} "
                              "take a single value over the complete rows")
    r = np.eye(p)
    for i in range(p):
        for j in range(i + 1, p):
            sxy = s.scatter[i][j]
            squared = min(float(sxy * sxy / (s.scatter[i][i] * s.scatter[j][j])), 1.0)
            r[i, j] = r[j, i] = math.copysign(math.sqrt(squared), sxy) if sxy else 0.0
    return r
