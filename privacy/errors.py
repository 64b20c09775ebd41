"""Errors of the privacy package.

``privacy`` imports no other project package, so it has its own hierarchy; the public layer
maps :class:`BudgetExhausted` to ``fedtally.BudgetExhausted`` (a ``FedtallyError``).
"""

from __future__ import annotations

from collections.abc import Mapping

from privacy.nano import nano_text


class PrivacyError(Exception):
    """Base class of every error raised by :mod:`privacy`."""


class InvalidRequest(PrivacyError, ValueError):
    """Our caller's misuse: a malformed argument (negative rho, bad query id, ...)."""


class BudgetExhausted(PrivacyError):
    """A charge would exceed the budget of at least one dataset; nothing was charged.

    ``remaining`` maps every dataset of the request to its remaining rho (a float, for
    people); ``remaining_nano`` holds the exact integer amounts the decision used.
    """

    #: the signed head after the refusal was recorded (set by the ledger), for the reply
    head: object | None = None

    def __init__(self, researcher: str, requested_nano: int,
                 remaining_nano: Mapping[str, int], short: tuple[str, ...],
                 ungranted: tuple[str, ...] = ()) -> None:
        self.researcher = researcher
        self.requested_nano = requested_nano
        self.remaining_nano = dict(remaining_nano)
        self.remaining = {d: n / 1_000_000_000 for d, n in self.remaining_nano.items()}
        self.datasets = short
        # a dataset the node's policy grants this researcher no budget on is said so ("rho
        # 0 remaining" read as a budget spent)
        parts = ", ".join(
            f"{d!r} has no budget granted (the node's policy names none for this researcher)"
            if d in ungranted else f"{d!r} has rho {nano_text(self.remaining_nano[d])} remaining"
            for d in short
        )
        super().__init__(
            f"privacy budget exhausted for researcher {researcher!r}: {parts}; "
            f"the query needs rho {nano_text(requested_nano)}"
        )


class RefundRefused(PrivacyError):
    """A refund or release that the ledger cannot accept (unknown, refunded or released)."""


class LedgerCorrupt(PrivacyError):
    """The ledger fails verification: the base of every verification failure. ``entry`` is
    the first bad entry's sequence number (``None`` when the file as a whole is unreadable).

    Raised as is for the chain itself (an edited, deleted, reordered, inserted or foreign
    entry, a bad head); the subclasses below name the other kinds of finding."""

    def __init__(self, message: str, entry: int | None = None) -> None:
        self.entry = entry
        prefix = f"ledger entry {entry}: " if entry is not None else ""
        super().__init__(prefix + message)


class LedgerFormatError(LedgerCorrupt):
    """The file is not a ledger of the format this version reads and writes (e.g. a
    ``fedtally-ledger-v1`` file): refused, never migrated in place."""


class LedgerKeyChanged(LedgerCorrupt):
    """The ledger is signed under another key than the node's, and the node did not give
    the previous key it needs to record the rotation (``ledger_key``: the key the ledger is
    under, hex). Never a reason to start a new ledger: that would forget what was spent."""

    def __init__(self, message: str, ledger_key: str) -> None:
        self.ledger_key = ledger_key
        super().__init__(message)


class ReceiptInvalid(LedgerCorrupt):
    """A head receipt that is malformed or not signed by the node key: it proves nothing,
    so the check the auditor asked for cannot be made."""

    def __init__(self, message: str, receipt: object = None) -> None:
        self.receipt = receipt
        super().__init__(message)


class ReceiptMismatch(LedgerCorrupt):
    """The ledger does not extend a head receipt (or the expected head) the node signed
    earlier: it was truncated, rolled back to an older copy, or its history rewritten.
    ``receipt`` is the receipt (or ``(seq, hash)``) that the ledger fails."""

    def __init__(self, message: str, receipt: object, entry: int | None = None) -> None:
        self.receipt = receipt
        super().__init__(message, entry)


class AccountingError(LedgerCorrupt):
    """Signed entries whose arithmetic does not hold (an auditor can redo each check)."""


class ClockWentBackwards(AccountingError):
    """An entry is dated before the entry it follows."""


class FollowUpOutOfOrder(AccountingError):
    """A release or refund that does not follow its charge (no such earlier charge, another
    query's charge, a charge already closed, or dated before the charge)."""


class PrivacyLossMismatch(AccountingError):
    """The recorded epsilon and delta are not what the recorded rho gives (CKS 2020)."""


class UnderCalibrated(AccountingError):
    """The recorded rho is less than what the recorded noise scale, sensitivity, honest
    nodes and dimension give (KLS 2021): the node charged less than it spent."""


class OverBudget(AccountingError):
    """A charge does not fit the budget of the policy entry in force."""


class PolicyViolation(AccountingError):
    """An entry the policy in force forbids (an exact answer where exact is not allowed, a
    method not allowed, a query before any policy entry), or a malformed policy entry."""
