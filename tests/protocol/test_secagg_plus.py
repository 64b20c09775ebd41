"""The SecAgg+ graph (Bell et al. 2020): each node receives, verifies and keeps only its
neighbourhood, the sums stay exact, and every check of the complete graph holds per
neighbourhood. Work per node is measured by what it is sent and keeps (never by timing).
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from crypto.encoding import RingVector
from crypto.identity import SigningIdentity
from crypto.randomness import SeededRandom
from protocol.collusion import BoundError, choose_neighbours, sparse_bounds
from protocol.errors import AuthenticationError, InconsistentView, ProtocolAbort, ThresholdNotMet
from protocol.messages import (
    AdvertiseKeys,
    KeyRoster,
    ShareBundle,
    SignedBy,
    SurvivorList,
    UnmaskRequest,
)
from protocol.params import RoundParams
from protocol.simulate import STAGES, RoundTranscript, make_params, run_round, secure_sum

BITS = 48


def _round(n: int, k: int, c: int = 1, seed: int = 3, **kwargs: object) -> RoundTranscript:
    rng = SeededRandom(seed)
    params = make_params(n, n * 2 // 3 + 1, 3, BITS, k, rng, max_colluding=c)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(BITS, [i, -i, 7]) for i in range(n)]
    return run_round(values, params, identities=identities, rng=rng, **kwargs)  # type: ignore[arg-type]


def _sizes(t: RoundTranscript) -> dict[str, int]:
    """The most any one node was sent or kept, by kind."""
    p = t.params
    sent: dict[str, int] = {"adverts": 0, "shares": 0, "survivors": 0, "signatures": 0}
    for _, name, msg in t.outbox:
        mine = p.share_holders(name)
        if isinstance(msg, KeyRoster):
            assert {a.sender for a in msg.adverts} <= mine
            sent["adverts"] = max(sent["adverts"], len(msg.adverts))
        elif isinstance(msg, ShareBundle):
            assert set(msg.committed) <= mine
            assert {s.sender for s in msg.shares} <= mine - {name}
            sent["shares"] = max(sent["shares"], len(msg.shares))
        elif isinstance(msg, SurvivorList):
            assert set(msg.survivors) <= mine
            sent["survivors"] = max(sent["survivors"], len(msg.survivors))
        elif isinstance(msg, UnmaskRequest):
            two_hops = frozenset().union(*(p.share_holders(o) for o in mine))
            assert {s.signer for s in msg.signatures} <= two_hops
            sent["signatures"] = max(sent["signatures"], len(msg.signatures))
    for node in t.nodes.values():
        sent["kept adverts"] = max(sent.get("kept adverts", 0), len(node._adverts))
        sent["kept shares"] = max(sent.get("kept shares", 0), len(node._held))
    return sent


def test_a_node_receives_and_keeps_only_its_neighbourhood_whatever_n() -> None:
    k = 6
    sizes = {}
    for n in (24, 96):
        t = _round(n, k, dropouts={"masked_input": {1, 5}, "unmask": {9}})
        assert t.result is not None and not t.node_errors
        sizes[n] = _sizes(t)
        # O(k): k + 1 adverts and shares (itself included), 2k + 1 signed views at most
        assert sizes[n]["adverts"] <= k + 1 and sizes[n]["kept adverts"] <= k + 1
        assert sizes[n]["shares"] <= k and sizes[n]["kept shares"] <= k + 1
        assert sizes[n]["survivors"] <= k + 1 and sizes[n]["signatures"] <= 2 * k + 1
    assert sizes[24] == sizes[96]  # four times the nodes, the same work per node


def test_the_complete_graph_sends_every_node_everything() -> None:
    # the baseline the sparse graph improves on: O(n) per node
    rng = SeededRandom(1)
    params = make_params(12, 9, 3, BITS, 0, rng, max_colluding=1)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(BITS, [i, 0, 1]) for i in range(12)]
    t = run_round(values, params, identities=identities, rng=rng)
    assert _sizes(t)["adverts"] == 12 and _sizes(t)["signatures"] == 12


def test_the_aggregator_computes_lagrange_coefficients_once_on_the_complete_graph() -> None:
    rng = SeededRandom(2)
    params = make_params(20, 14, 3, BITS, 0, rng, max_colluding=1)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(BITS, [i, 0, 1]) for i in range(20)]
    t = run_round(values, params, identities=identities, rng=rng,
                  dropouts={"masked_input": {3, 4}, "unmask": {7}})
    assert t.result is not None
    # every secret (18 seeds, 2 mask keys) rebuilt from the same 14 holders: the lowest
    # indices among the 17 that revealed
    assert list(t.aggregator._coefficients) == [(1, 2, 3, 6, 7, *range(9, 18))]


@pytest.mark.parametrize("seed", range(12))
def test_sums_are_exact_or_refused_under_random_dropouts(seed: int) -> None:
    rnd = random.Random(seed)
    n, k, c = 30, 8, rnd.choice([0, 1, 2])
    inputs = [np.array([rnd.randrange(-2**40, 2**40) for _ in range(5)]) for _ in range(n)]
    dropouts: dict[str, set[int]] = {}
    for victim in rnd.sample(range(n), rnd.randint(0, 5)):
        dropouts.setdefault(rnd.choice(STAGES), set()).add(victim)
    try:
        result = secure_sum(inputs, threshold=20, dropouts=dropouts, neighbours=k, seed=seed,
                            max_colluding=c)
    except ProtocolAbort:
        # refused only when some neighbourhood really lost too many holders
        bounds = sparse_bounds(n, k, c)
        assert sum(len(v) for v in dropouts.values()) > k + 1 - bounds.shamir_threshold - 1
        return
    early = set().union(*(dropouts.get(s, set()) for s in ("advertise", "share",
                                                            "masked_input")))
    assert result.survivors == sorted(set(range(n)) - early)
    expected = sum((inputs[i].astype(object) for i in result.survivors), np.zeros(5, object))
    assert [int(x) for x in result.total] == [int(x) for x in expected]


def test_a_thousand_nodes_choose_a_graph_of_logarithmic_degree() -> None:
    # what the aggregator plans: k grows with log n (liveness), not with n
    ks = {n: choose_neighbours(n, 1) for n in (100, 200, 500, 1000)}
    assert all(0 < k < 50 for k in ks.values()), ks
    assert ks[1000] - ks[100] <= 8
    bounds = sparse_bounds(1000, ks[1000], 1)
    assert bounds.deterministic and bounds.honest_inputs >= 2
    assert 2 * bounds.shamir_threshold > ks[1000] + 1 + 1


def test_the_graph_cannot_hold_off_more_colluders_than_its_degree_allows() -> None:
    assert sparse_bounds(30, 4, 3).shamir_threshold == 5  # every holder: 2 * 5 > 5 + 3
    with pytest.raises(BoundError):
        sparse_bounds(30, 4, 4)  # 4 colluders could be all 4 neighbours: t_s > 5
    with pytest.raises(ValueError):
        make_params(30, 20, 3, BITS, 4, SeededRandom(0), max_colluding=4)
    # with many nodes and few colluders the probabilistic bound applies (c_local < c)
    wide = sparse_bounds(1000, 92, 50)
    assert not wide.deterministic and wide.colluding_neighbours < 50


# --- a malicious aggregator, per neighbourhood ------------------------------------------------


def _neighbour_and_stranger(p: RoundParams, name: str) -> tuple[str, str]:
    return (sorted(p.neighbours_of(name))[0],
            next(m for m in p.participants if m not in p.share_holders(name)))


def _refused(t: RoundTranscript, error: type[Exception], who: list[str] | None = None) -> None:
    who = who if who is not None else list(t.names)
    for name in who:
        assert isinstance(t.node_errors.get(name), error), (name, t.node_errors.get(name))
        assert t.nodes[name].reveal_log == [], name
    assert t.result is None


def test_an_advert_from_beyond_the_neighbourhood_is_refused() -> None:
    def widen(stage, recipient, msg, t):
        if isinstance(msg, KeyRoster):
            stranger = _neighbour_and_stranger(t.params, recipient)[1]
            extra = next(m for _, s, m in t.inbox
                         if s == stranger and isinstance(m, AdvertiseKeys))
            return dataclasses.replace(msg, adverts=(*msg.adverts, extra))
        return msg

    _refused(_round(20, 4, tamper=widen), InconsistentView)


def test_a_neighbourhood_survivor_list_below_t_s_is_refused() -> None:
    def shrink(stage, recipient, msg, t):
        if isinstance(msg, SurvivorList):
            keep = t.params.shamir_threshold - 1
            others = [s for s in msg.survivors if s != recipient][:keep - 1]
            return dataclasses.replace(msg, survivors=tuple(sorted({recipient, *others})))
        return msg

    _refused(_round(20, 4, tamper=shrink), ThresholdNotMet)


def test_too_few_holders_confirming_a_status_is_refused() -> None:
    def strip(stage, recipient, msg, t):
        if isinstance(msg, UnmaskRequest):  # only the recipient's own signed view
            return dataclasses.replace(msg, signatures=tuple(
                s for s in msg.signatures if s.signer == recipient))
        return msg

    _refused(_round(20, 4, tamper=strip), ThresholdNotMet)


def test_a_forged_view_signature_is_refused() -> None:
    def forge(stage, recipient, msg, t):
        if isinstance(msg, UnmaskRequest):
            return dataclasses.replace(msg, signatures=tuple(
                SignedBy(s.signer, bytes(64), s.view) for s in msg.signatures))
        return msg

    _refused(_round(20, 4, tamper=forge), AuthenticationError)


def test_overlapping_survivor_and_dropout_lists_are_refused_per_neighbourhood() -> None:
    def overlap(stage, recipient, msg, t):
        if isinstance(msg, UnmaskRequest):
            return dataclasses.replace(msg, dropouts=tuple(sorted({*msg.dropouts,
                                                                    msg.survivors[0]})))
        return msg

    t = _round(20, 4, tamper=overlap, dropouts={"masked_input": {2}})
    _refused(t, InconsistentView, [n for n in t.names if n != t.names[2]])


@pytest.mark.parametrize("change", ["size", "beyond", "self"])
def test_a_malformed_or_contradicting_view_is_refused(change: str) -> None:
    def bend(stage, recipient, msg, t):
        if not isinstance(msg, UnmaskRequest):
            return msg
        size = (len(t.params.neighbourhood_order(recipient)) + 7) // 8  # k + 1 = 5 bits
        bits = {"size": b"\xff" * (size + 1),  # a byte too many
                "beyond": (1 << 8 * size - 1).to_bytes(size, "little"),  # a 6th to 8th node
                "self": bytes(size)}[change]  # the signer does not count itself a survivor
        return dataclasses.replace(msg, signatures=tuple(
            dataclasses.replace(s, view=bits) for s in msg.signatures))

    _refused(_round(20, 4, tamper=bend), InconsistentView)


def test_a_complete_graph_signature_carrying_a_view_is_refused() -> None:
    rng = SeededRandom(4)
    params = make_params(7, 5, 3, BITS, 0, rng, max_colluding=1)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(BITS, [i, 0, 1]) for i in range(7)]

    def add_view(stage, recipient, msg, t):
        if isinstance(msg, UnmaskRequest):
            return dataclasses.replace(msg, signatures=tuple(
                dataclasses.replace(s, view=b"\x01") for s in msg.signatures))
        return msg

    t = run_round(values, params, identities=identities, rng=rng, tamper=add_view)
    _refused(t, InconsistentView)
