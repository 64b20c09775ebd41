"""Centring and scaling of summed variables by public values, so that the precision of
sums of squares and cross-products does not depend on the data's location and units.

A node sums float64 values and releases each sum as fixed point with 48 fractional bits
below 2^62. Summed as they are, values far from 0 lose their spread to cancellation (the
sum of squares of 1e6 + N(0, 1) holds the variance in its last digits), tiny ones fall
below the fixed-point resolution (1e-9 x N(5, 1) squares to 0) and large ones overflow
(Unix times). So the ``moments`` and ``crossprod`` kinds accept, per numeric variable, a
public **centre** ``c`` and **scale** ``h`` in the signed query (the parameter
``"centring": {variable: [c, h]}``) and sum ``z = (x - c) / h`` instead of ``x``.

The released sums are an invertible affine function of the plain ones, with public
coefficients (``sum x = h sum z + c n``, ``sum x^2 = h^2 sum z^2 + 2 c h sum z + c^2 n``,
and the same for cross-products through the intercept column), so they disclose exactly
what the plain sums disclose; the client turns them back into the plain totals in exact
rational arithmetic (:func:`moments_uncentre`, :func:`crossprod_uncentre`). The disclosure
guards keep counting the **plain** values' non-zero terms, and a sum withheld for few
non-zero terms reads as the centred sum of zeros would (see ``Computed.zeros``).

The kinds declare the centred terms as row expressions (:func:`centred_expr`, the two IEEE
operations ``(x - c) / h`` in this order), so that every backend computes the same
integers (:mod:`stats.aggregates`); :func:`zero_units` is the fixed-point term a value of
0 adds, which a withheld sum of ``n`` such values reads as ``n`` times.

What a researcher may choose is bounded by public values, before any row is read:

* only a variable with a public range can be centred: the data model's declared min/max
  in exact mode (node data is validated against it), the clipping bounds in DP mode;
* the centre lies in that range;
* one row's ``|z|`` (the *reach*, ``max(high - c, c - low) / h``) is at most
  :data:`MAX_REACH`, so that no choice of scale can make a sum's encodable range depend on
  the rows: ``rows x reach^2`` stays below 2^62 for any node of fewer than 2^30 rows. The
  row bounds of centred sums (overflow planning, DP sensitivity) are the reach and its
  square.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING

from protocol.errors import QueryError
from stats.aggregates import Arith, Const, Expr
from stats.kinds.params import check_magnitudes, number_list
from stats.plans import Key, ModelView, clipping_bounds

if TYPE_CHECKING:
    from stats.query import QuerySpec

#: the most one row's centred and scaled value may reach, |x - c| / h: 2^16, so a sum of
#: squares of fewer than 2^30 rows stays below the encodable 2^62
MAX_REACH = 2.0 ** 16
#: the parameter that carries the centres and scales
PARAMETER = "centring"

Centring = dict[str, tuple[float, float]]
Combination = dict[Key, Fraction]
#: for a slot key, the released slots (and exact coefficients) whose combination is the
#: plain total; None where the slot is not centred
Uncentre = Callable[[Key], Combination | None]


def public_range(spec: QuerySpec, model: ModelView, variable: str) -> tuple[float, float]:
    """The public interval a variable's summed values lie in: the clipping bounds in DP
    mode, the data model's declared range in exact mode."""
    if spec.privacy.get("mode") == "dp":
        return clipping_bounds(spec, model, [variable])[variable]
    pair = model.bounds(variable)
    if pair is None:
        raise QueryError(f"{variable!r} declares no range (min and max) in the data model, "
                         "so it cannot be centred: only public values may centre a variable")
    return float(pair[0]), float(pair[1])


def reach(low: float, high: float, centre: float, scale: float) -> float:
    """The largest |x - centre| / scale over [low, high]."""
    return max(high - centre, centre - low) / scale


