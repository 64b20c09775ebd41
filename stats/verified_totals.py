"""Committing to a node's vector and checking a total, over the query's layout: the
blinding's digits ride in the layout's blinding slots through the secure sum (the protocol
side, the signed statement, is :mod:`protocol.commitment`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crypto import commitments as pc
from crypto.encoding import RingVector
from crypto.errors import CryptoError
from crypto.identity import VerifyKey
from crypto.randomness import RandomSource
from protocol.commitment import ForgedTotal, commitment_statement
from protocol.messages import SignedCommitment
from protocol.service_messages import QueryResult
from stats.plans import BLINDING, Layout


def commit_vector(values: list[int], layout: Layout, rng: RandomSource) -> bytes:
    """Fill the blinding slots of a node's (signed integer) vector with a fresh blinding's
    digits, in place, and commit to the rest of it with that blinding."""
    index = layout.index()
    blinding = pc.random_blinding(rng)
    for key, digit in zip(BLINDING, pc.blinding_digits(blinding), strict=True):
        values[index[key]] = digit
    return pc.commit(_committed(values, layout), blinding)


def check_total(total: Sequence[int], layout: Layout, survivors: Sequence[str],
                signed: Sequence[SignedCommitment], query_digest: bytes,
                members: Mapping[str, VerifyKey]) -> None:
    """Raise :class:`ForgedTotal` unless ``total`` (signed integers, one per slot) opens the
    sum of the commitments the survivors signed for this query."""
    by_node = {c.node: c for c in signed}
    if len(by_node) != len(signed) or set(by_node) != set(survivors):
        raise ForgedTotal("the commitments do not come from exactly the round's contributors")
    try:
        for c in signed:
            members[c.node].verify(commitment_statement(query_digest, c.node, c.commitment),
                                   c.signature)
        index = layout.index()
        blinding = pc.blinding_from_digit_sums([total[index[key]] for key in BLINDING])
        combined = pc.combine(c.commitment for c in signed)
        pc.check_opening(combined, _committed(list(total), layout), blinding)
    except (CryptoError, KeyError) as exc:
        raise ForgedTotal("the total does not match what its contributors committed to: "
                          "it was altered on its way") from exc


def check_result(reply: QueryResult, layout: Layout, query_digest: bytes,
                 members: Mapping[str, VerifyKey]) -> None:
    """The researcher's check of a mask-mode result (nothing to check for a layout that is
    not verifiable: Paillier totals are decrypted from the signed ciphertexts)."""
    if not layout.verifiable:
        return
    total = RingVector.from_bytes(reply.ring_bits, reply.vector_length, reply.total)
    check_total([int(v) for v in total.to_signed()], layout, reply.survivors,
                reply.commitments, query_digest, members)


def _committed(values: list[int], layout: Layout) -> list[int]:
    """Every value but the blinding digits, in slot order."""
    blinding = set(BLINDING)
    return [v for v, slot in zip(values, layout.slots, strict=True) if slot.key not in blinding]
