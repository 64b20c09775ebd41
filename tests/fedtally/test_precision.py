"""Precision that does not depend on the data's location and units (issue 13, item 3).

Each case first shows the problem (the same query summed as the values are, as before
centring: ``centring: {}`` asks for exactly that), then the answer with the client's public
centring, against statsmodels or scipy at 1e-9 and against exact rational arithmetic on
the same float64 values. The federations are SimulatedFederation: the real node code and
real secure-sum rounds, in memory. Every case runs twice: on nodes that keep their rows in
pandas, and on nodes that keep them in DuckDB (the same Parquet-exact values, the sums
computed in SQL).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm
from statsmodels.stats.weightstats import DescrStatsW

from fedtally.methods.common import triangle
from fedtally.methods.regression import ols_fit
from fedtally.simulated import SimulatedFederation
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DataModel, Variable
from support import keep_rows_in_duckdb

NODES = ("a", "b", "c")
RTOL = 1e-9


def _frames(make, n: int = 300, seed: int = 13) -> dict[str, pd.DataFrame]:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    return {node: pd.DataFrame(make(rng, n)) for node in NODES}


def _pooled(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames.values(), ignore_index=True)


def _written(**ranges: tuple[float | None, float | None]) -> DataModel:
    """A data model a data owner wrote, with (often loose) declared ranges."""
    variables = [Variable("dataset", "dataset", "text", True, NODES)]
    variables += [Variable(code, code, "real", False, min=low, max=high)
                  for code, (low, high) in ranges.items()]
    return DataModel("written", "1", {v.code: v for v in variables})


class Counted(SimulatedFederation):
    """Counts the secure-sum rounds the client runs."""

    rounds = 0

    def _execute(self, spec, plan):  # noqa: ANN001, ANN202
        self.rounds += 1
        return super()._execute(spec, plan)


#: the row store of the running case, and a folder for its files (set by ``store``)
_STORE: dict[str, object] = {}


@pytest.fixture(autouse=True, params=["pandas", "duckdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    _STORE.update(kind=request.param, folder=tmp_path, made=0)
    yield request.param
    _STORE.clear()


def _federation(frames: dict[str, pd.DataFrame], model: DataModel | None = None) -> Counted:
    fed = Counted(frames, model, seed=1)
    if _STORE.get("kind") == "duckdb":
        made = int(str(_STORE["made"]))
        _STORE["made"] = made + 1
        keep_rows_in_duckdb(fed, Path(str(_STORE["folder"])) / f"federation-{made}")
    return fed


def _exact_moments(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation of float64 values in rational arithmetic."""
    exact = [Fraction(float(v)) for v in values]
    n = len(exact)
    mean = sum(exact, Fraction(0)) / n
    variance = sum(((v - mean) ** 2 for v in exact), Fraction(0)) / (n - 1)
    return float(mean), math.sqrt(variance)


def _std(fed: SimulatedFederation, variable: str, **parameters: object) -> tuple[float, float]:
    if not parameters:
        frame = fed.descriptive_stats([variable])
        return float(frame.loc[(variable, "all"), "mean"]), float(frame.loc[(variable, "all"),
                                                                                "std"])
    stat = fed.statistic("descriptive_stats", variables=[variable], parameters=parameters)
    from fedtally.results import descriptive_stats

    frame = descriptive_stats(stat)
    return float(frame.loc[(variable, "all"), "mean"]), float(frame.loc[(variable, "all"), "std"])


@pytest.mark.parametrize("model", [None, _written(x=(0.0, 1e7))], ids=["inferred", "loose"])
def test_variance_of_a_million_plus_standard_normal(model: DataModel | None) -> None:
    frames = _frames(lambda rng, n: {"x": 1e6 + rng.normal(0, 1, n)})
    x = _pooled(frames)["x"].to_numpy()
    reference = DescrStatsW(x)
    exact_mean, exact_std = _exact_moments(x)
    fed = _federation(frames, model)
    # before: the nodes' float64 sums of squares of 1e6 hold the variance in their last bits
    _, plain = _std(fed, "x", centring={})
    assert abs(plain / exact_std - 1) > 1e-7
    fed.rounds = 0
    mean, std = _std(fed, "x")
    assert std == pytest.approx(reference.std * math.sqrt(len(x) / (len(x) - 1)), rel=RTOL)
    assert mean == pytest.approx(reference.mean, rel=RTOL)
    assert std == pytest.approx(exact_std, rel=1e-12) and mean == pytest.approx(exact_mean,
                                                                                rel=1e-15)
    # inferred (tight) bounds centre it in one round; a range 1e7 wide needs the means
    assert fed.rounds == (1 if model is None else 2)


@pytest.mark.parametrize("model", [None, _written(x=(0.0, 1e-7))], ids=["inferred", "loose"])
def test_standard_deviation_of_values_of_a_billionth(model: DataModel | None) -> None:
    frames = _frames(lambda rng, n: {"x": 1e-9 * rng.normal(5, 1, n)})
    x = _pooled(frames)["x"].to_numpy()
    reference = DescrStatsW(x)
    fed = _federation(frames, model)
    _, plain = _std(fed, "x", centring={})
    assert plain == 0.0  # before: squares of 1e-9 fall below the fixed point's 2^-48
    mean, std = _std(fed, "x")
    assert std == pytest.approx(reference.std * math.sqrt(len(x) / (len(x) - 1)), rel=RTOL)
    assert mean == pytest.approx(reference.mean, rel=RTOL)
    assert std == pytest.approx(_exact_moments(x)[1], rel=1e-12)


