"""Pedersen vector commitments: they add, they open only to what was committed, and points
from peers are checked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import commitments as pc
from crypto.randomness import SeededRandom

values = st.lists(st.integers(-(2**110), 2**110), min_size=1, max_size=12)


@given(values, st.integers(0, 2**64))
def test_commitments_add_up_to_a_commitment_to_the_sum(vector: list[int], seed: int) -> None:
    rng = SeededRandom(seed)
    other = [v // 3 - 7 for v in vector]
    r1, r2 = pc.random_blinding(rng), pc.random_blinding(rng)
    combined = pc.combine([pc.commit(vector, r1), pc.commit(other, r2)])
    total = [a + b for a, b in zip(vector, other, strict=True)]
    pc.check_opening(combined, total, (r1 + r2) % pc.L)
    with pytest.raises(pc.CommitmentError):
        pc.check_opening(combined, [total[0] + 1, *total[1:]], (r1 + r2) % pc.L)
    with pytest.raises(pc.CommitmentError):
        pc.check_opening(combined, total, (r1 + r2 + 1) % pc.L)


def test_the_same_vector_commits_differently_under_different_blindings() -> None:
    rng = SeededRandom(1)
    a = pc.commit([5, 6, 7], pc.random_blinding(rng))
    b = pc.commit([5, 6, 7], pc.random_blinding(rng))
    assert a != b  # hiding: the commitment says nothing without the blinding
    pc.check_point(a)


def test_generators_are_fixed_distinct_points_of_the_prime_order_group() -> None:
    gens = pc.generators(64)
    assert len(set(gens)) == 64 and pc.blinding_generator() not in gens
    for point in [*gens, pc.blinding_generator()]:
        pc.check_point(point)
    assert pc.generators(3) == gens[:3]


@pytest.mark.parametrize("point", [
    b"\x00" * 32,
    (1).to_bytes(32, "little"),  # the identity
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # order 8
    b"\xff" * 32,  # not canonical
    b"\x01" * 31,
])
def test_points_that_are_not_commitments_are_refused(point: bytes) -> None:
    with pytest.raises(pc.CommitmentError):
        pc.check_point(point)
    with pytest.raises(pc.CommitmentError):
        pc.combine([pc.commit([1], 5), point])


@given(st.integers(0, pc.L - 1))
def test_blinding_digits_round_trip(blinding: int) -> None:
    digits = pc.blinding_digits(blinding)
    assert len(digits) == pc.DIGITS and all(0 <= d < 2**pc.DIGIT_BITS for d in digits)
    assert pc.blinding_from_digit_sums(digits) == blinding


def test_summed_digits_give_the_summed_blinding() -> None:
    rng = SeededRandom(4)
    blindings = [pc.random_blinding(rng) for _ in range(1024)]
    sums = [sum(col) for col in zip(*(pc.blinding_digits(b) for b in blindings), strict=True)]
    assert max(sums) < 2**(pc.DIGIT_BITS + 10)  # fits any ring planned for counts
    assert pc.blinding_from_digit_sums(sums) == sum(blindings) % pc.L
