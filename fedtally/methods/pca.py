"""Principal component analysis from one secure cross-product (the scatter matrix of
:mod:`fedtally.methods.scatter`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.common import INTERCEPT
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.scatter import (
    Scatter,
    check_noisy_variances,
    correlation_jacobian,
    correlation_matrix,
    numeric_variables,
    query_scatter,
    scatter_jacobian,
)
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel


@dataclass(frozen=True)
class PCAResult:
    """Principal components of the complete rows.

    ``eigenvalues``: variance along each component, largest first (Series indexed
    ``PC1..PCp``); ``eigenvectors``: unit loadings, one column per component, indexed by
    variable (``eigenvectors.T`` is scikit-learn's ``components_``); each column's
    largest-magnitude loading is positive (scikit-learn's sign rule, so the signs depend
    only on the matrix); ``explained_variance_ratio``; ``means`` and ``stds`` (ddof=1) of
    the complete rows; ``nobs``; ``standardize``.

    With DP: everything comes from the noisy matrix (``nobs`` is the noisy row count);
    ``noise_std`` is the noise standard deviation of each eigenvalue (None in exact mode)."""

    eigenvalues: pd.Series
    eigenvectors: pd.DataFrame
    explained_variance_ratio: pd.Series
    means: pd.Series
    stds: pd.Series
    nobs: int | float
    standardize: bool
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    federation: dict[str, int] = field(default_factory=dict)
    noise_std: pd.Series | None = None

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


@catalog_method(kinds=("crossprod",))
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

    With ``privacy=fedtally.DP(...)`` (clipping bounds as for :func:`pearson_correlation`)
    the matrix is built from the noisy cross-products (the "Analyze Gauss" approach of
    Dwork et al. 2014, here with distributed discrete Gaussian noise) and decomposed as is;
    negative eigenvalues the noise may create are set to 0. ``noise_std`` gives each
    eigenvalue's noise standard deviation by first-order perturbation
    (``d lambda_k = v_k' dM v_k``) and the delta method: accurate for well-separated
    eigenvalues; eigenvectors carry noise too, not quantified here.
    """
    privacy_spec(privacy)  # a malformed request fails here, before any work
    view = PlanModel(Analyses.model(fed, data_model))  # SimulatedFederation shadows .model
    names = numeric_variables(variables, view, "pca")
    s = query_scatter(fed, "pca", names, datasets=datasets, filters=filters, data_model=data_model,
                      privacy=privacy)
    if s.noisy:
        check_noisy_variances(s, "pca")
    p = len(names)
    if standardize:
        matrix = correlation_matrix(s, "standardization")
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
    noise_std = None
    if s.noisy:
        noise_std = pd.Series(_eigenvalue_noise(s, vectors, standardize), index=components,
                              name="noise_std")
    return PCAResult(
        eigenvalues=pd.Series(values, index=components, name="eigenvalue"),
        eigenvectors=pd.DataFrame(vectors, index=list(names), columns=components),
        explained_variance_ratio=pd.Series(ratio, index=components,
                                           name="explained_variance_ratio"),
        means=pd.Series(means, index=list(names), name="mean"),
        stds=pd.Series(stds, index=list(names), name="std"),
        nobs=float(s.n) if s.noisy else s.n, standardize=bool(standardize),
        privacy=s.privacy, federation=s.federation, noise_std=noise_std)


def _eigenvalue_noise(s: Scatter, vectors: np.ndarray, standardize: bool) -> np.ndarray:
    """Delta-method noise std of each eigenvalue of the decomposed matrix M (correlation,
    or covariance S / (n - 1)): ``d lambda_k / d total_t = v_k' (dM / d total_t) v_k``."""
    jac = scatter_jacobian(s)
    if standardize:
        matrix_jac = correlation_jacobian(s, jac)
    else:
        n = float(s.n)
        scatter = np.array([[float(v) for v in row] for row in s.scatter])
        matrix_jac = jac / (n - 1)
        matrix_jac[:, :, 0] -= scatter / (n - 1) ** 2  # n's noise also moves the divisor
    gradients = np.einsum("ik,ijt,jk->kt", vectors, matrix_jac, vectors)
    assert s.noise_var is not None
    return np.asarray(np.sqrt((gradients * gradients) @ s.noise_var))


TRANSFORMATIONS = ("log", "exp", "center", "standardize")


def _pca_output(result: PCAResult) -> dict[str, Any]:
    """Exareme2's PCAResult: components as rows of ``eigenvectors`` (signs are arbitrary
    in Exareme2; ours follow scikit-learn's rule)."""
    return {"title": "Eigenvalues and Eigenvectors", "n_obs": result.nobs,
            "eigenvalues": exareme2.numbers(result.eigenvalues.to_numpy()),
            "eigenvectors": [exareme2.numbers(row) for row in result.eigenvectors.T.to_numpy()]}


@handles("pca", method="pca")
def _pca(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    return _pca_output(pca(fed, req.y, standardize=True, **exareme2.query_scope(req)))


def _transforms(req: exareme2.Request) -> dict[str, str]:
    """Variable -> "log" / "exp" from ``data_transformation``. Centering and standardizing
    are accepted and have no effect: Exareme2's PCA standardizes every column anyway."""
    spec = req.parameters.get("data_transformation") or {}
    if not isinstance(spec, dict) or set(spec) - set(TRANSFORMATIONS):
        raise QueryError(f"data_transformation maps {', '.join(TRANSFORMATIONS)} to variables")
    chosen: dict[str, str] = {}
    for kind in ("log", "exp"):
        for variable in spec.get(kind) or []:
            if variable not in req.y:
                raise QueryError(f"{kind} names {variable!r}, which is not among y")
            if variable in chosen:
                raise QueryError(f"{variable!r} is both log- and exp-transformed")
            chosen[variable] = kind
    for kind in ("center", "standardize"):
        for variable in spec.get(kind) or []:
            if variable not in req.y:
                raise QueryError(f"{kind} names {variable!r}, which is not among y")
    return chosen


@handles("pca_with_transformation", method="pca")
def _pca_with_transformation(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """PCA of y after log / exp transforms, which the nodes apply (design terms). A log of
    a non-positive value is refused by the node holding it."""
    transforms = _transforms(req)
    if not transforms:
        return _pca(fed, req)
    return _pca_output(_transformed_pca(fed, req, transforms))


def _transformed_pca(fed: Analyses, req: exareme2.Request, transforms: dict[str, str]) -> PCAResult:
    """:func:`pca` on transformed columns. That function
    takes plain variable names; until it takes design terms, this repeats its last steps
    on the cross-products of ``[Intercept, transformed y...]``."""
    view = exareme2.plan_view(fed, req)
    names = tuple(req.y)
    for name in names:
        if not view.has_variable(name) or not view.is_numeric(name):
            raise QueryError(f"pca needs known numeric variables; {name!r} is not one")
    terms = [INTERCEPT] + [{"var": v, "transform": transforms[v]} if v in transforms
                           else {"var": v} for v in names]
    stat = fed.statistic("pca", variables=names, kind="crossprod", parameters={"terms": terms},
                         **exareme2.query_scope(req))
    n = stat.count(("n", None))
    if n < 2:
        raise DegenerateInput(f"pca needs at least 2 complete rows; {n} remain")
    p = len(names)
    xx = [[stat.exact(("xx", None, min(i, j), max(i, j))) for j in range(p + 1)]
          for i in range(p + 1)]
    sums = [xx[0][i + 1] for i in range(p)]
    scatter = [[xx[i + 1][j + 1] - sums[i] * sums[j] / n for j in range(p)] for i in range(p)]
    matrix = correlation_matrix(Scatter(variables=names, n=n, sums=sums, scatter=scatter,
                                        federation=stat.federation), "standardization")
    values, vectors = np.linalg.eigh(matrix)
    order = np.argsort(values)[::-1]
    values = np.maximum(values[order], 0.0)
    vectors = _flip_signs(vectors[:, order])
    components = [f"PC{i + 1}" for i in range(p)]
    total = float(values.sum())
    labels = [f"{transforms[v]}({v})" if v in transforms else v for v in names]
    return PCAResult(
        eigenvalues=pd.Series(values, index=components),
        eigenvectors=pd.DataFrame(vectors, index=labels, columns=components),
        explained_variance_ratio=pd.Series(values / total if total > 0 else values,
                                           index=components),
        means=pd.Series([float(s / n) for s in sums], index=labels),
        stds=pd.Series([math.sqrt(max(float(scatter[i][i] / (n - 1)), 0.0))
                        for i in range(p)], index=labels),
        nobs=n, standardize=True, federation=stat.federation)
