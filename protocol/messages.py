"""Wire messages of one secure-sum round (Bonawitz et al. 2017 with the consistency round).

Every message names its query and round; the protocol objects refuse one that names another
(:class:`protocol.errors.ReplayError`). Signatures and seals bind the full round digest, so a
message whose header was rewritten fails verification instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crypto.identity import SIGNATURE_SIZE
from crypto.keyagreement import KEY_SIZE
from crypto.shamir import SHARE_SIZE
from protocol.codec import NAME, Bytes, Seq, Str, Struct, UInt, message, wire
from protocol.params import DIGEST_SIZE, MAX_NODES, QUERY_ID_SIZE, RoundParams

QUERY_ID = Bytes(QUERY_ID_SIZE, exact=QUERY_ID_SIZE)
ROUND = UInt(4)
KEY = Bytes(KEY_SIZE, exact=KEY_SIZE)
SIGNATURE = Bytes(SIGNATURE_SIZE, exact=SIGNATURE_SIZE)
SHARE = Bytes(SHARE_SIZE, exact=SHARE_SIZE)
NAMES = Seq(NAME, MAX_NODES)
#: sealed share plaintext (two 66-byte shares, two names) + nonce + tag, with headroom
SEALED_MAX = 512
MAX_MASKED_INPUT = 64 * 1024 * 1024
SURVIVOR_VIEW_MAX = (MAX_NODES + 7) // 8


def _check_names(names: tuple[str, ...], what: str) -> None:
    if list(names) != sorted(set(names)):
        raise ValueError(f"{what} must be sorted and unique")


@dataclass(frozen=True)
class SecAggMessage:
    query_id: bytes
    round: int


@message(1)
@dataclass(frozen=True)
class AdvertiseKeys(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    sender: str = wire(NAME)
    enc_public: bytes = wire(KEY)
    mask_public: bytes = wire(KEY)
    seed_commitment: bytes = wire(Bytes(DIGEST_SIZE, exact=DIGEST_SIZE))
    signature: bytes = wire(SIGNATURE)


@message(2)
@dataclass(frozen=True)
class KeyRoster(SecAggMessage):
    """The adverts of every node that advertised (SecAgg+ graph: of the recipient's closed
    neighbourhood only)."""

    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    adverts: tuple[AdvertiseKeys, ...] = wire(Seq(Struct(AdvertiseKeys), MAX_NODES))


@dataclass(frozen=True)
class SealedShare:
    sender: str = wire(NAME)
    recipient: str = wire(NAME)
    ciphertext: bytes = wire(Bytes(SEALED_MAX))


@dataclass(frozen=True)
class SharePlaintext:
    """What a sealed share carries: one share of each of the owner's two secrets."""

    owner: str = wire(NAME)
    recipient: str = wire(NAME)
    seed_share: bytes = wire(SHARE)
    key_share: bytes = wire(SHARE)


@message(3)
@dataclass(frozen=True)
class EncryptedShares(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    sender: str = wire(NAME)
    shares: tuple[SealedShare, ...] = wire(Seq(Struct(SealedShare), MAX_NODES))


@message(4)
@dataclass(frozen=True)
class ShareBundle(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    #: U2: every node whose shares the aggregator forwarded (the nodes that mask together);
    #: SecAgg+ graph: those of the recipient's closed neighbourhood
    committed: tuple[str, ...] = wire(NAMES)
    shares: tuple[SealedShare, ...] = wire(Seq(Struct(SealedShare), MAX_NODES))

    def __post_init__(self) -> None:
        _check_names(self.committed, "committed")


@message(5)
@dataclass(frozen=True)
class MaskedInput(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    sender: str = wire(NAME)
    data: bytes = wire(Bytes(MAX_MASKED_INPUT))
    #: the node's Pedersen commitment to its vector, and its signature of it bound to the
    #: query (protocol.commitment); empty where the round carries no verifiable total
    commitment: bytes = wire(Bytes(32), default=b"")
    commitment_signature: bytes = wire(Bytes(SIGNATURE_SIZE), default=b"")


@dataclass(frozen=True)
class SignedCommitment:
    """A contributor's commitment to its vector, signed over the query it answers."""

    node: str = wire(NAME)
    commitment: bytes = wire(Bytes(32, exact=32))
    signature: bytes = wire(SIGNATURE)


@message(6)
@dataclass(frozen=True)
class SurvivorList(SecAggMessage):
    """U3: who sent a masked input (SecAgg+ graph: within the recipient's closed
    neighbourhood)."""

    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    survivors: tuple[str, ...] = wire(NAMES)

    def __post_init__(self) -> None:
        _check_names(self.survivors, "survivors")


@message(7)
@dataclass(frozen=True)
class ConsistencySignature(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    sender: str = wire(NAME)
    signature: bytes = wire(SIGNATURE)


@dataclass(frozen=True)
class SignedBy:
    signer: str = wire(NAME)
    signature: bytes = wire(SIGNATURE)
    #: SecAgg+ graph only: the signer's signed survivor view, a bitmap over its closed
    #: neighbourhood (protocol.secagg_node.survivor_view); empty on the complete graph
    view: bytes = wire(Bytes(SURVIVOR_VIEW_MAX), default=b"")


@message(8)
@dataclass(frozen=True)
class UnmaskRequest(SecAggMessage):
    """The survivors and dropouts (SecAgg+ graph: within the recipient's closed
    neighbourhood) and the consistency signatures: of the survivor list on the complete
    graph; of their own views, by the holders of the recipient's neighbours, on SecAgg+."""

    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    survivors: tuple[str, ...] = wire(NAMES)
    dropouts: tuple[str, ...] = wire(NAMES)
    signatures: tuple[SignedBy, ...] = wire(Seq(Struct(SignedBy), MAX_NODES))

    def __post_init__(self) -> None:
        _check_names(self.survivors, "survivors")
        _check_names(self.dropouts, "dropouts")


@dataclass(frozen=True)
class ShareOf:
    owner: str = wire(NAME)
    share: bytes = wire(SHARE)


@message(9)
@dataclass(frozen=True)
class UnmaskShares(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    sender: str = wire(NAME)
    self_mask_shares: tuple[ShareOf, ...] = wire(Seq(Struct(ShareOf), MAX_NODES))
    key_shares: tuple[ShareOf, ...] = wire(Seq(Struct(ShareOf), MAX_NODES))


@message(10)
@dataclass(frozen=True)
class RoundAborted(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    #: an error code from protocol.errors, never free text
    code: str = wire(Str(64, re.compile(r"[a-z_]{1,64}")))


@message(11)
@dataclass(frozen=True)
class RoundStart:
    """Aggregator to node: a round begins with these parameters (the node re-derives and
    compares them with its own view of the query before taking part)."""

    params: RoundParams = wire(Struct(RoundParams))


SECAGG_MESSAGES = (AdvertiseKeys, KeyRoster, EncryptedShares, ShareBundle, MaskedInput,
                   SurvivorList, ConsistencySignature, UnmaskRequest, UnmaskShares, RoundAborted)
