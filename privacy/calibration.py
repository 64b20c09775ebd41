"""Distributed discrete Gaussian calibration, noise standard deviations, L2 sensitivities.

Setting and assumption
----------------------
Every contributing node adds an independent share ``N_Z(0, sigma_share**2)`` to each coordinate
of its fixed-point vector before masking or encryption; only the sum over the nodes is
released. The guarantee must hold although up to ``n - h`` nodes may collude with the
aggregator or the researcher and add no noise (or reveal theirs): their shares are known to the
adversary and can be subtracted, which is post-processing, so what protects a row is the sum of
the ``h`` honest shares. ``h`` is a federation parameter and must count honest nodes **that
survive the round**: a dropped node adds nothing.

Theorem used (Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation", ICML 2021, arXiv:2102.06387, Theorem 1, from Proposition 14 /
Eq. (17)): let ``sigma >= 1/2``, let ``X_1..X_h`` be independent vectors of independent
``N_Z(0, sigma**2)`` coordinates in ``Z^d``, and let x, x' in Z^d with ``||x - x'||_2 <= D2`` and
``||x - x'||_1 <= D1``. With

    tau = 10 * sum_{k=1}^{h-1} exp(-2 pi**2 sigma**2 k / (k + 1)),     s = sqrt(h) sigma,

the Renyi divergence of every order alpha > 1 between ``x + sum X_i`` and ``x' + sum X_i`` is
at most the minimum of

    (a)  alpha D2**2 / (2 s**2) + tau d
    (b)  (alpha / 2) (D2**2 / s**2 + 2 D1 tau / s + tau**2 d)
    (c)  (alpha / 2) (D2 / s + tau sqrt(d))**2 .

(b) and (c) are rho-zCDP statements; (a) is (xi, rho)-zCDP with xi = tau d and, because
alpha > 1, implies ``(D2**2 / (2 s**2) + tau d)``-zCDP. :func:`distributed_rho` is the smallest
of the three resulting rhos. With h = 1, tau = 0 and this is the single discrete Gaussian
mechanism, ``rho = D2**2 / (2 sigma**2)`` for any sigma > 0 (Canonne, Kamath, Steinke 2020,
Theorem 14, the multivariate discrete Gaussian; OpenDP's ``make_gaussian`` privacy map).
The statement here follows the authors' reference implementation
(google-research/federated, ``distributed_dp/accounting_utils.py``, ``compute_rdp_dgaussian``).

Neighbouring relation: add or remove one row. Sensitivities are in fixed-point units (the
integers that are summed), computed from the declared clipping bounds; see the ``l2_sensitivity_*``
helpers. Values must be clipped at the node before encoding, or the sensitivity is void.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Final

from privacy.accounting import InvalidPrivacyRequest

__all__ = [
    "MIN_DISTRIBUTED_SIGMA",
    "discrete_gaussian_variance",
    "distributed_rho",
    "kls_tau",
    "l2_sensitivity_count",
    "l2_sensitivity_from_row_bounds",
    "l2_sensitivity_histogram",
    "l2_sensitivity_moments",
    "l2_sensitivity_sum",
    "share_sigma",
    "total_noise_std",
]

#: Proposition 14 of KLS 2021 assumes sigma >= 1/2 for h >= 2
MIN_DISTRIBUTED_SIGMA: Final = 0.5
#: calibrate to rho * (1 - this), so that float rounding can never put us above rho
_MARGIN: Final = 1e-12
_MAX_H: Final = 1_000_000


def _positive(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidPrivacyRequest(f"{what} must be a number")
    x = float(value)
    if not (math.isfinite(x) and x > 0.0):
        raise InvalidPrivacyRequest(f"{what} must be finite and > 0, got {value!r}")
    return x


def _count(value: object, what: str, top: int = _MAX_H) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise InvalidPrivacyRequest(f"{what} must be an integer in [1, {top}], got {value!r}")
    return value


def kls_tau(sigma_share: float, h: int) -> float:
    """KLS 2021's ``tau = 10 sum_{k=1}^{h-1} exp(-2 pi^2 sigma^2 k/(k+1))`` (0 when h = 1)."""
    s = _positive(sigma_share, "sigma_share")
    n = _count(h, "h")
    c = 2.0 * math.pi**2 * s * s
    return 10.0 * math.fsum(math.exp(-c * k / (k + 1)) for k in range(1, n))


