"""Verifiable totals in mask mode: the researcher checks the total the aggregator hands over
against commitments the contributors signed.

Each node commits (Pedersen, :mod:`crypto.commitments`) to its whole vector with a random
blinding, and puts the blinding's digits in the vector's blinding slots, so the secure sum
delivers the summed blinding with the total. It signs the commitment together with the
signed query's digest and sends both with its masked input; the aggregator forwards the
survivors' signed commitments with the result. The researcher verifies every signature
against the manifest, that the commitments are exactly the survivors', and that the total
opens their sum. A total the aggregator altered (to steer an iterative method, say) fails
with :class:`ForgedTotal`: without a discrete logarithm between the generators it cannot
open the sum to any other vector.

This module holds what the round itself carries (the signed statement); committing to a
vector and checking a total against its layout's blinding slots is
:mod:`stats.verified_totals`.
"""

from __future__ import annotations

from crypto.identity import SigningIdentity
from crypto.kdf import context
from protocol.errors import RemoteProtocolError


class ForgedTotal(RemoteProtocolError):
    """The total does not match what its contributors committed to: the aggregator (or the
    network) altered it. Nothing is released."""

    code = "forged_total"


def commitment_statement(query_digest: bytes, node: str, commitment: bytes) -> bytes:
    return context(b"fedtally/v1", "commitment", query_digest, node, commitment)


def sign_commitment(identity: SigningIdentity, query_digest: bytes, node: str,
                    commitment: bytes) -> bytes:
    return identity.sign(commitment_statement(query_digest, node, commitment))
