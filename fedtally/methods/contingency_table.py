"""Cross-tabulation of two categorical variables from secure sums of counts (see
:mod:`fedtally.methods.tables`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fedtally.analyses import Analyses, FilterLike
from fedtally.methods.registry import catalog_method
from fedtally.methods.tables import ContingencyTable, two_way_table


@catalog_method(kinds=("counts",))
def contingency_table(fed: Analyses, row: str, col: str, *,
                      datasets: Sequence[str] | None = None, filters: FilterLike = None,
                      data_model: str | None = None, privacy: Any = None) -> ContingencyTable:
    """Cross-tabulation of two categorical variables (either may be ``"dataset"``): the
    rows with both present, every level of the data model (absent levels count zero).
    With ``privacy=fedtally.DP(...)`` the cells are noisy floats and ``.noise_std`` has
    their noise standard deviations (see :class:`ContingencyTable`)."""
    return two_way_table(fed, "contingency_table", row, col, datasets=datasets, filters=filters,
                         data_model=data_model, privacy=privacy)
