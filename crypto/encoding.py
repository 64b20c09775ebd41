"""Fixed-point encoding into a power-of-two ring, multi-limb ring vectors, and the planner.

A ring element of ``bits`` bits is stored as ``ceil(bits / 64)`` little-endian uint64 limbs
(shape ``(limbs, d)``), so rings wider than 64 bits work with plain numpy arithmetic and
explicit carries. Signed values use the centred representation
``[-2**(bits-1), 2**(bits-1) - 1]``.

The planner (:func:`plan_ring`) is the only place a ring width is chosen: given the range of
every possible total it returns the smallest width that holds it, or raises
:class:`RingOverflowError`. Nothing wraps silently: :meth:`RingVector.from_ints` refuses a
value outside the signed range, and :func:`plan_fixed_point` derives the total range from
declared bounds, row counts, node counts and a noise tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from crypto.errors import EncodingError, RingOverflowError

LIMB_BITS = 64
#: the widest ring we agree to plan; wider means something is badly mis-declared
MAX_RING_BITS = 1024
MIN_RING_BITS = 8


def limbs_for(bits: int) -> int:
    return (bits + LIMB_BITS - 1) // LIMB_BITS


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or not MIN_RING_BITS <= bits <= MAX_RING_BITS:
        raise EncodingError(f"ring width must be an integer in [{MIN_RING_BITS}, {MAX_RING_BITS}]")


def signed_range(bits: int) -> tuple[int, int]:
    """The integers a ``bits``-wide ring holds in the centred representation."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class RingPlan:
    """A planned ring: width in bits and the fixed-point scale (fractional bits)."""

    bits: int
    frac_bits: int = 0

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        if not 0 <= self.frac_bits < self.bits:
            raise EncodingError("fractional bits must be in [0, bits)")

    @property
    def limbs(self) -> int:
        return limbs_for(self.bits)


def plan_ring(min_total: int, max_total: int, *, frac_bits: int = 0,
              max_bits: int = MAX_RING_BITS) -> RingPlan:
    """Smallest ring whose signed range holds every integer in ``[min_total, max_total]``."""
    if min_total > max_total:
        raise EncodingError("min_total exceeds max_total")
    max_bits = min(max_bits, MAX_RING_BITS)
    # the centred range of b bits is [-2^(b-1), 2^(b-1)-1]; a ring also holds its scale
    need = max(MIN_RING_BITS, frac_bits + 1, (max(max_total, 0)).bit_length() + 1, (max(-min_total - 1, 0)).bit_length() + 1)
    if need > max_bits:
        raise RingOverflowError(
            f"totals in [{min_total}, {max_total}] need a {need}-bit ring; at most {max_bits} allowed")
    return RingPlan(bits=need, frac_bits=frac_bits)


def plan_fixed_point(lower: float, upper: float, *, rows: int, nodes: int, frac_bits: int,
                     noise_tail: int = 0, max_bits: int = MAX_RING_BITS) -> RingPlan:
    """Plan a ring for sums of values clipped to ``[lower, upper]``.

    ``rows`` bounds the rows at any one node, ``nodes`` the number of contributors, and
    ``noise_tail`` bounds the absolute value of each node's integer noise share (the caller
    sets it to a tail bound that is exceeded with negligible probability and clamps the noise
    to it). Values encode by rounding, so each encoded value lies in
    ``[round(lower*2^f), round(upper*2^f)]``.
    """
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
        raise EncodingError("bounds must be finite with lower <= upper")
    if rows < 0 or nodes < 1 or noise_tail < 0:
        raise EncodingError("rows >= 0, nodes >= 1 and noise_tail >= 0 are required")
    lo = encode_scalar(lower, frac_bits)
    hi = encode_scalar(upper, frac_bits)
    n = rows * nodes
    tail = noise_tail * nodes
    return plan_ring(min(0, lo * n) - tail, max(0, hi * n) + tail, frac_bits=frac_bits,
                     max_bits=max_bits)


def encode_scalar(value: float, frac_bits: int) -> int:
    """round(value * 2**frac_bits), exactly (ties to even), as a Python int."""
    if not math.isfinite(value):
        raise EncodingError("cannot encode a non-finite value")
    return round(Fraction(value) * (1 << frac_bits))


