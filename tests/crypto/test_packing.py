"""Slot packing of signed values into Paillier plaintexts (crypto/packing.py), without
encryption: packed plaintexts are added as plain integers, which is what the homomorphic
product of their ciphertexts decrypts to."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import support
from crypto.errors import EncodingError
from crypto.packing import Packing, PackingError

#: plaintext widths of 1024-, 2048- and 3072-bit keys (n has that many bits; plaintexts one fewer)
PLAINTEXT_BITS = [1023, 2047, 3071]
EDGE_VALUE_BITS = [2, 3, 7, 8, 9, 31, 32, 33, 34, 63, 64, 65, 66, 127, 128]
value_bits_st = st.one_of(st.sampled_from(EDGE_VALUE_BITS), st.integers(2, 128))

FUZZ = settings(max_examples=max(200, support.FUZZ_EXAMPLES // 5), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def signed(value_bits: int) -> tuple[int, int]:
    return -(1 << (value_bits - 1)), (1 << (value_bits - 1)) - 1


def vectors(value_bits: int, count: int, length: int, style: str, seed: int) -> list[list[int]]:
    """``count`` vectors of ``length`` signed values: uniform, all extreme, or edge-heavy."""
    lo, hi = signed(value_bits)
    rnd = random.Random(seed)  # test data only
    edges = [lo, lo + 1, -1, 0, 1, hi - 1, hi] if value_bits > 2 else [lo, -1, 0, hi]
    if style == "max":
        return [[hi] * length for _ in range(count)]
    if style == "min":
        return [[lo] * length for _ in range(count)]
    if style == "edges":
        return [[rnd.choice(edges) if rnd.random() < 0.7 else rnd.randint(lo, hi)
                 for _ in range(length)] for _ in range(count)]
    return [[rnd.randint(lo, hi) for _ in range(length)] for _ in range(count)]


def plaintext_sums(packing: Packing, contributions: list[list[int]]) -> list[int]:
    packed = [packing.pack(v) for v in contributions]
    return [sum(column) for column in zip(*packed, strict=True)]


# --- the slot plan -------------------------------------------------------------------------


@pytest.mark.parametrize("plaintext_bits", PLAINTEXT_BITS)
@pytest.mark.parametrize("value_bits", EDGE_VALUE_BITS)
@pytest.mark.parametrize("max_contributors", [1, 2, 3, 4, 5, 7, 8, 9, 100, 1024])
def test_slot_plan_and_extreme_sums_never_carry(plaintext_bits: int, value_bits: int,
                                                max_contributors: int) -> None:
    packing = Packing(value_bits, max_contributors, plaintext_bits)
    assert packing.slot_bits == value_bits + max_contributors.bit_length()
    assert packing.slots == plaintext_bits // packing.slot_bits
    assert packing.offset == 1 << (value_bits - 1)
    width, slots = packing.slot_bits, packing.slots
    lo, hi = signed(value_bits)
    top_slot = max_contributors * ((1 << value_bits) - 1)  # every node at its maximum
    assert top_slot < 1 << width
    length = 2 * slots + 1  # two full plaintexts and one with a single slot
    for extreme, slot_value in ((hi, top_slot), (lo, 0)):
        total = [max_contributors * m for m in packing.pack([extreme] * length)]
        # exactly the slot-wise sums side by side: no slot reached its neighbour
        expected_full = sum(slot_value << (j * width) for j in range(slots))
        assert total == [expected_full, expected_full, slot_value]
        assert all(0 <= m < 1 << plaintext_bits for m in total)
        assert packing.unpack(total, length, max_contributors) == \
            [max_contributors * extreme] * length


def test_pack_layout_known_answer() -> None:
    packing = Packing(value_bits=4, max_contributors=1, plaintext_bits=20)
    assert (packing.slot_bits, packing.slots, packing.offset) == (5, 4, 8)
    # offset 8: -8 -> 0, 7 -> 15, 0 -> 8; the first value takes the lowest slot
    assert packing.pack([-8, 7, 0]) == [0 | 15 << 5 | 8 << 10]
    assert packing.pack([1, 2, 3, 4, 5]) == [9 | 10 << 5 | 11 << 10 | 12 << 15, 13]
    assert packing.pack([]) == []
    assert packing.unpack([], 0, 1) == []
    assert packing.plaintexts_for(0) == 0
    assert packing.plaintexts_for(4) == 1
    assert packing.plaintexts_for(5) == 2


def test_pack_accepts_numpy_integers() -> None:
    packing = Packing(32, 3, 1023)
    values = np.array([-(2**31), -1, 0, 2**31 - 1], dtype=np.int64)
    assert packing.pack(values) == packing.pack([int(v) for v in values])
    assert packing.unpack(packing.pack(values), 4, 1) == values.tolist()


# --- round trips of sums ------------------------------------------------------------------


@FUZZ
@given(value_bits=value_bits_st, plaintext_bits=st.sampled_from(PLAINTEXT_BITS),
       max_contributors=st.integers(1, 12), length=st.integers(0, 300),
       style=st.sampled_from(["random", "edges", "max", "min"]),
       seed=st.integers(0, 2**32), data=st.data())
def test_sums_of_packed_vectors_unpack_to_exact_totals(
        value_bits: int, plaintext_bits: int, max_contributors: int, length: int, style: str,
        seed: int, data: st.DataObject) -> None:
    packing = Packing(value_bits, max_contributors, plaintext_bits)
    contributors = data.draw(st.integers(1, max_contributors))
    contributions = vectors(value_bits, contributors, length, style, seed)
    total = plaintext_sums(packing, contributions)
    assert len(total) == packing.plaintexts_for(length)
    assert all(0 <= m < 1 << plaintext_bits for m in total)
    assert packing.unpack(total, length, contributors) == \
        [sum(column) for column in zip(*contributions, strict=True)]


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize("value_bits", [2, 3, 8, 32, 33, 64, 128])
def test_values_outside_the_signed_range_are_refused(value_bits: int) -> None:
    packing = Packing(value_bits, 3, 1023)
    lo, hi = signed(value_bits)
    assert packing.unpack(packing.pack([lo, hi]), 2, 1) == [lo, hi]
    for bad in (lo - 1, hi + 1, lo - 2**200, hi + 2**200):
        with pytest.raises(PackingError):
            packing.pack([0, bad, 0])
    assert issubclass(PackingError, EncodingError)


def test_unpack_detects_slot_overflow() -> None:
    packing = Packing(value_bits=8, max_contributors=3, plaintext_bits=1023)
    width = packing.slot_bits  # 10 bits: up to 3 * 255 = 765 per slot, 1023 representable
    for contributors in (1, 2, 3):
        largest = contributors * 255
        ok = [largest << width]  # slot 0 = 0, slot 1 = largest
        assert packing.unpack(ok, 2, contributors) == [-contributors * 128,
                                                       contributors * 127]
        for position in (0, 1):
            with pytest.raises(PackingError, match="exceeds"):
                packing.unpack([(largest + 1) << (position * width)], 2, contributors)
        with pytest.raises(PackingError, match="exceeds"):
            packing.unpack([(1 << width) - 1], 1, contributors)


def test_unpack_detects_bits_beyond_the_last_slot() -> None:
    packing = Packing(value_bits=8, max_contributors=3, plaintext_bits=1023)
    width, slots = packing.slot_bits, packing.slots
    assert slots * width < 1023  # 102 slots of 10 bits: the top three bits are spare
    full = [0] * slots
    assert packing.unpack(packing.pack([-128] * slots), slots, 1) == [-128] * slots
    for bit in (slots * width, 1022, 2000):
        with pytest.raises(PackingError, match="beyond"):
            packing.unpack([packing.pack(full)[0] + (1 << bit)], slots, 1)
    # a short last plaintext: its unused slots must be empty
    length = slots + 3
    packed = packing.pack([0] * length)
    for slot in (3, 4, slots - 1):
        tampered = [packed[0], packed[1] + (1 << (slot * width))]
        with pytest.raises(PackingError, match="beyond"):
            packing.unpack(tampered, length, 1)
    with pytest.raises(PackingError):
        packing.unpack([-1], 1, 1)


def test_unpack_refuses_inconsistent_requests() -> None:
    packing = Packing(value_bits=16, max_contributors=4, plaintext_bits=1023)
    packed = packing.pack([1] * 100)
    assert len(packed) == 2
    for contributors in (0, -1, 5):
        with pytest.raises(PackingError):
            packing.unpack(packed, 100, contributors)
    for length in (packing.slots, 2 * packing.slots + 1):
        with pytest.raises(PackingError):
            packing.unpack(packed, length, 1)
    with pytest.raises(PackingError):
        packing.unpack(packed + [0], 100, 1)


@pytest.mark.parametrize(("value_bits", "max_contributors", "plaintext_bits"), [
    (1, 3, 1023), (0, 3, 1023), (-5, 3, 1023), (8, 0, 1023), (8, -1, 1023),
    (1022, 3, 1023), (1021, 4, 1023), (64, 3, 65), (8, 3, 0)])
def test_impossible_plans_are_refused(value_bits: int, max_contributors: int,
                                      plaintext_bits: int) -> None:
    with pytest.raises(PackingError):
        Packing(value_bits, max_contributors, plaintext_bits)


def test_a_single_slot_plan_is_accepted() -> None:
    packing = Packing(value_bits=1021, max_contributors=1, plaintext_bits=1023)
    assert (packing.slot_bits, packing.slots) == (1022, 1)
    lo, hi = signed(1021)
    assert packing.unpack(packing.pack([lo, hi]), 2, 1) == [lo, hi]
