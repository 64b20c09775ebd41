"""Fixtures the method tests share."""

from __future__ import annotations

import pandas as pd
import pytest

from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from stats.datamodel import DataModel
from tests import support

#: nodes that release every cell: Exareme2's references are computed without small-cell
#: rules (those rules have their own tests)
RELEASE_EVERY_CELL = Policy(min_row_count=1, small_cell_threshold=1)


@pytest.fixture(scope="session")
def dementia_split() -> tuple[DataModel, dict[str, pd.DataFrame]]:
    """Exareme2's dementia data model and data, split over three nodes as Exareme2 splits
    them (read once per session; a federation copies the frames it is given)."""
    return support.exareme2_three_node_split()


@pytest.fixture(scope="module")
def dementia(dementia_split: tuple[DataModel, dict[str, pd.DataFrame]]
             ) -> SimulatedFederation:
    """That split as a federation whose nodes release every cell."""
    model, frames = dementia_split
    return SimulatedFederation(frames, model, seed=1, policy=RELEASE_EVERY_CELL)


@pytest.fixture(scope="module")
def pooled(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every node's rows in one frame (``data`` is each test module's own federation data)."""
    return pd.concat(data.values(), ignore_index=True)
