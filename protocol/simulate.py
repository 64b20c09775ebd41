"""Run whole secure-sum rounds in memory, with every role, injectable dropouts and an
injectable misbehaving aggregator. Deterministic given ``seed``.

``secure_sum`` is the simple face; :func:`run_round` returns the whole transcript (each
node's state, error and reveal log) for tests of misbehaviour. Pass a ``clock`` (e.g.
``time.process_time``; the engine reads no clock itself) to get the CPU time each role
spent, as benchmarks do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from crypto.encoding import RingVector, plan_ring
from crypto.identity import SigningIdentity, VerifyKey
from crypto.paillier import FastEncryptor
from crypto.randomness import RandomSource, SeededRandom, SystemRandom
from crypto.threshold_paillier import KeyShare
from protocol.errors import FedtallyError, LocalError, ProtocolAbort
from protocol.messages import SecAggMessage
from protocol.paillier_aggregator import PaillierAggregator, PaillierAggregatorStage
from protocol.paillier_key import FederationKey
from protocol.paillier_node import PaillierNode
from protocol.params import RoundParams
from protocol.secagg_aggregator import AggregatorStage, SecAggAggregator
from protocol.secagg_node import SecAggNode

_T = TypeVar("_T")
STAGES = ("advertise", "share", "masked_input", "consistency", "unmask")

#: (stage, recipient, message, transcript) -> message to deliver instead (None: withhold)
Tamper = Callable[[str, str, SecAggMessage, "RoundTranscript"], SecAggMessage | None]


@dataclass(frozen=True)
class SecureSumResult:
    total: np.ndarray
    survivors: list[int]
    ring_bits: int
    neighbours: int = 0
    shamir_threshold: int = 0
    #: with a ``clock``: each node's time in its state machine, by name, and the aggregator's
    node_seconds: dict[str, float] = field(default_factory=dict)
    aggregator_seconds: float = 0.0


@dataclass
class RoundTranscript:
    params: RoundParams
    names: list[str]
    nodes: dict[str, SecAggNode]
    aggregator: SecAggAggregator
    node_errors: dict[str, FedtallyError] = field(default_factory=dict)
    aggregator_rejections: dict[str, FedtallyError] = field(default_factory=dict)
    #: every message the aggregator received, including those it rejected
    inbox: list[tuple[str, str, SecAggMessage]] = field(default_factory=list)
    #: every message the aggregator sent, by stage
    outbox: list[tuple[str, str, SecAggMessage]] = field(default_factory=list)
    #: with a ``clock``: seconds each node spent in its state machine, and the aggregator
    node_seconds: dict[str, float] = field(default_factory=dict)
    aggregator_seconds: float = 0.0

    @property
    def result(self) -> RingVector | None:
        return self.aggregator.result


def _deliver(t: RoundTranscript | PaillierTranscript, node_tamper: Tamper | None,
             gone: set[str], stage: str, sender: str, msg: SecAggMessage | None) -> None:
    """Hand a node's message to the simulated aggregator: rewritten by ``node_tamper``,
    lost if the sender vanished, recorded in the inbox, a rejection kept as the outcome."""
    if msg is not None and node_tamper is not None:
        msg = node_tamper(stage, sender, msg, t)  # type: ignore[arg-type]
    if msg is None or sender in gone:
        t.aggregator.drop(sender)
        return
    t.inbox.append((stage, sender, msg))
    try:
        t.aggregator.receive(sender, msg)
    except FedtallyError as exc:
        t.aggregator_rejections[sender] = exc


def node_names(n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"node{i:0{width}d}" for i in range(n)]


def make_params(n: int, threshold: int, length: int, ring_bits: int, neighbours: int | None,
                rng: RandomSource, *, federation_id: str = "simulated",
                round_number: int = 0, max_colluding: int = 0) -> RoundParams:
    """Round parameters for ``n`` simulated nodes; a threshold or graph that does not hold
    against ``max_colluding`` colluders (:mod:`protocol.collusion`) raises ValueError."""
    return RoundParams(federation_id=federation_id, query_id=rng.bytes(16), round=round_number,
                       participants=tuple(node_names(n)), threshold=threshold,
                       vector_length=length, ring_bits=ring_bits, neighbours=neighbours or 0,
                       query_digest=hashlib.sha256(b"simulated query").digest(),
                       max_colluding=max_colluding)


def run_round(values: Sequence[RingVector], params: RoundParams, *,
              identities: Mapping[str, SigningIdentity], rng: RandomSource,
              dropouts: Mapping[str, set[int]] | None = None,
              tamper: Tamper | None = None,
              node_tamper: Tamper | None = None,
              node_params: Mapping[int, RoundParams] | None = None,
              clock: Callable[[], float] | None = None,
              aggregator_type: type[SecAggAggregator] = SecAggAggregator,
              commitments: Mapping[str, bytes] | None = None) -> RoundTranscript:
    """One round through the node and aggregator state machines, all in memory.

    ``dropouts[stage]`` holds input indices that vanish instead of sending their message of
    that stage (and send nothing after). ``node_params`` gives some nodes other parameters
    than the aggregator's (a malicious aggregator's doing); ``node_tamper`` rewrites what a
    node sends (a lying node); ``aggregator_type`` swaps in a patched aggregator (tests of
    attacks). A node that raises is recorded in ``node_errors`` and takes no further part.
    ``commitments`` gives nodes their commitments to their values (verifiable totals).
    """
    dropouts = {k: set(v) for k, v in (dropouts or {}).items()}
    timed = _Timer(clock)
    unknown = set(dropouts) - set(STAGES)
    if unknown:
        raise LocalError(f"unknown dropout stages {sorted(unknown)}; use {STAGES}")
    names = list(params.participants)
    members: dict[str, VerifyKey] = {n: identities[n].verify_key for n in names}
    node_params = node_params or {}
    nodes = {name: SecAggNode(node_params.get(i, params), name, identities[name], members,
                              values[i], rng.child(name) if isinstance(rng, SeededRandom) else rng,
                              (commitments or {}).get(name, b""))
             for i, name in enumerate(names)}
    aggregator = aggregator_type(params, members)
    t = RoundTranscript(params, names, nodes, aggregator)
    timed.transcript = t
    gone: set[str] = set()

    def vanish(stage: str) -> None:
        for i in dropouts.get(stage, ()):
            gone.add(names[i])

    def deliver_to_aggregator(stage: str, sender: str, msg: SecAggMessage | None) -> None:
        timed.aggregator(lambda: _deliver(t, node_tamper, gone, stage, sender, msg))

    def node_step(name: str, msg: SecAggMessage) -> SecAggMessage | None:
        node = nodes[name]
        if name in gone or node.finished:
            return None
        try:
            return timed.node(name, lambda: node.receive(msg))
        except FedtallyError as exc:
            t.node_errors[name] = exc
            return None

    vanish("advertise")
    for name in names:
        msg = None
        if name not in gone:
            try:
                msg = timed.node(name, nodes[name].start)
            except FedtallyError as exc:
                t.node_errors[name] = exc
        deliver_to_aggregator("advertise", name, msg)

    for stage in STAGES[1:] + ("done",):
        outgoing = timed.aggregator(aggregator.close_stage)
        if aggregator.stage is AggregatorStage.ABORTED:
            for name, msg in outgoing:
                notice = tamper(stage, name, msg, t) if tamper else msg
                t.outbox.append((stage, name, msg))
                if notice is not None:
                    node_step(name, notice)
            break
        if aggregator.stage is AggregatorStage.DONE:
            break
        vanish(stage)
        replies: list[tuple[str, SecAggMessage | None]] = []
        for name, msg in outgoing:
            delivered = tamper(stage, name, msg, t) if tamper else msg
            t.outbox.append((stage, name, msg))
            if delivered is not None:
                replies.append((name, node_step(name, delivered)))
        answered = {name for name, _ in replies}
        for name in list(aggregator.expected - answered):
            aggregator.drop(name)
        for name, reply in replies:
            deliver_to_aggregator(stage, name, reply)
    return t


class _Timer:
    """Adds the ``clock`` time of each call to the node's or the aggregator's account."""

    def __init__(self, clock: Callable[[], float] | None) -> None:
        self.clock = clock
        self.transcript: RoundTranscript | None = None

    def node(self, name: str, step: Callable[[], SecAggMessage | None]) -> SecAggMessage | None:
        if self.clock is None or self.transcript is None:
            return step()
        start = self.clock()
        try:
            return step()
        finally:
            seconds = self.transcript.node_seconds
            seconds[name] = seconds.get(name, 0.0) + self.clock() - start

    def aggregator(self, step: Callable[[], _T]) -> _T:
        if self.clock is None or self.transcript is None:
            return step()
        start = self.clock()
        try:
            return step()
        finally:
            self.transcript.aggregator_seconds += self.clock() - start


def secure_sum(inputs: Sequence[np.ndarray], threshold: int,
               dropouts: Mapping[str, set[int]] | None = None, neighbours: int | None = None,
               seed: int | bytes | None = None, *, ring_bits: int | None = None,
               tamper: Tamper | None = None, max_colluding: int = 0,
               clock: Callable[[], float] | None = None) -> SecureSumResult:
    """Securely sum ``inputs`` (equal-length int64 vectors), one per simulated node.

    The ring is planned from the inputs' largest absolute value, standing in for the
    clipping bound a real query declares. The total is exact: int64 when it fits, else an
    object array of Python ints. Raises a :class:`ProtocolAbort` subclass (and releases
    nothing) when too few nodes survive, and ValueError when ``threshold`` or
    ``neighbours`` do not hold against ``max_colluding`` colluders (:mod:`protocol.collusion`).
    With a ``clock``, the result carries each role's time.
    """
    arrays = [np.asarray(x) for x in inputs]
    if not arrays or any(a.ndim != 1 or a.dtype.kind not in "iu" for a in arrays):
        raise LocalError("inputs must be one-dimensional integer arrays")
    length = arrays[0].size
    if any(a.size != length for a in arrays):
        raise LocalError("inputs must all have the same length")
    n = len(arrays)
    if ring_bits is None:
        # Python ints: |min| of an int64 array does not fit an int64
        bound = max(max(int(a.max()), -int(a.min())) if a.size else 0 for a in arrays)
        ring_bits = plan_ring(-n * bound, n * bound).bits
    rng: RandomSource = SeededRandom(seed) if seed is not None else SystemRandom()
    params = make_params(n, threshold, length, ring_bits, neighbours, rng,
                         max_colluding=max_colluding)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(ring_bits, a) for a in arrays]
    transcript = run_round(values, params, identities=identities, rng=rng, dropouts=dropouts,
                           tamper=tamper, clock=clock)
    aggregator = transcript.aggregator
    if aggregator.result is None:
        if isinstance(aggregator.error, ProtocolAbort):
            raise aggregator.error
        raise ProtocolAbort("the round did not complete")
    index = {name: i for i, name in enumerate(transcript.names)}
    return SecureSumResult(total=aggregator.result.to_signed(),
                           survivors=sorted(index[name] for name in aggregator.survivors),
                           ring_bits=ring_bits, neighbours=params.neighbours,
                           shamir_threshold=params.shamir_threshold,
                           node_seconds=dict(transcript.node_seconds),
                           aggregator_seconds=transcript.aggregator_seconds)


# --- Paillier mode -----------------------------------------------------------------------

PAILLIER_STAGES = ("encrypted_input", "partial_decryption")


@dataclass
class PaillierTranscript:
    params: RoundParams
    nodes: dict[str, PaillierNode]
    aggregator: PaillierAggregator
    node_errors: dict[str, FedtallyError] = field(default_factory=dict)
    aggregator_rejections: dict[str, FedtallyError] = field(default_factory=dict)
    inbox: list[tuple[str, str, SecAggMessage]] = field(default_factory=list)
    outbox: list[tuple[str, str, SecAggMessage]] = field(default_factory=list)


def run_paillier_round(values: Sequence[RingVector], params: RoundParams, *,
                       identities: Mapping[str, SigningIdentity], key: FederationKey,
                       shares: Mapping[str, KeyShare], encryptor: FastEncryptor,
                       reply_key: bytes, rng: RandomSource,
                       dropouts: Mapping[str, set[int]] | None = None,
                       tamper: Tamper | None = None,
                       node_tamper: Tamper | None = None) -> PaillierTranscript:
    """One Paillier-mode round through the node and aggregator state machines, in memory.

    Hooks as :func:`run_round`; stages are :data:`PAILLIER_STAGES`. The sealed partials
    end in ``transcript.aggregator.result``; open them with
    :func:`protocol.paillier_result.open_result`. One ``encryptor`` serves every simulated
    node (each real node builds its own).
    """
    dropouts = {k: set(v) for k, v in (dropouts or {}).items()}
    unknown = set(dropouts) - set(PAILLIER_STAGES)
    if unknown:
        raise LocalError(f"unknown dropout stages {sorted(unknown)}; use {PAILLIER_STAGES}")
    names = list(params.participants)
    members = {n: identities[n].verify_key for n in names}
    nodes = {name: PaillierNode(params, name, identities[name], members, values[i], key,
                                shares[name], encryptor, reply_key,
                                rng.child(name) if isinstance(rng, SeededRandom) else rng)
             for i, name in enumerate(names)}
    aggregator = PaillierAggregator(params, members, key)
    t = PaillierTranscript(params, nodes, aggregator)
    gone = {names[i] for i in dropouts.get("encrypted_input", ())}

    def deliver(stage: str, sender: str, msg: SecAggMessage | None) -> None:
        _deliver(t, node_tamper, gone, stage, sender, msg)

    for name in names:
        msg = None
        if name not in gone:
            try:
                msg = nodes[name].start()
            except FedtallyError as exc:
                t.node_errors[name] = exc
        deliver("encrypted_input", name, msg)
    outgoing = aggregator.close_stage()
    gone |= {names[i] for i in dropouts.get("partial_decryption", ())}
    replies = []
    for name, msg in outgoing:
        t.outbox.append(("partial_decryption", name, msg))
        delivered = tamper("partial_decryption", name, msg, t) if tamper else msg  # type: ignore[arg-type]
        if delivered is None or name in gone or nodes[name].finished:
            continue
        try:
            replies.append((name, nodes[name].receive(delivered)))
        except FedtallyError as exc:
            t.node_errors[name] = exc
    if aggregator.stage is PaillierAggregatorStage.COLLECT_PARTIALS:
        answered = {name for name, _ in replies}
        for name in list(aggregator.expected - answered):
            aggregator.drop(name)
        for name, reply in replies:
            deliver("partial_decryption", name, reply)
        aggregator.close_stage()
    return t
