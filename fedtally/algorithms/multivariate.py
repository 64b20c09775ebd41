"""Pearson correlation and principal component analysis from one secure cross-product.

Both need only the sums of the complete cases' cross-products: nodes return
``X'X`` for the design ``[Intercept, v_1, ..., v_p]`` (so ``n``, the sums and the sums of
products), and the centred scatter matrix follows exactly, in rational arithmetic:

    S_ij = sum(v_i v_j) - sum(v_i) sum(v_j) / n

Complete cases over *all* the variables are used (a row missing any of them is left out),
as Exareme2 does and as ``DataFrame.dropna()`` followed by scipy / scikit-learn would.
The totals are exact sums of the nodes' float64 sums; because the sums are not centred
before they are added, precision degrades like ``(mean / sd)^2`` for variables far from
zero (harmless on well-scaled data: relative 1e-9 needs ``mean / sd`` below ~1e3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from engine.errors import DegenerateInput, QueryError
from fedtally.algorithms.common import INTERCEPT, check_privacy, triangle
from fedtally.analyses import Analyses, FilterLike
from node.kinds import PlanModel

__all__ = ["PCAResult", "PearsonResult", "pca", "pearson_correlation"]

ALTERNATIVES = ("two-sided", "less", "greater")


# --- the shared cross-product round --------------------------------------------------------


@dataclass(frozen=True)
class _Scatter:
    """Exact complete-case totals: ``n``, the sums and the centred scatter matrix."""

    variables: tuple[str, ...]
    n: int
    sums: list[Fraction]
    scatter: list[list[Fraction]]
    federation: dict[str, int]


def _numeric_variables(variables: Sequence[str] | str, view: PlanModel, what: str
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
            raise QueryError(f"unknown variable {name!r}")
        if not view.is_numeric(name):
            raise QueryError(f"{what} needs numeric variables; {name!r} is categorical")
    return names


def _scatter(fed: Analyses, algorithm: str, variables: tuple[str, ...], *,
             datasets: Sequence[str] | None, filters: FilterLike,
             data_model: str | None) -> _Scatter:
    terms = [INTERCEPT] + [{"var": v} for v in variables]
    stat = fed.statistic(algorithm, variables=variables, datasets=datasets, filters=filters,
                         data_model=data_model, kind="crossprod", parameters={"terms": terms})
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
    return _Scatter(variables, n, sums, scatter, federation)


def _correlation(s: _Scatter, what: str) -> np.ndarray:
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


# --- Pearson correlation ---------------------------------------------------------------


@dataclass(frozen=True)
class PearsonResult:
    """Pearson correlations with the tests and intervals of ``scipy.stats.pearsonr``.

    ``r``, ``pvalues``, ``ci_low``, ``ci_high`` are DataFrames indexed by the row variables
    (``x``, or the variables themselves) with one column per variable; ``nobs`` is the
    number of complete rows used; ``alpha`` the significance level (intervals have
    confidence ``1 - alpha``); ``alternative`` the test's alternative hypothesis."""

    r: pd.DataFrame
    pvalues: pd.DataFrame
    ci_low: pd.DataFrame
    ci_high: pd.DataFrame
    nobs: int
    alpha: float
    alternative: str
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    federation: dict[str, int] = field(default_factory=dict)


def _pearson_tests(r: np.ndarray, n: int, alpha: float, alternative: str
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """p-values and Fisher-z intervals exactly as ``scipy.stats.pearsonr`` computes them:
    under the null, ``r`` follows a beta(n/2 - 1, n/2 - 1) law on (-1, 1); the interval is
    ``tanh(atanh(r) -/+ z * se)`` with ``se = 1 / sqrt(n - 3)`` (Fisher 1921)."""
    ab = n / 2 - 1
    if n == 2:
        # scipy: with two points r is +-1 and the test carries no information
        r = np.round(r)
        pvalues = np.ones_like(r)
    elif alternative == "two-sided":
        pvalues = 2 * special.betaincc(ab, ab, (np.abs(r) + 1) / 2)
    elif alternative == "greater":
        pvalues = special.betaincc(ab, ab, (r + 1) / 2)
    else:
        pvalues = special.betainc(ab, ab, (r + 1) / 2)
    confidence = 1 - alpha
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.arctanh(r)
        se = math.sqrt(1 / (n - 3)) if n > 3 else math.inf
        if alternative == "two-sided":
            h = special.ndtri(0.5 + confidence / 2)
            low, high = np.tanh(z - h * se), np.tanh(z + h * se)
        elif alternative == "less":
            low, high = -np.ones_like(r), np.tanh(z + special.ndtri(confidence) * se)
        else:
            low, high = np.tanh(z - special.ndtri(confidence) * se), np.ones_like(r)
    if n <= 3:
        low, high = -np.ones_like(r), np.ones_like(r)
    # |r| = 1 (the diagonal): atanh is infinite and the interval collapses onto r
    return r, pvalues, low, high


def pearson_correlation(fed: Analyses, variables: Sequence[str], alpha: float = 0.05, *,
                        x: Sequence[str] | None = None, alternative: str = "two-sided",
                        datasets: Sequence[str] | None = None, filters: FilterLike = None,
                        data_model: str | None = None, privacy: Any = None) -> PearsonResult:
    """Pearson correlation of every pair of ``variables`` (or of each ``x`` with each of
    ``variables``: rows ``x``, columns ``variables``), over the rows where all of them are
    present, with scipy's p-values (``alternative`` as in ``scipy.stats.pearsonr``) and
    Fisher-z confidence intervals at level ``1 - alpha``.

    Equal to ``scipy.stats.pearsonr(a, b)`` (``.statistic``, ``.pvalue``,
    ``.confidence_interval(1 - alpha)``) on the pooled complete rows. Exareme2's
    ``alpha`` has the same meaning (its intervals are at ``1 - alpha``). A constant column
    or fewer than 2 complete rows raise :class:`DegenerateInput`.
    """
    mode = check_privacy(privacy)
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise QueryError("alpha must be a number strictly between 0 and 1")
    if alternative not in ALTERNATIVES:
        raise QueryError(f"alternative must be one of {', '.join(ALTERNATIVES)}")
    view = PlanModel(Analyses.model(fed, data_model))  # SimulatedFederation shadows .model
    columns = _numeric_variables(variables, view, "pearson_correlation")
    rows = columns if x is None else _numeric_variables(x, view, "pearson_correlation")
    union = tuple(dict.fromkeys(columns + rows))
    s = _scatter(fed, "pearson_correlation", union, datasets=datasets, filters=filters,
                 data_model=data_model)
    full = _correlation(s, "the correlation")
    at = {v: i for i, v in enumerate(union)}
    block = full[np.ix_([at[v] for v in rows], [at[v] for v in columns])]
    r, pvalues, low, high = _pearson_tests(block, s.n, float(alpha), alternative)

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=list(rows), columns=list(columns))

    return PearsonResult(frame(r), frame(pvalues), frame(low), frame(high), s.n, float(alpha),
                         alternative, mode, s.federation)


