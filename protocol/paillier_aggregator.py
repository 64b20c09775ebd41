"""The aggregator's side of one Paillier-mode round: a sans-I/O state machine.

It collects signed encrypted contributions (checking signature, size, ciphertext range and
invertibility, and the proof of plaintext knowledge, so that a node contributing what it did
not encrypt is dropped and the round goes on without it), multiplies them (the homomorphic
sum), asks every contributor for a partial decryption of the product, and hands the sealed
partials and the contributions to the researcher. It never holds a key share and cannot
open the seals, so it learns neither a node's values nor the total.
Driver interface as :class:`protocol.secagg_aggregator.SecAggAggregator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any, ClassVar

from gmpy2 import mpz

from crypto.errors import InvalidSignature
from crypto.identity import VerifyKey
from protocol.errors import (
    AuthenticationError,
    RemoteProtocolError,
    ThresholdNotMet,
)
from protocol.paillier_contribution import verify_contribution
from protocol.paillier_key import FederationKey
from protocol.paillier_messages import (
    DecryptRequest,
    EncryptedInput,
    PaillierResult,
    PartialDecryption,
    digest,
    partial_statement,
)
from protocol.params import RoundParams
from protocol.round_machine import AggregatorMachine, Outgoing


class PaillierAggregatorStage(Enum):
    COLLECT_INPUTS = "encrypted_input"
    COLLECT_PARTIALS = "partial_decryption"
    DONE = "done"
    ABORTED = "aborted"


class PaillierAggregator(AggregatorMachine):
    TRANSITIONS: ClassVar[dict[tuple[Any, type], str]] = {
        (PaillierAggregatorStage.COLLECT_INPUTS, EncryptedInput): "_on_input",
        (PaillierAggregatorStage.COLLECT_PARTIALS, PartialDecryption): "_on_partial",
    }
    CLOSERS: ClassVar[dict[Any, str]] = {
        PaillierAggregatorStage.COLLECT_INPUTS: "_close_inputs",
        PaillierAggregatorStage.COLLECT_PARTIALS: "_close_partials",
    }
    DONE = PaillierAggregatorStage.DONE
    ABORTED = PaillierAggregatorStage.ABORTED

    def __init__(self, params: RoundParams, members: Mapping[str, VerifyKey],
                 key: FederationKey) -> None:
        super().__init__(params, members, PaillierAggregatorStage.COLLECT_INPUTS)
        self.key = key
        self.result: PaillierResult | None = None
        self._product = b""
        self._product_digest = b""
        self._ciphertexts: dict[str, list[mpz]] = {}
        self._contributions: tuple[EncryptedInput, ...] = ()

    # --- stages ----------------------------------------------------------------------------

    def _need(self, count: int, needed: int, what: str) -> None:
        if count < needed:
            raise ThresholdNotMet(f"only {count} {what}; {needed} needed")

    def _on_input(self, sender: str, msg: EncryptedInput) -> None:
        # signature, range and invertibility, proof of plaintext knowledge
        self._ciphertexts[sender] = verify_contribution(self.params, self.key, msg,
                                                        self._members[sender])

    def _close_inputs(self, arrived: dict[str, EncryptedInput]) -> Outgoing:
        self._need(len(arrived), self.params.threshold, "contributions")
        self._need(len(arrived), self.key.threshold.threshold,
                   "contributors left to decrypt (the key's decryption threshold)")
        public = self.key.threshold.public
        contributors = tuple(sorted(arrived))
        product = public.combine([self._ciphertexts[name] for name in contributors])
        self._product = public.to_bytes(product)
        self._product_digest = digest(self._product)
        self.survivors = contributors
        p = self.params
        self._contributions = tuple(arrived[name] for name in contributors)
        self._ciphertexts = {}
        request = DecryptRequest(p.query_id, p.round, self._contributions, self._product)
        self._next(PaillierAggregatorStage.COLLECT_PARTIALS, set(contributors))
        return [(name, request) for name in contributors]

    def _on_partial(self, sender: str, msg: PartialDecryption) -> None:
        if msg.contributors != self.survivors or msg.product_digest != self._product_digest:
            raise RemoteProtocolError("the partial decryption answers another request")
        try:
            self._members[sender].verify(
                partial_statement(self.params, sender, msg.contributors, msg.product_digest,
                                  msg.ephemeral_public, msg.sealed), msg.signature)
        except InvalidSignature as exc:
            raise AuthenticationError(f"the partial decryption of {sender} does not verify") \
                from exc

    def _close_partials(self, arrived: dict[str, PartialDecryption]) -> Outgoing:
        self._need(len(arrived), self.key.threshold.threshold, "partial decryptions")
        self.result = PaillierResult(bytes(16), self.params, self.survivors,
                                     self._product_digest,
                                     tuple(arrived[name] for name in sorted(arrived)),
                                     self._product, self._contributions)
        self.stage = PaillierAggregatorStage.DONE
        self.expected = set()
        return []
