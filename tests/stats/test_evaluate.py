"""The pandas evaluator's exact sums are exact in every regime of its limbs: one int64 for
small columns, two below 2^62 per value, three beyond (up to 2^96)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stats.aggregates import Aggregation, Compare, Const, ExactSum, FlagKey, Var
from stats.kinds.evaluate import aggregate, limbs


@pytest.mark.parametrize("top", [2.0**20, 2.0**52, 2.0**61.5, 2.0**90])
def test_exact_sums_are_python_sums_of_rounded_terms(top: float) -> None:
    rng = np.random.default_rng(int(np.log2(top)))
    values = rng.uniform(-top, top, 5000)
    values[:7] = [0.5, -0.5, 1.5, -2.5, top, -top, np.nan]
    parts = limbs(values)
    assert len(parts) == (1 if top < 2**40 else 2 if top < 2**62 else 3)
    joined = sum(int(p.sum()) << (32 * k) for k, p in enumerate(parts))
    assert joined == sum(round(v) for v in values[~np.isnan(values)])
    # grouped: each group's sum is its rows' exact sum too
    node = Aggregation((ExactSum(Var("x"), 1.0),), (FlagKey(Compare(">", Var("x"), Const(0.0))),))
    found = aggregate(node, pd.DataFrame({"x": values}), {})
    for flag in (0, 1):
        kept = values[(values > 0) == bool(flag)]
        assert found[(flag,)][0] == sum(round(v) for v in kept[~np.isnan(kept)])


def test_a_term_that_is_not_finite_cannot_be_summed() -> None:
    with pytest.raises(ArithmeticError):
        limbs(np.array([1.0, np.inf]))
