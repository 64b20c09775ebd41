"""One node's encrypted contribution to a Paillier-mode round: made, and checked.

A node encrypts its packed plaintexts, proves that it knows them and their randomness
(:mod:`crypto.plaintext_proof`, bound to itself, the round and the key) and signs both.
The aggregator, every decrypting node and the researcher check a contribution the same
way: size, signature, ciphertext range, then the proof. Without the proof a node could
contribute ciphertexts it did not make, e.g. the inverse of other nodes' ciphertexts from an
earlier round, so that the decrypted "total" is one hospital's vector.
"""

from __future__ import annotations

from collections.abc import Sequence

from gmpy2 import mpz

from crypto.errors import CryptoError, InvalidSignature
from crypto.identity import SigningIdentity, VerifyKey
from crypto.paillier import FastEncryptor
from crypto.plaintext_proof import PlaintextProof, prove, verify
from crypto.randomness import RandomSource
from protocol.errors import AuthenticationError, RemoteProtocolError
from protocol.paillier_key import FederationKey
from protocol.paillier_messages import (
    EncryptedInput,
    contribution_binding,
    contribution_statement,
    digest,
)
from protocol.params import RoundParams


class UnprovenContribution(RemoteProtocolError):
    """A contribution signed by its sender carries no valid proof that the sender knows its
    plaintexts (it may be built from other nodes' ciphertexts). The message names the
    sender; nothing is decrypted or released."""

    code = "unproven_contribution"
    #: the node whose proof failed
    sender: str | None = None


def make_contribution(params: RoundParams, key: FederationKey, sender: str,
                      identity: SigningIdentity, encryptor: FastEncryptor,
                      plaintexts: Sequence[int], rng: RandomSource) -> EncryptedInput:
    """Encrypt ``plaintexts``, prove knowledge of them, sign both for this round and key."""
    public = key.threshold.public
    ciphertexts, exponents = encryptor.encrypt_with_exponents(plaintexts)
    proof = prove(public, ciphertexts, plaintexts, exponents,
                  contribution_binding(params, key.fingerprint, sender), rng).to_bytes(public)
    data = public.to_bytes(ciphertexts)
    signature = identity.sign(contribution_statement(params, key.fingerprint, sender,
                                                     digest(data), digest(proof)))
    return EncryptedInput(params.query_id, params.round, sender, data, proof, signature)


def verify_contribution(params: RoundParams, key: FederationKey, msg: EncryptedInput,
                        verify_key: VerifyKey) -> list[mpz]:
    """``msg.sender``'s ciphertexts, range-checked, once its signature for this round and
    key and its proof of plaintext knowledge verify; else a typed error naming it
    (:class:`AuthenticationError`, :class:`UnprovenContribution`; an invalid ciphertext
    raises :class:`crypto.paillier.InvalidCiphertext`)."""
    sender = msg.sender
    if len(msg.data) != key.ciphertext_bytes(params):
        raise RemoteProtocolError(f"the contribution of {sender} has the wrong size")
    try:
        verify_key.verify(contribution_statement(params, key.fingerprint, sender,
                                                 digest(msg.data), digest(msg.proof)),
                          msg.signature)
    except InvalidSignature as exc:
        raise AuthenticationError(
            f"the contribution of {sender} does not verify under this round") from exc
    public = key.threshold.public
    ciphertexts = public.from_bytes(msg.data)
    try:
        verify(public, ciphertexts, PlaintextProof.from_bytes(public, msg.proof),
               contribution_binding(params, key.fingerprint, sender))
    except CryptoError as exc:
        error = UnprovenContribution(
            f"the contribution of {sender} carries no valid proof that {sender} knows its "
            "plaintexts (it may combine other nodes' ciphertexts); it is refused")
        error.sender = sender
        raise error from exc
    return ciphertexts
