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
import pandas as pd
from scipy import special

from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.common import INTERCEPT, triangle
from fedtally.methods.registry import catalog_method
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import PlanModel
from stats.suggest import unknown

__all__ = ["PCAResult", "PearsonResult", "pca", "pearson_correlation"]

ALTERNATIVES = ("two-sided", "less", "greater")
TOO_NOISY = ("the noisy count is too small for this privacy level: ask with a larger epsilon "
             "or a coarser query")


# --- the shared cross-product round --------------------------------------------------------


@dataclass(frozen=True)
class _Scatter:
    """Exact complete-case totals: ``n``, the sums and the centred scatter matrix (with DP,
    computed exactly from the noisy released totals; ``n`` is then a Fraction)."""

    variables: tuple[str, ...]
    n: int | Fraction
    sums: list[Fraction]
    scatter: list[list[Fraction]]
    federation: dict[str, int]
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    #: DP only: the noise variance of each released total, in the order of
    #: :func:`_scatter_jacobian` (n, the sums, the upper triangle of the cross-products)
    noise_var: np.ndarray | None = None

    @property
    def noisy(self) -> bool:
        return self.noise_var is not None


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
            raise QueryError(unknown("variable", name, view.variable_names()))
        if not view.is_numeric(name):
            raise QueryError(f"{what} needs numeric variables; {name!r} is categorical")
    return names


def _scatter(fed: Analyses, algorithm: str, variables: tuple[str, ...], *,
             datasets: Sequence[str] | None, filters: FilterLike,
             data_model: str | None, privacy: Any = None) -> _Scatter:
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
    return _Scatter(variables, n, sums, scatter, federation)


def _noisy_scatter(stat: Statistic, algorithm: str, variables: tuple[str, ...]) -> _Scatter:
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
    return _Scatter(variables, n, sums, scatter, stat.federation, stat.privacy,
                    np.array(variance, dtype=np.float64))


def _upper(p: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(p) for j in range(i, p)]


def _scatter_jacobian(s: _Scatter) -> np.ndarray:
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


