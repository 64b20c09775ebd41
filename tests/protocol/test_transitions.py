"""Every (stage, message type) pair of both secure-sum state machines.

A small real round (4 nodes, threshold 3) is run once to capture a realistic instance of
every secagg message. Each stage is then reached by replaying, on fresh deterministic
objects, the shortest sequence of protocol steps found by a breadth-first search, and every
message type is fed to it. Stages, message types and allowed pairs all come from the code
(the enums, ``SECAGG_MESSAGES`` and the ``TRANSITIONS`` tables), so a new stage or message
type is covered without editing this file.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import pytest

from crypto.encoding import RingVector
from crypto.identity import SigningIdentity
from crypto.randomness import SeededRandom
from protocol.errors import (
    AbortedByPeer,
    AuthenticationError,
    FedtallyError,
    LocalError,
    ReplayError,
    UnexpectedMessage,
)
from protocol.messages import (
    SECAGG_MESSAGES,
    AdvertiseKeys,
    KeyRoster,
    RoundAborted,
    RoundStart,
    SecAggMessage,
)
from protocol.secagg_aggregator import AggregatorStage, SecAggAggregator
from protocol.secagg_node import TERMINAL, NodeStage, SecAggNode
from protocol.simulate import make_params, node_names

SEED = "tests/engine/test_transitions"  # its old path, kept: the same seed, the same cases
N, THRESHOLD, LENGTH, BITS = 4, 3, 3, 32
NAMES = node_names(N)
ME = NAMES[0]
AGGREGATOR_TERMINAL = frozenset({AggregatorStage.DONE, AggregatorStage.ABORTED})


# --- one deterministic round ---------------------------------------------------------------


@functools.cache
def setup() -> tuple[Any, dict[str, SigningIdentity]]:
    rng = SeededRandom(SEED)
    params = make_params(N, THRESHOLD, LENGTH, BITS, None, rng)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    return params, identities


def members() -> dict[str, Any]:
    return {name: identity.verify_key for name, identity in setup()[1].items()}


def value_of(name: str) -> RingVector:
    i = NAMES.index(name)
    return RingVector.from_ints(BITS, [i + 1, -3 * i, 1000 * i])


def new_node(name: str = ME, **overrides: Any) -> SecAggNode:
    params, identities = setup()
    kwargs = dict(params=params, me=name, identity=identities[name], members=members(),
                  value=value_of(name), rng=SeededRandom(f"{SEED}/{name}"))
    return SecAggNode(**{**kwargs, **overrides})


def new_aggregator() -> SecAggAggregator:
    return SecAggAggregator(setup()[0], members())


@dataclasses.dataclass
class Capture:
    #: message type -> recipient -> what the aggregator sent it
    to_node: dict[type, dict[str, SecAggMessage]]
    #: message type -> sender -> what that node sent
    from_node: dict[type, dict[str, SecAggMessage]]


@functools.cache
def capture() -> Capture:
    """Run one whole round (and one aborted round) and keep every message."""
    to_node: dict[type, dict[str, SecAggMessage]] = defaultdict(dict)
    from_node: dict[type, dict[str, SecAggMessage]] = defaultdict(dict)
    nodes = {name: new_node(name) for name in NAMES}
    aggregator = new_aggregator()
    pending: dict[str, SecAggMessage] = {name: node.start() for name, node in nodes.items()}
    while pending:
        for name, msg in pending.items():
            from_node[type(msg)][name] = msg
            aggregator.receive(name, msg)
        pending = {}
        for name, msg in aggregator.close_stage():
            to_node[type(msg)][name] = msg
            reply = nodes[name].receive(msg)
            if reply is not None:
                pending[name] = reply
    assert aggregator.stage is AggregatorStage.DONE
    assert list(aggregator.result.to_signed()) == [
        sum(int(x) for x in column) for column in zip(*(value_of(n).to_signed() for n in NAMES),
                                                        strict=True)]
    assert all(node.stage is NodeStage.DONE for node in nodes.values())
    # a real abort: fewer adverts than the threshold
    aborting = new_aggregator()
    for name in NAMES[:THRESHOLD - 1]:
        aborting.receive(name, from_node[AdvertiseKeys][name])
    for name, msg in aborting.close_stage():
        to_node[type(msg)][name] = msg
    assert aborting.stage is AggregatorStage.ABORTED
    return Capture(dict(to_node), dict(from_node))


def instance(cls: type, name: str = ME, prefer: str = "to_node") -> SecAggMessage:
    """A realistic ``cls``: the one addressed to (or sent by) ``name`` in the captured round,
    else any captured one (e.g. RoundAborted, only sent to the nodes of the aborted round)."""
    c = capture()
    sources = (c.to_node, c.from_node) if prefer == "to_node" else (c.from_node, c.to_node)
    for source in sources:
        if name in source.get(cls, {}):
            return source[cls][name]
    for source in sources:
        if source.get(cls):
            return next(iter(source[cls].values()))
    raise AssertionError(f"the captured round has no {cls.__name__}: extend capture()")


def for_node(cls: type) -> SecAggMessage:
    return instance(cls, ME, "to_node")


def for_aggregator(cls: type, sender: str = ME) -> SecAggMessage:
    return instance(cls, sender, "from_node")


def test_the_round_produced_every_secagg_message() -> None:
    for cls in SECAGG_MESSAGES:
        assert isinstance(for_node(cls), cls)
        assert isinstance(for_aggregator(cls), cls)
    params = setup()[0]
    for cls in SECAGG_MESSAGES:
        msg = for_node(cls)
        assert (msg.query_id, msg.round) == (params.query_id, params.round)


def test_transition_tables_name_secagg_messages_and_real_handlers() -> None:
    for machine, stages in ((SecAggNode, NodeStage), (SecAggAggregator, AggregatorStage)):
        assert machine.TRANSITIONS
        for (stage, cls), handler in machine.TRANSITIONS.items():
            assert stage in stages
            assert cls in SECAGG_MESSAGES
            assert callable(getattr(machine, handler))


# --- reaching every stage: breadth-first search over protocol steps ------------------------

NodeStep = tuple[str, type | None]  # ("start", None) or ("receive", message type)
NODE_STEPS: list[NodeStep] = [("start", None)] + [("receive", cls) for cls in SECAGG_MESSAGES]


def _node_step(node: SecAggNode, step: NodeStep) -> None:
    action, cls = step
    try:
        if action == "start":
            node.start()
        else:
            node.receive(for_node(cls))
    except FedtallyError:
        pass  # a rejection is a transition too (to FAILED or ABORTED)


def _aggregator_step(aggregator: SecAggAggregator, cls: type | None) -> None:
    """Every node still expected sends its ``cls`` (if any), then the stage closes."""
    try:
        if cls is not None:
            for name in sorted(aggregator.expected):
                try:
                    aggregator.receive(name, for_aggregator(cls, name))
                except FedtallyError:
                    pass
        aggregator.close_stage()
    except FedtallyError:
        pass


AGGREGATOR_STEPS: list[type | None] = [None, *SECAGG_MESSAGES]


def _search(fresh: Callable[[], Any], steps: list[Any],
            apply: Callable[[Any, Any], None]) -> dict[Any, tuple[Any, ...]]:
    def replay(path: tuple[Any, ...]) -> Any:
        obj = fresh()
        for step in path:
            apply(obj, step)
        return obj

    paths: dict[Any, tuple[Any, ...]] = {fresh().stage: ()}
    queue: deque[tuple[Any, ...]] = deque([()])
    while queue:
        path = queue.popleft()
        for step in steps:
            stage = replay(path + (step,)).stage
            if stage not in paths:
                paths[stage] = path + (step,)
                queue.append(paths[stage])
    return paths


@functools.cache
def node_paths() -> dict[NodeStage, tuple[NodeStep, ...]]:
    return _search(new_node, NODE_STEPS, _node_step)


@functools.cache
def aggregator_paths() -> dict[AggregatorStage, tuple[type | None, ...]]:
    return _search(new_aggregator, AGGREGATOR_STEPS, _aggregator_step)


def node_at(stage: NodeStage) -> SecAggNode:
    node = new_node()
    for step in node_paths()[stage]:
        _node_step(node, step)
    assert node.stage is stage
    return node


def aggregator_at(stage: AggregatorStage) -> SecAggAggregator:
    aggregator = new_aggregator()
    for step in aggregator_paths()[stage]:
        _aggregator_step(aggregator, step)
    assert aggregator.stage is stage
    return aggregator


def test_every_stage_is_reachable() -> None:
    assert set(node_paths()) == set(NodeStage)
    assert set(aggregator_paths()) == set(AggregatorStage)


# --- the node --------------------------------------------------------------------------------

NODE_PAIRS = [(stage, cls) for stage in NodeStage for cls in SECAGG_MESSAGES]
AGGREGATOR_PAIRS = [(stage, cls) for stage in AggregatorStage for cls in SECAGG_MESSAGES]


def _pair_id(pair: Any) -> str:
    return pair.name if isinstance(pair, NodeStage | AggregatorStage) else pair.__name__


def test_pairs_cover_every_stage_and_message_type() -> None:
    assert len(set(NODE_PAIRS)) == len(NodeStage) * len(SECAGG_MESSAGES)
    assert len(set(AGGREGATOR_PAIRS)) == len(AggregatorStage) * len(SECAGG_MESSAGES)
    assert set(SecAggNode.TRANSITIONS) <= set(NODE_PAIRS)
    assert set(SecAggAggregator.TRANSITIONS) <= set(AGGREGATOR_PAIRS)


def assert_node_refuses_everything(node: SecAggNode) -> None:
    stage, error = node.stage, node.error
    assert stage in TERMINAL and error is not None
    for cls in SECAGG_MESSAGES:
        with pytest.raises(LocalError):
            node.receive(for_node(cls))
        assert (node.stage, node.error) == (stage, error)
    with pytest.raises(LocalError):
        node.start()
    assert (node.stage, node.error) == (stage, error)


@pytest.mark.parametrize(("stage", "cls"), NODE_PAIRS, ids=_pair_id)
def test_node_transition(stage: NodeStage, cls: type) -> None:
    node = node_at(stage)
    msg = for_node(cls)
    if stage in TERMINAL:
        error = node.error
        with pytest.raises(LocalError):
            node.receive(msg)
        assert (node.stage, node.error) == (stage, error)
    elif cls is RoundAborted:  # accepted in every live stage: the round ends
        with pytest.raises(AbortedByPeer):
            node.receive(msg)
        assert node.stage is NodeStage.ABORTED
        assert_node_refuses_everything(node)
    elif (stage, cls) in SecAggNode.TRANSITIONS:
        reply = node.receive(msg)
        assert isinstance(reply, SecAggMessage)
        assert node.error is None
        assert node.stage not in (stage, NodeStage.FAILED, NodeStage.ABORTED)
        # deterministic: exactly what this node sent in the captured round
        assert reply == capture().from_node[type(reply)][ME]
    else:
        with pytest.raises(UnexpectedMessage):
            node.receive(msg)
        assert node.stage is NodeStage.FAILED
        assert isinstance(node.error, UnexpectedMessage)
        assert_node_refuses_everything(node)


@pytest.mark.parametrize("stage", [s for s in NodeStage if s not in TERMINAL], ids=_pair_id)
@pytest.mark.parametrize("msg", [None, object(), b"FTLY", "KeyRoster"],
                         ids=["None", "object", "bytes", "str"])
def test_node_rejects_what_is_not_a_secagg_message(stage: NodeStage, msg: object) -> None:
    node = node_at(stage)
    with pytest.raises(UnexpectedMessage):
        node.receive(msg)
    assert node.stage is NodeStage.FAILED


def test_node_rejects_round_start_in_every_live_stage() -> None:
    for stage in set(NodeStage) - TERMINAL:
        node = node_at(stage)
        with pytest.raises(UnexpectedMessage):
            node.receive(RoundStart(setup()[0]))
        assert node.stage is NodeStage.FAILED


def test_node_start_only_once() -> None:
    for stage in set(NodeStage) - {NodeStage.START}:
        node = node_at(stage)
        before = node.stage
        with pytest.raises(LocalError):
            node.start()
        assert node.stage is before


# --- the aggregator ------------------------------------------------------------------------


def _allowed(stage: AggregatorStage) -> list[type]:
    return [cls for (s, cls) in SecAggAggregator.TRANSITIONS if s is stage]


@pytest.mark.parametrize(("stage", "cls"), AGGREGATOR_PAIRS, ids=_pair_id)
def test_aggregator_transition(stage: AggregatorStage, cls: type) -> None:
    aggregator = aggregator_at(stage)
    msg = for_aggregator(cls)
    if stage in AGGREGATOR_TERMINAL:
        with pytest.raises(UnexpectedMessage):
            aggregator.receive(ME, msg)
        assert aggregator.stage is stage
        return
    assert ME in aggregator.expected
    if (stage, cls) in SecAggAggregator.TRANSITIONS:
        aggregator.receive(ME, msg)
        assert aggregator.error is None
    else:
        with pytest.raises(UnexpectedMessage):
            aggregator.receive(ME, msg)
    # either way the sender is done with this stage; stages move only when closed
    assert ME not in aggregator.expected
    assert aggregator.stage is stage
    for allowed in _allowed(stage):
        with pytest.raises(UnexpectedMessage):
            aggregator.receive(ME, for_aggregator(allowed))


@pytest.mark.parametrize("stage", [s for s in AggregatorStage if s not in AGGREGATOR_TERMINAL],
                         ids=_pair_id)
def test_aggregator_rejects_what_is_not_a_secagg_message(stage: AggregatorStage) -> None:
    for msg in (None, object(), RoundStart(setup()[0])):
        aggregator = aggregator_at(stage)
        with pytest.raises(UnexpectedMessage):
            aggregator.receive(ME, msg)
        assert ME not in aggregator.expected and aggregator.stage is stage


@pytest.mark.parametrize("stage", [s for s in AggregatorStage if s not in AGGREGATOR_TERMINAL],
                         ids=_pair_id)
def test_aggregator_refuses_non_participants(stage: AggregatorStage) -> None:
    aggregator = aggregator_at(stage)
    for cls in _allowed(stage):
        with pytest.raises(UnexpectedMessage):
            aggregator.receive("mallory", for_aggregator(cls))
    assert aggregator.stage is stage and ME in aggregator.expected


def test_closing_a_finished_round_is_our_error() -> None:
    for stage in AGGREGATOR_TERMINAL:
        with pytest.raises(LocalError):
            aggregator_at(stage).close_stage()


# --- replayed headers --------------------------------------------------------------------

HEADERS = {"query_id": lambda m: bytes(b ^ 0x5A for b in m.query_id),
           "round": lambda m: (m.round + 1) % 2**32}


def replayed(msg: SecAggMessage, field: str) -> SecAggMessage:
    return dataclasses.replace(msg, **{field: HEADERS[field](msg)})


@pytest.mark.parametrize("field", HEADERS)
@pytest.mark.parametrize(("stage", "cls"), list(SecAggNode.TRANSITIONS), ids=_pair_id)
def test_node_refuses_a_replayed_header(stage: NodeStage, cls: type, field: str) -> None:
    node = node_at(stage)
    with pytest.raises(ReplayError):
        node.receive(replayed(for_node(cls), field))
    assert node.stage is NodeStage.FAILED
    assert isinstance(node.error, ReplayError)
    assert_node_refuses_everything(node)


@pytest.mark.parametrize("field", HEADERS)
def test_node_refuses_a_roster_carrying_a_replayed_advert(field: str) -> None:
    node = node_at(NodeStage.ADVERTISED)
    roster = for_node(KeyRoster)
    adverts = tuple(replayed(a, field) if a.sender != ME else a for a in roster.adverts)
    with pytest.raises(ReplayError):
        node.receive(dataclasses.replace(roster, adverts=adverts))
    assert node.stage is NodeStage.FAILED


@pytest.mark.parametrize("field", HEADERS)
@pytest.mark.parametrize("stage", [s for s in NodeStage if s not in TERMINAL], ids=_pair_id)
def test_node_refuses_a_replayed_abort(stage: NodeStage, field: str) -> None:
    node = node_at(stage)
    with pytest.raises(ReplayError):
        node.receive(replayed(for_node(RoundAborted), field))
    assert node.stage is not NodeStage.ABORTED


def test_node_fails_after_a_replayed_abort() -> None:
    node = node_at(NodeStage.ADVERTISED)
    with pytest.raises(ReplayError):
        node.receive(replayed(for_node(RoundAborted), "query_id"))
    assert node.stage is NodeStage.FAILED


@pytest.mark.parametrize("field", HEADERS)
@pytest.mark.parametrize(("stage", "cls"), list(SecAggAggregator.TRANSITIONS), ids=_pair_id)
def test_aggregator_refuses_a_replayed_header(stage: AggregatorStage, cls: type,
                                              field: str) -> None:
    aggregator = aggregator_at(stage)
    with pytest.raises(ReplayError):
        aggregator.receive(ME, replayed(for_aggregator(cls), field))
    assert ME not in aggregator.expected and aggregator.stage is stage
    # and the genuine message can no longer be slipped in after it
    with pytest.raises(UnexpectedMessage):
        aggregator.receive(ME, for_aggregator(cls))


@pytest.mark.parametrize(("stage", "cls"), list(SecAggAggregator.TRANSITIONS), ids=_pair_id)
def test_aggregator_refuses_a_message_sent_for_another_node(stage: AggregatorStage,
                                                            cls: type) -> None:
    aggregator = aggregator_at(stage)
    other = NAMES[1]
    msg = for_aggregator(cls, other)
    assert getattr(msg, "sender", other) == other
    if hasattr(msg, "sender"):
        with pytest.raises(AuthenticationError):
            aggregator.receive(ME, msg)
        assert ME not in aggregator.expected and other in aggregator.expected


# --- misconfiguration stays a typed error ----------------------------------------------------


def test_node_with_a_partial_manifest_fails_with_a_typed_error() -> None:
    partial = {name: key for name, key in members().items() if name != NAMES[-1]}
    try:
        node = new_node(members=partial)
    except LocalError:
        return  # refusing at construction (as the aggregator does) is the fix
    node.start()
    with pytest.raises(FedtallyError):
        node.receive(for_node(KeyRoster))
    assert node.stage is NodeStage.FAILED