def _l1_default(d2: float, dim: int) -> float:
    # the difference of two fixed-point vectors is an integer vector v, so
    # ||v||_1 <= ||v||_2**2 (|v_i| <= v_i**2) and ||v||_1 <= sqrt(d) ||v||_2
    return min(d2 * d2, math.sqrt(dim) * d2)


def distributed_rho(sigma_share: float, sensitivity_l2: float, h: int, *, dim: int = 1,
                    sensitivity_l1: float | None = None) -> float:
    """The rho-zCDP guarantee of the sum of ``h`` honest N_Z(0, sigma_share**2) shares per
    coordinate, for a ``dim``-long integer query of L2 sensitivity ``sensitivity_l2``
    (KLS 2021 Theorem 1 / Proposition 14, see the module docstring).

    ``sensitivity_l1`` defaults to ``min(D2**2, sqrt(dim) D2)``, valid for integer vectors.
    """
    sigma = _positive(sigma_share, "sigma_share")
    d2 = _positive(sensitivity_l2, "sensitivity_l2")
    n = _count(h, "h")
    d = _count(dim, "dim", top=1 << 40)
    d1 = _l1_default(d2, d) if sensitivity_l1 is None else _positive(sensitivity_l1,
                                                                    "sensitivity_l1")
    s2 = n * sigma * sigma
    base = d2 * d2 / (2.0 * s2)
    if n == 1:
        return base
    if sigma < MIN_DISTRIBUTED_SIGMA:
        raise InvalidPrivacyRequest("KLS 2021 needs sigma_share >= 1/2 when h >= 2")
    tau = kls_tau(sigma, n)
    s = math.sqrt(s2)
    rho_a = base + tau * d
    rho_b = 0.5 * (d2 * d2 / s2 + 2.0 * d1 * tau / s + tau * tau * d)
    rho_c = 0.5 * (d2 / s + tau * math.sqrt(d)) ** 2
    return min(rho_a, rho_b, rho_c)


