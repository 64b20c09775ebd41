"""Round parameters: what every participant of one secure-sum round must agree on.

The digest of these parameters is bound into every signature and every key derivation of
the round, so a node that was given different parameters than the others makes the round
fail (signatures do not verify, masks do not cancel) instead of leaking.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from crypto.encoding import MAX_RING_BITS, MIN_RING_BITS, limbs_for
from protocol.codec import NAME, Bytes, Seq, Str, UInt, encode_struct, wire
from protocol.collusion import check_threshold, sparse_bounds
from protocol.errors import InvalidRoundParameters

MAX_NODES = 1024
MAX_VECTOR_LENGTH = 1 << 23
QUERY_ID_SIZE = 16
DIGEST_SIZE = 32
FEDERATION_ID = Str(128)


@dataclass(frozen=True)
class RoundParams:
    federation_id: str = wire(FEDERATION_ID)
    query_id: bytes = wire(Bytes(QUERY_ID_SIZE, exact=QUERY_ID_SIZE))
    round: int = wire(UInt(4))
    #: sorted, unique member names of the nodes asked to contribute
    participants: tuple[str, ...] = wire(Seq(NAME, MAX_NODES))
    threshold: int = wire(UInt(2))
    vector_length: int = wire(UInt(4, MAX_VECTOR_LENGTH))
    ring_bits: int = wire(UInt(2, MAX_RING_BITS))
    #: 0 for the complete graph; else an even k: each node pairs with k neighbours (SecAgg+)
    neighbours: int = wire(UInt(2))
    #: digest of the query specification the nodes evaluated (algorithm, variables, filters)
    query_digest: bytes = wire(Bytes(DIGEST_SIZE, exact=DIGEST_SIZE))
    #: c: colluding nodes the round's thresholds hold against (protocol.collusion); nodes
    #: refuse a round whose c is below their manifest's max_colluding_nodes
    max_colluding: int = wire(UInt(2), default=0)

    def __post_init__(self) -> None:
        n = len(self.participants)
        if n < 2:
            raise InvalidRoundParameters("a secure sum needs at least two participants")
        if list(self.participants) != sorted(set(self.participants)):
            raise InvalidRoundParameters("participants must be sorted and unique")
        # t > (n + c)/2: two disjoint groups of honest survivors (the c colluders siding with
        # both) can never both gather t consistency signatures; t - c >= 2: every sum holds
        # two honest inputs. With c = 0 this is t > n/2.
        check_threshold(n, self.threshold, self.max_colluding)
        if not MIN_RING_BITS <= self.ring_bits <= MAX_RING_BITS:
            raise InvalidRoundParameters("ring width out of range")
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise InvalidRoundParameters("vector length out of range")
        if self.neighbours and (self.neighbours % 2 or not 2 <= self.neighbours < n - 1):
            raise InvalidRoundParameters("neighbours must be 0 or an even number in [2, n - 2]")
        if self.neighbours:
            sparse_bounds(n, self.neighbours, self.max_colluding)  # same bounds per neighbourhood

    @cached_property
    def digest(self) -> bytes:
        return hashlib.sha256(b"fedtally/v1/round-params" + encode_struct(self)).digest()

    @property
    def n_limbs(self) -> int:
        return limbs_for(self.ring_bits)

    @property
    def masked_input_size(self) -> int:
        return self.n_limbs * self.vector_length * 8

    def index(self, name: str) -> int:
        """Position in the participant list; Shamir x-coordinates are ``index + 1``."""
        return self._positions[name]

    @cached_property
    def _positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.participants)}

    @property
    def sparse(self) -> bool:
        """True for the SecAgg+ graph: every node sees only its neighbourhood."""
        return bool(self.neighbours)

    @cached_property
    def _neighbour_map(self) -> dict[str, frozenset[str]]:
        names = self.participants
        if not self.neighbours:
            everyone = frozenset(names)
            return {name: everyone - {name} for name in names}
        # a circulant k-regular graph over a permutation fixed by the round digest, so the
        # aggregator cannot pick who neighbours whom without changing the digest
        order = sorted(names, key=lambda m: hashlib.sha256(self.digest + m.encode()).digest())
        half = self.neighbours // 2
        n = len(order)
        graph: dict[str, frozenset[str]] = {}
        for i, name in enumerate(order):
            graph[name] = frozenset(order[(i + d) % n] for d in range(-half, half + 1) if d)
        return graph

    def neighbours_of(self, name: str) -> frozenset[str]:
        return self._neighbour_map[name]

    def share_holders(self, owner: str) -> frozenset[str]:
        """Who holds Shamir shares of ``owner``'s secrets: its neighbours and itself (its
        closed neighbourhood; the graph is symmetric, so also whose shares ``owner`` holds)."""
        return self._closed_map[owner]

    @cached_property
    def _closed_map(self) -> dict[str, frozenset[str]]:
        if not self.neighbours:
            everyone = frozenset(self.participants)
            return dict.fromkeys(self.participants, everyone)
        return {name: peers | {name} for name, peers in self._neighbour_map.items()}

    def neighbourhood_order(self, name: str) -> tuple[str, ...]:
        """``name``'s closed neighbourhood, sorted: the bit order of its signed survivor view."""
        return self._closed_order[name]

    @cached_property
    def _closed_order(self) -> dict[str, tuple[str, ...]]:
        return {name: tuple(sorted(holders)) for name, holders in self._closed_map.items()}

    def neighbourhood_position(self, name: str) -> dict[str, int]:
        """Where each node of ``name``'s closed neighbourhood sits in its sorted order."""
        positions = self._closed_positions.get(name)
        if positions is None:
            order = self._closed_order[name]
            positions = self._closed_positions[name] = {peer: i for i, peer in enumerate(order)}
        return positions

    @cached_property
    def _closed_positions(self) -> dict[str, dict[str, int]]:
        return {}  # filled on demand: a node needs its two-hop neighbourhood only

    @property
    def shamir_threshold(self) -> int:
        """Shares needed to rebuild one node's secrets.

        Complete graph: the round threshold. SecAgg+ graph (Bell et al. 2020): ``t_s`` of
        the k + 1 holders, with ``2 t_s > k + 1 + c_local`` and ``t_s - c_local >= 2``
        (:func:`protocol.collusion.sparse_bounds`); a strict majority when c = 0.
        """
        if not self.neighbours:
            return self.threshold
        return sparse_bounds(len(self.participants), self.neighbours,
                             self.max_colluding).shamir_threshold

    @property
    def honest_inputs(self) -> int:
        """Honest inputs every sum that a node lets through is guaranteed to hold, with at
        most ``max_colluding`` colluders (in the SecAgg+ graph: per neighbourhood, with the
        probability :mod:`protocol.collusion` states)."""
        if not self.neighbours:
            return self.threshold - self.max_colluding
        return sparse_bounds(len(self.participants), self.neighbours,
                             self.max_colluding).honest_inputs
