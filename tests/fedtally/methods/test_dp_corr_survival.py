"""Pearson correlation, PCA and Kaplan-Meier with differential privacy, through a simulated
federation (real node code: clipping, encoding, OpenDP noise shares, ledger charges).

With a huge rho the DP answers approach the exact ones; with a moderate rho, over repeated
releases on fixed data, the spread of a released number matches its reported noise_std and
the intervals (which also carry sampling error) cover the exact answer; bad requests fail
before anything is charged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedtally
from fedtally.methods.kaplan_meier import _km_block_dp, kaplan_meier
from fedtally.methods.logrank_test import logrank_test
from fedtally.methods.pca import pca
from fedtally.methods.pearson_correlation import pearson_correlation
from fedtally.methods.survival import Counts
from fedtally.simulated import SimulatedFederation
from node.policy import Policy
from protocol.errors import DegenerateInput, QueryError
from stats.datamodel import DataModel, Variable
from support import within_chance

NODES = ("n1", "n2", "n3")
#: a budget nothing exhausts; exact answers granted too, to compare against (all
#: of them: the exact curves are the reference, small interval cells included)
UNLIMITED = Policy.from_dict({"budgets": {"alice": {"*": {"rho": 1e9}}},
                              "exact_access": "*", "small_cell_threshold": 1})
BOUNDS = {"x": (-4.0, 4.0), "y": (-4.0, 4.0), "w": (-4.0, 4.0)}
GRID = list(range(0, 61, 5))
#: repeated releases per spread check: the std of 200 draws is itself within ~5% (1 sd),
#: so the 15% tolerance is ~3 sd (the noise comes from OpenDP's samplers: not seedable)
RUNS = 200


def _model() -> DataModel:
    # x, y, w declare no min/max: DP needs bounds=... for them (the bad-request test)
    variables = [
        Variable("dataset", "dataset", "text", True, NODES),
        Variable("x", "a measurement", "real", False),
        Variable("y", "another, correlated with x", "real", False),
        Variable("w", "a third", "real", False),
        Variable("time", "days to event", "int", False, min=0, max=60),
        Variable("status", "1 = event", "int", False, min=0, max=1),
        Variable("arm", "treatment arm", "text", True, ("A", "B")),
    ]
    return DataModel("cohort", "1", {v.code: v for v in variables})


def _rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    x = rng.normal(size=n)
    y = 0.6 * x + 0.8 * rng.normal(size=n)
    w = -0.3 * y + rng.normal(size=n)
    arm = rng.choice(["A", "B"], n)
    event_time = np.floor(rng.exponential(np.where(arm == "A", 25.0, 40.0)))
    censor_time = np.floor(rng.uniform(0, 90, n))
    time = np.minimum(np.minimum(event_time, censor_time), 60)
    status = ((event_time <= censor_time) & (event_time <= 60)).astype(float)
    frame = pd.DataFrame({"x": np.clip(x, -4, 4), "y": np.clip(y, -4, 4),
                          "w": np.clip(w, -4, 4), "time": time, "status": status, "arm": arm})
    frame.loc[rng.random(n) < 0.03, "x"] = np.nan
    return frame


@pytest.fixture(scope="module")
def fed() -> SimulatedFederation:
    rng = np.random.default_rng(20250117)
    data = {node: _rows(rng, size) for node, size in zip(NODES, (900, 1100, 1000), strict=True)}
    return SimulatedFederation(data, _model(), seed=3, policy=UNLIMITED)


def _dp(rho: float) -> fedtally.DP:
    return fedtally.DP(rho=rho, bounds=BOUNDS)


# --- Pearson --------------------------------------------------------------------------------


def test_pearson_approaches_exact_with_large_rho(fed: SimulatedFederation) -> None:
    exact = pearson_correlation(fed, ["x", "y", "w"])
    noisy = pearson_correlation(fed, ["x", "y", "w"], privacy=_dp(1e4))
    assert exact.noise_std is None
    assert noisy.privacy["mode"] == "dp" and noisy.privacy["rho"] == pytest.approx(1e4)
    np.testing.assert_allclose(noisy.r, exact.r, atol=2e-3)
    np.testing.assert_allclose(noisy.ci_low, exact.ci_low, atol=5e-3)
    np.testing.assert_allclose(noisy.ci_high, exact.ci_high, atol=5e-3)
    assert abs(noisy.nobs - exact.nobs) < 1
    assert noisy.nobs_noise_std > 0
    assert (noisy.noise_std.to_numpy().diagonal() == 0).all()
    assert (noisy.noise_std.to_numpy()[~np.eye(3, dtype=bool)] > 0).all()
    # rectangular layout (x= rows) keeps the noise of the right cells
    block = pearson_correlation(fed, ["y", "w"], x=["x"], privacy=_dp(1e4))
    assert list(block.noise_std.index) == ["x"] and list(block.noise_std.columns) == ["y", "w"]
    assert (block.noise_std.to_numpy() > 0).all()


def test_pearson_noise_std_matches_the_spread_and_intervals_cover(
        fed: SimulatedFederation) -> None:
    exact = pearson_correlation(fed, ["x", "y", "w"])
    truth = exact.r.loc["x", "y"]
    released, reported, covered = [], [], 0
    for _ in range(RUNS):
        result = pearson_correlation(fed, ["x", "y", "w"], privacy=_dp(0.5))
        r = result.r.loc["x", "y"]
        assert -1 <= r <= 1
        released.append(r)
        reported.append(result.noise_std.loc["x", "y"])
        covered += result.ci_low.loc["x", "y"] <= truth <= result.ci_high.loc["x", "y"]
    spread = np.std(released, ddof=1)
    # the noise must matter here, or this would test nothing
    assert spread > 0.01
    within_chance(spread / np.median(reported), RUNS - 1)  # a fixed 15% was 3 sd
    assert abs(np.mean(released) - truth) < 4 * spread / np.sqrt(RUNS)
    # the interval also carries sampling error, so it covers the data's own r more often
    # than 95% (about 96-99% here); 0.9 leaves room for the binomial spread of 200 runs
    assert covered / RUNS >= 0.9


def test_pearson_pvalues_and_one_sided_intervals(fed: SimulatedFederation) -> None:
    result = pearson_correlation(fed, ["x", "y"], privacy=_dp(1.0), alternative="greater")
    assert result.pvalues.loc["x", "y"] < 1e-10  # r ~ 0.6 over ~2900 rows
    assert result.ci_high.loc["x", "y"] == 1.0
    assert result.ci_low.loc["x", "y"] < result.r.loc["x", "y"]
    less = pearson_correlation(fed, ["x", "y"], privacy=_dp(1.0), alternative="less")
    assert less.ci_low.loc["x", "y"] == -1.0 and less.pvalues.loc["x", "y"] > 0.999


# --- PCA --------------------------------------------------------------------------------------


def test_pca_with_dp(fed: SimulatedFederation) -> None:
    exact = pca(fed, ["x", "y", "w"])
    noisy = pca(fed, ["x", "y", "w"], privacy=_dp(1e4))
    assert exact.noise_std is None
    np.testing.assert_allclose(noisy.eigenvalues, exact.eigenvalues, atol=5e-3)
    assert (noisy.noise_std > 0).all() and noisy.privacy["mode"] == "dp"
    values = []
    for _ in range(60):
        result = pca(fed, ["x", "y", "w"], standardize=False, privacy=_dp(0.5))
        values.append(result.eigenvalues.iloc[0])
    reported = result.noise_std.iloc[0]
    # fewer runs than above (a coarse check of the perturbation formula): 30%
    assert abs(np.std(values, ddof=1) / reported - 1) < 0.3


# --- Kaplan-Meier -----------------------------------------------------------------------------


def test_kaplan_meier_approaches_exact_with_large_rho(fed: SimulatedFederation) -> None:
    exact = kaplan_meier(fed, "time", "status", by="arm", times=GRID)
    noisy = kaplan_meier(fed, "time", "status", by="arm", times=GRID,
                         privacy=fedtally.DP(rho=1e4))
    assert "noise_std" not in exact.columns
    assert list(noisy.columns[: len(exact.columns)]) == list(exact.columns)
    assert {"noise_std", "at_risk_noise_std"} <= set(noisy.columns)
    assert noisy.privacy["mode"] == "dp" and noisy.attrs["count_noise_std"] > 0
    np.testing.assert_allclose(noisy["survival"], exact["survival"], atol=2e-3)
    np.testing.assert_allclose(noisy["at_risk"], exact["at_risk"], atol=1.0)
    np.testing.assert_allclose(noisy["events"], exact["events"], atol=0.5)
    # the at-risk noise accumulates: largest at the first grid time, shrinking afterwards
    first = noisy[noisy["group"] == "A"]["at_risk_noise_std"].to_numpy()
    assert (np.diff(first) < 0).all()


def test_kaplan_meier_noise_std_matches_the_spread(fed: SimulatedFederation) -> None:
    exact = kaplan_meier(fed, "time", "status", times=GRID)
    curves, reported, covered = [], [], np.zeros(len(GRID))
    for _ in range(RUNS):
        table = kaplan_meier(fed, "time", "status", times=GRID, privacy=fedtally.DP(rho=0.02))
        survival = table["survival"].to_numpy()
        assert ((0 <= survival) & (survival <= 1)).all() and (np.diff(survival) <= 0).all()
        assert (table["ci_lower"] <= table["survival"]).all()
        assert (table["survival"] <= table["ci_upper"]).all()
        curves.append(survival)
        reported.append(table["noise_std"].to_numpy())
        covered += ((table["ci_lower"] <= exact["survival"])
                    & (exact["survival"] <= table["ci_upper"])).to_numpy()
    spread = np.std(curves, axis=0, ddof=1)
    ratio = spread / np.median(reported, axis=0)
    # past the first grid times (where S sits near its clamp at 1 and the spread is cut)
    middle = slice(3, len(GRID))
    assert (spread[middle] > 0.003).all()
    # the spread of 200 draws is within ~5% (1 sd) of the truth, and the points of one
    # batch of curves err together (1,000 draws give ratios 0.99 to 1.06; batches of 200,
    # 0.91 to 1.13): the mean over the points within 3 sd, each point within 5 sd
    assert abs(np.mean(ratio[middle]) - 1) < 0.15, ratio
    assert np.all(np.abs(ratio[middle] - 1) < 0.25), ratio
    assert (covered[middle] / RUNS >= 0.9).all(), covered / RUNS


def test_kaplan_meier_post_processing_rules() -> None:
    """Deterministic checks on made-up noisy counts: a noisy at-risk number <= 0 makes the
    rest of the curve NaN; a noisy d >= n ends it at 0 with (0, previous upper)."""
    grid = [1.0, 2.0, 3.0, 4.0]
    var = np.full(5, 4.0)
    # at risk: 12.3, 12, 8 (d = 9 >= n: the curve ends), 1
    ended = Counts(np.array([-0.7, 3.0, 9.0, 2.0, 0.0]), np.array([1.0, 1.0, -2.0, 0.0, -1.0]),
                    var, var)
    table = _km_block_dp(grid, ended, 1.96)
    assert table["survival"].iloc[0] == 1.0  # a negative noisy d: clamped, not > 1
    assert table["ci_upper"].iloc[0] == 1.0 and table["ci_lower"].iloc[0] < 1.0
    assert table["survival"].iloc[2] == 0.0 and np.isnan(table["noise_std"].iloc[2])
    assert table["ci_upper"].iloc[3] == table["ci_upper"].iloc[2] == table["ci_upper"].iloc[1]
    assert (table["ci_lower"].iloc[2:] == 0).all()
    assert (table["survival"].iloc[2:] == 0).all()
    # at risk: 11.5, 4.5, -8.5 (not estimable from here on, though the next is 2.5)
    empty = Counts(np.array([2.0, 1.0, -9.0, 0.5, -1.0]), np.array([5.0, 12.0, -2.0, 1.0, 2.0]),
                    var, var)
    table = _km_block_dp(grid, empty, 1.96)
    assert table["survival"].iloc[:2].notna().all()
    assert table["survival"].iloc[2:].isna().all() and table["ci_upper"].iloc[2:].isna().all()


def test_kaplan_meier_noise_too_large_is_a_clear_error(fed: SimulatedFederation) -> None:
    """No rows selected: each time, either the noisy cohort is <= 0 (a clear error) or a
    (meaningless but well-formed) curve comes back; over 20 tries both happen."""
    raised = 0
    for _ in range(20):
        try:
            table = kaplan_meier(fed, "time", "status", times=GRID, filters="time > 1000",
                                 privacy=fedtally.DP(rho=1.0))
        except DegenerateInput as exc:
            assert "too small for this privacy level" in str(exc)
            raised += 1
        else:
            assert table["survival"].dropna().between(0, 1).all()
    assert raised > 0


# --- bad requests -------------------------------------------------------------------------


def test_bad_requests_fail_before_any_charge(fed: SimulatedFederation) -> None:
    spent = fed.budget()["spent_rho"].sum()
    with pytest.raises(QueryError, match="bounds"):
        pearson_correlation(fed, ["x", "y"], privacy=fedtally.DP(rho=0.1))
    with pytest.raises(QueryError, match="bounds"):
        pca(fed, ["x", "w"], privacy=fedtally.DP(rho=0.1, bounds={"x": (-4, 4)}))
    with pytest.raises(QueryError, match="privacy"):
        pearson_correlation(fed, ["x", "y"], privacy="dp")
    with pytest.raises(QueryError, match="privacy"):
        kaplan_meier(fed, "time", "status", times=GRID, privacy={"mode": "dp", "rho": 1})
    with pytest.raises(QueryError):
        logrank_test(fed, "time", "status", "arm", times=GRID, privacy=fedtally.DP(rho=0.1))
    with pytest.raises(QueryError):
        fedtally.DP(rho=-1.0)
    assert fed.budget()["spent_rho"].sum() == spent