def _correlation_jacobian(s: _Scatter, jac: np.ndarray, *, null: bool = False
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


def _noise_variance(jac: np.ndarray, s: _Scatter) -> np.ndarray:
    """Delta-method noise variance of each entry whose gradient is ``jac[..., t]``: the
    totals' noises are independent."""
    assert s.noise_var is not None
    return np.asarray((jac * jac) @ s.noise_var)


def _check_noisy_variances(s: _Scatter, what: str) -> None:
    """With DP a column's noisy centred sum of squares can reach 0 or below: then no
    correlation or scale is defined, and the noise, not the data, is why."""
    low = [v for i, v in enumerate(s.variables) if s.scatter[i][i] <= 0]
    if low:
        raise DegenerateInput(f"{what}: the noisy variance of {low} is not positive: the "
                              "noise is too large for this privacy level; ask with a larger "
                              "epsilon, over more rows, or with tighter bounds")


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
    confidence ``1 - alpha``); ``alternative`` the test's alternative hypothesis.

    With DP: ``nobs`` is the noisy (non-integer) number of rows, ``nobs_noise_std`` its
    noise, ``noise_std`` the noise standard deviation of each ``r`` (same layout as ``r``;
    None in exact mode), and ``privacy`` what was spent."""

    r: pd.DataFrame
    pvalues: pd.DataFrame
    ci_low: pd.DataFrame
    ci_high: pd.DataFrame
    nobs: int | float
    alpha: float
    alternative: str
    privacy: dict[str, Any] = field(default_factory=lambda: {"mode": "exact"})
    federation: dict[str, int] = field(default_factory=dict)
    noise_std: pd.DataFrame | None = None
    nobs_noise_std: float = 0.0


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


def _pearson_tests_dp(r: np.ndarray, n: float, alpha: float, alternative: str,
                      noise_var: np.ndarray, null_var: np.ndarray, diagonal: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """p-values and intervals of noisy correlations: normal approximations on Fisher's z
    scale with the noise variance added to the sampling variance ``1 / (n - 3)``.

    * interval: ``tanh(z -/+ h * se)``, ``se^2 = 1 / (n - 3) + var_noise(r) / (1 - r^2)^2``
      (the delta method carries the noise of r onto z = atanh r);
    * p-value: ``z / se0`` against the standard normal, ``se0^2 = 1 / (n - 3) + var0``
      with ``var0`` the noise variance of r evaluated at r = 0 (the null);
    * an off-diagonal r clamped to +-1 by the noise has no z: its interval is
      ``r -/+ h * noise_std`` on the r scale, clipped to [-1, 1];
    * fewer than 3 noisy rows: p-values 1 and intervals [-1, 1], as in exact mode."""
    confidence = 1 - alpha
    off = ~diagonal
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.arctanh(r)
        sampling = 1 / (n - 3) if n > 3 else math.inf
        se = np.sqrt(sampling + noise_var / (1 - r * r) ** 2)
        statistic = z / np.sqrt(sampling + null_var)
        one_sided = special.ndtri(confidence)
        if alternative == "two-sided":
            pvalues = 2 * special.ndtr(-np.abs(statistic))
            h = special.ndtri(0.5 + confidence / 2)
            low, high = np.tanh(z - h * se), np.tanh(z + h * se)
        elif alternative == "greater":
            pvalues = special.ndtr(-statistic)
            h = one_sided
            low, high = np.tanh(z - h * se), np.ones_like(r)
        else:
            pvalues = special.ndtr(statistic)
            h = one_sided
            low, high = -np.ones_like(r), np.tanh(z + h * se)
    edge = off & (np.abs(r) >= 1)
    half = h * np.sqrt(noise_var)
    if alternative != "less":
        low = np.where(edge, np.clip(r - half, -1, 1), low)
    if alternative != "greater":
        high = np.where(edge, np.clip(r + half, -1, 1), high)
    low = np.where(diagonal, r, low)
    high = np.where(diagonal, r, high)
    if n <= 3:
        pvalues = np.ones_like(r)
        low, high = -np.ones_like(r), np.ones_like(r)
    return pvalues, low, high


@catalog_method(kinds=("crossprod",))
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

    With ``privacy=fedtally.DP(...)`` (every variable needs clipping bounds: the data
    model's min/max or ``DP(bounds=...)``) ``r`` is computed from the noisy cross-products
    and clamped to [-1, 1] (post-processing); ``noise_std`` is its noise standard deviation
    by the delta method; intervals and p-values are normal approximations on Fisher's z
    scale with the noise variance added to the sampling variance (see
    :func:`_pearson_tests_dp`). A noisy variance or row count too small for the privacy
    level raises :class:`DegenerateInput`.
    """
    privacy_spec(privacy)  # a malformed request fails here, before any work
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise QueryError("alpha must be a number strictly between 0 and 1")
    if alternative not in ALTERNATIVES:
        raise QueryError(f"alternative must be one of {', '.join(ALTERNATIVES)}")
    view = PlanModel(Analyses.model(fed, data_model))  # SimulatedFederation shadows .model
    columns = _numeric_variables(variables, view, "pearson_correlation")
    rows = columns if x is None else _numeric_variables(x, view, "pearson_correlation")
    union = tuple(dict.fromkeys(columns + rows))
    s = _scatter(fed, "pearson_correlation", union, datasets=datasets, filters=filters,
                 data_model=data_model, privacy=privacy)
    if s.noisy:
        _check_noisy_variances(s, "pearson_correlation")
    full = _correlation(s, "the correlation")
    at = {v: i for i, v in enumerate(union)}
    cells = np.ix_([at[v] for v in rows], [at[v] for v in columns])
    block = full[cells]

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=list(rows), columns=list(columns))

    if not s.noisy:
        r, pvalues, low, high = _pearson_tests(block, int(s.n), float(alpha), alternative)
        return PearsonResult(frame(r), frame(pvalues), frame(low), frame(high), s.n,
                             float(alpha), alternative, s.privacy, s.federation)
    jac = _scatter_jacobian(s)
    noise_var = _noise_variance(_correlation_jacobian(s, jac), s)[cells]
    null_var = _noise_variance(_correlation_jacobian(s, jac, null=True), s)[cells]
    diagonal = np.array([[a == b for b in columns] for a in rows], dtype=bool)
    pvalues, low, high = _pearson_tests_dp(block, float(s.n), float(alpha), alternative,
                                           noise_var, null_var, diagonal)
    assert s.noise_var is not None
    return PearsonResult(frame(block), frame(pvalues), frame(low), frame(high), float(s.n),
                         float(alpha), alternative, s.privacy, s.federation,
                         noise_std=frame(np.sqrt(noise_var)),
                         nobs_noise_std=math.sqrt(float(s.noise_var[0])))


# --- principal components ----------------------------------------------------------------


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
    names = _numeric_variables(variables, view, "pca")
    s = _scatter(fed, "pca", names, datasets=datasets, filters=filters, data_model=data_model,
                 privacy=privacy)
    if s.noisy:
        _check_noisy_variances(s, "pca")
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


def _eigenvalue_noise(s: _Scatter, vectors: np.ndarray, standardize: bool) -> np.ndarray:
    """Delta-method noise std of each eigenvalue of the decomposed matrix M (correlation,
    or covariance S / (n - 1)): ``d lambda_k / d total_t = v_k' (dM / d total_t) v_k``."""
    jac = _scatter_jacobian(s)
    if standardize:
        matrix_jac = _correlation_jacobian(s, jac)
    else:
        n = float(s.n)
        scatter = np.array([[float(v) for v in row] for row in s.scatter])
        matrix_jac = jac / (n - 1)
        matrix_jac[:, :, 0] -= scatter / (n - 1) ** 2  # n's noise also moves the divisor
    gradients = np.einsum("ik,ijt,jk->kt", vectors, matrix_jac, vectors)
    assert s.noise_var is not None
    return np.asarray(np.sqrt((gradients * gradients) @ s.noise_var))
