"""Whole rounds in memory: exact sums under dropouts, and refusal of a malicious aggregator."""

from __future__ import annotations

import dataclasses
import itertools
import random

import numpy as np
import pytest

from crypto.encoding import RingVector
from crypto.identity import SigningIdentity
from crypto.keyagreement import X25519KeyPair
from crypto.randomness import SeededRandom
from protocol.errors import (
    AuthenticationError,
    InconsistentView,
    ProtocolAbort,
    ReplayError,
    ThresholdNotMet,
)
from protocol.messages import (
    ConsistencySignature,
    KeyRoster,
    MaskedInput,
    RoundAborted,
    ShareOf,
    SignedBy,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
)
from protocol.params import RoundParams
from protocol.secagg_aggregator import InconsistentShares
from protocol.simulate import STAGES, RoundTranscript, make_params, run_round, secure_sum

N, T = 20, 14


def _inputs(seed: int, n: int = N, d: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-(2**40), 2**40, size=d) for _ in range(n)]


def _random_dropouts(rnd: random.Random, total: int) -> dict[str, set[int]]:
    victims = rnd.sample(range(N), total)
    dropouts: dict[str, set[int]] = {}
    for victim in victims:
        dropouts.setdefault(rnd.choice(STAGES), set()).add(victim)
    return dropouts


def _check_survivor_sum(inputs: list[np.ndarray], threshold: int,
                        dropouts: dict[str, set[int]], seed: int) -> None:
    result = secure_sum(inputs, threshold=threshold, dropouts=dropouts, seed=seed)
    # nodes that vanished before their masked input are out; later dropouts are still in
    early = set().union(*(dropouts.get(s, set()) for s in ("advertise", "share", "masked_input")))
    assert result.survivors == sorted(set(range(len(inputs))) - early)
    d = len(inputs[0])
    expected = sum((inputs[i].astype(object) for i in result.survivors), np.zeros(d, object))
    assert [int(x) for x in result.total] == [int(x) for x in expected]


#: a small round (7 nodes, threshold 5) where every pattern of dropouts can be enumerated:
#: which stages the dropouts happen at (victims are interchangeable: the first and last
#: node, and one in the middle)
SMALL_N, SMALL_T = 7, 5
SMALL_VICTIMS = (0, SMALL_N - 1, SMALL_N // 2)


def _small_dropouts(stages: tuple[str, ...]) -> dict[str, set[int]]:
    dropouts: dict[str, set[int]] = {}
    for victim, stage in zip(SMALL_VICTIMS, stages, strict=False):
        dropouts.setdefault(stage, set()).add(victim)
    return dropouts


@pytest.mark.parametrize("stages", [
    stages for k in range(SMALL_N - SMALL_T + 1)
    for stages in itertools.combinations_with_replacement(STAGES, k)])
def test_every_dropout_pattern_within_the_threshold_gives_the_survivor_sum(
        stages: tuple[str, ...]) -> None:
    _check_survivor_sum(_inputs(len(stages), n=SMALL_N), SMALL_T, _small_dropouts(stages),
                        seed=len(stages))


@pytest.mark.parametrize("stages", list(
    itertools.combinations_with_replacement(STAGES, SMALL_N - SMALL_T + 1)))
def test_every_dropout_pattern_beyond_the_threshold_aborts_with_a_typed_error(
        stages: tuple[str, ...]) -> None:
    with pytest.raises(ThresholdNotMet):
        secure_sum(_inputs(3, n=SMALL_N), threshold=SMALL_T, dropouts=_small_dropouts(stages),
                   seed=3)


@pytest.mark.parametrize("seed", range(12))
def test_up_to_six_dropouts_of_twenty_give_the_exact_survivor_sum(seed: int) -> None:
    """A larger round, sampled: many victims at once, at random stages."""
    rnd = random.Random(seed)
    _check_survivor_sum(_inputs(seed), T, _random_dropouts(rnd, rnd.randint(0, N - T)),
                        seed=seed)


@pytest.mark.parametrize("seed", range(4))
def test_seven_dropouts_of_twenty_abort_with_a_typed_error(seed: int) -> None:
    rnd = random.Random(1000 + seed)
    with pytest.raises(ThresholdNotMet):
        secure_sum(_inputs(seed), threshold=T, dropouts=_random_dropouts(rnd, 7), seed=seed)


@pytest.mark.parametrize("neighbours", [4, 8])
def test_secagg_plus_neighbour_graph(neighbours: int) -> None:
    inputs = _inputs(7)
    dropouts = {"masked_input": {2}, "unmask": {5}}
    result = secure_sum(inputs, threshold=T, dropouts=dropouts, neighbours=neighbours, seed=3)
    assert 2 not in result.survivors and 5 in result.survivors
    assert list(result.total) == list(sum(inputs[i] for i in result.survivors))


def test_totals_wider_than_int64_are_exact() -> None:
    inputs = [np.full(4, 2**63 - 1, dtype=np.int64), np.full(4, 2**63 - 1, dtype=np.int64),
              np.full(4, -(2**63), dtype=np.int64)]
    result = secure_sum(inputs, threshold=2, seed=1)
    assert result.ring_bits > 64
    assert [int(x) for x in result.total] == [2**63 - 2] * 4
    positive = secure_sum(inputs[:2], threshold=2, seed=2)
    assert [int(x) for x in positive.total] == [2 * (2**63 - 1)] * 4


# --- a malicious aggregator --------------------------------------------------------------


def _setup(seed: int = 11, n: int = 7, t: int = 5) -> tuple[RoundParams, dict, list, SeededRandom]:
    rng = SeededRandom(seed)
    params = make_params(n, t, 4, 48, None, rng)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(48, np.arange(4) + 10 * i) for i in range(n)]
    return params, identities, values, rng


