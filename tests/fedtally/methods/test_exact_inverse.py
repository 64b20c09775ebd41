"""The exact inverse behind regression and Newton steps: A A^-1 = I exactly for every
invertible matrix of dyadic totals, and a singular one (det 0) raises DegenerateInput."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedtally.methods.common import exact_inverse
from protocol.errors import DegenerateInput

#: entries as the secure sum gives them: integers over a power of two (fixed point)
DYADIC = st.builds(lambda n, e: Fraction(n, 2 ** e), st.integers(-(2 ** 70), 2 ** 70),
                   st.integers(0, 48))


def determinant(matrix: list[list[Fraction]]) -> Fraction:
    """By Laplace expansion (independent of the elimination under test; n is small)."""
    if len(matrix) == 1:
        return matrix[0][0]
    return sum(((-1) ** j * matrix[0][j]
                * determinant([row[:j] + row[j + 1:] for row in matrix[1:]])
                for j in range(len(matrix))), Fraction(0))


@st.composite
def matrices(draw: st.DrawFn) -> list[list[Fraction]]:
    n = draw(st.integers(1, 5))
    matrix = [[draw(DYADIC) for _ in range(n)] for _ in range(n)]
    if n > 1 and draw(st.booleans()):  # a collinear column, as a duplicated predictor gives
        k = draw(st.integers(-3, 3))
        for row in matrix:
            row[-1] = k * row[0]
    return matrix


@given(matrices())
def test_the_inverse_is_exact_or_the_matrix_is_singular(matrix: list[list[Fraction]]) -> None:
    n = len(matrix)
    try:
        inverse = exact_inverse(matrix)
    except DegenerateInput:
        assert determinant(matrix) == 0
        return
    assert determinant(matrix) != 0
    for i in range(n):
        for j in range(n):
            assert sum(matrix[i][k] * inverse[k][j] for k in range(n)) == int(i == j)


def test_a_zero_pivot_is_passed_over() -> None:
    assert exact_inverse([[Fraction(0), Fraction(1)], [Fraction(1), Fraction(0)]]) == \
        [[0, 1], [1, 0]]
    with pytest.raises(DegenerateInput, match="singular"):
        exact_inverse([[Fraction(1), Fraction(2)], [Fraction(1, 2), Fraction(1)]])
