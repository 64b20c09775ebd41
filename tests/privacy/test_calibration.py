"""Distributed discrete Gaussian calibration (KLS 2021), noise std, L2 sensitivities."""

from __future__ import annotations

import math
from fractions import Fraction

import opendp.prelude as dp
import pytest

from privacy.accounting import InvalidPrivacyRequest
from privacy.calibration import (
    MIN_DISTRIBUTED_SIGMA,
    discrete_gaussian_variance,
    distributed_rho,
    kls_tau,
    l2_sensitivity_count,
    l2_sensitivity_from_row_bounds,
    l2_sensitivity_histogram,
    l2_sensitivity_moments,
    l2_sensitivity_sum,
    share_sigma,
    total_noise_std,
)

dp.enable_features("contrib")

RHOS = [1e-4, 0.01, 0.1, 0.5, 1.0, 4.0]
SENS = [1.0, 3.0, 100.0, 2.0**16, math.sqrt(1 + 2**20 + 2**40)]
HS = [1, 2, 3, 5, 10, 50]


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("sens", SENS)
@pytest.mark.parametrize("h", HS)
def test_returned_sigma_meets_the_bound_and_is_nearly_minimal(rho: float, sens: float,
                                                              h: int) -> None:
    for dim in (1, 7, 10_000):
        sigma = share_sigma(rho, sens, h, dim=dim)
        assert distributed_rho(sigma, sens, h, dim=dim) <= rho
        if h >= 2:
            assert sigma >= MIN_DISTRIBUTED_SIGMA
        if sigma > MIN_DISTRIBUTED_SIGMA * (1 + 1e-9):  # not at the theorem's floor
            assert distributed_rho(sigma * (1 - 1e-9), sens, h, dim=dim) > rho * (1 - 1e-12)
        # never below the tau-free value sens / sqrt(2 h rho) (the continuous-Gaussian figure)
        assert sigma >= sens / math.sqrt(2 * h * rho)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("sens", [1, 7, 1000, 2**20])
def test_single_node_is_the_discrete_gaussian_mechanism(rho: float, sens: int) -> None:
    sigma = share_sigma(rho, sens, 1)
    assert sigma == pytest.approx(sens / math.sqrt(2 * rho), rel=1e-9)
    assert distributed_rho(sigma, sens, 1) == pytest.approx(sens**2 / (2 * sigma**2), rel=1e-14)
    assert kls_tau(sigma, 1) == 0.0
    # OpenDP's own privacy map of the discrete Gaussian on integer vectors agrees
    meas = dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T=dp.i64)),
                              dp.l2_distance(T=dp.i64), scale=sigma)
    assert meas.map(sens) <= rho


def test_monotone_in_rho_sensitivity_and_h() -> None:
    for h in HS:
        sig = [share_sigma(r, 10.0, h) for r in RHOS]
        assert all(a >= b for a, b in zip(sig, sig[1:], strict=False))  # more rho, less noise
        sig = [share_sigma(0.5, s, h) for s in SENS]
        assert all(a <= b for a, b in zip(sig, sig[1:], strict=False))  # more sens, more noise
    for rho in RHOS:
        sig = [share_sigma(rho, 10.0, h) for h in HS]
        assert all(a >= b for a, b in zip(sig, sig[1:], strict=False))  # more honest, less each
    # more coordinates can only need more noise (tau * d terms)
    sig = [share_sigma(0.5, 1.0, 3, dim=d) for d in (1, 10, 1000, 10**6)]
    assert all(a <= b for a, b in zip(sig, sig[1:], strict=False))


def test_tau_correction_matters_only_for_small_shares() -> None:
    # small sigma: the sum of discrete Gaussians is measurably not discrete Gaussian
    small = share_sigma(0.39, 1.0, 2)
    assert small > 1.01 * (1.0 / math.sqrt(2 * 2 * 0.39))
    assert kls_tau(small, 2) > 1e-3
    # moderate sigma: tau is below 1e-30 and the calibration is the continuous figure
    big = share_sigma(1.0, 50.0, 5)
    assert kls_tau(big, 5) < 1e-30
    assert big == pytest.approx(50.0 / math.sqrt(2 * 5 * 1.0), rel=1e-9)


def test_explicit_l1_sensitivity_is_used_and_checked() -> None:
    # a histogram of 10,000 cells: D1 = D2 = 1 beats the default sqrt(d) * D2 bound
    with_l1 = distributed_rho(0.7, 1.0, 4, dim=10_000, sensitivity_l1=1.0)
    default = distributed_rho(0.7, 1.0, 4, dim=10_000)
    assert with_l1 <= default
    with pytest.raises(InvalidPrivacyRequest):
        distributed_rho(0.7, 1.0, 4, sensitivity_l1=0.0)


