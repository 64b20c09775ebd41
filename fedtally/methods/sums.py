"""A sample's sufficient statistics from one ``moments`` query: exact (count, sum, sum of
squares) and, under differential privacy, noisy with their noise standard deviations;
shared by the t-tests and the one-way analysis of variance.

**The dataset as a factor.** The MIP lets ``dataset`` be a grouping variable (e.g. the
groups of an independent t-test or the rows of a table). Design terms and ``by`` cannot
name it, so it is handled here: moments are released per dataset anyway
(:func:`group_moments`).

**Small cells.** A node leaves out a group smaller than its
``small_cell_threshold``, and contributes nothing when its whole cohort is smaller than
its ``min_row_count``; results then describe the rows that were released, and say so in
``federation`` (``nodes_contributing``; ``cells_below_threshold`` counts the node-level cells
that read 0, empty ones included, so that it never tells an empty cell from a small one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.common import check_factor, check_numeric
from fedtally.results import Statistic
from protocol.errors import DegenerateInput
from stats.datamodel import DATASET, PlanModel

#: a DP count must exceed this many noise standard deviations to be divided by (below it,
#: the delta method's linearisation of 1/n is meaningless) and a table level's noisy total
#: must exceed it to be tested (below, it cannot be told from an empty level)
NOISE_MARGIN = 3.0

TOO_NOISY = "is too small for this privacy level: ask with a larger epsilon or a coarser query"


class Sums(NamedTuple):
    """Exact sufficient statistics of one sample: count, sum and sum of squares."""

    n: int
    s: Fraction
    ss: Fraction

    @property
    def mean(self) -> Fraction:
        return self.s / self.n

    @property
    def centered(self) -> Fraction:
        """Sum of squared deviations from the mean (exact)."""
        return self.ss - self.s * self.s / self.n if self.n else Fraction(0)

    def std(self) -> float:
        """Sample standard deviation (ddof 1); NaN below two rows."""
        return math.sqrt(float(self.centered / (self.n - 1))) if self.n > 1 else math.nan


def sums_of(stat: Statistic, variable: str, group: str | None,
            datasets: Sequence[str]) -> Sums:
    return Sums(sum(stat.count(("count", d, group, variable)) for d in datasets),
                sum((stat.exact(("sum", d, group, variable)) for d in datasets), Fraction(0)),
                sum((stat.exact(("sumsq", d, group, variable)) for d in datasets), Fraction(0)))


def group_moments(fed: Analyses, algorithm: str, y: str, group: str, *,
                  datasets: Sequence[str] | str | None, filters: FilterLike,
                  data_model: str | None, privacy: Any = None
                  ) -> tuple[dict[str, tuple[str | None, list[str]]], Statistic]:
    """One moments query of ``y`` by ``group``, and per level the (group key, datasets) whose
    slots add up to that level's totals."""
    view = PlanModel(Analyses.model(fed, data_model))
    check_numeric(view, y)
    check_factor(view, group)
    if group == DATASET:
        stat = fed.statistic(algorithm, variables=[y], datasets=datasets, filters=filters,
                             data_model=data_model, kind="moments", privacy=privacy)
        return {d: (None, [d]) for d in stat.spec.datasets}, stat
    stat = fed.statistic(algorithm, variables=[y], by=group, datasets=datasets,
                         filters=filters, data_model=data_model, kind="moments",
                         privacy=privacy)
    return {g: (g, list(stat.spec.datasets)) for g in view.levels(group)}, stat


def group_sums(fed: Analyses, algorithm: str, y: str, group: str, *,
               datasets: Sequence[str] | str | None, filters: FilterLike,
               data_model: str | None) -> tuple[dict[str, Sums], Statistic]:
    """Exact sums of ``y`` per level of ``group`` (one moments query), levels in the data
    model's order; ``group="dataset"`` gives one level per dataset queried."""
    where, stat = group_moments(fed, algorithm, y, group, datasets=datasets,
                                filters=filters, data_model=data_model)
    return {level: sums_of(stat, y, g, ds) for level, (g, ds) in where.items()}, stat


@dataclass(frozen=True)
class NoisySums:
    """A sample's released (noisy) count, sum and sum of squares, and the standard deviation
    of the noise in the count and in the sum: what the delta method needs."""

    n: Fraction
    s: Fraction
    ss: Fraction
    n_noise: float
    s_noise: float

    def check(self, what: str) -> None:
        """Refuse to divide by a count that the noise may have brought near or below 0."""
        if self.n < 2 or float(self.n) < NOISE_MARGIN * self.n_noise:
            raise DegenerateInput(f"the noisy count of {what} ({float(self.n):.1f}, noise "
                                  f"std {self.n_noise:.2g}) {TOO_NOISY}")

    @property
    def mean(self) -> float:
        return float(self.s / self.n)

    def variance(self) -> float:
        """Sample variance (ddof 1) of the noisy moments, clamped at 0 (post-processing:
        the noise in the sum of squares can make it negative)."""
        return max(float((self.ss - self.s * self.s / self.n) / (self.n - 1)), 0.0)

    def mean_noise_variance(self) -> float:
        """Variance the noise adds to S/N, by the delta method: (sd(S)^2 + mean^2 sd(N)^2)
        / n^2."""
        size = float(self.n)
        return (self.s_noise ** 2 + self.mean ** 2 * self.n_noise ** 2) / (size * size)


def noisy_sums(stat: Statistic, variable: str, group: str | None,
               datasets: Sequence[str]) -> NoisySums:
    def total(head: str) -> Fraction:
        return sum((stat.exact((head, d, group, variable)) for d in datasets), Fraction(0))

    def noise(head: str) -> float:
        # independent noise in every slot: variances add
        return math.sqrt(sum(stat.noise_std((head, d, group, variable)) ** 2 for d in datasets))

    return NoisySums(total("count"), total("sum"), total("sumsq"), noise("count"), noise("sum"))
