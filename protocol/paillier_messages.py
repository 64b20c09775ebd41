"""Wire messages and signed statements of one Paillier-mode round.

1. node -> aggregator: :class:`EncryptedInput`, its packed ciphertexts and a proof that it
   knows their plaintexts (:mod:`crypto.plaintext_proof`), signed over the round digest and
   the federation key's fingerprint;
2. aggregator -> each contributor: :class:`DecryptRequest`, every signed contribution and
   their product;
3. node -> aggregator: :class:`PartialDecryption` of the product with a proof of its
   correctness, sealed to the researcher's per-query key and signed together with the
   contributor set it decrypts;
4. aggregator -> researcher: :class:`PaillierResult`, the sealed partials, which only the
   researcher can open and combine, with the signed contributions they decrypt (whose
   proofs the researcher checks too).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from crypto.kdf import context
from crypto.keyagreement import KEY_SIZE
from protocol.codec import NAME, Bytes, Seq, Str, Struct, message, wire
from protocol.errors import InconsistentView, ThresholdNotMet
from protocol.messages import NAMES, QUERY_ID, ROUND, SIGNATURE, SecAggMessage, _check_names
from protocol.params import DIGEST_SIZE, MAX_NODES, RoundParams
from protocol.service_messages import MAX_RECEIPT, REQUEST_ID

#: one node's ciphertexts (1,000,000 values of 32 bits at 3072 bits is about 9 MB)
MAX_CIPHERTEXT_BYTES = 16 * 1024 * 1024
#: one proof of plaintext knowledge (628 bytes at 3072 bits, under 1,600 at 8192)
MAX_PROOF_BYTES = 4096
DIGEST = Bytes(DIGEST_SIZE, exact=DIGEST_SIZE)
KEY = Bytes(KEY_SIZE, exact=KEY_SIZE)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def check_contributors(params: RoundParams, contributors: tuple[str, ...]) -> None:
    """A contributor set is decryptable only if its nodes are participants of the round and
    reach the round threshold (fewer could single a hospital out)."""
    if not set(contributors) <= set(params.participants):
        raise InconsistentView("a contributor is not a participant of this round")
    if len(contributors) < params.threshold:
        raise ThresholdNotMet(f"only {len(contributors)} contributions; "
                              f"the round needs {params.threshold}")


def contribution_statement(params: RoundParams, key_fingerprint: bytes, sender: str,
                           data_digest: bytes, proof_digest: bytes) -> bytes:
    """What a node signs: its ciphertexts and its proof, so that a proof that fails is
    provably its own (the aggregator cannot swap in a bad one to blame it)."""
    return context(b"fedtally/v1", "paillier-contribution", params.digest, key_fingerprint,
                   sender, data_digest, proof_digest)


def contribution_binding(params: RoundParams, key_fingerprint: bytes, sender: str) -> bytes:
    """What a proof of plaintext knowledge is bound to (its Fiat-Shamir challenge): the
    sender, the round and the key; a proof made for any other does not verify."""
    return context(b"fedtally/v1", "paillier-contribution-proof", params.digest,
                   key_fingerprint, sender)


def partial_binding(params: RoundParams, sender: str, contributors: tuple[str, ...],
                    product_digest: bytes) -> bytes:
    """What a partial decryption answers: bound into its seal and its signature."""
    return context(b"fedtally/v1", "paillier-partial", params.digest, sender, product_digest,
                   *contributors)


def partial_statement(params: RoundParams, sender: str, contributors: tuple[str, ...],
                      product_digest: bytes, ephemeral_public: bytes, sealed: bytes) -> bytes:
    return context(partial_binding(params, sender, contributors, product_digest),
                   ephemeral_public, digest(sealed))


@message(12)
@dataclass(frozen=True)
class EncryptedInput(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    sender: str = wire(NAME)
    data: bytes = wire(Bytes(MAX_CIPHERTEXT_BYTES))
    #: the sender's proof that it knows the plaintexts and randomness of ``data``
    proof: bytes = wire(Bytes(MAX_PROOF_BYTES))
    signature: bytes = wire(SIGNATURE)


@message(13)
@dataclass(frozen=True)
class DecryptRequest(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    #: the signed contributions, sorted by sender; the node recomputes their product
    contributions: tuple[EncryptedInput, ...] = wire(Seq(Struct(EncryptedInput), MAX_NODES))
    product: bytes = wire(Bytes(MAX_CIPHERTEXT_BYTES))

    @property
    def contributors(self) -> tuple[str, ...]:
        return tuple(c.sender for c in self.contributions)

    def __post_init__(self) -> None:
        _check_names(self.contributors, "contributors")


@message(14)
@dataclass(frozen=True)
class PartialDecryption(SecAggMessage):
    query_id: bytes = wire(QUERY_ID)
    round: int = wire(ROUND)
    sender: str = wire(NAME)
    contributors: tuple[str, ...] = wire(NAMES)
    product_digest: bytes = wire(DIGEST)
    ephemeral_public: bytes = wire(KEY)
    #: ChaCha20-Poly1305 under a key only the researcher can derive, of the partial
    #: decryptions followed by the proof that they are correct (crypto.partial_proof)
    sealed: bytes = wire(Bytes(MAX_CIPHERTEXT_BYTES + 8192))
    signature: bytes = wire(SIGNATURE)

    def __post_init__(self) -> None:
        _check_names(self.contributors, "contributors")


@message(15)
@dataclass(frozen=True)
class PaillierResult:
    """Aggregator to researcher: the sealed partial decryptions of the round's product and
    the signed contributions it is the product of."""

    request_id: bytes = wire(REQUEST_ID)
    params: RoundParams = wire(Struct(RoundParams))
    contributors: tuple[str, ...] = wire(NAMES)
    product_digest: bytes = wire(DIGEST)
    partials: tuple[PartialDecryption, ...] = wire(Seq(Struct(PartialDecryption), MAX_NODES))
    #: the product the partials decrypt (their proofs are checked against it)
    product: bytes = wire(Bytes(MAX_CIPHERTEXT_BYTES))
    #: the signed contributions, sorted by sender: the researcher checks their signatures
    #: and proofs of plaintext knowledge, and that ``product`` is their product
    contributions: tuple[EncryptedInput, ...] = wire(Seq(Struct(EncryptedInput), MAX_NODES))
    #: each contributing node's signed ledger head after its entry for this query
    receipts: tuple[str, ...] = wire(Seq(Str(MAX_RECEIPT), MAX_NODES), default=())
    #: participants dropped for not answering within the stage timeout
    timed_out: tuple[str, ...] = wire(Seq(NAME, MAX_NODES), default=())

    def __post_init__(self) -> None:
        _check_names(self.contributors, "contributors")
