"""Thresholds that hold against an aggregator colluding with up to ``c`` nodes.

One place for the bounds every party derives (pure integer arithmetic, so the aggregator and
every node reach the same numbers on every machine):

**Complete graph** (Bonawitz et al. 2017, malicious setting). A round of ``n`` nodes with
survivor threshold ``t``:

- ``2t > n + c``: a split view needs two disjoint groups of honest nodes that each gather
  ``t`` consistency signatures; the ``c`` colluders sign for both, so it needs
  ``2(t - c) <= n - c``. Then one victim's self-mask seed and its mask key both reach ``t``
  shares and its input is unmasked.
- ``t - c >= h`` (``h`` = 2 by default, more when the DP noise assumes more honest nodes):
  every sum a node lets through holds ``t`` survivors, so at least ``h`` honest inputs; with
  ``t - c = 1`` the aggregator drops every other honest node and subtracts the colluders'
  inputs from the total.

**SecAgg+ graph** (Bell et al. 2020): each node pairs with ``k`` neighbours of a circulant
graph over a permutation fixed by the round digest, and Shamir-shares its secrets among its
closed neighbourhood (``k + 1`` holders, itself included) with threshold ``t_s``. For an
honest node, the number ``X`` of colluders among its ``k`` neighbours is hypergeometric
(``n - 1`` others, ``c`` of them colluding, ``k`` drawn). ``c_local`` is ``c`` itself when
``c`` is small, else the least ``m`` with ``n * P[X > m] <= 2^-SPARSE_SECURITY_BITS`` (a union
bound over the nodes). The same two bounds then hold per neighbourhood:
``2 t_s > k + 1 + c_local`` and ``t_s - c_local >= h``.

**Paillier decryption** (``T`` of ``N`` key holders, each decrypting once per round): two
quorums that decrypt different contributor sets must share an honest node, so
``2T > N + c``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

#: minimum honest inputs in every sum a node lets through (the issue's t - c >= 2)
HONEST_FLOOR = 2
#: per round, the probability that some honest node has more than ``c_local`` colluding
#: neighbours in the SecAgg+ graph is at most 2^-64 (only used when c_local < c). An
#: aggregator that tries G round parameters for a favourable graph gains at most a factor G.
SPARSE_SECURITY_BITS = 64
#: liveness target when choosing k: with the planned dropout rate, some neighbourhood
#: keeps fewer than t_s survivors with probability at most 2^-20 (the round then aborts)
SPARSE_LIVENESS_BITS = 20
#: dropouts the aggregator plans for when it chooses k
PLANNED_DROPOUT_RATE = 0.1


class BoundError(ValueError):
    """No threshold satisfies the collusion bounds for these numbers."""


def _check_counts(n: int, c: int, honest: int) -> None:
    for value, what, low in ((n, "number of nodes", 1), (c, "number of colluding nodes", 0),
                             (honest, "honest floor", 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BoundError(f"the {what} must be an integer >= {low}")


def min_nodes(c: int, honest: int = HONEST_FLOOR) -> int:
    """The fewest participants a round can have with ``c`` colluders: ``c + h`` (and more
    than ``c``: every node survives, ``2n > n + c``)."""
    return c + max(honest, 1)


def min_threshold(n: int, c: int, honest: int = HONEST_FLOOR) -> int:
    """The least survivor threshold of a complete-graph round of ``n`` nodes that holds with
    ``c`` colluders: ``t > (n + c) / 2``, ``t - c >= honest`` (and so ``t > n / 2``)."""
    _check_counts(n, c, honest)
    t = max((n + c) // 2 + 1, c + honest)
    if t > n:
        raise BoundError(f"{n} nodes cannot protect a node's input against the aggregator "
                         f"and {c} colluding node(s): a round needs at least "
                         f"{min_nodes(c, honest)} nodes")
    return t


def check_threshold(n: int, t: int, c: int, honest: int = HONEST_FLOOR) -> None:
    low = min_threshold(n, c, honest)
    if not low <= t <= n:
        raise BoundError(f"with {c} colluding node(s) the threshold of {n} participants must "
                         f"be in [{low}, {n}]")


def min_decryption_threshold(holders: int, c: int) -> int:
    """The least Paillier decryption quorum among ``holders``: ``2T > N + c``."""
    _check_counts(holders, c, 1)
    low = (holders + c) // 2 + 1
    if low > holders:
        raise BoundError(f"{holders} key holders cannot keep a quorum away from {c} "
                         "colluding node(s)")
    return low


# --- the SecAgg+ graph ------------------------------------------------------------------------


@dataclass(frozen=True)
class SparseBounds:
    """What one (n, k, c) gives: the Shamir threshold over the k + 1 holders of a secret and
    the honest inputs every sum a node lets through is guaranteed to hold."""

    neighbours: int
    colluding_neighbours: int  # c_local
    shamir_threshold: int  # t_s
    #: c_local == c: no probability involved; else holds except with 2^-SPARSE_SECURITY_BITS
    deterministic: bool

    @property
    def honest_inputs(self) -> int:
        return self.shamir_threshold - self.colluding_neighbours


@lru_cache(maxsize=4096)
def colluding_neighbours_bound(n: int, k: int, c: int,
                               bits: int = SPARSE_SECURITY_BITS) -> int:
    """``c_local``: no honest node of a random k-neighbour graph over ``n`` nodes has more
    than this many of ``c`` colluders among its neighbours (with probability at least
    ``1 - 2^-bits``, union bound over the nodes; exactly, when it returns ``min(c, k)``)."""
    cap = min(c, k)
    others = n - 1
    if c >= others:
        return cap
    total = math.comb(others, k)
    # tail[m] = sum_{i > m} C(c, i) C(n-1-c, k-i): the weight of "more than m colluders"
    tail = 0
    for m in range(cap, -1, -1):
        if m < cap:
            tail += math.comb(c, m + 1) * math.comb(others - c, k - m - 1)
        # n * tail / total <= 2^-bits, in integers
        if n * tail << bits > total:
            return min(m + 1, cap)
    return 0


@lru_cache(maxsize=4096)
def sparse_bounds(n: int, k: int, c: int, honest: int = HONEST_FLOOR) -> SparseBounds:
    """The Shamir threshold of a SecAgg+ round (Bell et al. 2020), or BoundError when ``k``
    neighbours cannot hold ``c`` colluders off: ``2 t_s > k + 1 + c_local``,
    ``t_s - c_local >= honest``, ``t_s <= k + 1``."""
    _check_counts(n, c, honest)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2 or k % 2 or k > n - 2:
        raise BoundError("neighbours must be an even number in [2, n - 2]")
    local = colluding_neighbours_bound(n, k, c)
    t_s = max((k + 1 + local) // 2 + 1, local + honest)
    if t_s > k + 1:
        raise BoundError(f"{k} neighbours cannot hold off {c} colluding node(s) among {n}: "
                         f"up to {local} may be neighbours of one node")
    return SparseBounds(k, local, t_s, local == min(c, k))


def _binomial_tail(trials: int, p: float, more_than: int) -> float:
    """P[Binomial(trials, p) > more_than] (liveness estimate only; never a security bound)."""
    return sum(math.comb(trials, i) * p ** i * (1 - p) ** (trials - i)
               for i in range(more_than + 1, trials + 1))


def choose_neighbours(n: int, c: int, honest: int = HONEST_FLOOR,
                      dropout_rate: float = PLANNED_DROPOUT_RATE) -> int:
    """The smallest even ``k`` whose SecAgg+ round is safe (:func:`sparse_bounds`) and live
    (with ``dropout_rate`` of the nodes gone, some neighbourhood keeps fewer than ``t_s``
    survivors with probability at most 2^-SPARSE_LIVENESS_BITS); 0 (the complete graph)
    when no such ``k`` is smaller than half the participants."""
    for k in range(2, n // 2, 2):
        try:
            bounds = sparse_bounds(n, k, c, honest)
        except BoundError:
            continue
        # a node's k neighbours are ~ a random sample: more than k + 1 - t_s of them gone
        # leaves fewer than t_s holders (the node itself is there when it takes part)
        lost = _binomial_tail(k, dropout_rate, k + 1 - bounds.shamir_threshold)
        if n * lost <= 2.0 ** -SPARSE_LIVENESS_BITS:
            return k
    return 0
