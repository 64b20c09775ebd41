"""Pearson's chi-square test of independence (scipy.stats.chi2_contingency) on a table of
secure sums of counts (:mod:`fedtally.methods.tables`), computed from the exact counts in
rational arithmetic.

**Differential privacy**: the statistic is Pearson's on the noisy table; its p-value is a
parametric bootstrap that simulates the noise too (see :func:`chi_square`);
``pvalue_asymptotic`` is the chi-square distribution's, which ignores the noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import no_rows
from fedtally.methods.registry import catalog_method
from fedtally.methods.sums import NOISE_MARGIN, TOO_NOISY
from fedtally.methods.tables import ContingencyTable, two_way_table
from protocol.errors import DegenerateInput

#: simulations behind a DP chi-square p-value: its Monte Carlo error is at most 0.005
CHI_SQUARE_SIMULATIONS = 10_000


@dataclass(frozen=True)
class ChiSquareResult:
    """Pearson's chi-square test of independence (scipy.stats.chi2_contingency)."""

    #: chi-square statistic (with Yates' correction when ``correction`` is True)
    statistic: float
    #: p-value; under DP, a parametric bootstrap that simulates the noise too
    pvalue: float
    #: degrees of freedom: (rows - 1) (columns - 1) of the tested table
    dof: int
    #: expected counts under independence (DataFrame shaped as ``observed``)
    expected: pd.DataFrame
    #: the counts tested: the table without its all-zero rows and columns
    observed: pd.DataFrame
    #: whether Yates' continuity correction was applied (only ever for dof = 1)
    correction: bool
    #: rows in the tested table
    nobs: int
    #: levels left out because no row has them (all-zero rows / columns of the table)
    dropped_rows: tuple[str, ...]
    dropped_cols: tuple[str, ...]
    #: local cells that nodes zeroed as too small (the test is on the released counts)
    cells_below_threshold: int
    privacy: dict[str, Any]
    federation: dict[str, Any]
    #: standard deviation of the noise in each cell of ``observed`` (zeros when exact)
    noise_std: pd.DataFrame | None = None
    #: the chi-square distribution's p-value for ``statistic``; equals ``pvalue`` when
    #: exact, and under DP ignores the noise (so it is too small: anti-conservative)
    pvalue_asymptotic: float = math.nan
    #: how the p-value was obtained, under DP
    note: str = ""


@catalog_method(kinds=("counts",))
def chi_square(fed: Analyses, row: str, col: str, correction: bool = True, *,
               datasets: Sequence[str] | None = None, filters: FilterLike = None,
               data_model: str | None = None, privacy: Any = None) -> ChiSquareResult:
    """Chi-square test of independence of two categorical variables.

    Levels with no rows (all-zero rows or columns: levels absent from the data, or only in
    suppressed cells) are dropped first, as their expected counts would be zero. Yates'
    continuity correction follows scipy's default: ``correction=True`` applies it, and only
    to a table with one degree of freedom (2 x 2), moving each observed count half a unit
    (at most) toward its expected count.

    With ``privacy=fedtally.DP(...)`` the test runs on the noisy table (post-processing):

    * levels whose noisy total is not above 3 noise standard deviations (of that total) are
      dropped, as they cannot be told from empty ones and a near-zero expected count would
      dominate the statistic; ``observed`` holds the noisy counts tested (possibly
      negative), ``noise_std`` their noise and ``nobs`` their rounded total;
    * ``statistic`` is Pearson's, without Yates' correction (it corrects for discrete
      counts; noisy counts are continuous), so ``correction`` is False;
    * ``pvalue`` is noise-aware: a parametric bootstrap (as Gaboardi et al. 2016, "Differentially
      private chi-squared hypothesis testing") that draws tables under independence from
      the noisy margins (multinomial), adds Gaussian noise of the released standard
      deviations and recomputes the statistic, ``CHI_SQUARE_SIMULATIONS`` times (Monte
      Carlo error at most 0.005); ``pvalue_asymptotic`` is chi2(dof)'s, which ignores
      the noise and is too small when the noise is not negligible. ``note`` says so."""
    table = two_way_table(fed, "chi_square", row, col, datasets=datasets, filters=filters,
                          data_model=data_model, privacy=privacy)
    if table.is_noisy:
        return _dp_chi_square(table, row, col)
    federation = table.federation
    counts = table.to_numpy(dtype=np.int64)
    keep_rows, keep_cols = counts.sum(axis=1) > 0, counts.sum(axis=0) > 0
    n = int(counts.sum())
    if n == 0:
        raise no_rows(federation, "the chi-square test")
    observed = pd.DataFrame(counts[keep_rows][:, keep_cols],
                            index=table.index[keep_rows], columns=table.columns[keep_cols])
    r, c = observed.shape
    if r < 2 or c < 2:
        raise DegenerateInput(f"the table of {row!r} by {col!r} has {r} non-empty row(s) and "
                              f"{c} non-empty column(s); the test needs at least 2 x 2")
    dof = (r - 1) * (c - 1)
    row_totals, col_totals = counts[keep_rows].sum(axis=1), counts[:, keep_cols].sum(axis=0)
    expected = [[Fraction(int(rt) * int(ct), n) for ct in col_totals] for rt in row_totals]
    apply_yates = bool(correction) and dof == 1
    statistic = Fraction(0)
    for i in range(r):
        for j in range(c):
            o, e = Fraction(int(observed.iat[i, j])), expected[i][j]
            if apply_yates:  # scipy: observed + min(0.5, |e - o|) * sign(e - o)
                o += min(Fraction(1, 2), abs(e - o)) * (1 if e > o else -1 if e < o else 0)
            statistic += (o - e) ** 2 / e
    value = float(statistic)
    pvalue = float(stats.chi2.sf(value, dof))
    return ChiSquareResult(
        statistic=value, pvalue=pvalue, dof=dof,
        expected=pd.DataFrame([[float(e) for e in line] for line in expected],
                              index=observed.index, columns=observed.columns),
        observed=observed, correction=apply_yates, nobs=n,
        dropped_rows=tuple(str(v) for v in table.index[~keep_rows]),
        dropped_cols=tuple(str(v) for v in table.columns[~keep_cols]),
        cells_below_threshold=table.cells_below_threshold, privacy=table.privacy,
        federation=federation, noise_std=pd.DataFrame(
            np.zeros(observed.shape), index=observed.index, columns=observed.columns),
        pvalue_asymptotic=pvalue)


