"""Many fixed-point slots per Paillier plaintext, planned so that sums never carry.

Each node's value is a signed ``value_bits``-wide integer (the round's ring width, already
planned to hold the federation total and the noise). It is stored with the offset
``2^(value_bits-1)``, so every slot of every node holds a number in ``[0, 2^value_bits)``.
A slot is ``value_bits + bitlen(max_contributors)`` bits wide, so the sum of up to
``max_contributors`` nodes stays below ``2^slot_bits`` and never reaches the next slot.
After decryption the offsets (``contributors * 2^(value_bits-1)``) come off and the exact
integer total remains: no per-value exponents, no wrap counts, nothing else is revealed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from crypto.errors import EncodingError


class PackingError(EncodingError):
    """A value does not fit its slot, or a decrypted plaintext is not a valid packed sum."""


@dataclass(frozen=True)
class Packing:
    value_bits: int
    max_contributors: int
    plaintext_bits: int

    def __post_init__(self) -> None:
        if self.value_bits < 2 or self.max_contributors < 1:
            raise PackingError("value_bits >= 2 and max_contributors >= 1 are required")
        if self.slots < 1:
            raise PackingError(f"a {self.slot_bits}-bit slot does not fit a "
                               f"{self.plaintext_bits}-bit plaintext")

    @property
    def slot_bits(self) -> int:
        return self.value_bits + self.max_contributors.bit_length()

    @property
    def slots(self) -> int:
        return self.plaintext_bits // self.slot_bits

    @property
    def offset(self) -> int:
        return 1 << (self.value_bits - 1)

    def plaintexts_for(self, length: int) -> int:
        return -(-length // self.slots)

    def pack(self, values: Sequence[int]) -> list[int]:
        """Signed values (each in the centred ``value_bits`` range) into plaintexts."""
        offset, width, top = self.offset, self.slot_bits, 1 << self.value_bits
        shifted = [int(v) + offset for v in values]
        if any(not 0 <= v < top for v in shifted):
            raise PackingError(f"a value does not fit a signed {self.value_bits}-bit slot")
        out = []
        for start in range(0, len(shifted), self.slots):
            m = 0
            for v in reversed(shifted[start:start + self.slots]):
                m = (m << width) | v
            out.append(m)
        return out

    def unpack(self, plaintexts: Sequence[int], length: int, contributors: int) -> list[int]:
        """Exact signed totals of ``contributors`` nodes' packed values.

        Raises :class:`PackingError` if a slot exceeds what that many contributions can
        reach or bits beyond the last slot are set: the plaintext is not such a sum.
        """
        if not 1 <= contributors <= self.max_contributors:
            raise PackingError("contributors out of range for this packing")
        if len(plaintexts) != self.plaintexts_for(length):
            raise PackingError("wrong number of plaintexts for the vector length")
        width = self.slot_bits
        mask = (1 << width) - 1
        largest = contributors * ((1 << self.value_bits) - 1)
        shift = contributors * self.offset
        out: list[int] = []
        for index, m in enumerate(plaintexts):
            used = min(self.slots, length - index * self.slots)
            for _ in range(used):
                slot = m & mask
                if slot > largest:
                    raise PackingError("a decrypted slot exceeds the largest possible sum")
                out.append(slot - shift)
                m >>= width
            if m:
                raise PackingError("a decrypted plaintext has bits beyond its last slot")
        return out
