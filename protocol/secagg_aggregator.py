"""The aggregator's side of one secure-sum round: a sans-I/O state machine.

The driver feeds it ``(sender, message)`` pairs (the sender authenticated by the transport)
and closes each stage when everyone expected has answered or a deadline passed; closing
returns the messages to send. A message that breaks the rules raises a typed error for that
sender and is ignored: the sender is then treated as dropped. The aggregator learns the sum
over the survivors and nothing else.

Work stays near-linear in the number of nodes: shares are routed by recipient, and each
secret is rebuilt from exactly ``t`` shares (those of the lowest holder indices) with
Lagrange coefficients computed once per set of holders (on the complete graph, once per
round). With the SecAgg+ graph every message to a node carries its neighbourhood only.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar

from crypto import shamir
from crypto.encoding import RingVector
from crypto.errors import CryptoError, InvalidSignature
from crypto.identity import VerifyKey
from crypto.keyagreement import public_from_secret, x25519
from crypto.prg import MaskExpander, self_mask_key
from protocol.errors import (
    AuthenticationError,
    ProtocolAbort,
    RemoteProtocolError,
    ThresholdNotMet,
)
from protocol.messages import (
    AdvertiseKeys,
    ConsistencySignature,
    EncryptedShares,
    KeyRoster,
    MaskedInput,
    SealedShare,
    ShareBundle,
    SignedBy,
    SignedCommitment,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
)
from protocol.params import RoundParams
from protocol.round_machine import AggregatorMachine, Outgoing
from protocol.secagg_node import (
    consistency_statement,
    mask_sign,
    neighbourhood_statement,
    pair_key,
    seed_commitment,
    survivor_view,
    verify_advert,
)


class AggregatorStage(Enum):
    COLLECT_ADVERTS = "advertise"
    COLLECT_SHARES = "share"
    COLLECT_MASKED = "masked_input"
    COLLECT_SIGNATURES = "consistency"
    COLLECT_UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"


class InconsistentShares(ProtocolAbort):
    """Revealed shares do not rebuild the committed secret: some node lied; nothing released."""

    code = "inconsistent_shares"


class SecAggAggregator(AggregatorMachine):
    TRANSITIONS: ClassVar[dict[tuple[Any, type], str]] = {
        (AggregatorStage.COLLECT_ADVERTS, AdvertiseKeys): "_on_advert",
        (AggregatorStage.COLLECT_SHARES, EncryptedShares): "_on_shares",
        (AggregatorStage.COLLECT_MASKED, MaskedInput): "_on_masked",
        (AggregatorStage.COLLECT_SIGNATURES, ConsistencySignature): "_on_signature",
        (AggregatorStage.COLLECT_UNMASK, UnmaskShares): "_on_unmask",
    }
    CLOSERS: ClassVar[dict[Any, str]] = {
        AggregatorStage.COLLECT_ADVERTS: "_close_adverts",
        AggregatorStage.COLLECT_SHARES: "_close_shares",
        AggregatorStage.COLLECT_MASKED: "_close_masked",
        AggregatorStage.COLLECT_SIGNATURES: "_close_signatures",
        AggregatorStage.COLLECT_UNMASK: "_close_unmask",
    }
    DONE = AggregatorStage.DONE
    ABORTED = AggregatorStage.ABORTED

    def __init__(self, params: RoundParams, members: Mapping[str, VerifyKey]) -> None:
        super().__init__(params, members, AggregatorStage.COLLECT_ADVERTS)
        self.result: RingVector | None = None
        self._adverts: dict[str, AdvertiseKeys] = {}
        self._shares: dict[str, EncryptedShares] = {}
        self._committed: tuple[str, ...] = ()
        self._commitments: dict[str, SignedCommitment] = {}
        self._total = RingVector.zeros(params.ring_bits, params.vector_length)
        self._dropouts: tuple[str, ...] = ()
        self._survivor_set: frozenset[str] = frozenset()
        self._dropout_set: frozenset[str] = frozenset()
        #: SecAgg+ graph: the survivor view the aggregator sent each survivor to sign
        self._views: dict[str, bytes] = {}
        #: Lagrange coefficients at 0, by the tuple of holder indices they were made for
        self._coefficients: dict[tuple[int, ...], tuple[int, ...]] = {}

    def _invalid_material(self) -> ProtocolAbort:
        # a signed public key of a node is unusable (e.g. of low order): that node lied
        return InconsistentShares("a node's key material is invalid")

    # --- helpers --------------------------------------------------------------------------

    def _need(self, names: set[str] | frozenset[str] | tuple[str, ...], what: str) -> None:
        if len(names) < self.params.threshold:
            raise ThresholdNotMet(
                f"only {len(names)} {what}; the round needs {self.params.threshold}")

    # --- stage handlers -------------------------------------------------------------------

    def _on_advert(self, sender: str, msg: AdvertiseKeys) -> None:
        # checked here too, so one node's bad advert cannot make every honest node abort
        verify_advert(self.params, msg, self._members[sender])

    def _close_adverts(self, arrived: dict[str, AdvertiseKeys]) -> Outgoing:
        self._need(arrived.keys(), "nodes advertised keys")
        self._adverts = arrived
        p = self.params
        self._next(AggregatorStage.COLLECT_SHARES, arrived.keys())
        if not p.sparse:
            roster = KeyRoster(p.query_id, p.round,
                               tuple(arrived[name] for name in sorted(arrived)))
            return [(name, roster) for name in sorted(arrived)]
        return [(name, KeyRoster(p.query_id, p.round, tuple(
                    arrived[peer] for peer in p.neighbourhood_order(name) if peer in arrived)))
                for name in sorted(arrived)]

    def _on_shares(self, sender: str, msg: EncryptedShares) -> None:
        wanted = (self.params.share_holders(sender) & self._adverts.keys()) - {sender}
        recipients = [s.recipient for s in msg.shares]
        if any(s.sender != sender for s in msg.shares) or sorted(recipients) != sorted(wanted):
            raise RemoteProtocolError("shares are not addressed to exactly the node's holders")

    def _close_shares(self, arrived: dict[str, EncryptedShares]) -> Outgoing:
        self._need(arrived.keys(), "nodes shared their keys")
        committed = tuple(sorted(arrived))
        self._committed = committed
        p = self.params
        inbox: dict[str, list[SealedShare]] = {name: [] for name in committed}
        for sender in committed:
            for share in arrived[sender].shares:
                if share.recipient in inbox:
                    inbox[share.recipient].append(share)
        out: Outgoing = []
        for name in committed:
            scope = committed if not p.sparse else tuple(
                peer for peer in p.neighbourhood_order(name) if peer in arrived)
            out.append((name, ShareBundle(p.query_id, p.round, scope, tuple(inbox[name]))))
        self._next(AggregatorStage.COLLECT_MASKED, set(committed))
        return out

    def _on_masked(self, sender: str, msg: MaskedInput) -> None:
        p = self.params
        if len(msg.data) != p.masked_input_size:
            raise RemoteProtocolError("masked input has the wrong size")
        self._total.add_(RingVector.from_bytes(p.ring_bits, p.vector_length, msg.data))
        if msg.commitment:  # checked by the researcher, who trusts no aggregator
            self._commitments[sender] = SignedCommitment(sender, msg.commitment,
                                                         msg.commitment_signature)

    def commitments(self) -> tuple[SignedCommitment, ...]:
        """The survivors' signed commitments, for the researcher to check the total."""
        return tuple(self._commitments[name] for name in self.survivors
                     if name in self._commitments)

    def _close_masked(self, arrived: dict[str, MaskedInput]) -> Outgoing:
        self._need(arrived.keys(), "masked inputs")
        p = self.params
        self.survivors = tuple(sorted(arrived))
        self._dropouts = tuple(sorted(set(self._committed) - set(self.survivors)))
        self._survivor_set, self._dropout_set = frozenset(self.survivors), frozenset(self._dropouts)
        self._next(AggregatorStage.COLLECT_SIGNATURES, set(self.survivors))
        if not p.sparse:
            notice = SurvivorList(p.query_id, p.round, self.survivors)
            return [(name, notice) for name in self.survivors]
        out: Outgoing = []
        for name in self.survivors:
            seen = tuple(peer for peer in p.neighbourhood_order(name) if peer in arrived)
            self._views[name] = survivor_view(p, name, seen)
            out.append((name, SurvivorList(p.query_id, p.round, seen)))
        return out

    def _on_signature(self, sender: str, msg: ConsistencySignature) -> None:
        p = self.params
        statement = (neighbourhood_statement(p, sender, self._views[sender]) if p.sparse
                     else consistency_statement(p, self.survivors))
        try:
            self._members[sender].verify(statement, msg.signature)
        except InvalidSignature as exc:
            raise AuthenticationError(f"consistency signature of {sender} does not verify") \
                from exc

    def _close_signatures(self, arrived: dict[str, ConsistencySignature]) -> Outgoing:
        self._need(arrived.keys(), "consistency signatures")
        p = self.params
        self._next(AggregatorStage.COLLECT_UNMASK, arrived.keys())
        if not p.sparse:
            signatures = tuple(SignedBy(name, arrived[name].signature)
                               for name in sorted(arrived))
            request = UnmaskRequest(p.query_id, p.round, self.survivors, self._dropouts,
                                    signatures)
            return [(name, request) for name in sorted(arrived)]
        signed = {name: SignedBy(name, msg.signature, self._views[name])
                  for name, msg in arrived.items()}
        survivors, dropouts = self._survivor_set, self._dropout_set
        out: Outgoing = []
        for name in sorted(arrived):
            # the views of the holders of every node whose shares ``name`` holds
            held = [owner for owner in p.neighbourhood_order(name)
                    if owner in survivors or owner in dropouts]
            speakers = sorted(frozenset().union(*(p.share_holders(o) for o in held))
                              & signed.keys())
            out.append((name, UnmaskRequest(
                p.query_id, p.round, tuple(o for o in held if o in survivors),
                tuple(o for o in held if o in dropouts),
                tuple(signed[speaker] for speaker in speakers))))
        return out

    def _on_unmask(self, sender: str, msg: UnmaskShares) -> None:
        survivors, dropouts = self._survivor_set, self._dropout_set
        self_owners = [s.owner for s in msg.self_mask_shares]
        key_owners = [s.owner for s in msg.key_shares]
        # the graph is symmetric: the sender holds shares of its own closed neighbourhood
        holds = self.params.share_holders(sender)
        if (len(set(self_owners)) != len(self_owners) or len(set(key_owners)) != len(key_owners)
                or not set(self_owners) <= survivors & holds
                or not set(key_owners) <= dropouts & holds):
            raise RemoteProtocolError("unmask shares for owners the sender may not reveal")

    def _close_unmask(self, arrived: dict[str, UnmaskShares]) -> Outgoing:
        self._need(arrived.keys(), "nodes revealed shares")
        p = self.params
        seeds: dict[str, dict[int, bytes]] = {name: {} for name in self.survivors}
        keys: dict[str, dict[int, bytes]] = {name: {} for name in self._dropouts}
        for sender, msg in arrived.items():
            x = p.index(sender) + 1
            for share in msg.self_mask_shares:
                seeds[share.owner][x] = share.share
            for share in msg.key_shares:
                keys[share.owner][x] = share.share
        expander = MaskExpander(p.ring_bits, p.vector_length)
        total = self._total
        for owner, shares in seeds.items():
            seed = self._combine(owner, shares, "self-mask seed")
            if seed_commitment(p, owner, seed) != self._adverts[owner].seed_commitment:
                raise InconsistentShares(f"the self-mask shares of {owner} are inconsistent")
            expander.sub_mask_(total, self_mask_key(seed, p.digest, owner))
        for owner, shares in keys.items():
            secret = self._combine(owner, shares, "mask key")
            if public_from_secret(secret) != self._adverts[owner].mask_public:
                raise InconsistentShares(f"the key shares of {owner} are inconsistent")
            for peer in sorted(p.neighbours_of(owner) & set(self.survivors)):
                key = pair_key(p, x25519(secret, self._adverts[peer].mask_public), peer, owner)
                # remove what ``peer`` put in for the pair (peer, owner)
                if mask_sign(peer, owner) > 0:
                    expander.sub_mask_(total, key)
                else:
                    expander.add_mask_(total, key)
        self.result = total
        self.stage = AggregatorStage.DONE
        self.expected = set()
        return []

    def _combine(self, owner: str, shares: dict[int, bytes], what: str) -> bytes:
        """The secret from exactly t_s shares: those of the lowest holder indices, so that
        on the complete graph every owner uses the same holders and one set of Lagrange
        coefficients. The caller checks the result against the owner's signed commitment
        or public key: a wrong share among these is caught there, one outside them is not
        used."""
        needed = self.params.shamir_threshold
        if len(shares) < needed:
            raise ThresholdNotMet(f"only {len(shares)} shares of the {what} of {owner}; "
                                  f"{needed} needed")
        xs = tuple(sorted(shares)[:needed])
        try:
            coefficients = self._coefficients.get(xs)
            if coefficients is None:
                coefficients = self._coefficients[xs] = shamir.zero_coefficients(xs)
            return shamir.combine_with(coefficients, [shares[x] for x in xs])
        except CryptoError as exc:
            raise InconsistentShares(f"the shares of the {what} of {owner} are invalid") from exc