def _assert_no_double_reveal(t: RoundTranscript) -> None:
    for node in t.nodes.values():
        kinds: dict[str, set[str]] = {}
        for peer, kind in node.reveal_log:
            kinds.setdefault(peer, set()).add(kind)
        assert all(len(k) == 1 for k in kinds.values()), node.me


def _refused_by_all_honest(t: RoundTranscript, error: type[Exception],
                           honest: list[str] | None = None) -> None:
    honest = honest if honest is not None else t.names
    for name in honest:
        assert isinstance(t.node_errors.get(name), error), (name, t.node_errors.get(name))
        assert t.nodes[name].reveal_log == [], name
    assert t.result is None
    _assert_no_double_reveal(t)


def test_honest_round_completes_and_each_node_reveals_one_kind_per_peer() -> None:
    params, ids, values, rng = _setup()
    t = run_round(values, params, identities=ids, rng=rng, dropouts={"masked_input": {1}})
    assert t.result is not None and not t.node_errors
    assert any(kind == "key" for node in t.nodes.values() for _, kind in node.reveal_log)
    _assert_no_double_reveal(t)


def test_overlapping_survivor_and_dropout_lists_are_refused() -> None:
    params, ids, values, rng = _setup()

    def overlap(stage, recipient, msg, t):
        if isinstance(msg, UnmaskRequest):
            # claim a survivor dropped too, to get its key share next to its self-mask share
            return dataclasses.replace(msg, dropouts=tuple(sorted({*msg.dropouts,
                                                                    msg.survivors[0]})))
        return msg

    t = run_round(values, params, identities=ids, rng=rng, dropouts={"masked_input": {6}},
                  tamper=overlap)
    survivors = [n for n in t.names if n != t.names[6]]
    _refused_by_all_honest(t, InconsistentView, survivors)


def test_survivor_list_with_fewer_than_threshold_is_refused() -> None:
    params, ids, values, rng = _setup()

    def shrink(stage, recipient, msg, t):
        if isinstance(msg, SurvivorList):
            keep = tuple(sorted({recipient, *msg.survivors[:params.threshold - 2]}))
            return dataclasses.replace(msg, survivors=keep)
        return msg

    t = run_round(values, params, identities=ids, rng=rng, tamper=shrink)
    _refused_by_all_honest(t, ThresholdNotMet)


def test_split_view_cannot_gather_threshold_signatures() -> None:
    # the aggregator tells some nodes that node0 survived and the others that it dropped,
    # hoping to collect node0's self-mask share from one side and its key share from the
    # other; the consistency round leaves each side below the threshold
    params, ids, values, rng = _setup()
    names = list(params.participants)
    side_a = set(names[:4])  # 4 < threshold 5; the other side has 3

    def split(stage, recipient, msg, t):
        if isinstance(msg, SurvivorList) and recipient not in side_a:
            return dataclasses.replace(msg, survivors=tuple(n for n in msg.survivors
                                                            if n != names[0]))
        if isinstance(msg, RoundAborted):
            return None  # keep the nodes waiting for the forged unmask requests below
        return msg

    t = run_round(values, params, identities=ids, rng=rng, tamper=split)
    signed = {sender: m for stage, sender, m in t.inbox if isinstance(m, ConsistencySignature)}
    full = tuple(names)
    without = tuple(n for n in names if n != names[0])
    for name in names:
        mine = side_a if name in side_a else set(names) - side_a
        request = UnmaskRequest(params.query_id, params.round,
                                full if name in side_a else without,
                                () if name in side_a else (names[0],),
                                tuple(SignedBy(s, signed[s].signature) for s in sorted(mine)))
        with pytest.raises((ThresholdNotMet, InconsistentView)):
            t.nodes[name].receive(request)
        assert t.nodes[name].reveal_log == []
    _assert_no_double_reveal(t)


