"""Noise shares as used: goodness of fit of the summed, calibrated discrete Gaussian shares.

Each setting calibrates a share with :func:`privacy.calibration.share_sigma`, draws 120,000
sums of ``n`` shares (OpenDP's exact sampler), and compares them with the exact distribution
of the sum: the n-fold convolution of the discrete Gaussian pmf, normalised over +-14 sigma
(the mass beyond is below e**-98). Tests: chi-square on bins of equal expected mass and a
discrete Kolmogorov-Smirnov distance, both at alpha = 1e-6, plus z-tests of mean and variance.
The KS p-value uses the continuous null distribution, which is conservative for a discrete
one. Each setting also checks that the same tests reject a 5% wrong scale (power).
"""

from __future__ import annotations

import ast
import math
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import signal, stats

from privacy.calibration import share_sigma, total_noise_std
from privacy.noise import (
    MAX_SHARES,
    discrete_gaussian_shares,
    discrete_laplace_shares,
    tail_bound,
)

ALPHA = 1e-6
DRAWS = 120_000
NOISE_PY = Path(__file__).resolve().parents[2] / "privacy" / "noise.py"


def dg_pmf(sigma: float, n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Support and exact pmf of a sum of n independent N_Z(0, sigma**2)."""
    top = math.ceil(14.0 * sigma) + 2
    ks = np.arange(-top, top + 1)
    one = np.exp(-(ks.astype(np.float64) ** 2) / (2.0 * sigma * sigma))
    one /= one.sum()
    pmf = one
    for _ in range(n - 1):
        pmf = np.clip(signal.fftconvolve(pmf, one), 0.0, None)  # FFT error ~1e-19 absolute
    support = np.arange(-n * top, n * top + 1)
    return support, pmf / pmf.sum()


def dlap_pmf(scale: float) -> tuple[np.ndarray, np.ndarray]:
    top = math.ceil(60.0 * scale) + 2
    ks = np.arange(-top, top + 1)
    pmf = np.exp(-np.abs(ks) / scale)
    return ks, pmf / pmf.sum()


def chi_square_pvalue(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> float:
    """Chi-square over bins of consecutive integers with about equal expected counts."""
    n = samples.size
    target = max(20.0, n / 400.0) / n  # expected count per bin >= 20, at most ~400 bins
    edges = [0]  # bins are [edges[i], edges[i+1]) in support indices
    mass = 0.0
    for i, p in enumerate(pmf):
        mass += p
        if mass >= target:
            edges.append(i + 1)
            mass = 0.0
    if edges[-1] != len(pmf):
        if len(edges) > 1:
            edges[-1] = len(pmf)  # fold the light right tail into the last bin
        else:
            edges.append(len(pmf))
    cum = np.concatenate([[0.0], np.cumsum(pmf)])
    expected = n * np.diff(cum[edges])
    counts = np.bincount(np.clip(samples - support[0], 0, len(pmf) - 1), minlength=len(pmf))
    ccum = np.concatenate([[0], np.cumsum(counts)])
    observed = np.diff(ccum[edges])
    assert observed.sum() == n
    return float(stats.chisquare(observed, expected * n / expected.sum()).pvalue)


def ks_pvalue(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> float:
    """Discrete KS: max |empirical CDF - exact CDF| over the integers of the support."""
    n = samples.size
    assert samples.min() >= support[0] and samples.max() <= support[-1]
    counts = np.bincount(samples - support[0], minlength=len(pmf))
    distance = float(np.max(np.abs(np.cumsum(counts) / n - np.cumsum(pmf))))
    return float(stats.kstwo.sf(distance, n))


def moment_pvalues(samples: np.ndarray, support: np.ndarray,
                   pmf: np.ndarray) -> tuple[float, float]:
    n = samples.size
    x = support.astype(np.float64)
    mean = float(np.dot(pmf, x))
    var = float(np.dot(pmf, (x - mean) ** 2))
    m4 = float(np.dot(pmf, (x - mean) ** 4))
    s = samples.astype(np.float64)
    z_mean = (s.mean() - mean) / math.sqrt(var / n)
    z_var = (s.var() - var) / math.sqrt((m4 - var * var) / n)
    return (float(2 * stats.norm.sf(abs(z_mean))), float(2 * stats.norm.sf(abs(z_var))))


# (rho, L2 sensitivity, honest h, nodes adding noise n): share sigmas about 0.8, 0.81, 3, 25, 408
SETTINGS = [
    pytest.param(0.78125, 1, 1, 1, id="sigma0.8-single"),
    pytest.param(0.39, 1, 2, 3, id="sigma0.81-h2-n3"),
    pytest.param(1.0, 6, 2, 2, id="sigma3-h2-n2"),
    pytest.param(1.0, 50, 2, 2, id="sigma25-h2-n2"),
    pytest.param(1.0, 1000, 3, 3, id="sigma408-h3-n3"),
]


@pytest.mark.parametrize(("rho", "sens", "h", "n"), SETTINGS)
def test_sum_of_calibrated_shares_fits_the_exact_convolution(rho: float, sens: int, h: int,
                                                             n: int) -> None:
    sigma = share_sigma(rho, sens, h)
    shares = discrete_gaussian_shares(sigma, n * DRAWS)
    assert shares.dtype == np.int64 and shares.shape == (n * DRAWS,)
    sums = shares.reshape(n, DRAWS).sum(axis=0)
    support, pmf = dg_pmf(sigma, n)

    p_chi = chi_square_pvalue(sums, support, pmf)
    p_ks = ks_pvalue(sums, support, pmf)
    p_mean, p_var = moment_pvalues(sums, support, pmf)
    assert min(p_chi, p_ks, p_mean, p_var) > ALPHA, (p_chi, p_ks, p_mean, p_var)

    # the reported std is the actual one (all n shares), matching the exact pmf
    x = support.astype(np.float64)
    assert total_noise_std(sigma, n) == pytest.approx(math.sqrt(np.dot(pmf, x * x)), rel=1e-9)

    # power: the same draws reject a model whose share scale is 5% off
    _, wrong = dg_pmf(sigma * 1.05, n)
    assert chi_square_pvalue(sums, support, wrong) < ALPHA


def test_discrete_laplace_fits_its_pmf() -> None:
    scale = 4.0
    samples = discrete_laplace_shares(scale, DRAWS)
    support, pmf = dlap_pmf(scale)
    assert chi_square_pvalue(samples, support, pmf) > ALPHA
    assert ks_pvalue(samples, support, pmf) > ALPHA


def test_a_100k_vector_is_fast() -> None:
    discrete_gaussian_shares(3.0, 1000)  # warm up
    # CPU time of this process (all threads): stable when other jobs load the machine;
    # about 1.2 s of CPU, i.e. about 0.7 s of wall time on 2 idle cores
    start = time.process_time()
    shares = discrete_gaussian_shares(1234.5, 100_000)
    elapsed = time.process_time() - start
    assert shares.shape == (100_000,) and shares.dtype == np.int64
    assert elapsed < 4.0, f"100k discrete Gaussian shares took {elapsed:.2f} s of CPU"


def test_shapes_and_empty_vector() -> None:
    assert discrete_gaussian_shares(2.0, 0).shape == (0,)
    assert discrete_gaussian_shares(2.0, 1).shape == (1,)
    assert discrete_gaussian_shares(2.0, np.int64(5)).shape == (5,)
    huge = discrete_gaussian_shares(2.0**40, 1000)
    assert np.abs(huge).max() < 2**47  # far below int64 overflow


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, 2.0**53, True, "1"])
def test_bad_scales_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        discrete_gaussian_shares(bad, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        discrete_laplace_shares(bad, 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, MAX_SHARES + 1, 1.5, True])
def test_bad_sizes_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        discrete_gaussian_shares(1.0, bad)  # type: ignore[arg-type]


def test_noise_uses_no_numpy_or_python_randomness() -> None:
    tree = ast.parse(NOISE_PY.read_text())
    names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "random" not in names and "secrets" not in names
    attrs = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "random" not in attrs  # no np.random.*


# ---------------------------------------------------------------- tail bound


@pytest.mark.parametrize(("sigma", "n"), [(0.8, 3), (3.0, 2), (25.0, 5), (400.0, 4)])
def test_tail_bound_holds_against_the_exact_pmf(sigma: float, n: int) -> None:
    failure = 1e-9  # still representable in the pmf's doubles
    bound = tail_bound(sigma, n, failure)
    support, pmf = dg_pmf(sigma, n)
    by_abs = np.zeros(support[-1] + 2)
    np.add.at(by_abs, np.abs(support), pmf)
    at_least = np.cumsum(by_abs[::-1])[::-1]  # at_least[t] = P(|S| >= t)
    assert bound + 1 < at_least.size and at_least[bound + 1] <= failure
    # and it is not absurdly loose: within 1.5x of the exact (1 - failure) quantile of |S|
    exact = int(np.argmax(at_least[1:] <= failure))  # smallest t with P(|S| > t) <= failure
    assert bound <= 1.5 * exact + 2


def test_tail_bound_values_and_scaling() -> None:
    b = tail_bound(100.0, 1)
    assert b == math.ceil(100.0 * math.sqrt(2 * math.log(2 * 2.0**64))) + 1  # about 9.5 sigma
    assert tail_bound(100.0, 4) > tail_bound(100.0, 1)
    assert tail_bound(100.0, 4) <= 2 * b  # grows like sqrt(n)
    assert tail_bound(100.0, 1, dim=1000) > b  # union bound over coordinates
    assert tail_bound(100.0, 1, failure=1e-3) < b


@pytest.mark.parametrize("kwargs", [
    {"sigma": 0.0, "n_nodes": 1}, {"sigma": 1.0, "n_nodes": 0},
    {"sigma": 1.0, "n_nodes": 1, "failure": 0.0}, {"sigma": 1.0, "n_nodes": 1, "failure": 1.0},
    {"sigma": 1.0, "n_nodes": 1, "dim": 0}, {"sigma": math.nan, "n_nodes": 1},
])
def test_tail_bound_refuses_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        tail_bound(**kwargs)  # type: ignore[arg-type]
