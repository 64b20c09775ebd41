"""The analysis-of-variance table both analyses of variance report (statsmodels'
``anova_lm`` layout), from exact sums of squares.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pandas as pd
from scipy import stats

RESIDUAL = "Residual"


def anova_table(effects: list[tuple[str, Fraction, int]], rss: Fraction, df_resid: int,
                sstype: int) -> pd.DataFrame:
    """An ANOVA table shaped as statsmodels' anova_lm for ``typ=sstype``."""
    mse = rss / df_resid
    index, rows = [], []
    for name, ss, df in effects:
        f = (ss / df) / mse
        index.append(name)
        rows.append((float(df), float(ss), float(ss / df), float(f),
                     float(stats.f.sf(float(f), df, df_resid))))
    index.append(RESIDUAL)
    rows.append((float(df_resid), float(rss), float(mse), math.nan, math.nan))
    frame = pd.DataFrame(rows, index=index, columns=["df", "sum_sq", "mean_sq", "F", "PR(>F)"])
    if sstype == 1:
        return frame
    return frame[["sum_sq", "df", "F", "PR(>F)"]]  # statsmodels' typ=2 columns
