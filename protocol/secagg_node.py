"""The node's side of one secure-sum round: a sans-I/O state machine.

Give it messages, it hands back the message to send. It trusts nothing the aggregator says:
every list is checked against what the node itself saw, every advert's signature against
the member key in the federation manifest, and the round digest is bound into every
signature and key derivation. Any failure raises a typed :class:`~protocol.errors.FedtallyError`
and leaves the node in ``FAILED``: it sends nothing more for this round.

Invariant (checked before every reveal): for any peer, the node reveals the share of its
self-mask seed or the share of its mask key, never both.

With the SecAgg+ graph (``params.neighbours > 0``, Bell et al. 2020) a node receives,
verifies and stores only its own neighbourhood: the adverts, shares and survivor list of
its ``k`` neighbours, and the signed survivor views of the nodes whose secrets it helps to
rebuild. The checks are the complete graph's, made per neighbourhood: at least ``t_s``
holders at every stage, and before it reveals anything about a peer, at least ``t_s`` of
that peer's holders must have signed the same status (survived or not) for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from enum import Enum
from typing import Any, ClassVar

from crypto import shamir
from crypto.encoding import RingVector
from crypto.errors import DecryptionFailed, InvalidSignature
from crypto.identity import SigningIdentity, VerifyKey
from crypto.kdf import context
from crypto.keyagreement import X25519KeyPair
from crypto.prg import MaskExpander, pairwise_mask_key, self_mask_key
from crypto.randomness import RandomSource
from crypto.sealed import open_sealed, seal
from protocol.codec import decode_struct, encode_struct
from protocol.commitment import sign_commitment
from protocol.errors import (
    AuthenticationError,
    InconsistentView,
    LocalError,
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
    ShareOf,
    SharePlaintext,
    SignedBy,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
)
from protocol.params import RoundParams
from protocol.round_machine import NodeMachine

SEED_SIZE = 32


class NodeStage(Enum):
    START = "start"
    ADVERTISED = "advertised"  # waiting for the key roster
    SHARED = "shared"  # waiting for the share bundle
    MASKED = "masked"  # waiting for the survivor list
    SIGNED = "signed"  # waiting for the unmask request
    DONE = "done"
    ABORTED = "aborted"
    FAILED = "failed"


TERMINAL = frozenset({NodeStage.DONE, NodeStage.ABORTED, NodeStage.FAILED})

# --- signed statements (one place, used by node, aggregator and tests) ----------------------


def advert_statement(params: RoundParams, sender: str, enc_public: bytes, mask_public: bytes,
                     commitment: bytes) -> bytes:
    return context(b"fedtally/v1", "advertise", params.digest, sender, enc_public, mask_public,
                   commitment)


def consistency_statement(params: RoundParams, survivors: tuple[str, ...]) -> bytes:
    return context(b"fedtally/v1", "consistency", params.digest, *survivors)


def neighbourhood_statement(params: RoundParams, signer: str, view: bytes) -> bytes:
    """What a node signs in the consistency round of the SecAgg+ graph: its view of which
    nodes of its closed neighbourhood survived (:func:`survivor_view`)."""
    return context(b"fedtally/v1", "neighbourhood-consistency", params.digest, signer, view)


def survivor_view(params: RoundParams, signer: str, survivors: Collection[str]) -> bytes:
    """A bitmap over ``signer``'s closed neighbourhood in sorted order: bit i is set when
    the i-th node survived. ``survivors`` outside that neighbourhood are ignored."""
    order = params.neighbourhood_order(signer)
    bits = 0
    for i, name in enumerate(order):
        if name in survivors:
            bits |= 1 << i
    return bits.to_bytes((len(order) + 7) // 8, "little")


def view_bits(params: RoundParams, signer: str, view: bytes) -> int:
    """A :func:`survivor_view` as an integer (bit i: the i-th node of ``signer``'s closed
    neighbourhood survived); InconsistentView if it is malformed."""
    width = len(params.neighbourhood_order(signer))
    if len(view) != (width + 7) // 8:
        raise InconsistentView(f"the survivor view of {signer} has the wrong size")
    bits = int.from_bytes(view, "little")
    if bits >> width:
        raise InconsistentView(f"the survivor view of {signer} names nodes beyond its graph")
    return bits


def seed_commitment(params: RoundParams, owner: str, seed: bytes) -> bytes:
    """Hiding (the seed is 256 random bits) and binding commitment to a self-mask seed."""
    return hashlib.sha256(context(b"fedtally/v1", "seed-commitment", params.digest, owner,
                                  seed)).digest()


def share_binding(params: RoundParams, sender: str, recipient: str) -> bytes:
    return context(b"fedtally/v1", "share", params.digest, sender, recipient)


def mask_sign(me: str, peer: str) -> int:
    """+1 if ``me`` adds the pair mask, -1 if it subtracts it (lower name adds)."""
    return 1 if me < peer else -1


def pair_key(params: RoundParams, shared_secret: bytes, a: str, b: str) -> bytes:
    low, high = (a, b) if a < b else (b, a)
    return pairwise_mask_key(shared_secret, params.digest, low, high)


def verify_advert(params: RoundParams, advert: AdvertiseKeys, key: VerifyKey) -> None:
    try:
        key.verify(advert_statement(params, advert.sender, advert.enc_public,
                                    advert.mask_public, advert.seed_commitment),
                   advert.signature)
    except InvalidSignature as exc:
        raise AuthenticationError(
            f"the key advert of {advert.sender} does not verify under this round's parameters"
        ) from exc


class _SealingKeys(X25519KeyPair):
    """The node's sealing key pair, remembering each peer's shared secret: sealing shares to
    a neighbour and opening the neighbour's shares use the same X25519 secret."""

    __slots__ = ("_shared",)

    def __init__(self, secret: bytes) -> None:
        super().__init__(secret)
        self._shared: dict[bytes, bytes] = {}

    def exchange(self, peer_public: bytes) -> bytes:
        shared = self._shared.get(peer_public)
        if shared is None:
            shared = self._shared[peer_public] = super().exchange(peer_public)
        return shared