def test_distributed_rho_refuses_sigma_below_one_half_for_h_ge_2() -> None:
    with pytest.raises(InvalidPrivacyRequest):
        distributed_rho(0.49, 1.0, 2)
    assert distributed_rho(0.49, 1.0, 1) == pytest.approx(1 / (2 * 0.49**2))


@pytest.mark.parametrize("kwargs", [
    {"rho": 0.0, "sensitivity_l2": 1.0, "h": 1},
    {"rho": -1.0, "sensitivity_l2": 1.0, "h": 1},
    {"rho": math.inf, "sensitivity_l2": 1.0, "h": 1},
    {"rho": math.nan, "sensitivity_l2": 1.0, "h": 1},
    {"rho": 1.0, "sensitivity_l2": 0.0, "h": 1},
    {"rho": 1.0, "sensitivity_l2": 1.0, "h": 0},
    {"rho": 1.0, "sensitivity_l2": 1.0, "h": 2.0},
    {"rho": 1.0, "sensitivity_l2": 1.0, "h": True},
    {"rho": 1.0, "sensitivity_l2": 1.0, "h": 1, "dim": 0},
    {"rho": 1e-300, "sensitivity_l2": 1e300, "h": 1},
])
def test_share_sigma_refuses_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidPrivacyRequest):
        share_sigma(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- noise std


def _direct_variance(sigma: float) -> float:
    top = math.ceil(60 * sigma) + 5
    w = [math.exp(-k * k / (2 * sigma * sigma)) for k in range(-top, top + 1)]
    return math.fsum(k * k * x for k, x in zip(range(-top, top + 1), w, strict=True)) / math.fsum(w)


@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.5, 0.8, 1.0, 2.0, 5.0, 7.99, 8.0, 8.01, 20.0])
def test_discrete_gaussian_variance_is_exact(sigma: float) -> None:
    var = discrete_gaussian_variance(sigma)
    assert var == pytest.approx(_direct_variance(sigma), rel=1e-13, abs=1e-300)
    assert var <= sigma * sigma


def test_total_noise_std_is_the_actual_std_of_all_shares() -> None:
    assert total_noise_std(30.0, 4) == pytest.approx(60.0, rel=1e-15)
    assert total_noise_std(3.0, 1) == pytest.approx(3.0, rel=1e-12)
    # below sigma for small shares (the discrete Gaussian's variance is less than sigma**2)
    assert total_noise_std(0.5, 9) < 1.5
    # all n contributors count, not only the h the guarantee rests on
    sigma = share_sigma(0.5, 10.0, 2)
    assert total_noise_std(sigma, 5) == pytest.approx(math.sqrt(5) * sigma, rel=1e-12)


# ---------------------------------------------------------------- sensitivities


def test_sensitivity_helpers() -> None:
    assert l2_sensitivity_count() == 1.0
    assert l2_sensitivity_histogram() == 1.0
    assert l2_sensitivity_sum(1000) == 1000.0
    assert l2_sensitivity_sum(2**60 + 1) >= 2**60 + 1
    for b in (0, 1, 10, 255, 2**16, 2**31, 2**40 + 3):
        exact = 1 + b * b + b**4
        got = l2_sensitivity_moments(b)
        assert Fraction(got) ** 2 >= exact  # rounded up, never down
        assert got == pytest.approx(math.sqrt(exact), rel=1e-15)
    assert l2_sensitivity_moments(1) == pytest.approx(math.sqrt(3))
    got = l2_sensitivity_from_row_bounds([1, 100, 100**2])
    assert got == l2_sensitivity_moments(100)
    assert l2_sensitivity_from_row_bounds([3, 4]) == 5.0


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_sensitivity_helpers_refuse_bad_bounds(bad: object) -> None:
    with pytest.raises(InvalidPrivacyRequest):
        l2_sensitivity_sum(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidPrivacyRequest):
        l2_sensitivity_moments(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidPrivacyRequest):
        l2_sensitivity_from_row_bounds([1, bad])  # type: ignore[list-item]


def test_row_bounds_must_not_be_empty_or_zero() -> None:
    with pytest.raises(InvalidPrivacyRequest):
        l2_sensitivity_from_row_bounds([])
    with pytest.raises(InvalidPrivacyRequest):
        l2_sensitivity_from_row_bounds([0, 0])
