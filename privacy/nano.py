"""The ledger's unit of privacy loss, the nano-rho (``rho * 10**9``), and its exact
decimal text. It imports nothing, so that both the errors and the unit conversions of
:mod:`privacy` can use it."""

from __future__ import annotations

NANO_PER_RHO = 10**9


def nano_text(units: int) -> str:
    """The exact decimal text of an amount in nano-rho: ``50_000_000 -> "0.05"``."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), NANO_PER_RHO)
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:09d}".rstrip("0")
