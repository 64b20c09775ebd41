"""The node's side of one Paillier-mode round: a sans-I/O state machine.

``start`` packs and encrypts the node's vector, proves that it knows the plaintexts and
signs both. On a :class:`DecryptRequest` the node checks every contribution's signature
under this round's parameters and the federation key and its proof of plaintext knowledge
(so no contributor combined other nodes' ciphertexts), that at least the round threshold of
distinct participants contributed, and that the product it is asked to decrypt is the
product of exactly those contributions. Only then does it compute its partial decryption,
once per round, with a proof that it is the one its key share gives, sealed to the
researcher's per-query key. Any failure raises a typed error and leaves the node ``FAILED``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar

from crypto.encoding import RingVector
from crypto.identity import SigningIdentity, VerifyKey
from crypto.keyagreement import X25519KeyPair
from crypto.paillier import FastEncryptor, randomizer_bits
from crypto.partial_proof import prove
from crypto.randomness import RandomSource
from crypto.sealed import seal
from crypto.threshold_paillier import KeyShare
from protocol.errors import InconsistentView, LocalError
from protocol.paillier_contribution import make_contribution, verify_contribution
from protocol.paillier_key import FederationKey
from protocol.paillier_messages import (
    DecryptRequest,
    EncryptedInput,
    PartialDecryption,
    check_contributors,
    digest,
    partial_binding,
    partial_statement,
)
from protocol.params import RoundParams
from protocol.round_machine import NodeMachine


class PaillierStage(Enum):
    START = "start"
    CONTRIBUTED = "contributed"  # waiting for the decryption request
    DONE = "done"
    ABORTED = "aborted"
    FAILED = "failed"


TERMINAL = frozenset({PaillierStage.DONE, PaillierStage.ABORTED, PaillierStage.FAILED})


class PaillierNode(NodeMachine):
    """One node's participation in one Paillier-mode round."""

    TRANSITIONS: ClassVar[dict[tuple[Any, type], str]] = {
        (PaillierStage.CONTRIBUTED, DecryptRequest): "_on_decrypt",
    }
    FAILED = PaillierStage.FAILED
    ABORTED = PaillierStage.ABORTED
    TERMINAL = TERMINAL

    def __init__(self, params: RoundParams, me: str, identity: SigningIdentity,
                 members: Mapping[str, VerifyKey], value: RingVector, key: FederationKey,
                 share: KeyShare, encryptor: FastEncryptor, reply_key: bytes,
                 rng: RandomSource, *, decrypt_workers: int = 1) -> None:
        super().__init__(params, me, identity, members, value, rng, PaillierStage.START)
        if share.index != key.index(me) or share.threshold_public != key.threshold:
            raise LocalError("our key share is not the one the manifest assigns to us")
        if encryptor.public != key.threshold.public:
            raise LocalError("the encryptor is for another key")
        if encryptor.exponent_bits > randomizer_bits(encryptor.public.bits):
            raise LocalError("the encryptor's randomizers are longer than a proof allows")
        self._key = key
        self._share = share
        self._encryptor = encryptor
        self._reply_key = reply_key
        #: threads for the partial decryption (gmpy2 releases the GIL there)
        self._workers = max(1, decrypt_workers)
        #: how many partial decryptions this node produced in this round (at most one)
        self.decryptions = 0
        self._sent: EncryptedInput | None = None

    def start(self) -> EncryptedInput:
        if self.stage is not PaillierStage.START:
            raise LocalError("round already started")
        return self._guard(self._contribute)

    # --- steps ---------------------------------------------------------------------------

    def _contribute(self) -> EncryptedInput:
        plaintexts = self._key.packing(self.params).pack(self._value.to_signed().tolist())
        msg = make_contribution(self.params, self._key, self.me, self._identity,
                                self._encryptor, plaintexts, self._rng)
        self._sent = msg
        self.stage = PaillierStage.CONTRIBUTED
        return msg

    def _on_decrypt(self, msg: DecryptRequest) -> PartialDecryption:
        p = self.params
        self._check_header(msg)
        contributors = msg.contributors
        check_contributors(p, contributors)
        public = self._key.threshold.public
        # our own contribution, if it comes back unchanged, needs no second check
        vectors = [public.from_bytes(contribution.data) if contribution == self._sent
                   else verify_contribution(p, self._key, contribution,
                                            self._members[contribution.sender])
                   for contribution in msg.contributions]
        product = public.combine(vectors)
        if public.to_bytes(product) != msg.product:
            raise InconsistentView("the ciphertext to decrypt is not the product of the "
                                   "signed contributions")
        if self.decryptions:  # unreachable through the stage table; kept as the invariant
            raise LocalError("this node already decrypted in this round")
        partials = self._share.partial_decrypt(product, workers=self._workers)
        self.decryptions += 1
        product_digest = digest(msg.product)
        binding = partial_binding(p, self.me, contributors, product_digest)
        proof = prove(self._share, product, partials, binding, self._rng)
        ephemeral = X25519KeyPair.generate(self._rng)
        sealed = seal(ephemeral, self._reply_key,
                      public.to_bytes(partials) + proof.to_bytes(self._key.threshold),
                      binding, self._rng)
        signature = self._identity.sign(partial_statement(p, self.me, contributors,
                                                          product_digest, ephemeral.public,
                                                          sealed))
        self.stage = PaillierStage.DONE
        return PartialDecryption(p.query_id, p.round, self.me, contributors, product_digest,
                                 ephemeral.public, sealed, signature)