def encode_fixed(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Encode floats to integers ``round(x * 2**frac_bits)``.

    Returns int64 when every result fits, else an object array of exact Python ints.
    Scaling by a power of two is exact in binary floating point, so the only rounding is the
    final one to an integer.
    """
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise EncodingError("cannot encode NaN or infinite values")
    with np.errstate(over="ignore"):
        scaled = np.rint(np.ldexp(arr, frac_bits))  # exact scaling, round half to even
    if not np.all(np.isfinite(scaled)):  # beyond float range: exact Python ints instead
        return np.array([encode_scalar(float(x), frac_bits) for x in arr.ravel()],
                        dtype=object).reshape(arr.shape)
    if scaled.size == 0 or np.max(np.abs(scaled)) < 2.0**62:
        return scaled.astype(np.int64)
    return np.array([int(x) for x in scaled.ravel()], dtype=object).reshape(arr.shape)


def decode_fixed(values: np.ndarray, frac_bits: int) -> np.ndarray:
    """Integers back to float64 (exact up to float64 rounding of the result)."""
    arr = np.asarray(values)
    if arr.dtype == object:
        denominator = 1 << frac_bits
        return np.array([float(Fraction(int(x), denominator)) for x in arr.ravel()],
                        dtype=np.float64).reshape(arr.shape)
    return np.ldexp(arr.astype(np.float64), -frac_bits)


class RingVector:
    """A vector over Z_{2^bits}, as ``(limbs, d)`` uint64 little-endian limbs."""

    __slots__ = ("bits", "limbs")

    def __init__(self, bits: int, limbs: np.ndarray) -> None:
        _check_bits(bits)
        if limbs.dtype != np.uint64 or limbs.ndim != 2 or limbs.shape[0] != limbs_for(bits):
            raise EncodingError("limbs must be a (limbs, d) uint64 array")
        self.bits = bits
        self.limbs = limbs
        self._mask_top()

    # -- construction ------------------------------------------------------------------

    @classmethod
    def zeros(cls, bits: int, length: int) -> RingVector:
        return cls(bits, np.zeros((limbs_for(bits), length), dtype=np.uint64))

    @classmethod
    def from_ints(cls, bits: int, values: np.ndarray | list[int]) -> RingVector:
        """Signed integers into the ring; raises if any value is outside the signed range."""
        _check_bits(bits)
        # a list of Python ints stays exact (np.asarray would turn 2**63 into a float)
        arr = values if isinstance(values, np.ndarray) else np.array(values, dtype=object)
        if arr.ndim != 1:
            raise EncodingError("ring vectors are one-dimensional")
        lo, hi = signed_range(bits)
        n_limbs = limbs_for(bits)
        if arr.dtype.kind in "iu" and arr.dtype.itemsize <= 8:
            if arr.size and bits < 64:
                a_min, a_max = int(arr.min()), int(arr.max())
                if a_min < lo or a_max > hi:
                    raise RingOverflowError(f"value outside the {bits}-bit signed range")
            low = arr.astype(np.int64).view(np.uint64) if arr.dtype.kind == "i" else arr.astype(np.uint64)
            if arr.dtype.kind == "u" and arr.size and bits <= 64 and int(arr.max()) > hi:
                raise RingOverflowError(f"value outside the {bits}-bit signed range")
            limbs = np.empty((n_limbs, arr.size), dtype=np.uint64)
            limbs[0] = low
            if n_limbs > 1:
                # sign-extend negative int64 values into the upper limbs
                fill = np.where(arr < 0, np.uint64(0xFFFFFFFFFFFFFFFF), np.uint64(0)) \
                    if arr.dtype.kind == "i" else np.zeros(arr.size, dtype=np.uint64)
                limbs[1:] = fill
            return cls(bits, limbs)
        if arr.dtype != object:
            raise EncodingError("ring vectors take integer arrays (int64 or exact Python ints)")
        ints = [int(x) for x in arr]
        if ints and (min(ints) < lo or max(ints) > hi):
            raise RingOverflowError(f"value outside the {bits}-bit signed range")
        modulus = 1 << bits
        word = (1 << LIMB_BITS) - 1
        limbs = np.empty((n_limbs, len(ints)), dtype=np.uint64)
        residues = [x % modulus for x in ints]
        for k in range(n_limbs):
            limbs[k] = np.fromiter(((r >> (LIMB_BITS * k)) & word for r in residues),
                                   dtype=np.uint64, count=len(ints))
        return cls(bits, limbs)

    @classmethod
    def from_bytes(cls, bits: int, length: int, data: bytes) -> RingVector:
        n_limbs = limbs_for(bits)
        if len(data) != n_limbs * length * 8:
            raise EncodingError("ring vector byte length does not match its shape")
        limbs = np.frombuffer(data, dtype="<u8").reshape(n_limbs, length).astype(np.uint64)
        top_bits = bits - LIMB_BITS * (n_limbs - 1)
        if top_bits < LIMB_BITS and length and int(limbs[-1].max()) >> top_bits:
            raise EncodingError("ring vector has bits set above the ring width")
        return cls(bits, limbs)

    # -- views ---------------------------------------------------------------------------

    @property
    def length(self) -> int:
        return int(self.limbs.shape[1])

    def to_bytes(self) -> bytes:
        return self.limbs.astype("<u8", copy=False).tobytes()

    def to_signed(self) -> np.ndarray:
        """Centred signed integers: int64 when they all fit, else an object array."""
        n_limbs = self.limbs.shape[0]
        if self.bits <= 64:
            # shift the sign bit to bit 63, reinterpret, and shift back arithmetically
            shift = 64 - self.bits
            return (self.limbs[0] << np.uint64(shift)).view(np.int64) >> np.int64(shift)
        values = self.limbs[0].astype(object)
        for k in range(1, n_limbs):
            values = values + (self.limbs[k].astype(object) << (LIMB_BITS * k))
        half = 1 << (self.bits - 1)
        modulus = 1 << self.bits
        signed = np.array([v - modulus if v >= half else v for v in values], dtype=object)
        if signed.size and all(-(1 << 63) <= int(v) < (1 << 63) for v in (signed.min(), signed.max())):
            return signed.astype(np.int64)
        return signed

    # -- arithmetic (in place: masking runs on the hot path) ------------------------------

    def _mask_top(self) -> None:
        top_bits = self.bits - LIMB_BITS * (self.limbs.shape[0] - 1)
        if top_bits < LIMB_BITS:
            np.bitwise_and(self.limbs[-1], np.uint64((1 << top_bits) - 1), out=self.limbs[-1])

    def _check_peer(self, other: RingVector) -> None:
        if other.bits != self.bits or other.limbs.shape != self.limbs.shape:
            raise EncodingError("ring vectors of different width or length")

    def add_(self, other: RingVector) -> RingVector:
        self._check_peer(other)
        add_limbs_(self.limbs, other.limbs)
        self._mask_top()
        return self

    def sub_(self, other: RingVector) -> RingVector:
        self._check_peer(other)
        sub_limbs_(self.limbs, other.limbs)
        self._mask_top()
        return self

    def copy(self) -> RingVector:
        return RingVector(self.bits, self.limbs.copy())

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, RingVector) and other.bits == self.bits
                and np.array_equal(other.limbs, self.limbs))

    def __hash__(self) -> int:  # pragma: no cover - mutable, not hashable in practice
        raise TypeError("RingVector is mutable")

    def __repr__(self) -> str:
        return f"RingVector(bits={self.bits}, length={self.length})"


def add_limbs_(acc: np.ndarray, other: np.ndarray) -> None:
    """acc += other over little-endian uint64 limbs, carries propagated (mod 2^(64*limbs))."""
    last = acc.shape[0] - 1
    carry: np.ndarray | None = None
    for k in range(last + 1):
        np.add(acc[k], other[k], out=acc[k])
        if k == last:  # the carry out of the top limb leaves the ring
            if carry is not None:
                np.add(acc[k], carry, out=acc[k])
            return
        wrapped = acc[k] < other[k]
        if carry is not None:
            np.add(acc[k], carry, out=acc[k])
            # adding a carry wraps only an all-ones word, which then reads zero
            wrapped |= carry & (acc[k] == 0)
        carry = wrapped


def sub_limbs_(acc: np.ndarray, other: np.ndarray) -> None:
    """acc -= other over little-endian uint64 limbs, borrows propagated."""
    last = acc.shape[0] - 1
    borrow: np.ndarray | None = None
    for k in range(last + 1):
        under = acc[k] < other[k] if k < last else None
        np.subtract(acc[k], other[k], out=acc[k])
        if borrow is not None:
            if under is not None:
                # subtracting a borrow wraps only a zero word, which then reads all ones
                under |= borrow & (acc[k] == 0)
            np.subtract(acc[k], borrow, out=acc[k])
        if under is None:
            return
        borrow = under
