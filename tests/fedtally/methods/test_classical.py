"""t-tests, contingency tables and chi-square over a simulated federation, against scipy
on the pooled rows (relative 1e-9), the degenerate cases, and a few of the MIP's own
(R-made) reference cases reproduced through the documented mapping."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fedtally.methods.chi_square import chi_square
from fedtally.methods.contingency_table import contingency_table
from fedtally.methods.ttest_independent import ttest_independent
from fedtally.methods.ttest_onesample import ttest_onesample
from fedtally.methods.ttest_paired import ttest_paired
from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from protocol.errors import DegenerateInput, QueryError
from support import EXAREME2, model_with_unused_level

REL = 1e-9
NODES = ("n0", "n1", "n2")
ALTERNATIVES = ("two-sided", "less", "greater")


def close(ours: float, theirs: float, rel: float = REL, abs_: float = 0.0) -> bool:
    if math.isinf(theirs) or math.isinf(ours):
        return ours == theirs
    return math.isclose(ours, theirs, rel_tol=rel, abs_tol=abs_)


def _node(rng: np.random.Generator, n: int, shift: float) -> pd.DataFrame:
    y = rng.normal(10.0 + shift, 3.0, n)
    frame = pd.DataFrame({
        "y": y,
        "z": 0.5 * y + rng.normal(4.0, 1.0, n),
        "g": rng.choice(["a", "b", "c"], n, p=[0.4, 0.35, 0.25]),
        "h": rng.choice(["u", "v"], n),
        "flat": np.full(n, 3.0),
    })
    frame["y"] += np.where(frame["g"] == "b", 0.8, 0.0)
    frame.loc[rng.random(n) < 0.08, "y"] = np.nan
    frame.loc[rng.random(n) < 0.05, "z"] = np.nan
    frame.loc[rng.random(n) < 0.05, "g"] = None
    return frame


@pytest.fixture(scope="module")
def data() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(20240611)
    frames = {name: _node(rng, 400, shift) for name, shift in zip(NODES, (0.0, 0.3, -0.2),
                                                                   strict=True)}
    for name, frame in frames.items():
        frame["dataset"] = name
    return frames


@pytest.fixture(scope="module")
def fed(data: dict[str, pd.DataFrame], pooled: pd.DataFrame) -> SimulatedFederation:
    return SimulatedFederation(data, model_with_unused_level(pooled), seed=3)


@pytest.fixture(scope="module")
def fed_small(data: dict[str, pd.DataFrame], pooled: pd.DataFrame) -> SimulatedFederation:
    """Nodes that release every cell and every cohort, however small."""
    return SimulatedFederation(data, model_with_unused_level(pooled), seed=4,
                               policy=Policy(min_row_count=1, small_cell_threshold=1))


def check_t(ours: Any, theirs: Any, alpha: float) -> None:
    assert close(ours.statistic, float(theirs.statistic))
    assert close(ours.pvalue, float(theirs.pvalue))
    assert close(ours.df, float(theirs.df))
    low, high = theirs.confidence_interval(1 - alpha)
    assert close(ours.ci[0], float(low)) and close(ours.ci[1], float(high))
    # scipy keeps the standard error and the estimate private; t = (estimate - mu) / se
    assert close(ours.mean_diff / ours.se, float(theirs.statistic))
    if hasattr(theirs, "_standard_error"):
        assert close(ours.se, float(theirs._standard_error))
        assert close(ours.estimate, float(theirs._estimate))


# --- one sample -----------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_onesample_matches_scipy(fed: SimulatedFederation, pooled: pd.DataFrame,
                                 alternative: str) -> None:
    y = pooled["y"].dropna()
    result = ttest_onesample(fed, "y", mu=10.1, alternative=alternative, alpha=0.1)
    check_t(result, stats.ttest_1samp(y, 10.1, alternative=alternative), 0.1)
    assert result.nobs == len(y)
    assert close(result.mean_diff, y.mean() - 10.1)
    assert close(result.cohens_d, (y.mean() - 10.1) / y.std(ddof=1))
    assert result.samples.loc["y", "nobs"] == len(y)
    assert result.test == "one-sample" and result.privacy == {"mode": "exact"}
    assert result.federation["nodes_contributing"] == 3
    low, high = stats.ttest_1samp(y, 10.1, alternative=alternative).confidence_interval(0.99)
    assert close(result.conf_int(0.01)[0], float(low))
    assert close(result.conf_int(0.01)[1], float(high))


def test_onesample_with_filters_and_datasets(fed: SimulatedFederation,
                                             pooled: pd.DataFrame) -> None:
    part = pooled[(pooled["dataset"].isin(["n0", "n2"])) & (pooled["h"] == "u")]
    result = ttest_onesample(fed, "y", mu=9.0, datasets=["n0", "n2"], filters="h == 'u'")
    check_t(result, stats.ttest_1samp(part["y"].dropna(), 9.0), 0.05)


# --- paired ------------------------------------------------------------------------------------


@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_paired_matches_scipy(fed: SimulatedFederation, pooled: pd.DataFrame,
                              alternative: str) -> None:
    pairs = pooled[["y", "z"]].dropna()
    result = ttest_paired(fed, "y", "z", alternative=alternative, alpha=0.2)
    check_t(result, stats.ttest_rel(pairs["y"], pairs["z"], alternative=alternative), 0.2)
    assert result.nobs == len(pairs)
    d_av = (pairs["y"].mean() - pairs["z"].mean()) / math.sqrt(
        (pairs["y"].var() + pairs["z"].var()) / 2)
    assert close(result.cohens_d, d_av)
    d_z = (pairs["y"] - pairs["z"]).mean() / (pairs["y"] - pairs["z"]).std()
    assert close(result.statistic / math.sqrt(result.nobs), d_z)
    assert close(result.samples.loc["y - z", "std"], (pairs["y"] - pairs["z"]).std())


def test_paired_with_mu_is_the_one_sample_test_of_differences(
        fed: SimulatedFederation, pooled: pd.DataFrame) -> None:
    pairs = pooled[["y", "z"]].dropna()
    result = ttest_paired(fed, "y", "z", mu=0.4, alternative="greater")
    reference = stats.ttest_1samp(pairs["y"] - pairs["z"], 0.4, alternative="greater")
    check_t(result, reference, 0.05)
    assert close(result.mean_diff, (pairs["y"] - pairs["z"]).mean() - 0.4)


# --- independent ----------------------------------------------------------------------------


@pytest.mark.parametrize("equal_var", [True, False])
@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_independent_matches_scipy(fed: SimulatedFederation, pooled: pd.DataFrame,
                                   equal_var: bool, alternative: str) -> None:
    a = pooled.loc[pooled["g"] == "a", "y"].dropna()
    b = pooled.loc[pooled["g"] == "b", "y"].dropna()
    result = ttest_independent(fed, "y", "g", "a", "b", alternative=alternative,
                               equal_var=equal_var, alpha=0.05)
    check_t(result, stats.ttest_ind(a, b, equal_var=equal_var, alternative=alternative), 0.05)
    pooled_sd = math.sqrt(((len(a) - 1) * a.var() + (len(b) - 1) * b.var())
                          / (len(a) + len(b) - 2))
    assert close(result.cohens_d, (a.mean() - b.mean()) / pooled_sd)
    assert result.nobs == len(a) + len(b)
    assert list(result.samples.index) == ["a", "b"]
    assert result.samples.loc["b", "nobs"] == len(b)


def test_independent_by_dataset(fed: SimulatedFederation, data: dict[str, pd.DataFrame]
                                ) -> None:
    a, b = data["n2"]["y"].dropna(), data["n0"]["y"].dropna()
    result = ttest_independent(fed, "y", "dataset", "n2", "n0", equal_var=False)
    check_t(result, stats.ttest_ind(a, b, equal_var=False), 0.05)


# --- t-test degenerate cases and bad arguments ------------------------------------------------


def _between_top_two(values: pd.Series) -> float:
    """A cut leaving exactly one of ``values`` above it."""
    top = sorted(values.dropna())[-2:]
    return float((top[0] + top[1]) / 2)


def test_ttest_degenerate_cases(fed: SimulatedFederation, fed_small: SimulatedFederation,
                                pooled: pd.DataFrame) -> None:
    with pytest.raises(DegenerateInput, match="no variance"):
        ttest_onesample(fed, "flat", mu=1.0)
    with pytest.raises(DegenerateInput, match="no variance"):
        ttest_independent(fed, "flat", "g", "a", "b")
    with pytest.raises(DegenerateInput, match="no rows"):
        ttest_onesample(fed, "y", filters="y > 1000")
    with pytest.raises(DegenerateInput, match="no rows"):
        ttest_paired(fed, "y", "z", filters="y > 1000")
    with pytest.raises(DegenerateInput, match="no rows"):
        ttest_independent(fed, "y", "g", "a", "b", filters="y > 1000")
    with pytest.raises(DegenerateInput, match="'zz'"):  # a level with no rows
        ttest_independent(fed, "y", "g", "a", "zz")
    # a single row (the nodes of fed_small release even one row)
    cut = _between_top_two(pooled["y"])
    with pytest.raises(DegenerateInput, match="at least two"):
        ttest_onesample(fed_small, "y", filters=f"y > {cut!r}")
    cut = _between_top_two(pooled[["y", "z"]].dropna()["z"])
    with pytest.raises(DegenerateInput, match="at least two"):
        ttest_paired(fed_small, "y", "z", filters=f"z > {cut!r}")
    cut = _between_top_two(pooled.loc[pooled["g"] == "a", "y"])
    with pytest.raises(DegenerateInput, match="two rows in each group"):
        ttest_independent(fed_small, "y", "g", "a", "b", equal_var=False,
                          filters=f"(g == 'a' and y > {cut!r}) or g == 'b'")
    # Student's test with one row in a group is defined (as scipy)
    a = pooled.loc[(pooled["g"] == "a") & (pooled["y"] > cut), "y"]
    b = pooled.loc[pooled["g"] == "b", "y"].dropna()
    result = ttest_independent(fed_small, "y", "g", "a", "b",
                               filters=f"(g == 'a' and y > {cut!r}) or g == 'b'")
    check_t(result, stats.ttest_ind(a, b), 0.05)


def test_ttest_bad_arguments(fed: SimulatedFederation) -> None:
    with pytest.raises(QueryError, match="alternative"):
        ttest_onesample(fed, "y", alternative="bigger")
    with pytest.raises(QueryError, match="alpha"):
        ttest_onesample(fed, "y", alpha=1.5)
    with pytest.raises(QueryError, match="mu"):
        ttest_onesample(fed, "y", mu=math.nan)
    with pytest.raises(QueryError, match="categorical"):
        ttest_onesample(fed, "g")
    with pytest.raises(QueryError, match="numeric"):
        ttest_independent(fed, "y", "z", "a", "b")
    with pytest.raises(QueryError, match="different"):
        ttest_independent(fed, "y", "g", "a", "a")
    with pytest.raises(QueryError, match="not a level"):
        ttest_independent(fed, "y", "g", "a", "q")
    with pytest.raises(QueryError, match="different"):
        ttest_paired(fed, "y", "y")
    with pytest.raises(QueryError, match="unknown"):
        ttest_onesample(fed, "nope")


# --- contingency tables and chi-square ---------------------------------------------------------


def test_contingency_table_matches_crosstab(fed: SimulatedFederation,
                                            pooled: pd.DataFrame) -> None:
    table = contingency_table(fed, "g", "h")
    reference = pd.crosstab(pooled["g"], pooled["h"])
    assert list(table.index) == ["a", "b", "c", "zz"] and table.index.name == "g"
    assert list(table.columns) == ["u", "v"] and table.columns.name == "h"
    assert (table.loc[["a", "b", "c"]].to_numpy() == reference.to_numpy()).all()
    assert (table.loc["zz"] == 0).all()
    assert table.excluded == pooled["g"].isna().sum()
    # the empty level zz reads 0 at each of the three nodes (empty cells are counted with
    # the small ones, so that the count never tells them apart)
    assert table.cells_below_threshold == 6 and table.privacy == {"mode": "exact"}


def test_contingency_table_by_dataset(fed: SimulatedFederation, pooled: pd.DataFrame) -> None:
    reference = pd.crosstab(pooled["dataset"], pooled["g"])
    table = contingency_table(fed, "dataset", "g", datasets=["n0", "n1", "n2"])
    assert list(table.index) == list(NODES)
    assert (table[["a", "b", "c"]].to_numpy() == reference.to_numpy()).all()
    flipped = contingency_table(fed, "g", "dataset", filters="h == 'v'")
    part = pooled[pooled["h"] == "v"]
    assert (flipped.loc[["a", "b", "c"]].to_numpy()
            == pd.crosstab(part["g"], part["dataset"]).to_numpy()).all()
    assert flipped.federation["queries"] == 3
    # whom the table covers, over its three queries (one per dataset, each answered by its
    # one holder): every node contributed, every dataset covered (it read "1 contributed"
    # and named no dataset)
    federation = flipped.federation
    assert (federation["nodes_answered"], federation["nodes_contributing"]) == (3, 3)
    assert federation["datasets_covered"] == list(NODES)
    assert federation["datasets_not_covered"] == {}
    assert "3 contributed; datasets covered: n0, n1, n2" in " ".join(flipped.summary().split())


def test_chi_square_matches_scipy(fed: SimulatedFederation, pooled: pd.DataFrame) -> None:
    result = chi_square(fed, "g", "h")
    reference = stats.chi2_contingency(pd.crosstab(pooled["g"], pooled["h"]))
    assert close(result.statistic, reference.statistic)
    assert close(result.pvalue, reference.pvalue)
    assert result.dof == reference.dof == 2
    assert np.allclose(result.expected.to_numpy(), reference.expected_freq, rtol=REL, atol=0)
    assert result.dropped_rows == ("zz",) and result.dropped_cols == ()
    assert list(result.observed.index) == ["a", "b", "c"]
    assert result.correction is False  # Yates applies only to one degree of freedom
    assert result.nobs == pooled[["g", "h"]].notna().all(axis=1).sum()


@pytest.mark.parametrize("correction", [True, False])
def test_chi_square_two_by_two_yates(fed: SimulatedFederation, pooled: pd.DataFrame,
                                     correction: bool) -> None:
    part = pooled[pooled["g"].isin(["a", "c"])]
    result = chi_square(fed, "h", "g", correction=correction, filters="g in ['a', 'c']")
    reference = stats.chi2_contingency(pd.crosstab(part["h"], part["g"]), correction=correction)
    assert close(result.statistic, reference.statistic)
    assert close(result.pvalue, reference.pvalue)
    assert result.dof == 1 and result.correction is correction
    assert result.dropped_cols == ("b", "zz")


def test_chi_square_by_dataset(fed: SimulatedFederation, pooled: pd.DataFrame) -> None:
    result = chi_square(fed, "dataset", "h")
    reference = stats.chi2_contingency(pd.crosstab(pooled["dataset"], pooled["h"]))
    assert close(result.statistic, reference.statistic)
    assert close(result.pvalue, reference.pvalue)


def test_chi_square_degenerate_cases(fed: SimulatedFederation) -> None:
    with pytest.raises(DegenerateInput, match="1 non-empty row"):
        chi_square(fed, "g", "h", filters="g == 'a'")
    with pytest.raises(DegenerateInput, match="no rows"):
        chi_square(fed, "g", "h", filters="y > 1000")
    with pytest.raises(QueryError, match="numeric"):
        chi_square(fed, "g", "y")
    with pytest.raises(QueryError, match="different"):
        contingency_table(fed, "g", "g")


def test_small_cells_are_suppressed_and_reported(data: dict[str, pd.DataFrame],
                                                 pooled: pd.DataFrame) -> None:
    """A category with a handful of rows per node: each node zeroes those cells (below
    its small-cell threshold of 10); the table says so, and the test runs on the rest."""
    frames = {}
    for name, frame in data.items():
        frame = frame.copy()
        frame.loc[frame.index[:4], "g"] = "zz"  # 4 rows per node, 2 or so per h cell
        frames[name] = frame
    fed = SimulatedFederation(frames, model_with_unused_level(pooled), seed=5)
    table = contingency_table(fed, "g", "h")
    assert (table.loc["zz"] == 0).all()
    assert table.cells_below_threshold >= 3
    result = chi_square(fed, "g", "h")
    assert result.cells_below_threshold == table.cells_below_threshold
    assert result.dropped_rows == ("zz",)


# --- the MIP's reference cases ---------------------------------------------------------------


def _exareme2_cases(name: str, count: int) -> list[Any]:
    path = EXAREME2 / "expected" / name
    if not path.exists():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{path} is absent"))]
    cases = json.loads(path.read_text())["test_cases"][:count]
    return [pytest.param(case, id=f"{name.split('_expected')[0]}-{i}")
            for i, case in enumerate(cases)]


def _first(value: Any) -> float:
    return float(value[0] if isinstance(value, list) else value)


def _compare(ours: dict[str, float], theirs: dict[str, Any]) -> None:
    for field, value in ours.items():  # Exareme2's tolerances: relative 1e-6, absolute 1e-9
        assert close(value, _first(theirs[field]), rel=1e-6, abs_=1e-9), \
            (field, value, theirs[field])


def _onesample(fed: SimulatedFederation, inp: dict[str, Any]) -> dict[str, float]:
    data, p = inp["inputdata"], inp["parameters"]
    r = ttest_onesample(fed, data["y"][0], mu=p["mu"], alternative=p["alt_hypothesis"],
                        alpha=p["alpha"], datasets=data["datasets"])
    low, high = r.conf_int(0.05)  # they always report 95 %
    return {"n_obs": r.nobs, "t_value": r.statistic, "p_value": r.pvalue, "df": r.df,
            "mean_diff": r.estimate, "se_diff": r.se, "ci_lower": low, "ci_upper": high,
            "cohens_d": abs(r.cohens_d)}


def _paired(fed: SimulatedFederation, inp: dict[str, Any]) -> dict[str, float]:
    data, p = inp["inputdata"], inp["parameters"]
    r = ttest_paired(fed, data["x"][0], data["y"][0], alternative=p["alt_hypothesis"],
                     alpha=p["alpha"], datasets=data["datasets"])
    low, high = r.conf_int(0.05)
    return {"n_obs": r.nobs, "statistic": r.statistic, "p_value": r.pvalue, "df": r.df,
            "mean_diff": r.estimate, "se_difference": r.se, "ci_lower": low,
            "ci_upper": high, "cohens_d": r.cohens_d}


def _independent(fed: SimulatedFederation, inp: dict[str, Any]) -> dict[str, float]:
    data, p = inp["inputdata"], inp["parameters"]
    r = ttest_independent(fed, data["y"][0], data["x"][0], p["groupA"], p["groupB"],
                          alternative=p["alt_hypothesis"], alpha=p["alpha"],
                          equal_var=False, datasets=data["datasets"])
    low, high = r.conf_int(0.05)
    return {"statistic": r.statistic, "p_value": r.pvalue, "df": r.nobs - 2,
            "mean_diff": r.estimate, "se_difference": r.se, "ci_lower": low,
            "ci_upper": high, "cohens_d": r.cohens_d}


MAPPINGS: dict[str, Callable[[SimulatedFederation, dict[str, Any]], dict[str, float]]] = {
    "ttest_onesample": _onesample, "ttest_paired": _paired,
    "ttest_independent": _independent,
}


@pytest.mark.parametrize("case", _exareme2_cases("ttest_onesample_expected.json", 4)
                         + _exareme2_cases("ttest_paired_expected.json", 4)
                         + _exareme2_cases("ttest_independent_expected.json", 5))
def test_exareme2_reference_cases(dementia: SimulatedFederation, case: dict[str, Any],
                                  request: pytest.FixtureRequest) -> None:
    algorithm = request.node.callspec.id.split("-")[0]
    _compare(MAPPINGS[algorithm](dementia, case["input"]), case["output"])
