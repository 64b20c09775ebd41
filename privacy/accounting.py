"""zCDP accounting: integer budgets, the tight zCDP -> (epsilon, delta) conversion, requests.

Internally every privacy amount is rho of zero-concentrated DP (Bun and Steinke, TCC 2016):
a mechanism M is rho-zCDP if ``D_alpha(M(x) || M(x')) <= rho * alpha`` for every alpha > 1 and
all neighbouring x, x' (here: add or remove one row). Composition adds rho (Bun-Steinke 2016,
Lemma 2.3), which is what :class:`Budget` addition does, on integers.

Conversion to (epsilon, delta) for people: Canonne, Kamath, Steinke, "The Discrete Gaussian
for Differential Privacy" (NeurIPS 2020, arXiv:2004.00010), Corollary 13: if M is rho-zCDP,
then M is (epsilon, delta)-DP for every epsilon >= 0 with

    delta = inf_{alpha > 1}  exp((alpha - 1)(alpha rho - epsilon)) / (alpha - 1) * (1 - 1/alpha)**alpha.

Solving ``delta(alpha) <= delta`` for epsilon at a fixed alpha gives, for *every* alpha > 1,
a valid epsilon

    f(alpha) = alpha rho + (ln(1/delta) - ln(alpha)) / (alpha - 1) + ln(1 - 1/alpha),

and the tight epsilon is ``inf_alpha f(alpha)``. With ``u = alpha - 1`` and
``L = ln(1/delta)``, ``f'(alpha) = rho - (L - ln alpha) / (alpha - 1)**2``, so f has exactly
one minimum, at the root of ``g(u) = rho u**2 + ln(1 + u) - L`` (g is increasing, g(0) = -L < 0,
g(sqrt(L / rho)) > 0). :func:`epsilon_from_rho` bisects g on that bracket and evaluates f at
the bracket ends: any alpha gives a valid epsilon, so an inexact root can only make the answer
larger (the conservative direction); a relative 1e-12 pad covers rounding of the evaluation.
:func:`rho_from_epsilon_delta` bisects rho (epsilon is increasing in rho) and returns the lower
end, whose computed epsilon is <= the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from privacy.errors import InvalidRequest

__all__ = [
    "MAX_NANO",
    "NANO_PER_RHO",
    "Budget",
    "DPRequest",
    "InvalidPrivacyRequest",
    "compose",
    "epsilon_from_rho",
    "rho_from_epsilon_delta",
]


class InvalidPrivacyRequest(InvalidRequest):
    """A privacy request or parameter that is malformed or out of range (our caller's fault);
    a :class:`PrivacyError` and a ``ValueError``.

    Raised before any work: no budget is charged and no noise is drawn.
    """


#: budgets and charges are integers in nano-rho (the ledger's unit, see ``privacy/units.py``)
NANO_PER_RHO: Final = 10**9
#: no single amount above this (rho 10**6): sums stay far inside SQLite's 64-bit integers
MAX_NANO: Final = 10**15
#: relative pad on computed epsilons for floating-point evaluation error
_PAD: Final = 1e-12


def _real(value: object, what: str) -> float:
    """``value`` as a finite float, or :class:`InvalidPrivacyRequest`."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise InvalidPrivacyRequest(f"{what} must be a number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError as exc:
        raise InvalidPrivacyRequest(f"{what} must be finite") from exc
    if not math.isfinite(x):
        raise InvalidPrivacyRequest(f"{what} must be finite, got {value!r}")
    return x


def _check_rho(rho: object) -> float:
    x = _real(rho, "rho")
    if x <= 0.0:
        raise InvalidPrivacyRequest(f"rho must be > 0, got {rho!r}")
    return x


def _check_epsilon(epsilon: object) -> float:
    x = _real(epsilon, "epsilon")
    if x <= 0.0:
        raise InvalidPrivacyRequest(f"epsilon must be > 0, got {epsilon!r}")
    return x


def _check_delta(delta: object) -> float:
    x = _real(delta, "delta")
    if not 0.0 < x < 1.0:
        raise InvalidPrivacyRequest(f"delta must be in (0, 1), got {delta!r}")
    return x


# ---------------------------------------------------------------- conversions (CKS 2020)


def _f(u: float, rho: float, log_inv_delta: float) -> float:
    """CKS 2020 Cor. 13 epsilon at alpha = 1 + u, padded upward for rounding."""
    terms = ((1.0 + u) * rho, (log_inv_delta - math.log1p(u)) / u, math.log(u) - math.log1p(u))
    value = math.fsum(terms)
    return value + _PAD * math.fsum(abs(t) for t in terms)


def epsilon_from_rho(rho: float, delta: float) -> float:
    """The epsilon such that rho-zCDP implies (epsilon, delta)-DP, by CKS 2020 Corollary 13.

    The infimum over alpha is found by bisection on the stationarity condition (see the module
    docstring); the returned value is ``f(alpha)`` at a concrete alpha, hence always a valid
    (never an under-) statement, and within about 1e-12 relative of the exact infimum.
    """
    r = _check_rho(rho)
    d = _check_delta(delta)
    big_l = -math.log(d)
    lo, hi = 0.0, math.sqrt(big_l / r)  # g(lo) < 0 < g(hi)
    if hi == 0.0:  # only when ln(1/delta) underflows relative to rho: use a tiny alpha - 1
        hi = 1e-300
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if r * mid * mid + math.log1p(mid) - big_l < 0.0:
            lo = mid
        else:
            hi = mid
    candidates = [_f(u, r, big_l) for u in (lo, hi) if u > 0.0]
    return max(0.0, min(candidates))


def rho_from_epsilon_delta(epsilon: float, delta: float) -> float:
    """The largest rho (to about 1e-12 relative) such that rho-zCDP implies
    (epsilon, delta)-DP by CKS 2020 Corollary 13; conservative: the returned rho satisfies
    ``epsilon_from_rho(rho, delta) <= epsilon``.

    Bisection on rho: epsilon_from_rho is increasing in rho, so the lower end of the bracket
    always meets the target. The bracket starts at [0, epsilon] (epsilon_from_rho(rho) >= rho
    for delta <= 1/e, widened by doubling otherwise).
    """
    e = _check_epsilon(epsilon)
    d = _check_delta(delta)
    lo, hi = 0.0, e
    while epsilon_from_rho(hi, d) <= e:  # only for delta close to 1
        lo, hi = hi, 2.0 * hi
        if hi > MAX_NANO:
            raise InvalidPrivacyRequest("epsilon and delta allow an unbounded rho")
    for _ in range(2000):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if epsilon_from_rho(mid, d) <= e:
            lo = mid
        else:
            hi = mid
    if lo == 0.0:
        raise InvalidPrivacyRequest(f"epsilon={epsilon!r} is too small for delta={delta!r}")
    return lo


# ---------------------------------------------------------------- integer budgets


def _nano(rho: float, rounding: Literal["down", "up"]) -> int:
    """rho in nano-rho; a float is read as its shortest decimal (what a person wrote)."""
    scaled = Decimal(repr(float(rho))) * NANO_PER_RHO
    units = math.floor(scaled) if rounding == "down" else math.ceil(scaled)
    return int(units)


@dataclass(frozen=True, order=True)
class Budget:
    """An amount of zCDP privacy loss in integer nano-rho (``rho = nano_rho / 10**9``).

    Integers so that checks never compare floats; ``+`` is zCDP composition.
    """

    nano_rho: int

    def __post_init__(self) -> None:
        if isinstance(self.nano_rho, bool) or not isinstance(self.nano_rho, int):
            raise InvalidPrivacyRequest("a budget is an integer number of nano-rho")
        if not 0 <= self.nano_rho <= MAX_NANO:
            raise InvalidPrivacyRequest(f"a budget must be in [0, {MAX_NANO}] nano-rho")

    @classmethod
    def from_rho(cls, rho: float, *, rounding: Literal["down", "up"]) -> Budget:
        """From a rho: ``"down"`` for limits and for what a request may spend (the mechanism is
        then calibrated to the rounded value), ``"up"`` for charging a given mechanism."""
        if rounding not in ("down", "up"):
            raise InvalidPrivacyRequest("rounding must be 'down' or 'up'")
        x = _real(rho, "rho")
        if x < 0.0:
            raise InvalidPrivacyRequest(f"rho must be >= 0, got {rho!r}")
        if x > MAX_NANO / NANO_PER_RHO:
            raise InvalidPrivacyRequest(f"rho must be at most {MAX_NANO // NANO_PER_RHO}")
        return cls(_nano(x, rounding))

    @property
    def rho(self) -> float:
        """The rho as a float (correctly rounded), for calibration and display."""
        return self.nano_rho / NANO_PER_RHO

    def epsilon(self, delta: float) -> float:
        """The (epsilon, delta)-DP statement this budget implies (CKS 2020 Cor. 13)."""
        if self.nano_rho == 0:
            _check_delta(delta)
            return 0.0
        return epsilon_from_rho(self.rho, delta)

    def split(self, parts: int) -> Budget:
        """The share of one of ``parts`` equal parts, rounded down (parts compose to <= self)."""
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise InvalidPrivacyRequest("parts must be a positive integer")
        return Budget(self.nano_rho // parts)

    def __add__(self, other: Budget) -> Budget:
        if not isinstance(other, Budget):
            return NotImplemented
        return Budget(self.nano_rho + other.nano_rho)

    def __sub__(self, other: Budget) -> Budget:
        if not isinstance(other, Budget):
            return NotImplemented
        if other.nano_rho > self.nano_rho:
            raise InvalidPrivacyRequest("a budget cannot become negative")
        return Budget(self.nano_rho - other.nano_rho)

    def __str__(self) -> str:
        whole, frac = divmod(self.nano_rho, NANO_PER_RHO)
        text = f"{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(whole)
        return f"rho={text}"


def compose(*budgets: Budget) -> Budget:
    """Sequential composition of zCDP mechanisms: the rhos add (Bun-Steinke 2016, Lemma 2.3)."""
    total = Budget(0)
    for b in budgets:
        total = total + b
    return total


# ---------------------------------------------------------------- requests


@dataclass(frozen=True, init=False)
class DPRequest:
    """A researcher's privacy request: ``DPRequest(epsilon=1.0, delta=1e-6)`` or
    ``DPRequest(rho=0.05)`` (optionally with ``delta=`` to report an epsilon).

    Validated on construction (:class:`InvalidPrivacyRequest`, before any work). ``budget`` is
    what one release under this request spends, in integer nano-rho, rounded **down** from the
    request; ``rho`` (= ``budget.rho``) is the value to calibrate the noise to, so the noise is
    never less than requested and the charge equals the calibrated rho exactly.
    An (epsilon, delta) request becomes the largest rho that implies it (CKS 2020 Cor. 13).
    """

    epsilon: float | None
    delta: float | None
    rho_requested: float | None
    budget: Budget

    def __init__(self, *, epsilon: float | None = None, delta: float | None = None,
                 rho: float | None = None) -> None:
        if rho is None and epsilon is None:
            raise InvalidPrivacyRequest("give either epsilon and delta, or rho")
        if rho is not None and epsilon is not None:
            raise InvalidPrivacyRequest("give either epsilon and delta, or rho, not both")
        d = None if delta is None else _check_delta(delta)
        if epsilon is not None:
            e = _check_epsilon(epsilon)
            if d is None:
                raise InvalidPrivacyRequest("an epsilon request needs delta (0 < delta < 1)")
            rho_value = rho_from_epsilon_delta(e, d)
            r_req = None
        else:
            e = None
            rho_value = r_req = _check_rho(rho)
        if rho_value > MAX_NANO / NANO_PER_RHO:
            raise InvalidPrivacyRequest(f"rho must be at most {MAX_NANO // NANO_PER_RHO}")
        units = _nano(rho_value, "down")
        if units < 1:
            raise InvalidPrivacyRequest("the request is below the accounting resolution "
                                        "(rho 1e-9)")
        object.__setattr__(self, "epsilon", e)
        object.__setattr__(self, "delta", d)
        object.__setattr__(self, "rho_requested", r_req)
        object.__setattr__(self, "budget", Budget(units))

    @property
    def rho(self) -> float:
        """The rho the noise is calibrated to and the ledger charges (``budget.rho``)."""
        return self.budget.rho

    def epsilon_at(self, delta: float) -> float:
        """The epsilon this request's budget implies at ``delta``."""
        return self.budget.epsilon(delta)

    def describe(self) -> dict[str, float | None]:
        """rho, epsilon, delta for results and ledger entries. For a rho request with a delta,
        epsilon is the implied one; for an (epsilon, delta) request, the requested one (the
        calibrated rho implies an epsilon at most that)."""
        eps = self.epsilon
        if eps is None and self.delta is not None:
            eps = self.epsilon_at(self.delta)
        return {"rho": self.rho, "epsilon": eps, "delta": self.delta}