def centring_of(spec: QuerySpec, model: ModelView, candidates: Sequence[str]) -> Centring:
    """The query's centres and scales, checked against public values only. ``candidates``
    are the variables the kind sums as plain numeric values (the only ones it can centre)."""
    raw = spec.parameters.get(PARAMETER)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or len(raw) > len(candidates):
        raise QueryError(f"{PARAMETER} maps each summed numeric variable to [centre, scale]")
    out: Centring = {}
    for variable, pair in raw.items():
        if variable not in candidates:
            raise QueryError(f"{PARAMETER} names {str(variable)[:64]!r}, which this query does "
                             "not sum as a plain numeric variable")
        centre, scale = number_list(pair, f"the centring of {variable!r}", 2)
        check_magnitudes((centre, scale), f"the centre and scale of {variable!r}")
        if not scale > 0:
            raise QueryError(f"the scale of {variable!r} must be positive")
        low, high = public_range(spec, model, variable)
        if not low <= centre <= high:
            raise QueryError(f"the centre of {variable!r} ({centre:g}) lies outside its public "
                             f"range [{low:g}, {high:g}]")
        if not reach(low, high, centre, scale) <= MAX_REACH:
            raise QueryError(f"the scale of {variable!r} ({scale:g}) is too small for its "
                             f"range [{low:g}, {high:g}]: one value may reach at most "
                             f"{MAX_REACH:g} scales from the centre")
        out[variable] = (centre, scale)
    return out


def row_reach(spec: QuerySpec, model: ModelView, variable: str,
              centring: Centring) -> float:
    """The most one row's centred value can add to a sum (its square: to a sum of squares)."""
    centre, scale = centring[variable]
    low, high = public_range(spec, model, variable)
    return reach(low, high, centre, scale)


def centred_expr(value: Expr, centre: float, scale: float) -> Expr:
    """(x - c) / h as a row expression: one subtraction, then one division, the one way
    nodes compute it (so a value of 0 gives, bit for bit, what :func:`zero_units` uses)."""
    return Arith("/", Arith("-", value, Const(float(centre))), Const(float(scale)))


def zero_units(centre: float, scale: float, power: int, slot_scale: float) -> int:
    """The integer one value of 0 adds to an exact sum (:class:`stats.aggregates.ExactSum`
    at ``slot_scale``) of centred values (``power`` 1) or of their squares (``power`` 2):
    a withheld sum of ``n`` values reads as ``n`` times it, exactly as a cell of zeros."""
    z = (0.0 - float(centre)) / float(scale)
    term = z if power == 1 else z * z
    return round(term * float(slot_scale))  # Python rounds a float half to even, as rint


# --- back to the plain totals (client side) --------------------------------------------


def _exact(value: float) -> Fraction:
    return Fraction(value)


def moments_uncentre(spec: QuerySpec, centring: Centring) -> Uncentre:
    """``sum x = h S + c n`` and ``sum x^2 = h^2 Q + 2 c h S + c^2 n`` per cell."""
    def combination(key: Key) -> Combination | None:
        head, variable = key[0], key[-1]
        if head not in ("sum", "sumsq") or variable not in centring:
            return None
        c, h = (_exact(v) for v in centring[str(variable)])
        count, total, squares = (("count", *key[1:]), ("sum", *key[1:]), ("sumsq", *key[1:]))
        if head == "sum":
            return {total: h, count: c}
        return {squares: h * h, total: 2 * c * h, count: c * c}

    return combination


def crossprod_uncentre(terms: Sequence[Mapping[str, object]], centring: Centring,
                       intercept: int) -> Uncentre:
    """Column ``x_t = h_t z_t + c_t 1`` of every centred term, so each plain entry of X'X
    is a combination of at most four released ones (the intercept column is 1)."""
    columns: dict[int, tuple[Fraction, Fraction]] = {}
    for t, term in enumerate(terms):
        variable = term.get("var")
        if set(term) == {"var"} and variable in centring:
            c, h = centring[str(variable)]
            columns[t] = (_exact(c), _exact(h))

    def parts(t: int) -> list[tuple[int, Fraction]]:
        if t not in columns:
            return [(t, Fraction(1))]
        c, h = columns[t]
        return [(t, h)] + ([(intercept, c)] if c else [])

    def combination(key: Key) -> Combination | None:
        if key[0] != "xx" or (int(key[2]) not in columns and int(key[3]) not in columns):
            return None
        out: Combination = {}
        for a, p in parts(int(key[2])):
            for b, q in parts(int(key[3])):
                slot = ("xx", key[1], min(a, b), max(a, b))
                out[slot] = out.get(slot, Fraction(0)) + p * q
        return out

    return combination