def test_substituted_public_key_is_refused() -> None:
    params, ids, values, rng = _setup()
    attacker = X25519KeyPair.generate(SeededRandom(99))

    def substitute(stage, recipient, msg, t):
        if isinstance(msg, KeyRoster):
            victim = msg.adverts[2]
            forged = dataclasses.replace(victim, mask_public=attacker.public)
            return dataclasses.replace(msg, adverts=msg.adverts[:2] + (forged,) + msg.adverts[3:])
        return msg

    t = run_round(values, params, identities=ids, rng=rng, tamper=substitute)
    _refused_by_all_honest(t, AuthenticationError)


def test_node_given_different_parameters_is_detected() -> None:
    params, ids, values, rng = _setup()
    deviant = dataclasses.replace(params, query_digest=bytes(32))

    def relay_deviant(stage, recipient, msg, t):
        # a malicious aggregator relays the deviant node's advert, which an honest one drops
        if isinstance(msg, KeyRoster):
            extra = [m for s, sender, m in t.inbox if s == "advertise" and sender == t.names[0]]
            adverts = tuple(sorted((*msg.adverts, *extra), key=lambda a: a.sender))
            return dataclasses.replace(msg, adverts=adverts)
        return msg

    honest_aggregator = run_round(values, params, identities=ids, rng=rng,
                                  node_params={0: deviant})
    assert isinstance(honest_aggregator.aggregator_rejections[params.participants[0]],
                      AuthenticationError)

    params, ids, values, rng = _setup()
    t = run_round(values, params, identities=ids, rng=rng, node_params={0: deviant},
                  tamper=relay_deviant)
    _refused_by_all_honest(t, AuthenticationError, list(params.participants[1:]))
    assert t.nodes[params.participants[0]].reveal_log == []


def test_replay_from_an_earlier_query_or_round_is_refused() -> None:
    params, ids, values, rng = _setup()
    earlier = run_round(values, params, identities=ids, rng=rng)
    old_roster = next(m for s, _, m in earlier.outbox if isinstance(m, KeyRoster))

    for changed in ({"round": params.round + 1}, {"query_id": bytes(16)}):
        later = dataclasses.replace(params, **changed)

        def replay(stage, recipient, msg, t, old=old_roster):
            return old if isinstance(msg, KeyRoster) else msg

        t = run_round(values, later, identities=ids, rng=SeededRandom(5), tamper=replay)
        _refused_by_all_honest(t, ReplayError)

        def rewrite(stage, recipient, msg, t, old=old_roster, p=later):
            # same replay with the header rewritten: the signatures bind the old round
            if isinstance(msg, KeyRoster):
                adverts = tuple(dataclasses.replace(a, query_id=p.query_id, round=p.round)
                                for a in old.adverts)
                return KeyRoster(p.query_id, p.round, adverts)
            return msg

        t = run_round(values, later, identities=ids, rng=SeededRandom(6), tamper=rewrite)
        _refused_by_all_honest(t, AuthenticationError)


def test_fewer_than_threshold_consistency_signatures_are_refused() -> None:
    params, ids, values, rng = _setup()

    def strip(stage, recipient, msg, t):
        if isinstance(msg, UnmaskRequest):
            return dataclasses.replace(msg, signatures=msg.signatures[:params.threshold - 1])
        return msg

    t = run_round(values, params, identities=ids, rng=rng, tamper=strip)
    _refused_by_all_honest(t, ThresholdNotMet)


def test_abort_is_a_protocol_abort_and_releases_nothing() -> None:
    params, ids, values, rng = _setup()
    t = run_round(values, params, identities=ids, rng=rng, dropouts={"consistency": {0, 1, 2}})
    assert t.result is None and isinstance(t.aggregator.error, ProtocolAbort)
    assert all(node.reveal_log == [] for node in t.nodes.values())


def test_a_node_lying_about_a_share_aborts_without_release() -> None:
    params, ids, values, rng = _setup()

    def lie(stage, sender, msg, t):
        if isinstance(msg, UnmaskShares) and sender == t.names[1] and msg.self_mask_shares:
            first = msg.self_mask_shares[0]
            forged = ShareOf(first.owner, bytes(len(first.share) - 1) + b"\x01")
            return dataclasses.replace(msg, self_mask_shares=(forged, *msg.self_mask_shares[1:]))
        return msg

    t = run_round(values, params, identities=ids, rng=rng, node_tamper=lie)
    assert t.result is None
    assert isinstance(t.aggregator.error, InconsistentShares)


def test_a_node_sending_a_malformed_masked_input_is_dropped() -> None:
    params, ids, values, rng = _setup()

    def short(stage, sender, msg, t):
        if isinstance(msg, MaskedInput) and sender == t.names[2]:
            return dataclasses.replace(msg, data=msg.data[:-8])
        return msg

    t = run_round(values, params, identities=ids, rng=rng, node_tamper=short)
    assert t.names[2] in t.aggregator_rejections
    assert t.result is not None and t.names[2] not in t.aggregator.survivors
    expected = sum(values[i].to_signed() for i, n in enumerate(t.names) if n != t.names[2])
    assert list(t.result.to_signed()) == list(expected)