def share_sigma(rho: float, sensitivity_l2: float, h: int, *, dim: int = 1,
                sensitivity_l1: float | None = None) -> float:
    """The per-node discrete Gaussian parameter so that the sum over any ``h`` honest nodes is
    rho-zCDP for L2 sensitivity ``sensitivity_l2`` (in fixed-point units).

    Conservative: the smallest float sigma (up to a 1e-12 relative margin) with
    ``distributed_rho(sigma, ...) <= rho * (1 - 1e-12)``; at least 1/2 when h >= 2 (the
    theorem's condition). With h = 1 this is ``D2 / sqrt(2 rho)``, the single-node discrete
    Gaussian. For h >= 2, start from the tau-free value ``D2 / sqrt(2 h rho)`` (a lower bound,
    as tau >= 0) and bisect upward on sigma; ``distributed_rho`` decreases in sigma.
    """
    r = _positive(rho, "rho")
    d2 = _positive(sensitivity_l2, "sensitivity_l2")
    n = _count(h, "h")
    d = _count(dim, "dim", top=1 << 40)
    target = r * (1.0 - _MARGIN)

    def rho_of(sigma: float) -> float:
        return distributed_rho(sigma, d2, n, dim=d, sensitivity_l1=sensitivity_l1)

    lo = d2 / math.sqrt(2.0 * n * target)
    if n > 1:
        lo = max(lo, MIN_DISTRIBUTED_SIGMA)
    if not math.isfinite(lo):
        raise InvalidPrivacyRequest("rho is too small for this sensitivity")
    sigma = lo
    for _ in range(64):  # h = 1 or negligible tau: the start meets the target within ulps
        if rho_of(sigma) <= target:
            return sigma
        sigma = math.nextafter(sigma, math.inf)
    hi = 2.0 * lo
    while rho_of(hi) > target:
        lo, hi = hi, 2.0 * hi
        if not math.isfinite(hi):
            raise InvalidPrivacyRequest("no sigma reaches this rho")
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if rho_of(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def discrete_gaussian_variance(sigma: float) -> float:
    """The exact variance of N_Z(0, sigma**2), which is slightly below sigma**2.

    Summed directly over |k| <= 40 sigma + 2 for sigma <= 8 (terms beyond are below e**-800);
    above 8, the relative deficit (about 8 pi**2 sigma**2 exp(-2 pi**2 sigma**2), by Poisson
    summation) is below 1e-540, so the variance is sigma**2 to double precision.
    """
    s = _positive(sigma, "sigma")
    if s > 8.0:
        return s * s
    top = math.ceil(40.0 * s) + 2
    weights = [math.exp(-k * k / (2.0 * s * s)) for k in range(1, top + 1)]
    norm = 1.0 + 2.0 * math.fsum(weights)
    second = 2.0 * math.fsum(k * k * w for k, w in enumerate(weights, start=1))
    return min(second / norm, s * s)  # the true variance is < sigma**2 (CKS 2020)


def total_noise_std(sigma_share: float, n_contributors: int) -> float:
    """The actual standard deviation of the released noise when ``n_contributors`` nodes
    (every node whose share is in the sum, honest or not) each add N_Z(0, sigma_share**2):
    ``sqrt(n Var[N_Z(0, sigma_share**2)])``, about ``sqrt(n) sigma_share``.

    Use this (not the h-node figure the guarantee rests on) for standard errors and confidence
    intervals; it is in fixed-point units, divide by the scale for the statistic's units.
    """
    n = _count(n_contributors, "n_contributors")
    return math.sqrt(n * discrete_gaussian_variance(sigma_share))


# ---------------------------------------------------------------- sensitivities


def _bound(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidPrivacyRequest(f"{what} must be a non-negative integer (fixed-point units)")
    return value


def _sqrt_up(n: int) -> float:
    """The smallest float whose square is >= the integer n (an upward-rounded sqrt)."""
    root = math.sqrt(n)
    while Fraction(root) ** 2 < n:
        root = math.nextafter(root, math.inf)
    return root


def l2_sensitivity_count() -> float:
    """A count: adding or removing one row changes it by 1."""
    return 1.0


def l2_sensitivity_sum(bound: int) -> float:
    """A sum of values clipped to ``|x| <= bound`` (fixed-point units): one row moves it by at
    most ``bound``."""
    b = _bound(bound, "bound")
    return float(b) if b <= 2**53 else _sqrt_up(b * b)


def l2_sensitivity_histogram() -> float:
    """A histogram or contingency table where each row falls in exactly one cell (add/remove
    one row changes one cell by 1): L2 (and L1) sensitivity 1, whatever the number of cells."""
    return 1.0


def l2_sensitivity_moments(bound: int) -> float:
    """The vector (count, sum x, sum x**2) with ``|x| <= bound`` in fixed-point units (so
    ``x**2 <= bound**2`` in squared units): ``sqrt(1 + B**2 + B**4)``, rounded up."""
    b = _bound(bound, "bound")
    return _sqrt_up(1 + b * b + b**4)


def l2_sensitivity_from_row_bounds(bounds: Sequence[int]) -> float:
    """A vector where one row adds at most ``bounds[j]`` (in absolute value, fixed-point units)
    to coordinate j, e.g. sufficient statistics (count, sums, cross-products) of a regression:
    ``sqrt(sum bounds[j]**2)``, rounded up."""
    if len(bounds) == 0:
        raise InvalidPrivacyRequest("bounds must not be empty")
    total = sum(_bound(b, "every bound") ** 2 for b in bounds)
    if total == 0:
        raise InvalidPrivacyRequest("at least one bound must be positive")
    return _sqrt_up(total)
