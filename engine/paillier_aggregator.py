"""The aggregator's side of one Paillier-mode round: a sans-I/O state machine.

It collects signed encrypted contributions (checking signature, size, ciphertext range and
invertibility), multiplies them (the homomorphic sum), asks every contributor for a partial
decryption of the product, and hands the sealed partials to the researcher. It never holds
a key share and cannot open the seals, so it learns neither a node's values nor the total.
Driver interface as :class:`engine.secagg_aggregator.SecAggAggregator`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from crypto.errors import CryptoError, InvalidSignature
from crypto.identity import VerifyKey
from engine.errors import (
    AuthenticationError,
    FedtallyError,
    LocalError,
    ProtocolAbort,
    RemoteProtocolError,
    ReplayError,
    ThresholdNotMet,
    UnexpectedMessage,
)
from engine.messages import RoundAborted, SecAggMessage
from engine.paillier_key import FederationKey
from engine.paillier_messages import (
    DecryptRequest,
    EncryptedInput,
    PaillierResult,
    PartialDecryption,
    digest,
    partial_statement,
)
from engine.paillier_node import verify_contribution
from engine.params import RoundParams


class PaillierAggregatorStage(Enum):
    COLLECT_INPUTS = "encrypted_input"
    COLLECT_PARTIALS = "partial_decryption"
    DONE = "done"
    ABORTED = "aborted"


Outgoing = list[tuple[str, SecAggMessage]]


class PaillierAggregator:
    TRANSITIONS: dict[tuple[PaillierAggregatorStage, type], str] = {
        (PaillierAggregatorStage.COLLECT_INPUTS, EncryptedInput): "_on_input",
        (PaillierAggregatorStage.COLLECT_PARTIALS, PartialDecryption): "_on_partial",
    }
    CLOSERS: dict[PaillierAggregatorStage, str] = {
        PaillierAggregatorStage.COLLECT_INPUTS: "_close_inputs",
        PaillierAggregatorStage.COLLECT_PARTIALS: "_close_partials",
    }

    def __init__(self, params: RoundParams, members: Mapping[str, VerifyKey],
                 key: FederationKey) -> None:
        missing = [m for m in params.participants if m not in members]
        if missing:
            raise LocalError(f"participants without a manifest key: {missing}")
        self.params = params
        self.key = key
        self._members = dict(members)
        self.stage = PaillierAggregatorStage.COLLECT_INPUTS
        self.error: FedtallyError | None = None
        self.result: PaillierResult | None = None
        self.survivors: tuple[str, ...] = ()
        self.expected: set[str] = set(params.participants)
        self._received: dict[str, SecAggMessage] = {}
        self._product = b""

    # --- driver interface ---------------------------------------------------------------

    def receive(self, sender: str, msg: object) -> None:
        if self.stage in (PaillierAggregatorStage.DONE, PaillierAggregatorStage.ABORTED):
            raise UnexpectedMessage("the round is over")
        handler = self.TRANSITIONS.get((self.stage, type(msg)))
        try:
            if handler is None:
                raise UnexpectedMessage(
                    f"{type(msg).__name__} is not allowed in stage {self.stage.value}")
            if sender not in self.expected:
                raise UnexpectedMessage(f"{sender} is not expected to send in this stage")
            assert isinstance(msg, SecAggMessage)
            if msg.query_id != self.params.query_id or msg.round != self.params.round:
                raise ReplayError("message belongs to another query or round")
            if getattr(msg, "sender", sender) != sender:
                raise AuthenticationError("message names another sender than its connection")
            getattr(self, handler)(sender, msg)
        except CryptoError as exc:
            self.expected.discard(sender)
            raise RemoteProtocolError("invalid cryptographic material") from exc
        except FedtallyError:
            self.expected.discard(sender)
            raise
        self._received[sender] = msg
        self.expected.discard(sender)

    @property
    def complete(self) -> bool:
        return not self.expected

    def drop(self, name: str) -> None:
        self.expected.discard(name)

    def close_stage(self) -> Outgoing:
        closer = self.CLOSERS.get(self.stage)
        if closer is None:
            raise LocalError(f"no stage to close ({self.stage.value})")
        arrived = dict(self._received)
        self._received = {}
        try:
            out: Outgoing = getattr(self, closer)(arrived)
        except ProtocolAbort as exc:
            self.stage = PaillierAggregatorStage.ABORTED
            self.error = exc
            p = self.params
            notice = RoundAborted(p.query_id, p.round, exc.code)
            return [(name, notice) for name in sorted(arrived)]
        return out

    # --- stages ----------------------------------------------------------------------------

    def _need(self, count: int, needed: int, what: str) -> None:
        if count < needed:
            raise ThresholdNotMet(f"only {count} {what}; {needed} needed")

    def _on_input(self, sender: str, msg: EncryptedInput) -> None:
        verify_contribution(self.params, self.key, msg, self._members[sender])
        self.key.threshold.public.from_bytes(msg.data)  # range and invertibility

    def _close_inputs(self, arrived: dict[str, EncryptedInput]) -> Outgoing:
        self._need(len(arrived), self.params.threshold, "contributions")
        self._need(len(arrived), self.key.threshold.threshold,
                   "contributors left to decrypt (the key's decryption threshold)")
        public = self.key.threshold.public
        contributors = tuple(sorted(arrived))
        product = public.combine([public.from_bytes(arrived[name].data)
                                  for name in contributors])
        self._product = public.to_bytes(product)
        self.survivors = contributors
        p = self.params
        request = DecryptRequest(p.query_id, p.round,
                                 tuple(arrived[name] for name in contributors), self._product)
        self.stage = PaillierAggregatorStage.COLLECT_PARTIALS
        self.expected = set(contributors)
        return [(name, request) for name in contributors]

    def _on_partial(self, sender: str, msg: PartialDecryption) -> None:
        product_digest = digest(self._product)
        if msg.contributors != self.survivors or msg.product_digest != product_digest:
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
                                     digest(self._product),
                                     tuple(arrived[name] for name in sorted(arrived)),
                                     self._product)
        self.stage = PaillierAggregatorStage.DONE
        self.expected = set()
        return []