def test_a_t_test_at_a_large_location_matches_scipy() -> None:
    frames = _frames(lambda rng, n: {"x": 1e6 + rng.normal(0.1, 1, n)})
    x = _pooled(frames)["x"].to_numpy()
    result = _federation(frames).ttest_onesample("x", mu=1e6)
    reference = scipy.stats.ttest_1samp(x, 1e6)
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-8)
    assert result.pvalue == pytest.approx(reference.pvalue, rel=1e-8)


def _exact_r(x: np.ndarray, y: np.ndarray) -> float:
    xs, ys = [Fraction(float(v)) for v in x], [Fraction(float(v)) for v in y]
    mx, my = sum(xs, Fraction(0)) / len(xs), sum(ys, Fraction(0)) / len(ys)
    sxy = sum(((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)), Fraction(0))
    sxx = sum(((a - mx) ** 2 for a in xs), Fraction(0))
    syy = sum(((b - my) ** 2 for b in ys), Fraction(0))
    return float(sxy) / math.sqrt(float(sxx) * float(syy))


def test_pearson_r_at_ten_million() -> None:
    def make(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        x = 1e7 + rng.normal(0, 1, n)
        return {"x": x, "y": x + rng.normal(0, 1, n)}

    frames = _frames(make)
    pooled = _pooled(frames)
    exact = _exact_r(pooled["x"].to_numpy(), pooled["y"].to_numpy())
    fed = _federation(frames)
    stat = fed.statistic("pearson_correlation", variables=["x", "y"], kind="crossprod",
                         parameters={"terms": [{"const": 1}, {"var": "x"}, {"var": "y"}],
                                     "centring": {}})
    n, sx, sy = (stat.exact(("xx", None, 0, j)) for j in range(3))
    sxx, sxy, syy = (stat.exact(("xx", None, i, j)) for i, j in ((1, 1), (1, 2), (2, 2)))
    plain = float(sxy - sx * sy / n) / math.sqrt(float((sxx - sx * sx / n) * (syy - sy * sy / n)))
    # before: r off in its fourth digit (in its third where the nodes summed in float64;
    # exact sums of per-row rounded terms keep the rounding of each x*x at 1e14)
    assert abs(plain - exact) > 1e-4
    r = fed.pearson_correlation(["x", "y"]).r.loc["x", "y"]
    assert r == pytest.approx(scipy.stats.pearsonr(pooled["x"], pooled["y"])[0], rel=RTOL)
    assert r == pytest.approx(exact, rel=1e-13)


def test_linear_regression_at_mean_over_sd_of_1e5() -> None:
    def make(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        x = 1e5 + rng.normal(0, 1, n)
        return {"x": x, "y": 3.0 - 2.0 * (x - 1e5) + rng.normal(0, 1, n)}

    frames = _frames(make)
    pooled = _pooled(frames)
    fed = _federation(frames)
    reference = sm.OLS(pooled["y"], sm.add_constant(pooled["x"])).fit()
    # before: the plain cross-products leave x "constant" next to the intercept
    plain = fed.statistic("linear_regression", variables=["y", "x"], kind="crossprod",
                          parameters={"terms": [{"const": 1}, {"var": "x"}, {"var": "y"}],
                                      "centring": {}})
    with pytest.raises(DegenerateInput, match="x is constant"):
        ols_fit(triangle(plain, ("xx", None), 3), plain.count(("n", None)), ["Intercept", "x"])
    result = fed.linear_regression("y", ["x"])
    for name in ("params", "bse", "tvalues"):
        np.testing.assert_allclose(getattr(result, name).to_numpy(),
                                   getattr(reference, name).to_numpy(), rtol=RTOL)
    for name in ("rsquared", "fvalue", "ssr", "llf", "mse_resid"):
        assert getattr(result, name) == pytest.approx(getattr(reference, name), rel=RTOL), name


def test_unix_times() -> None:
    """Values of 1.7e9 and more: their squares do not fit 2^62 summed as they are."""
    def make(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        stamp = 1.7e9 + rng.uniform(0, 3.15e7, n)  # a year of Unix times
        return {"stamp": stamp, "y": 5.0 + 1e-6 * (stamp - 1.7e9) + rng.normal(0, 1, n)}

    frames = _frames(make)
    pooled = _pooled(frames)
    fed = _federation(frames)
    with pytest.raises(QueryError, match=r"sum of squares of 'stamp' .*2\^62"):
        fed.statistic("descriptive_stats", variables=["stamp"], parameters={"centring": {}})
    mean, std = _std(fed, "stamp")
    exact_mean, exact_std = _exact_moments(pooled["stamp"].to_numpy())
    assert (mean, std) == (pytest.approx(exact_mean, rel=1e-15), pytest.approx(exact_std,
                                                                                rel=1e-12))
    result = fed.linear_regression("y", ["stamp"])
    reference = sm.OLS(pooled["y"], sm.add_constant(pooled["stamp"])).fit()
    np.testing.assert_allclose(result.params.to_numpy(), reference.params.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(result.bse.to_numpy(), reference.bse.to_numpy(), rtol=RTOL)
    # without a declared range nothing public can centre them: the refusal names the
    # variable and the limit
    undeclared = _written(stamp=(None, None), y=(-100.0, 100.0))
    with pytest.raises(QueryError, match=r"'stamp' could exceed .* 2\^62") as info:
        _federation(frames, undeclared).descriptive_stats(["stamp"])
    assert "min and max" in str(info.value)
