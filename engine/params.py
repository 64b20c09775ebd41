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
from engine.codec import NAME, Bytes, Seq, Str, UInt, encode_struct, wire

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

    def __post_init__(self) -> None:
        n = len(self.participants)
        if n < 2:
            raise ValueError("a secure sum needs at least two participants")
        if list(self.participants) != sorted(set(self.participants)):
            raise ValueError("participants must be sorted and unique")
        # t > n/2: two disjoint survivor sets can never both gather t consistency signatures
        if not n // 2 + 1 <= self.threshold <= n:
            raise ValueError(f"threshold must be in [{n // 2 + 1}, {n}] for {n} participants")
        if not MIN_RING_BITS <= self.ring_bits <= MAX_RING_BITS:
            raise ValueError("ring width out of range")
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise ValueError("vector length out of range")
        if self.neighbours and (self.neighbours % 2 or not 2 <= self.neighbours < n - 1):
            raise ValueError("neighbours must be 0 or an even number in [2, n - 2]")

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
        return self.participants.index(name)

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
        """Who holds Shamir shares of ``owner``'s secrets: its neighbours and itself."""
        return self._neighbour_map[owner] | {owner}

    @property
    def shamir_threshold(self) -> int:
        """Shares needed to rebuild one node's secrets.

        Complete graph: the round threshold. SecAgg+ graph (Bell et al. 2020): a strict
        majority of the k + 1 holders.
        """
        if not self.neighbours:
            return self.threshold
        return (self.neighbours + 1) // 2 + 1