def _pearson(tables: np.ndarray) -> np.ndarray:
    """Pearson's statistic of each table in a stack (k, r, c), expected counts from each
    table's own margins; a cell whose expected count is not positive (possible only for a
    simulated noisy table) adds nothing rather than dividing by it."""
    rows, cols = tables.sum(axis=2), tables.sum(axis=1)
    n = rows.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = rows[:, :, None] * cols[:, None, :] / n[:, None, None]
        terms = np.where(expected > 0, (tables - expected) ** 2 / expected, 0.0)
    return terms.sum(axis=(1, 2))


def _dp_chi_square(table: ContingencyTable, row: str, col: str) -> ChiSquareResult:
    counts = table.to_numpy(dtype=np.float64)
    noise = table.noise_std.to_numpy(dtype=np.float64)
    # a level's total carries the noise of all its cells (independent, so variances add)
    keep_rows = counts.sum(axis=1) > NOISE_MARGIN * np.sqrt((noise ** 2).sum(axis=1))
    keep_cols = counts.sum(axis=0) > NOISE_MARGIN * np.sqrt((noise ** 2).sum(axis=0))
    observed, sigma = counts[keep_rows][:, keep_cols], noise[keep_rows][:, keep_cols]
    r, c = observed.shape
    if r < 2 or c < 2:
        raise DegenerateInput(
            f"the noisy table of {row!r} by {col!r} has {r} row(s) and {c} column(s) clearly "
            f"above the noise; the test needs at least 2 x 2. The table {TOO_NOISY}")
    n = float(observed.sum())
    statistic = float(_pearson(observed[None])[0])
    dof = (r - 1) * (c - 1)
    row_totals, col_totals = observed.sum(axis=1), observed.sum(axis=0)
    expected = np.outer(row_totals, col_totals) / n
    pvalue = _simulated_pvalue(observed, sigma, statistic)
    asymptotic = float(stats.chi2.sf(statistic, dof))
    index, columns = table.index[keep_rows], table.columns[keep_cols]
    return ChiSquareResult(
        statistic=statistic, pvalue=pvalue, dof=dof,
        expected=pd.DataFrame(expected, index=index, columns=columns),
        observed=pd.DataFrame(observed, index=index, columns=columns), correction=False,
        nobs=round(n), dropped_rows=tuple(str(v) for v in table.index[~keep_rows]),
        dropped_cols=tuple(str(v) for v in table.columns[~keep_cols]),
        cells_below_threshold=table.cells_below_threshold, privacy=table.privacy,
        federation=table.federation,
        noise_std=pd.DataFrame(sigma, index=index, columns=columns),
        pvalue_asymptotic=asymptotic,
        note=(f"differential privacy: the statistic is computed on the noisy table; the "
              f"p-value is a parametric bootstrap under independence that includes the "
              f"noise ({CHI_SQUARE_SIMULATIONS} simulations); pvalue_asymptotic "
              f"({asymptotic:.3g}) ignores the noise"))


def _simulated_pvalue(observed: np.ndarray, sigma: np.ndarray, statistic: float) -> float:
    """P(X >= statistic) under independence with the release's noise: tables drawn from the
    multinomial with the observed (noisy, positive) margins' probabilities and the observed
    total, plus Gaussian noise of each cell's standard deviation (the sum of the nodes'
    discrete Gaussian shares, at this resolution Gaussian), with the (1 + hits) / (1 + R)
    rule so the p-value is never 0."""
    n = float(observed.sum())
    probabilities = np.outer(observed.sum(axis=1) / n, observed.sum(axis=0) / n).ravel()
    # post-processing of released numbers: any generator is safe here; seeding it from the
    # release makes the same release always give the same p-value
    seed = int.from_bytes(hashlib.sha256(observed.tobytes() + sigma.tobytes()).digest()[:8],
                          "big")
    rng = np.random.default_rng(seed)
    cells = probabilities.size
    chunk = max(1, min(CHI_SQUARE_SIMULATIONS, 1_000_000 // cells))  # bounded memory
    hits, done = 0, 0
    while done < CHI_SQUARE_SIMULATIONS:
        size = min(chunk, CHI_SQUARE_SIMULATIONS - done)
        draws = rng.multinomial(round(n), probabilities, size=size).astype(np.float64)
        draws += rng.normal(0.0, 1.0, size=draws.shape) * sigma.ravel()
        simulated = _pearson(draws.reshape(size, *observed.shape))
        # a small tolerance so that ties with the observed value count as "at least"
        hits += int((simulated >= statistic * (1 - 1e-12)).sum())
        done += size
    return (1 + hits) / (1 + CHI_SQUARE_SIMULATIONS)
