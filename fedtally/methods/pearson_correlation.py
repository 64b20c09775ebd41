"""Pearson correlation from one secure cross-product (the scatter matrix of
:mod:`fedtally.methods.scatter`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.dp import privacy_spec
from fedtally.methods.registry import catalog_method, handles
from fedtally.methods.scatter import (
    check_noisy_variances,
    correlation_jacobian,
    correlation_matrix,
    noise_variance,
    numeric_variables,
    query_scatter,
    scatter_jacobian,
)
from protocol.errors import QueryError
from stats.datamodel import PlanModel

ALTERNATIVES = ("two-sided", "less", "greater")


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
    columns = numeric_variables(variables, view, "pearson_correlation")
    rows = columns if x is None else numeric_variables(x, view, "pearson_correlation")
    union = tuple(dict.fromkeys(columns + rows))
    s = query_scatter(fed, "pearson_correlation", union, datasets=datasets, filters=filters,
                      data_model=data_model, privacy=privacy)
    if s.noisy:
        check_noisy_variances(s, "pearson_correlation")
    full = correlation_matrix(s, "the correlation")
    at = {v: i for i, v in enumerate(union)}
    cells = np.ix_([at[v] for v in rows], [at[v] for v in columns])
    block = full[cells]

    def frame(values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=list(rows), columns=list(columns))

    if not s.noisy:
        r, pvalues, low, high = _pearson_tests(block, int(s.n), float(alpha), alternative)
        return PearsonResult(frame(r), frame(pvalues), frame(low), frame(high), s.n,
                             float(alpha), alternative, s.privacy, s.federation)
    jac = scatter_jacobian(s)
    noise_var = noise_variance(correlation_jacobian(s, jac), s)[cells]
    null_var = noise_variance(correlation_jacobian(s, jac, null=True), s)[cells]
    diagonal = np.array([[a == b for b in columns] for a in rows], dtype=bool)
    pvalues, low, high = _pearson_tests_dp(block, float(s.n), float(alpha), alternative,
                                           noise_var, null_var, diagonal)
    assert s.noise_var is not None
    return PearsonResult(frame(block), frame(pvalues), frame(low), frame(high), float(s.n),
                         float(alpha), alternative, s.privacy, s.federation,
                         noise_std=frame(np.sqrt(noise_var)),
                         nobs_noise_std=math.sqrt(float(s.noise_var[0])))


def _by_column(frame: pd.DataFrame) -> dict[str, Any]:
    """Exareme2's matrix layout: ``variables`` names the rows, then one list per column."""
    return {"variables": list(frame.index),
            **{str(c): exareme2.numbers(frame[c].to_numpy()) for c in frame.columns}}


@handles("pearson_correlation", method="pearson_correlation")
def _pearson_correlation(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Rows are x (y when x is empty), columns y. Exareme2's ``alpha`` (default 0.95) has
    the meaning of ours: intervals at confidence ``1 - alpha``."""
    result = pearson_correlation(fed, req.y, exareme2.real(req, "alpha", 0.95), x=req.x or None,
                                 **exareme2.query_scope(req))
    return {"title": "Pearson Correlation Coefficient", "n_obs": result.nobs,
            "correlations": _by_column(result.r), "p_values": _by_column(result.pvalues),
            "ci_hi": _by_column(result.ci_high), "ci_lo": _by_column(result.ci_low)}
