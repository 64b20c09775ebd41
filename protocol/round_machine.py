"""What every round state machine shares, whatever protects the values (masks or Paillier).

A node machine: ``receive`` checks the message against its transition table, honours an
abort notice of this round, and turns any failure into a typed error that leaves it
``FAILED`` (it sends nothing more). An aggregator machine: ``receive`` accepts a message
only from a sender expected in the current stage, for this query and round, in the sender's
own name; ``close_stage`` ends the stage with what arrived, and any :class:`ProtocolAbort`
ends the round with an abort notice to everyone who took part in the stage.
Subclasses give the transition tables, the stage enum members and the stage handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, ClassVar

from crypto.encoding import RingVector
from crypto.errors import CryptoError
from crypto.identity import SigningIdentity, VerifyKey
from crypto.randomness import RandomSource
from protocol.errors import (
    AbortedByPeer,
    AuthenticationError,
    DecodeError,
    FedtallyError,
    LocalError,
    ProtocolAbort,
    RemoteProtocolError,
    ReplayError,
    UnexpectedMessage,
)
from protocol.messages import RoundAborted, SecAggMessage
from protocol.params import RoundParams

Outgoing = list[tuple[str, SecAggMessage]]


class NodeMachine:
    """Base of a node's side of one round."""

    TRANSITIONS: ClassVar[dict[tuple[Any, type], str]]
    #: the stage enum's members for a failed, an aborted and a finished round
    FAILED: ClassVar[Enum]
    ABORTED: ClassVar[Enum]
    TERMINAL: ClassVar[frozenset[Enum]]

    def __init__(self, params: RoundParams, me: str, identity: SigningIdentity,
                 members: Mapping[str, VerifyKey], value: RingVector, rng: RandomSource,
                 first_stage: Enum) -> None:
        """Refuses (LocalError) a node that is not a participant, an input of another
        shape, a member list missing a participant, or an identity not in the manifest."""
        if me not in params.participants:
            raise LocalError(f"{me} is not a participant of this round")
        if value.bits != params.ring_bits or value.length != params.vector_length:
            raise LocalError("the input does not have the round's ring width and length")
        missing = [m for m in params.participants if m not in members]
        if missing:
            raise LocalError(f"participants without a manifest key: {missing}")
        if identity.verify_key != members.get(me):
            raise LocalError("our identity key is not the one in the federation manifest")
        self.params = params
        self.me = me
        self._identity = identity
        self._members = dict(members)
        self._value = value
        self._rng = rng
        self.stage: Any = first_stage
        self.error: FedtallyError | None = None

    @property
    def finished(self) -> bool:
        return self.stage in self.TERMINAL

    def receive(self, msg: object) -> SecAggMessage | None:
        """Handle one message from the aggregator; returns the reply to send, if any."""
        if self.stage in self.TERMINAL:
            raise LocalError(f"round is over ({self.stage.value})")
        if isinstance(msg, RoundAborted):
            try:
                self._check_header(msg)
            except ReplayError as exc:
                return self._fail(exc)
            self.stage = self.ABORTED
            self.error = AbortedByPeer(f"the aggregator aborted the round ({msg.code})")
            raise self.error
        handler = self.TRANSITIONS.get((self.stage, type(msg)))
        if handler is None:
            return self._fail(UnexpectedMessage(
                f"{type(msg).__name__} is not allowed while {self.stage.value}"))
        return self._guard(lambda: getattr(self, handler)(msg))

    def _guard(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except FedtallyError as exc:
            return self._fail(exc)
        except (CryptoError, DecodeError) as exc:
            return self._fail(RemoteProtocolError("a peer's cryptographic material is invalid"),
                              exc)

    def _fail(self, error: FedtallyError, cause: BaseException | None = None) -> Any:
        self.stage = self.FAILED
        self.error = error
        raise error from cause

    def _check_header(self, msg: SecAggMessage) -> None:
        if msg.query_id != self.params.query_id or msg.round != self.params.round:
            raise ReplayError("message belongs to another query or round")


class AggregatorMachine:
    """Base of the aggregator's side of one round."""

    TRANSITIONS: ClassVar[dict[tuple[Any, type], str]]
    CLOSERS: ClassVar[dict[Any, str]]
    DONE: ClassVar[Enum]
    ABORTED: ClassVar[Enum]

    def __init__(self, params: RoundParams, members: Mapping[str, Any], first_stage: Enum
                 ) -> None:
        missing = [m for m in params.participants if m not in members]
        if missing:
            raise LocalError(f"participants without a manifest key: {missing}")
        self.params = params
        self._members = dict(members)
        self.stage: Any = first_stage
        self.error: FedtallyError | None = None
        self.survivors: tuple[str, ...] = ()
        #: who may send in the current stage; shrinks as nodes drop or misbehave
        self.expected: set[str] = set(params.participants)
        self._received: dict[str, SecAggMessage] = {}

    def receive(self, sender: str, msg: object) -> None:
        """Accept one message; raises a typed error (and ignores the message) if it is not
        allowed, in which case ``sender`` takes no further part in the round."""
        if self.stage in (self.DONE, self.ABORTED):
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
        """Everyone still expected in this stage has answered."""
        return not self.expected

    def drop(self, name: str) -> None:
        """The transport lost ``name`` (disconnect or timeout): stop waiting for it."""
        self.expected.discard(name)

    def close_stage(self) -> Outgoing:
        """End the current stage with what arrived; returns the messages to send."""
        closer = self.CLOSERS.get(self.stage)
        if closer is None:
            raise LocalError(f"no stage to close ({self.stage.value})")
        arrived = dict(self._received)
        self._received = {}
        try:
            out: Outgoing = getattr(self, closer)(arrived)
        except ProtocolAbort as exc:
            return self._abort(exc, arrived)
        except CryptoError:
            return self._abort(self._invalid_material(), arrived)
        return out

    def _invalid_material(self) -> ProtocolAbort:
        """The abort for signed key material that turns out unusable when combined."""
        return ProtocolAbort("a node's key material is invalid")

    def _abort(self, error: ProtocolAbort, arrived: Mapping[str, object]) -> Outgoing:
        self.stage = self.ABORTED
        self.error = error
        p = self.params
        notice = RoundAborted(p.query_id, p.round, error.code)
        return [(name, notice) for name in sorted(arrived)]

    def _next(self, stage: Enum, expected: set[str] | frozenset[str]) -> None:
        self.stage = stage
        self.expected = set(expected)
