"""Cross-validation folds: which of a node's rows each fold's statistics cover."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stats.kinds.frame import fold_numbers
from stats.kinds.params import folds_of

if TYPE_CHECKING:
    from stats.query import QuerySpec


def fold_masks(spec: QuerySpec, index: pd.Index, *, train: bool
               ) -> list[tuple[int | None, np.ndarray, np.ndarray]]:
    """(fold, rows the fold's statistics cover, the other rows) per fold: every row once
    without folds; else each fold's rows (or, with ``train``, every row outside it). The
    other rows matter to the disclosure rules: sums over complements add up to a fold's."""
    folds = folds_of(spec)
    if folds == [None]:
        every = np.ones(len(index), dtype=bool)
        return [(None, every, ~every)]
    numbers = fold_numbers(index, len(folds), int(spec.parameters.get("fold_seed", 0)))
    out = []
    for f in folds:
        inside = numbers == f
        out.append((f, ~inside, inside) if train else (f, inside, ~inside))
    return out