class SecAggNode(NodeMachine):
    """One node's participation in one round."""

    def __init__(self, params: RoundParams, me: str, identity: SigningIdentity,
                 members: Mapping[str, VerifyKey], value: RingVector, rng: RandomSource,
                 commitment: bytes = b"") -> None:
        super().__init__(params, me, identity, members, value, rng, NodeStage.START)
        #: the node's Pedersen commitment to ``value`` (protocol/commitment.py), or b""
        self._commitment = commitment
        #: (peer, "self" | "key") for every share this node revealed; tests read it
        self.reveal_log: list[tuple[str, str]] = []
        self._revealed: dict[str, str] = {}  # owner -> the one kind revealed for it
        self._adverts: dict[str, AdvertiseKeys] = {}
        self._held: dict[str, SharePlaintext] = {}  # shares we hold, by owner (incl. ourselves)
        self._committed: frozenset[str] = frozenset()
        self._survivors: tuple[str, ...] = ()

    TRANSITIONS: ClassVar[dict[tuple[Any, type], str]] = {
        (NodeStage.ADVERTISED, KeyRoster): "_on_roster",
        (NodeStage.SHARED, ShareBundle): "_on_bundle",
        (NodeStage.MASKED, SurvivorList): "_on_survivors",
        (NodeStage.SIGNED, UnmaskRequest): "_on_unmask",
    }
    FAILED = NodeStage.FAILED
    ABORTED = NodeStage.ABORTED
    TERMINAL = TERMINAL

    def start(self) -> AdvertiseKeys:
        if self.stage is not NodeStage.START:
            raise LocalError("round already started")
        return self._guard(self._advertise)

    # --- plumbing ------------------------------------------------------------------------

    def _need(self, count: int, what: str, needed: int | None = None) -> None:
        needed = self.params.threshold if needed is None else needed
        if count < needed:
            raise ThresholdNotMet(f"only {count} {what}; the round needs {needed}")

    # --- stages ---------------------------------------------------------------------------

    def _advertise(self) -> AdvertiseKeys:
        p = self.params
        self._enc = _SealingKeys(X25519KeyPair.generate(self._rng).secret_bytes())
        self._mask = X25519KeyPair.generate(self._rng)
        self._seed = self._rng.bytes(SEED_SIZE)
        commitment = seed_commitment(p, self.me, self._seed)
        signature = self._identity.sign(advert_statement(
            p, self.me, self._enc.public, self._mask.public, commitment))
        self._own_advert = AdvertiseKeys(p.query_id, p.round, self.me, self._enc.public,
                                          self._mask.public, commitment, signature)
        self.stage = NodeStage.ADVERTISED
        return self._own_advert

    def _on_roster(self, msg: KeyRoster) -> EncryptedShares:
        p = self.params
        self._check_header(msg)
        # complete graph: every participant; SecAgg+ graph: only our closed neighbourhood
        scope = p.share_holders(self.me)
        adverts: dict[str, AdvertiseKeys] = {}
        for advert in msg.adverts:
            self._check_header(advert)
            if advert.sender not in p.participants:
                raise AuthenticationError(f"{advert.sender} is not a participant of this round")
            if advert.sender not in scope:
                raise InconsistentView(f"the roster carries the advert of {advert.sender}, "
                                       "who is not our neighbour")
            if advert.sender in adverts:
                raise InconsistentView(f"two key adverts for {advert.sender}")
            verify_advert(p, advert, self._members[advert.sender])
            adverts[advert.sender] = advert
        if adverts.get(self.me) != self._own_advert:
            raise InconsistentView("the roster does not carry our own advert unchanged")
        # the round threshold on the complete graph (there t_s = t), t_s per neighbourhood
        self._need(len(adverts), "nodes advertised keys", p.shamir_threshold)
        self._adverts = adverts
        holders = sorted(adverts)
        xs = {name: p.index(name) + 1 for name in holders}
        seed_shares = shamir.split(self._seed, p.shamir_threshold, xs.values(), self._rng)
        key_shares = shamir.split(self._mask.secret_bytes(), p.shamir_threshold, xs.values(),
                                  self._rng)
        sealed = []
        for name in holders:
            plain = SharePlaintext(self.me, name, seed_shares[xs[name]], key_shares[xs[name]])
            if name == self.me:
                self._held[self.me] = plain
                continue
            ciphertext = seal(self._enc, adverts[name].enc_public, encode_struct(plain),
                              share_binding(p, self.me, name), self._rng)
            sealed.append(SealedShare(self.me, name, ciphertext))
        self.stage = NodeStage.SHARED
        return EncryptedShares(p.query_id, p.round, self.me, tuple(sealed))

    def _on_bundle(self, msg: ShareBundle) -> MaskedInput:
        p = self.params
        self._check_header(msg)
        committed = frozenset(msg.committed)
        if self.me not in committed:
            raise InconsistentView("the committed list leaves us out")
        if not committed <= self._adverts.keys():
            raise InconsistentView("the committed list names nodes that never advertised")
        self._need(len(committed), "nodes shared their keys", p.shamir_threshold)
        expected = (p.neighbours_of(self.me) & committed)
        received: dict[str, SharePlaintext] = {}
        for share in msg.shares:
            if share.recipient != self.me:
                raise InconsistentView("a share addressed to another node was delivered to us")
            if share.sender not in expected or share.sender in received:
                raise InconsistentView(f"unexpected or duplicate share from {share.sender}")
            try:
                raw = open_sealed(self._enc, self._adverts[share.sender].enc_public,
                                  share.ciphertext, share_binding(p, share.sender, self.me))
            except DecryptionFailed as exc:
                raise AuthenticationError(f"the share from {share.sender} does not open") from exc
            plain = decode_struct(SharePlaintext, raw)
            if plain.owner != share.sender or plain.recipient != self.me:
                raise AuthenticationError(f"the share from {share.sender} is mislabelled")
            received[share.sender] = plain
        if received.keys() != expected:
            raise InconsistentView("shares of some committed neighbours are missing")
        self._held.update(received)
        self._committed = committed
        masked = self._value.copy()
        expander = MaskExpander(p.ring_bits, p.vector_length)
        expander.add_mask_(masked, self_mask_key(self._seed, p.digest, self.me))
        for peer in sorted(expected):
            key = pair_key(p, self._mask.exchange(self._adverts[peer].mask_public), self.me, peer)
            if mask_sign(self.me, peer) > 0:
                expander.add_mask_(masked, key)
            else:
                expander.sub_mask_(masked, key)
        self._value = RingVector.zeros(p.ring_bits, 1)  # drop the cleartext reference early
        self.stage = NodeStage.MASKED
        signature = sign_commitment(self._identity, p.query_digest, self.me,
                                    self._commitment) if self._commitment else b""
        return MaskedInput(p.query_id, p.round, self.me, masked.to_bytes(), self._commitment,
                           signature)

    def _on_survivors(self, msg: SurvivorList) -> ConsistencySignature:
        p = self.params
        self._check_header(msg)
        survivors = frozenset(msg.survivors)
        if self.me not in survivors:
            raise InconsistentView("the survivor list leaves us out")
        if not survivors <= self._committed:
            raise InconsistentView("the survivor list names nodes that did not share keys")
        self._need(len(survivors), "survivors", p.shamir_threshold)
        self._survivors = msg.survivors
        if p.sparse:
            statement = neighbourhood_statement(p, self.me,
                                                survivor_view(p, self.me, survivors))
        else:
            statement = consistency_statement(p, msg.survivors)
        signature = self._identity.sign(statement)
        self.stage = NodeStage.SIGNED
        return ConsistencySignature(p.query_id, p.round, self.me, signature)

    def _on_unmask(self, msg: UnmaskRequest) -> UnmaskShares:
        p = self.params
        self._check_header(msg)
        survivors, dropouts = frozenset(msg.survivors), frozenset(msg.dropouts)
        if msg.survivors != self._survivors:
            raise InconsistentView("the survivor list differs from the one we signed")
        if survivors & dropouts:
            raise InconsistentView("survivor and dropout lists overlap")
        if dropouts != self._committed - survivors:
            raise InconsistentView("the dropout list is not the committed nodes that vanished")
        if p.sparse:
            self._check_neighbourhood_views(msg, survivors)
        else:
            self._check_consistency(msg, survivors)
        self_shares, key_shares = [], []
        for owner in sorted(self._held):
            if owner in survivors:
                self._record_reveal(owner, "self")
                self_shares.append(ShareOf(owner, self._held[owner].seed_share))
            elif owner in dropouts:
                self._record_reveal(owner, "key")
                key_shares.append(ShareOf(owner, self._held[owner].key_share))
        self.stage = NodeStage.DONE
        return UnmaskShares(p.query_id, p.round, self.me, tuple(self_shares), tuple(key_shares))

    def _check_consistency(self, msg: UnmaskRequest, survivors: frozenset[str]) -> None:
        """Complete graph: at least t survivors signed exactly the list we signed."""
        statement = consistency_statement(self.params, msg.survivors)
        signers: set[str] = set()
        for signed in msg.signatures:
            if signed.signer not in survivors or signed.signer in signers or signed.view:
                raise InconsistentView(f"unexpected consistency signature of {signed.signer}")
            try:
                self._members[signed.signer].verify(statement, signed.signature)
            except InvalidSignature as exc:
                raise AuthenticationError(
                    f"the consistency signature of {signed.signer} does not verify") from exc
            signers.add(signed.signer)
        self._need(len(signers), "nodes signed the survivor list")

    def _check_neighbourhood_views(self, msg: UnmaskRequest,
                                   survivors: frozenset[str]) -> None:
        """SecAgg+ graph: for every node whose shares we hold, at least t_s of its holders
        signed the same status for it as ours (survived or not). Two conflicting statuses
        for one node would each need t_s holders, more than its k + 1 holders and c_local
        colluders signing for both can give (2 t_s > k + 1 + c_local).

        Signatures are verified as they are needed (views of nodes already verified or of
        our own neighbours first): about 2 t_s of them, a little more than k + 1, instead of
        the 2k + 1 it may be sent."""
        p = self.params
        owners = sorted(self._held)
        mine = p.share_holders(self.me)
        # who may speak about the owners we hold: their holders (nodes within two hops)
        relevant = frozenset().union(*(p.share_holders(owner) for owner in owners))
        views: dict[str, tuple[int, SignedBy]] = {}
        for signed in msg.signatures:
            signer = signed.signer
            if signer not in relevant or signer in views:
                raise InconsistentView(f"unexpected consistency signature of {signer}")
            bits = view_bits(p, signer, signed.view)
            own = bits >> p.neighbourhood_position(signer)[signer] & 1
            if not own or (signer in self._committed and signer not in survivors):
                raise InconsistentView(f"the survivor view of {signer} contradicts ours")
            views[signer] = (bits, signed)
        verified: set[str] = set()
        needed = p.shamir_threshold
        # our own neighbours first: their views cover most of every owner's holders
        order = sorted(views.keys() & mine) + sorted(views.keys() - mine)
        for owner in owners:
            survived = owner in survivors
            holders = p.share_holders(owner)
            agreeing = sum(1 for signer in verified if signer in holders
                           and self._says(views[signer][0], signer, owner) == survived)
            for signer in order:
                if agreeing >= needed:
                    break
                if signer in verified or signer not in holders:
                    continue
                bits, signed = views[signer]
                if self._says(bits, signer, owner) != survived:
                    continue
                try:
                    self._members[signer].verify(
                        neighbourhood_statement(p, signer, signed.view), signed.signature)
                except InvalidSignature as exc:
                    raise AuthenticationError(
                        f"the consistency signature of {signer} does not verify") from exc
                verified.add(signer)
                agreeing += 1
            self._need(agreeing, f"holders of {owner} signed its status", needed)

    def _says(self, bits: int, signer: str, owner: str) -> bool:
        """Whether ``signer``'s view says ``owner`` survived."""
        return bool(bits >> self.params.neighbourhood_position(signer)[owner] & 1)

    def _record_reveal(self, owner: str, kind: str) -> None:
        if self._revealed.setdefault(owner, kind) != kind:
            raise InconsistentView(f"refusing to reveal both shares of {owner}")
        self.reveal_log.append((owner, kind))

