"""Integer noise shares from OpenDP's exact discrete samplers, and tail bounds for ring sizing.

Every share comes from OpenDP (``make_gaussian`` / ``make_laplace`` on a vector domain of
``i64``): on integer domains these are the exact samplers of Canonne, Kamath and Steinke
(NeurIPS 2020, Algorithms 1-3), which use only integer and rational arithmetic, so there is no
floating-point noise anywhere (Mironov 2012). Nothing here uses ``numpy.random`` or ``random``.

Randomness: OpenDP draws every bit through its ``fill_bytes``, which in the published wheels
(built with the ``use-openssl`` feature; the wheel statically links OpenSSL) is OpenSSL's
``RAND_bytes``, a CSPRNG seeded from the operating system. The samplers cannot be seeded, so
tests of this module are statistical (goodness of fit), not known-answer vectors.

The ``scale`` of a discrete Gaussian is its parameter ``sigma`` (pmf proportional to
``exp(-k**2 / (2 sigma**2))``), not exactly its standard deviation; see
:func:`privacy.calibration.discrete_gaussian_variance` for the exact variance.

Clamp policy (read before wiring shares into a ring)
----------------------------------------------------
Shares are **never clamped and never resampled**. Truncating a share (by clamping or by
rejection) changes its distribution, and the privacy theorems we rely on (CKS 2020 for one
discrete Gaussian, Kairouz-Liu-Steinke 2021 for sums of them) are about untruncated discrete
Gaussians; a truncated share would need an extra delta in the accounting. Instead,
:func:`tail_bound` is used only to *size* the ring, so that the noisy total lies within it
except with probability ``failure`` (2**-64 by default). If that event ever happened, the
modular sum would wrap; the wrapped value is a deterministic function of the exact noisy sum,
i.e. post-processing, so the privacy guarantee holds **exactly** and only that one answer is
wrong. For this argument to hold, every encoding applied to ``value + share`` must be total and
linear modulo the ring (reduce mod 2**k, pack into slots): it must never raise or branch on the
noisy value. Range checks belong on the clipped values *before* noise is added.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import numpy as np

# the modules themselves, not opendp.prelude: the prelude also imports OpenDP's extras
# (scikit-learn among them), a second of start-up for every node process
from opendp import measurements
from opendp.domains import atom_domain, vector_domain
from opendp.metrics import l1_distance, l2_distance
from opendp.mod import enable_features

__all__ = [
    "MAX_SCALE",
    "MAX_SHARES",
    "discrete_gaussian_shares",
    "discrete_laplace_shares",
    "tail_bound",
]

#: the largest noise scale accepted: a share then stays far below 2**63 (int64) except with
#: probability < exp(-2**20), and the scale is still an exactly representable integer float
MAX_SCALE: Final = 2.0**52
#: the longest share vector drawn in one call (about 12 microseconds per value per core)
MAX_SHARES: Final = 1 << 24
#: vectors at least this long are split over threads (the FFI call releases the GIL)
_PARALLEL_FROM: Final = 1 << 14
_WORKERS: Final = max(1, min(4, os.cpu_count() or 1))

enable_features("contrib")  # make_gaussian / make_laplace are "contrib" in OpenDP 0.16

_VECTOR = vector_domain(atom_domain(T="i64"))


def _check_scale(scale: float, what: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float):
        raise ValueError(f"{what} must be a number")
    value = float(scale)
    if not (math.isfinite(value) and 0.0 < value <= MAX_SCALE):
        raise ValueError(f"{what} must be finite, positive and at most 2**52; got {scale!r}")
    return value


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise ValueError("size must be an integer")
    if not 0 <= int(size) <= MAX_SHARES:
        raise ValueError(f"size must be in [0, {MAX_SHARES}]; got {size}")
    return int(size)


def _draw(measurement: Any, size: int) -> np.ndarray:
    """``size`` draws of ``measurement`` applied to the zero vector, as int64."""
    if size == 0:
        return np.zeros(0, dtype=np.int64)

    def sample(n: int) -> list[int]:
        return measurement([0] * n)

    if size < _PARALLEL_FROM or _WORKERS == 1:
        return np.asarray(sample(size), dtype=np.int64)
    q, r = divmod(size, _WORKERS)
    chunks = [q + (i < r) for i in range(_WORKERS)]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        parts = list(pool.map(sample, chunks))
    return np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])


def discrete_gaussian_shares(scale_sigma: float, size: int) -> np.ndarray:
    """``size`` independent draws of the discrete Gaussian N_Z(0, scale_sigma**2), as int64.

    Exact sampler of OpenDP (``make_gaussian`` on ``vector_domain(atom_domain(T=i64))``,
    i.e. CKS 2020's algorithm), OS-seeded CSPRNG (see the module docstring). ``scale_sigma``
    is the per-node share parameter from :func:`privacy.calibration.share_sigma`. Add the
    result to the node's fixed-point vector unmodified (no clamping; see "Clamp policy").
    """
    sigma = _check_scale(scale_sigma, "scale_sigma")
    n = _check_size(size)
    measurement = measurements.make_gaussian(_VECTOR, l2_distance(T="i64"), scale=sigma)
    return _draw(measurement, n)


def discrete_laplace_shares(scale: float, size: int) -> np.ndarray:
    """``size`` independent draws of the discrete Laplace (two-sided geometric) distribution,
    pmf proportional to ``exp(-|k| / scale)``, as int64, from OpenDP's exact sampler.

    For a *single* noiser only (pure epsilon-DP with epsilon = L1 sensitivity / scale): a sum
    of discrete Laplace shares is not discrete Laplace, and no distributed calibration is
    offered for it. The federation's distributed noise is the discrete Gaussian.
    """
    b = _check_scale(scale, "scale")
    n = _check_size(size)
    measurement = measurements.make_laplace(_VECTOR, l1_distance(T="i64"), scale=b)
    return _draw(measurement, n)


def tail_bound(sigma: float, n_nodes: int, failure: float = 2.0**-64, *, dim: int = 1) -> int:
    """An integer ``B`` with ``P[max_j |S_j| > B] <= failure``, where each of the ``dim``
    coordinates ``S_j`` is a sum of ``n_nodes`` independent N_Z(0, sigma**2) shares.

    Proof: a discrete Gaussian is sub-Gaussian with variance proxy ``sigma**2``,
    ``E[exp(t X)] <= exp(t**2 sigma**2 / 2)`` (Canonne, Kamath, Steinke 2020, the
    sub-Gaussian tail bound for N_Z(0, sigma^2) in their Section 2). A sum of ``n``
    independent shares is then sub-Gaussian with proxy ``n sigma**2``, so
    ``P[|S_j| > t] <= 2 exp(-t**2 / (2 n sigma**2))``; a union bound over ``dim`` coordinates
    gives ``t = sigma * sqrt(2 n ln(2 dim / failure))``. ``B`` is that value rounded up, plus 1
    for floating-point slack.

    Use: size the ring so that ``sum of |clipped values| + B`` fits (signed). Beyond ``B``
    nothing is clamped; see the module's "Clamp policy".
    """
    s = _check_scale(sigma, "sigma")
    for name, value in (("n_nodes", n_nodes), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if isinstance(failure, bool) or not isinstance(failure, int | float):
        raise ValueError("failure must be a number")
    if not 0.0 < float(failure) < 1.0:
        raise ValueError(f"failure must be in (0, 1); got {failure!r}")
    log_term = math.log(2.0 * dim) - math.log(float(failure))
    t = s * math.sqrt(2.0 * n_nodes * log_term)
    return math.ceil(t) + 1