# --- principal components ----------------------------------------------------------------


@dataclass(frozen=True)
class PCAResult:
    """Principal components of the complete rows.

    ``eigenvalues``: variance along each component, largest first (Series indexed
    ``PC1..PCp``); ``eigenvectors``: unit loadings, one column per component, indexed by
    variable (``eigenvectors.T`` is scikit-learn's ``components_``); each column's
    largest-magnitude loading is positive (scikit-learn's sign rule, so the signs depend
    only on the matrix); ``explained_variance_ratio``; ``means`` and ``stds`` (ddof=1) of
    the complete rows; ``nobs``; ``standardize``."""

    eigenvalues: pd.Series
    eigenvectors: pd.DataFrame
    explained_variance_ratio: pd.Series
    means: pd.Series
    stds: pd.Series
    nobs: int
    standardize: bool
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    federation: dict[str, int] = field(default_factory=dict)

    def transform(self, data: pd.DataFrame) -> pd.DataFrame:
        """Component scores of local rows (centred, scaled if ``standardize``, projected);
        rows missing a variable get NaN scores."""
        values = data[list(self.eigenvectors.index)].astype(float) - self.means
        if self.standardize:
            values = values / self.stds
        return values @ self.eigenvectors


def _flip_signs(vectors: np.ndarray) -> np.ndarray:
    """Make each column's largest-magnitude entry positive (the first one on ties), as
    ``sklearn.utils.extmath.svd_flip(u_based_decision=False)`` does for ``components_``."""
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1
    return vectors * signs


def pca(fed: Analyses, variables: Sequence[str], standardize: bool = True, *,
        datasets: Sequence[str] | None = None, filters: FilterLike = None,
        data_model: str | None = None, privacy: Any = None) -> PCAResult:
    """Principal component analysis of ``variables`` over the rows where all are present.

    With ``standardize`` (the default, as Exareme2) the components are those of the
    correlation matrix: ``sklearn.decomposition.PCA`` fitted on
    ``(X - X.mean()) / X.std(ddof=1)`` gives the same ``explained_variance_`` and, up to
    sign, ``components_`` (after ``StandardScaler``, which divides by the ddof=0 standard
    deviation, scikit-learn's eigenvalues are ``n / (n - 1)`` times these). Without it, the
    components of the covariance matrix (divisor ``n - 1``), i.e. ``PCA().fit(X)``.
    Fewer than 2 complete rows, or a constant column when standardizing, raise
    :class:`DegenerateInput`.
    """
    mode = check_privacy(privacy)
    view = PlanModel(Analyses.model(fed, data_model))  # SimulatedFederation shadows .model
    names = _numeric_variables(variables, view, "pca")
    s = _scatter(fed, "pca", names, datasets=datasets, filters=filters, data_model=data_model)
    p = len(names)
    if standardize:
        matrix = _correlation(s, "standardization")
    else:
        matrix = np.array([[float(s.scatter[i][j] / (s.n - 1)) for j in range(p)]
                           for i in range(p)])
    values, vectors = np.linalg.eigh(matrix)
    order = np.argsort(values)[::-1]
    values = np.maximum(values[order], 0.0)  # rounding can leave -1e-17 for a null direction
    vectors = _flip_signs(vectors[:, order])
    components = [f"PC{i + 1}" for i in range(p)]
    total = float(values.sum())
    ratio = values / total if total > 0 else np.zeros_like(values)
    means = [float(v / s.n) for v in s.sums]
    stds = [math.sqrt(max(float(s.scatter[i][i] / (s.n - 1)), 0.0)) for i in range(p)]
    return PCAResult(
        eigenvalues=pd.Series(values, index=components, name="eigenvalue"),
        eigenvectors=pd.DataFrame(vectors, index=list(names), columns=components),
        explained_variance_ratio=pd.Series(ratio, index=components,
                                           name="explained_variance_ratio"),
        means=pd.Series(means, index=list(names), name="mean"),
        stds=pd.Series(stds, index=list(names), name="std"),
        nobs=s.n, standardize=bool(standardize), privacy=mode, federation=s.federation)
