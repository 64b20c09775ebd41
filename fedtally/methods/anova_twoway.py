"""Two-way analysis of variance from secure sums.

Two-way: one cross-product query over the full design (intercept, treatment dummies of
both factors and their products, and y) gives the exact X'X. The residual sum of squares
of every nested model (intercept; + x1; + x2; + both; full) comes from that one matrix,
by exact elimination on the rows and columns of the model's terms, and the sums of
squares are differences of those (type I: sequential; type II: each main effect after the
other, the interaction after both; Fox, *Applied Regression Analysis*, ch. 8). A column
that is a linear combination of earlier ones (an empty cell, an absent level) is aliased
and skipped, as R's ``lm`` does, so degrees of freedom are ranks; an effect left with no
degree of freedom is dropped from the table, as R's ``anova`` and ``car::Anova`` do (the
MIP's references were made with R). statsmodels differs from R only on such
rank-deficient designs.

**Exareme2.** ``sum_sq``, ``df``, ``F`` and ``PR(>F)`` by effect, ``Residual`` named
``Residuals``; ``aliased`` effects are absent from their type I tables (R's ``anova``) and
listed with zeros in their type II tables (``car::Anova``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from fedtally import exareme2
from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.anova import anova_table
from fedtally.methods.common import (
    INTERCEPT,
    check_factor,
    check_numeric,
    check_privacy,
    merge_federation,
    no_rows,
    resolved_datasets,
    triangle,
)
from fedtally.methods.registry import catalog_method, handles
from fedtally.results import Statistic
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DATASET, PlanModel
from stats.design import Term


@dataclass(frozen=True)
class AnovaTwowayResult:
    """Two-way ANOVA with interaction, ``y ~ C(x1) * C(x2)``, as statsmodels'
    ``anova_lm(ols(...), typ=sstype)`` (and R's ``anova`` / ``car::Anova``)."""

    #: rows x1, x2, x1:x2 (those with degrees of freedom) and Residual; columns as
    #: statsmodels' for the type: typ 1 df, sum_sq, mean_sq, F, PR(>F); typ 2 sum_sq, df,
    #: F, PR(>F)
    table: pd.DataFrame
    #: F per effect (Series indexed as the table's effect rows)
    statistic: pd.Series
    #: p-value per effect
    pvalue: pd.Series
    #: 1 (sequential, x1 then x2 then x1:x2) or 2 (each main effect after the other)
    sstype: int
    #: effects with no degree of freedom left (e.g. a factor with a single level present,
    #: or an interaction fully aliased by empty cells): not in the table, as R. When all
    #: three are, nothing is tested: the table holds only the Residual row and
    #: ``statistic`` / ``pvalue`` are empty
    aliased: tuple[str, ...]
    #: rows used (y, x1 and x2 present)
    nobs: int
    #: cells (level pairs) with rows: the rank of the full model
    cells: int
    privacy: dict[str, Any]
    federation: dict[str, Any]


#: a column of the full design: (level of x1 or None, level of x2 or None); None, None is
#: the intercept, (a, None) the dummy of a, (a, b) their product
Column = tuple[str | None, str | None]


@catalog_method(kinds=("crossprod",))
def anova_twoway(fed: Analyses, y: str, x1: str, x2: str, sstype: int = 2, *,
                 datasets: Sequence[str] | None = None, filters: FilterLike = None,
                 data_model: str | None = None, privacy: Any = None) -> AnovaTwowayResult:
    """Two-way ANOVA of the numeric ``y`` by the categorical ``x1`` and ``x2`` (either may
    be ``"dataset"``) with their interaction; type I or type II sums of squares. Type III
    is not offered (with treatment coding it does not test the usual hypotheses)."""
    privacy_ = check_privacy(privacy, "anova_twoway")
    if sstype not in (1, 2) or isinstance(sstype, bool):
        raise QueryError("sstype must be 1 or 2 (type III sums of squares are not offered)")
    model = Analyses.model(fed, data_model)
    view = PlanModel(model)
    check_numeric(view, y)
    check_factor(view, x1)
    check_factor(view, x2)
    if x1 == x2:
        raise QueryError("a two-way ANOVA needs two different factors")
    # the dataset as a factor: its levels are the datasets asked about
    chosen = tuple(resolved_datasets(fed, data_model, datasets)) if DATASET in (x1, x2) else ()
    levels1 = chosen if x1 == DATASET else view.levels(x1)
    levels2 = chosen if x2 == DATASET else view.levels(x2)
    columns: list[Column] = ([(None, None)] + [(a, None) for a in levels1[1:]]
                             + [(None, b) for b in levels2[1:]]
                             + [(a, b) for a in levels1[1:] for b in levels2[1:]])
    if DATASET in (x1, x2):
        matrix, stats_ = _per_dataset_crossprod(fed, y, x1, x2, levels1, levels2, columns,
                                                filters=filters, data_model=data_model)
    else:
        terms = [_term(x1, x2, c) for c in columns] + [{"var": y}]
        stat = fed.statistic("anova_twoway", datasets=datasets, filters=filters,
                             data_model=data_model, kind="crossprod",
                             parameters={"terms": terms})
        matrix, stats_ = triangle(stat, ("xx", None), len(terms)), [stat]
    federation = merge_federation(stats_)
    return _twoway(matrix, columns, levels1, levels2, x1, x2, sstype, privacy_, federation)


def _term(x1: str, x2: str, column: Column) -> Term:
    a, b = column
    factors = ([{"var": x1, "level": a}] if a is not None else []) + \
        ([{"var": x2, "level": b}] if b is not None else [])
    if not factors:
        return INTERCEPT
    return factors[0] if len(factors) == 1 else {"product": factors}


def _per_dataset_crossprod(fed: Analyses, y: str, x1: str, x2: str, levels1: Sequence[str],
                           levels2: Sequence[str], columns: list[Column], *,
                           filters: FilterLike, data_model: str | None
                           ) -> tuple[list[list[Fraction]], list[Statistic]]:
    """The full design's X'X when one factor is the dataset (which design terms cannot
    name): one query per dataset over [Intercept, dummies of the other factor, y]; a row of
    dataset d has every dataset dummy 0 but d's, so each entry of X'X is a sum of the
    per-dataset blocks."""
    first_is_dataset = x1 == DATASET
    other, other_levels = (x2, levels2) if first_is_dataset else (x1, levels1)
    datasets = levels1 if first_is_dataset else levels2
    base_terms: list[Term] = [INTERCEPT] + [{"var": other, "level": v}
                                            for v in other_levels[1:]] + [{"var": y}]
    base_index = {v: i + 1 for i, v in enumerate(other_levels[1:])}
    p = len(columns) + 1
    # per full column: (dataset it needs or None, index in the per-dataset block)
    parts: list[tuple[str | None, int]] = []
    for a, b in columns:
        dataset, level = (a, b) if first_is_dataset else (b, a)
        parts.append((dataset, 0 if level is None else base_index[level]))
    parts.append((None, len(base_terms) - 1))  # y
    matrix = [[Fraction(0)] * p for _ in range(p)]
    stats_ = []
    for d in datasets:
        stat = fed.statistic("anova_twoway", datasets=[d], filters=filters,
                             data_model=data_model, kind="crossprod",
                             parameters={"terms": base_terms})
        stats_.append(stat)
        block = triangle(stat, ("xx", None), len(base_terms))
        active = [i for i, (dataset, _) in enumerate(parts) if dataset in (None, d)]
        for i in active:
            for j in active:
                matrix[i][j] += block[parts[i][1]][parts[j][1]]
    return matrix, stats_


def _rss(matrix: list[list[Fraction]], cols: Sequence[int], target: int
         ) -> tuple[Fraction, int]:
    """Residual sum of squares of the ``target`` column regressed on ``cols``, and the rank
    of ``cols``: symmetric Gaussian elimination of the cross-product matrix in exact
    arithmetic. A column whose pivot is exactly zero lies in the span of the earlier ones
    (its whole row is then zero too, the matrix being positive semi-definite): it is
    aliased and skipped, as R's lm does. The design block holds exact counts, so aliasing
    is decided exactly."""
    index = list(cols) + [target]
    work = [[matrix[i][j] for j in index] for i in index]
    m, rank = len(cols), 0
    for k in range(m):
        pivot = work[k][k]
        if pivot == 0:
            continue
        rank += 1
        for i in range(k + 1, m + 1):
            factor = work[i][k] / pivot
            if factor:
                row_i, row_k = work[i], work[k]
                for j in range(k + 1, m + 1):
                    row_i[j] -= factor * row_k[j]
    return work[m][m], rank


def _cells(matrix: list[list[Fraction]], columns: list[Column], levels1: Sequence[str],
           levels2: Sequence[str]) -> dict[tuple[str, str], tuple[Fraction, Fraction]]:
    """Rows and sum of y per cell (level pair), by inclusion-exclusion on the design's
    column totals (row 0 of X'X) and column-y products (last row)."""
    where = {c: i for i, c in enumerate(columns)}
    y = len(columns)

    def total(a: str | None, b: str | None) -> tuple[Fraction, Fraction]:
        """Rows (and sum of y) with x1 = a (any if None) and x2 = b (any if None); the
        reference levels are reached by subtracting the others."""
        if a == levels1[0]:
            n, s = total(None, b)
            for other in levels1[1:]:
                n_o, s_o = total(other, b)
                n, s = n - n_o, s - s_o
            return n, s
        if b == levels2[0]:
            n, s = total(a, None)
            for other in levels2[1:]:
                n_o, s_o = total(a, other)
                n, s = n - n_o, s - s_o
            return n, s
        i = where[(a, b)]
        return matrix[0][i], matrix[i][y]

    return {(a, b): total(a, b) for a in levels1 for b in levels2}


def _twoway(matrix: list[list[Fraction]], columns: list[Column], levels1: Sequence[str],
            levels2: Sequence[str], x1: str, x2: str, sstype: int, privacy: dict[str, Any],
            federation: dict[str, Any]) -> AnovaTwowayResult:
    n = int(matrix[0][0])
    if n == 0:
        raise no_rows(federation, "the two-way ANOVA")
    y = len(columns)
    one = [0]
    first = [i for i, (a, b) in enumerate(columns) if a is not None and b is None]
    second = [i for i, (a, b) in enumerate(columns) if a is None and b is not None]
    rss0, r0 = _rss(matrix, one, y)
    rss1, r1 = _rss(matrix, one + first, y)
    rss2, r2 = _rss(matrix, one + second, y)
    rss12, r12 = _rss(matrix, one + first + second, y)
    # the full model spans the cell indicators: its residuals are the within-cell ones
    cells = [(c_n, c_s) for c_n, c_s in _cells(matrix, columns, levels1, levels2).values()
             if c_n > 0]
    rank = len(cells)
    rss_full = matrix[y][y] - sum((s * s / c for c, s in cells), Fraction(0))
    df_resid = n - rank
    if df_resid < 1:
        raise DegenerateInput("two-way ANOVA has no residual degree of freedom (one row per "
                              "cell)")
    if rss_full <= 0:
        raise DegenerateInput("y does not vary within cells: the F statistics are infinite")
    interaction = f"{x1}:{x2}"
    if sstype == 1:
        effects = [(x1, rss0 - rss1, r1 - r0), (x2, rss1 - rss12, r12 - r1)]
    else:
        effects = [(x1, rss2 - rss12, r12 - r2), (x2, rss1 - rss12, r12 - r1)]
    effects.append((interaction, rss12 - rss_full, rank - r12))
    # an effect without a degree of freedom is not in the table (R's anova); with none
    # left, the table holds the residual row alone (R's answer, and the MIP's reference)
    kept = [e for e in effects if e[2] > 0]
    table = anova_table(kept, rss_full, df_resid, sstype)
    names = [e[0] for e in kept]
    return AnovaTwowayResult(
        table=table, statistic=table.loc[names, "F"].astype(np.float64).rename("F"),
        pvalue=table.loc[names, "PR(>F)"].astype(np.float64).rename("PR(>F)"),
        sstype=sstype, aliased=tuple(e[0] for e in effects if e[2] <= 0), nobs=n,
        cells=rank, privacy=privacy, federation=federation)


RESIDUALS = "Residuals"


@handles("anova", method="anova_twoway")
def _anova_twoway(fed: Analyses, req: exareme2.Request) -> dict[str, Any]:
    """Exareme2's two-way AnovaResult: terms x1, x2, x1:x2, Residuals. An effect with no
    degree of freedom left (aliased) is written with zero sum of squares and df, and no F;
    the residuals have no F either."""
    y = exareme2.single(req.y, "y", "anova")
    if len(req.x) != 2:
        raise QueryError(f"anova (two-way) takes exactly two x variables; got {req.x}")
    x1, x2 = req.x
    result = anova_twoway(fed, y, x1, x2, exareme2.integer(req, "sstype", 2),
                          **exareme2.query_scope(req))
    table = result.table
    terms = [x1, x2, f"{x1}:{x2}"]
    out: dict[str, list[Any]] = {"terms": [*terms, RESIDUALS], "sum_sq": [], "df": [],
                                 "f_stat": [], "f_pvalue": []}
    for term in terms:
        present = term in table.index
        out["sum_sq"].append(float(table.at[term, "sum_sq"]) if present else 0.0)
        out["df"].append(int(table.at[term, "df"]) if present else 0)
        out["f_stat"].append(exareme2.json_number(table.at[term, "F"]) if present else None)
        out["f_pvalue"].append(exareme2.json_number(table.at[term, "PR(>F)"]) if present else None)
    out["sum_sq"].append(float(table.at["Residual", "sum_sq"]))
    out["df"].append(int(table.at["Residual", "df"]))
    out["f_stat"].append(None)
    out["f_pvalue"].append(None)
    return out
