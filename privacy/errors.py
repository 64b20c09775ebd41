"""Errors of the privacy package.

``privacy`` imports no other project package, so it has its own hierarchy; the public layer
maps :class:`BudgetExhausted` to ``fedtally.BudgetExhausted`` (a ``FedtallyError``).
"""

from __future__ import annotations

from collections.abc import Mapping


class PrivacyError(Exception):
    """Base class of every error raised by :mod:`privacy`."""


class InvalidRequest(PrivacyError, ValueError):
    """Our caller's misuse: a malformed argument (negative rho, bad query id, ...)."""


class BudgetExhausted(PrivacyError):
    """A charge would exceed the budget of at least one dataset; nothing was charged.

    ``remaining`` maps every dataset of the request to its remaining rho (a float, for
    people); ``remaining_nano`` holds the exact integer amounts the decision used.
    """

    def __init__(self, researcher: str, requested_nano: int,
                 remaining_nano: Mapping[str, int], short: tuple[str, ...]) -> None:
        from privacy.units import nano_text  # local: units imports nothing of ours either

        self.researcher = researcher
        self.requested_nano = requested_nano
        self.remaining_nano = dict(remaining_nano)
        self.remaining = {d: n / 1_000_000_000 for d, n in self.remaining_nano.items()}
        self.datasets = short
        parts = ", ".join(
            f"{d!r} has rho {nano_text(self.remaining_nano[d])} remaining" for d in short
        )
        super().__init__(
            f"privacy budget exhausted for researcher {researcher!r}: {parts}; "
            f"the query needs rho {nano_text(requested_nano)}"
        )


class RefundRefused(PrivacyError):
    """A refund or release that the ledger cannot accept (unknown, refunded or released)."""


class LedgerCorrupt(PrivacyError):
    """The ledger fails verification. ``entry`` is the first bad entry's sequence number
    (``None`` when the file as a whole is unreadable)."""

    def __init__(self, message: str, entry: int | None = None) -> None:
        self.entry = entry
        prefix = f"ledger entry {entry}: " if entry is not None else ""
        super().__init__(prefix + message)
