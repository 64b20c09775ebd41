"""Fixed-point privacy units: budgets and charges are integers, never compared as floats.

One unit is a nano-rho (``rho * 10**9``). Conversions from a number go through its exact
decimal value; a float is read as its shortest round-trip decimal (``repr``), i.e. the
number a person wrote in a policy or a ``DP(rho=...)`` call. Charges round **up** and
budgets round **down** to the unit, so fixed-point rounding can only make the node stricter,
never let it spend more than the policy grants. (The binary error of a float, below 1e-16
relative, is not a privacy loss: the mechanism's own accounting decides the rho it charges.)
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from privacy.errors import InvalidRequest

# the unit and its text live in privacy.nano (errors need them too); importers find them here
from privacy.nano import NANO_PER_RHO as NANO_PER_RHO
from privacy.nano import nano_text as nano_text

#: an upper bound on any single amount, so sums can never overflow SQLite's 64-bit integers
MAX_NANO = 10**15

Number = int | float | Decimal | Fraction | str


def exact(value: Number, what: str = "a value") -> Fraction:
    """The exact rational value of ``value``; :class:`InvalidRequest` if not a finite number."""
    if isinstance(value, bool):
        raise InvalidRequest(f"{what} must be a number, not a bool")
    try:
        if isinstance(value, Fraction | int):
            return Fraction(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequest(f"{what} must be finite")
            return Fraction(Decimal(repr(value)))
        if isinstance(value, Decimal | str):
            dec = Decimal(value.strip() if isinstance(value, str) else value)
            if not dec.is_finite():
                raise InvalidRequest(f"{what} must be finite")
            return Fraction(dec)
    except InvalidRequest:
        raise
    except (InvalidOperation, ValueError) as exc:
        raise InvalidRequest(f"{what} is not a number") from exc
    raise InvalidRequest(f"{what} must be a number")


def charge_nano(rho: Number) -> int:
    """A charge in nano-rho, rounded up; :class:`InvalidRequest` unless ``0 < rho``."""
    value = exact(rho, "rho")
    if value <= 0:
        raise InvalidRequest("rho must be positive")
    units = math.ceil(value * NANO_PER_RHO)
    if units > MAX_NANO:
        raise InvalidRequest("rho is too large")
    return units


def budget_nano(rho: Number) -> int:
    """A budget limit in nano-rho, rounded down; :class:`InvalidRequest` if negative."""
    value = exact(rho, "a budget's rho")
    if value < 0:
        raise InvalidRequest("a budget's rho must not be negative")
    return min(math.floor(value * NANO_PER_RHO), MAX_NANO)


def nano_float(units: int) -> float:
    """For display only (DataFrames, charts); decisions use the integers."""
    return units / NANO_PER_RHO


def decimal_text(value: Number | None, what: str) -> str:
    """A canonical decimal string for a descriptive field (epsilon, delta, scale); "" = none."""
    if value is None:
        return ""
    if isinstance(value, float):
        exact(value, what)  # finiteness
        return repr(value)
    if isinstance(value, Fraction):
        raise InvalidRequest(f"{what}: give a float, int or Decimal, not a Fraction")
    exact(value, what)
    return str(value).strip()
