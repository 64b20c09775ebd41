"""K-fold cross-validation with the folds kept at the nodes: what the linear and logistic
cross-validations share.

Each node assigns each of its rows to a fold from the row's position in its data and a
public seed (``stats.kinds.frame.fold_numbers``: splitmix64 of position + seed, modulo k), so no
row, index or fold membership leaves a node. The folds therefore differ from Exareme2's
(sklearn ``KFold`` without shuffling over each node's rows), and the per-fold numbers differ
from Exareme2's accordingly; the metrics are the same definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from protocol.errors import QueryError
from stats.kinds import MAX_FOLDS

SUMMARY_ROWS = ("average", "stdev")


def check_splits(n_splits: int, fold_seed: int) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) \
            or not 2 <= n_splits <= MAX_FOLDS:
        raise QueryError(f"n_splits must be an integer from 2 to {MAX_FOLDS}")
    if isinstance(fold_seed, bool) or not isinstance(fold_seed, int):
        raise QueryError("fold_seed must be an integer")


def fold_names(k: int) -> list[str]:
    return [f"fold_{i}" for i in range(1, k + 1)]


def fold_summary(folds: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Mean and sample standard deviation (ddof 1) over the folds, as Exareme2."""
    table = folds[list(columns)]
    return pd.DataFrame([table.mean(), table.std(ddof=1)], index=list(SUMMARY_ROWS))


def in_fold(f: int) -> str:
    return f" in the training rows of fold {f + 1}"
