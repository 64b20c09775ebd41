"""Pedersen vector commitments in the prime-order subgroup of edwards25519 (libsodium through
PyNaCl), for totals a researcher can check.

``C = sum_j v_j G_j + r H``: the generators are hashed to the curve (libsodium's
``crypto_core_ed25519_from_uniform``, Elligator 2 with the cofactor cleared, so every one is
in the subgroup of prime order ``L``) from a domain-separated index, so nobody knows a
discrete-log relation between them. A commitment is *binding* under the discrete logarithm
assumption (opening one to two different vectors gives such a relation) and *perfectly
hiding* when ``r`` is uniform modulo ``L``. Commitments add: the sum of the nodes'
commitments is a commitment to the sum of their vectors with the sum of their blindings, so a
researcher who learns the total and the summed blinding (both through the secure sum) checks
the total against the product of the commitments the nodes signed (:func:`check_opening`).

Values are integers (negative ones taken modulo ``L``); a total whose entries all lie in
``(-L/2, L/2)`` opens exactly. Points from peers are checked (canonical encoding, on the
curve, in the prime-order subgroup, not the identity); a check raises, never returns False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache

import nacl.bindings as sodium
import nacl.exceptions

from crypto.errors import CryptoError
from crypto.kdf import context
from crypto.randomness import RandomSource

#: order of the prime-order subgroup of edwards25519
L = 2**252 + 27742317777372353535851937790883648493
POINT_SIZE = 32
SCALAR_SIZE = 32
#: blinding scalars travel through the secure sum as this many digits of DIGIT_BITS bits
DIGIT_BITS = 16
DIGITS = 16
_DOMAIN = b"fedtally/v1/pedersen"


class CommitmentError(CryptoError):
    """A commitment or a point that does not check: malformed, or not what was committed."""


def _scalar(value: int) -> bytes:
    return (value % L).to_bytes(SCALAR_SIZE, "little")


def _from_hash(*parts: bytes | str | int) -> bytes:
    uniform = hashlib.sha512(context(_DOMAIN, *parts)).digest()[:32]
    return sodium.crypto_core_ed25519_from_uniform(uniform)


@lru_cache(maxsize=1)
def blinding_generator() -> bytes:
    return _from_hash("H")


_GENERATORS: list[bytes] = []


def generators(count: int) -> list[bytes]:
    """G_0 .. G_(count-1), derived once per process and kept."""
    while len(_GENERATORS) < count:
        _GENERATORS.append(_from_hash("G", len(_GENERATORS)))
    return _GENERATORS[:count]


def check_point(point: bytes) -> bytes:
    """A point received from a peer: canonical, in the prime-order subgroup, not the
    identity (libsodium's ``crypto_core_ed25519_is_valid_point``); else CommitmentError."""
    if not isinstance(point, bytes) or len(point) != POINT_SIZE \
            or not sodium.crypto_core_ed25519_is_valid_point(point):
        raise CommitmentError("a commitment is not a valid point of the prime-order group")
    return point


def _mul(scalar: int, point: bytes) -> bytes | None:
    """scalar * point, None for the identity (libsodium refuses to return it)."""
    if scalar % L == 0:
        return None
    try:
        return sodium.crypto_scalarmult_ed25519_noclamp(_scalar(scalar), point)
    except nacl.exceptions.RuntimeError:  # the identity: cannot happen for a prime-order point
        return None


def _add(points: Iterable[bytes | None]) -> bytes | None:
    total: bytes | None = None
    for point in points:
        if point is None:
            continue
        if total is None:
            total = point
        else:
            total = sodium.crypto_core_ed25519_add(total, point)
            if total == _IDENTITY:
                total = None
    return total


_IDENTITY = (1).to_bytes(32, "little")  # the neutral element's encoding (0, 1)


def random_blinding(rng: RandomSource) -> int:
    """A blinding scalar uniform modulo L (from 512 random bits: bias below 2^-259)."""
    return int.from_bytes(rng.bytes(64), "little") % L


def commit(values: Sequence[int], blinding: int) -> bytes:
    """sum_j values[j] G_j + blinding H. A commitment to the zero vector with blinding 0 is
    the identity, which is never a valid commitment: blindings are uniform, so it does not
    occur but with negligible probability (and :func:`check_point` refuses it)."""
    points = generators(len(values))
    total = _add([_mul(v, g) for v, g in zip(values, points, strict=True)]
                 + [_mul(blinding, blinding_generator())])
    if total is None:
        raise CommitmentError("the commitment is the identity")
    return total


def combine(commitments: Iterable[bytes]) -> bytes:
    """The sum of checked commitments: a commitment to the sum of the vectors."""
    total = _add(check_point(c) for c in commitments)
    if total is None:
        raise CommitmentError("the combined commitment is the identity")
    return total


def check_opening(combined: bytes, values: Sequence[int], blinding: int) -> None:
    """Raise CommitmentError unless ``combined`` commits to ``values`` with ``blinding``."""
    if commit(values, blinding) != check_point(combined):
        raise CommitmentError("the total does not open the commitments")


def blinding_digits(blinding: int) -> list[int]:
    """A blinding scalar as DIGITS digits of DIGIT_BITS bits (least significant first), to be
    secure-summed like the data: the sum of every node's digits gives the summed blinding."""
    if not 0 <= blinding < L:
        raise CommitmentError("a blinding is a scalar modulo L")
    mask = (1 << DIGIT_BITS) - 1
    return [(blinding >> (DIGIT_BITS * i)) & mask for i in range(DIGITS)]


def blinding_from_digit_sums(sums: Sequence[int]) -> int:
    """The summed blinding from the secure sums of the nodes' digits."""
    if len(sums) != DIGITS or any(s < 0 for s in sums):
        raise CommitmentError(f"a summed blinding has {DIGITS} non-negative digit sums")
    return sum(s << (DIGIT_BITS * i) for i, s in enumerate(sums)) % L
