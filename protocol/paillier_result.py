"""The researcher's side of a Paillier-mode round: open, check and combine the partials.

Only the researcher holds the per-query X25519 key the partial decryptions are sealed to.
First the contributions: each must be signed by its sender for this round and key and carry
a valid proof that its sender knows the plaintexts (else :class:`UnprovenContribution`
naming it), and the product must be theirs. Every partial must be signed by a key holder over this query's round, the same contributor
set and the same product, and carry a proof (checked against the holder's verification key
in the manifest) that it is what that holder's key share gives; the contributor set must
reach the round threshold. Any ``t`` of them combine to the packed plaintexts; more than
``t`` are cross-checked. The unpacked exact
totals come back as the ring vector mask mode would have produced.
"""

from __future__ import annotations

from collections.abc import Mapping

from crypto.encoding import RingVector
from crypto.errors import CryptoError, InvalidSignature
from crypto.identity import VerifyKey
from crypto.keyagreement import X25519KeyPair
from crypto.partial_proof import Claim, InvalidPartialDecryption, PartialProof, verify_all
from crypto.sealed import open_sealed
from protocol.errors import (
    AuthenticationError,
    InconsistentView,
    ProtocolAbort,
    RemoteProtocolError,
    ThresholdNotMet,
)
from protocol.paillier_contribution import verify_contribution
from protocol.paillier_key import FederationKey
from protocol.paillier_messages import (
    PaillierResult,
    check_contributors,
    digest,
    partial_binding,
    partial_statement,
)


class ThresholdDecryptionFailed(ProtocolAbort):
    """The partial decryptions do not combine to a valid total (a node or the aggregator
    lied, or the result was tampered with): nothing is released."""

    code = "decryption_failed"


def open_result(result: PaillierResult, *, query_digest: bytes, key: FederationKey,
                members: Mapping[str, VerifyKey], reply_key: X25519KeyPair,
                workers: int = 1) -> RingVector:
    """The round's exact total, or a typed error; never a partially checked value.
    ``workers`` threads verify the proofs."""
    p = result.params
    if p.query_digest != query_digest:
        raise InconsistentView("the result answers another query")
    contributors = result.contributors
    check_contributors(p, contributors)
    public = key.threshold.public
    count = key.packing(p).plaintexts_for(p.vector_length)
    if digest(result.product) != result.product_digest:
        raise InconsistentView("the product does not match the one the nodes decrypted")
    try:
        product = public.from_bytes(result.product, count)
    except CryptoError as exc:
        raise RemoteProtocolError("the product is malformed") from exc
    partial_size = count * public.ciphertext_size
    partials: dict[int, list[int]] = {}
    claims: list[Claim] = []
    for partial in result.partials:
        sender = partial.sender
        if sender not in contributors or key.index(sender) in partials:
            raise InconsistentView(f"an unexpected partial decryption from {sender}")
        if partial.contributors != contributors or partial.product_digest != result.product_digest:
            raise InconsistentView(f"{sender} decrypted another product")
        if partial.query_id != p.query_id or partial.round != p.round:
            raise InconsistentView(f"{sender}'s partial decryption belongs to another round")
        try:
            members[sender].verify(partial_statement(p, sender, contributors,
                                                     partial.product_digest,
                                                     partial.ephemeral_public, partial.sealed),
                                   partial.signature)
        except (InvalidSignature, KeyError) as exc:
            raise AuthenticationError(f"the partial decryption of {sender} does not verify") \
                from exc
        binding = partial_binding(p, sender, contributors, partial.product_digest)
        try:
            raw = open_sealed(reply_key, partial.ephemeral_public, partial.sealed, binding)
            values = public.from_bytes(raw[:partial_size], count)
            proof = PartialProof.from_bytes(key.threshold, raw[partial_size:])
        except CryptoError as exc:
            raise RemoteProtocolError(f"the partial decryption of {sender} is malformed") \
                from exc
        partials[key.index(sender)] = values
        claims.append(Claim(key.index(sender), values, proof, binding))
    check_contributions(result, key, members)
    try:
        verify_all(key.threshold, product, claims, workers=workers)
    except InvalidPartialDecryption as exc:
        liar = key.holders[exc.index - 1] if exc.index else "a node"
        raise ThresholdDecryptionFailed(f"the partial decryption of {liar} is wrong: its proof does "
                               "not verify; nothing is released") from exc
    if len(partials) < key.threshold.threshold:
        raise ThresholdNotMet(f"only {len(partials)} partial decryptions; the key needs "
                              f"{key.threshold.threshold}")
    try:
        plaintexts = key.threshold.combine(partials)
        totals = key.packing(p).unpack(plaintexts, p.vector_length, len(contributors))
    except CryptoError as exc:
        raise ThresholdDecryptionFailed("the partial decryptions do not combine to a valid total") \
            from exc
    return RingVector.from_ints(p.ring_bits, totals)


def check_contributions(result: PaillierResult, key: FederationKey,
                        members: Mapping[str, VerifyKey]) -> None:
    """Raise unless ``result.product`` is the product of the contributors' signed
    contributions to this round, each with a valid proof of plaintext knowledge
    (:class:`UnprovenContribution` names a sender whose proof fails)."""
    p = result.params
    if tuple(c.sender for c in result.contributions) != result.contributors:
        raise InconsistentView("the contributions forwarded are not the contributors'")
    vectors = []
    for contribution in result.contributions:
        sender = contribution.sender
        if contribution.query_id != p.query_id or contribution.round != p.round:
            raise InconsistentView(f"{sender}'s contribution belongs to another round")
        if sender not in members:
            raise AuthenticationError(f"{sender} is not a member of this federation")
        try:
            vectors.append(verify_contribution(p, key, contribution, members[sender]))
        except CryptoError as exc:
            raise RemoteProtocolError(f"the contribution of {sender} is malformed") from exc
    public = key.threshold.public
    if public.to_bytes(public.combine(vectors)) != result.product:
        raise InconsistentView("the product decrypted is not the product of the signed "
                               "contributions")
