"""Attacks by an aggregator colluding with nodes, run against the real round state machines.

Each attack is run just beyond its bound (the round's thresholds assume fewer colluders
than there are) and shows a victim's input recovered exactly; then within the bound, where
the same attack ends with typed errors at the honest nodes and nothing recovered. The
bounds (protocol/collusion.py, threat_model.md "Collusion"):

- split view: ``t > (n + c) / 2`` (complete graph), ``2 t_s > k + 1 + c`` per neighbourhood
  (SecAgg+ graph);
- drop to threshold: ``t - c >= 2`` (complete graph), ``t_s - c >= 2`` per neighbourhood.

The adversary is the aggregator (a patched :class:`SecAggAggregator` or forged messages)
plus the colluding nodes, which run the real node code and hand over everything they hold.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection, Iterable

import numpy as np
import pytest

from crypto import shamir
from crypto.encoding import RingVector
from crypto.identity import SigningIdentity
from crypto.keyagreement import public_from_secret, x25519
from crypto.prg import MaskExpander, self_mask_key
from crypto.randomness import SeededRandom
from protocol.collusion import BoundError, min_threshold
from protocol.errors import FedtallyError, InconsistentView, ThresholdNotMet
from protocol.messages import (
    AdvertiseKeys,
    ConsistencySignature,
    MaskedInput,
    RoundAborted,
    SignedBy,
    SurvivorList,
    UnmaskRequest,
    UnmaskShares,
)
from protocol.params import RoundParams
from protocol.secagg_aggregator import SecAggAggregator
from protocol.secagg_node import (
    SecAggNode,
    consistency_statement,
    mask_sign,
    neighbourhood_statement,
    pair_key,
    seed_commitment,
    survivor_view,
)
from protocol.simulate import RoundTranscript, make_params, run_round

LENGTH, BITS = 4, 48


class RecklessAggregator(SecAggAggregator):
    """A malicious aggregator: it carries on whatever its own threshold checks say (the
    nodes' checks are what must stop it)."""

    def _need(self, names: Collection[str], what: str) -> None:
        return None


def _setup(n: int, t: int, c: int, neighbours: int = 0, seed: int = 5
           ) -> tuple[RoundParams, dict[str, SigningIdentity], list[RingVector], SeededRandom]:
    rng = SeededRandom(seed)
    params = make_params(n, t, LENGTH, BITS, neighbours, rng, max_colluding=c)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    values = [RingVector.from_ints(BITS, np.array([1000 + i, -7 * i, 3, i * i]))
              for i in range(n)]
    return params, identities, values, rng


def _sent(t: RoundTranscript, cls: type, sender: str) -> object:
    return next(m for _, s, m in t.inbox if s == sender and isinstance(m, cls))


def unmask(t: RoundTranscript, victim: str, colluders: Iterable[str],
           revealed: Iterable[UnmaskShares]) -> RingVector | None:
    """Everything the aggregator and the colluders can do to one victim's masked input:
    rebuild any secret of which they hold ``t_s`` shares (revealed by honest nodes, or held
    by colluders) and remove the masks they can. None when a mask stays on."""
    p = t.params
    colluding = {name: t.nodes[name] for name in colluders}
    seeds: dict[str, dict[int, bytes]] = {}
    keys: dict[str, dict[int, bytes]] = {}
    for msg in revealed:
        x = p.index(msg.sender) + 1
        for share in msg.self_mask_shares:
            seeds.setdefault(share.owner, {})[x] = share.share
        for share in msg.key_shares:
            keys.setdefault(share.owner, {})[x] = share.share
    for name, node in colluding.items():
        for owner, plain in node._held.items():
            seeds.setdefault(owner, {})[p.index(name) + 1] = plain.seed_share
            keys.setdefault(owner, {})[p.index(name) + 1] = plain.key_share

    def secret(table: dict[str, dict[int, bytes]], owner: str) -> bytes | None:
        shares = table.get(owner, {})
        return shamir.combine(shares, p.shamir_threshold) if len(shares) >= \
            p.shamir_threshold else None

    adverts = {s: m for _, s, m in t.inbox if isinstance(m, AdvertiseKeys)}
    seed = secret(seeds, victim)
    if seed is None:
        return None
    assert seed_commitment(p, victim, seed) == adverts[victim].seed_commitment
    masked = _sent(t, MaskedInput, victim)
    y = RingVector.from_bytes(p.ring_bits, p.vector_length, masked.data)
    expander = MaskExpander(p.ring_bits, p.vector_length)
    expander.sub_mask_(y, self_mask_key(seed, p.digest, victim))
    victim_key = secret(keys, victim)
    for peer in sorted(p.neighbours_of(victim) & set(t.aggregator._committed)):
        if victim_key is not None:
            shared = x25519(victim_key, adverts[peer].mask_public)
        elif peer in colluding:
            shared = colluding[peer]._mask.exchange(adverts[victim].mask_public)
        else:
            peer_key = secret(keys, peer)
            if peer_key is None:
                return None
            assert public_from_secret(peer_key) == adverts[peer].mask_public
            shared = x25519(peer_key, adverts[victim].mask_public)
        key = pair_key(p, shared, victim, peer)
        if mask_sign(victim, peer) > 0:
            expander.sub_mask_(y, key)
        else:
            expander.add_mask_(y, key)
    return y


# --- split view ---------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    recovered: RingVector | None
    errors: dict[str, FedtallyError]
    transcript: RoundTranscript


def split_view(params: RoundParams, ids: dict[str, SigningIdentity], values: list[RingVector],
               rng: SeededRandom, victim: str, colluders: set[str], doubters: set[str]
               ) -> Outcome:
    """The aggregator tells ``doubters`` that ``victim`` dropped and everyone else that it
    survived; the colluders sign both views. Believers reveal the victim's seed shares,
    doubters its key shares: together with the colluders' both kinds may reach t_s."""
    everyone = frozenset(params.participants)
    without = everyone - {victim}

    def believed(node: str) -> frozenset[str]:
        return without if node in doubters else everyone

    def tamper(stage, recipient, msg, t):
        if isinstance(msg, SurvivorList) and recipient in doubters:
            return dataclasses.replace(msg, survivors=tuple(n for n in msg.survivors
                                                            if n != victim))
        if isinstance(msg, UnmaskRequest | RoundAborted):
            return None  # the unmask requests are forged below, one view per side
        return msg

    t = run_round(values, params, identities=ids, rng=rng, tamper=tamper,
                  aggregator_type=RecklessAggregator)
    honest = [n for n in params.participants if n not in colluders and n not in t.node_errors]
    signed = {s: m.signature for _, s, m in t.inbox if isinstance(m, ConsistencySignature)}

    def signature(signer: str, view: frozenset[str]) -> SignedBy:
        """What the aggregator shows for ``signer`` to a node that holds ``view``."""
        own = believed(signer) if signer not in colluders else view
        if not params.sparse:
            statement = consistency_statement(params, tuple(sorted(own)))
            sig = signed[signer] if signer not in colluders else ids[signer].sign(statement)
            return SignedBy(signer, sig)
        bitmap = survivor_view(params, signer, own)
        sig = signed[signer] if signer not in colluders else \
            ids[signer].sign(neighbourhood_statement(params, signer, bitmap))
        return SignedBy(signer, sig, bitmap)

    revealed, errors = [], dict(t.node_errors)
    for node in honest:
        view = believed(node)
        scope = params.share_holders(node)
        if params.sparse:  # the holders of every node whose shares this node holds, except
            # neighbours it believes dropped (it would see the contradiction)
            speakers = frozenset().union(*(params.share_holders(o) for o in scope))
            signers = [s for s in sorted(speakers) if (s in signed or s in colluders)
                       and not (s in scope and s not in view)]
        else:  # the survivors that signed this very list
            signers = [s for s in sorted(everyone) if s in colluders or
                       (s in signed and believed(s) == view)]
        request = UnmaskRequest(params.query_id, params.round, tuple(sorted(view & scope)),
                                tuple(sorted((everyone - view) & scope)),
                                tuple(signature(s, view) for s in signers))
        try:
            revealed.append(t.nodes[node].receive(request))
        except FedtallyError as exc:
            errors[node] = exc
    return Outcome(unmask(t, victim, colluders, revealed), errors, t)


def _complete_split(c: int, t: int, doubters: set[str]) -> Outcome:
    params, ids, values, rng = _setup(6, t, c)
    names = params.participants
    return split_view(params, ids, values, rng, victim=names[0], colluders=set(names[4:]),
                      doubters=doubters)


def test_split_view_succeeds_just_beyond_the_bound() -> None:
    # n = 6, t = 4: the round holds against c = 1 (4 > 3.5), but two nodes collude:
    # t <= (n + c)/2 = 4. Believers {node0, node1} and doubters {node2, node3} each gather
    # t = 4 consistency signatures with the colluders', and node0 is unmasked
    params, _, values, _ = _setup(6, 4, 1)
    names = params.participants
    outcome = _complete_split(c=1, t=4, doubters=set(names[2:4]))
    assert not outcome.errors
    assert outcome.recovered is not None
    assert list(outcome.recovered.to_signed()) == list(values[0].to_signed())
    for node in names[:4]:  # no honest node revealed both kinds: the bound is what failed
        assert len({kind for peer, kind in outcome.transcript.nodes[node].reveal_log
                    if peer == names[0]}) == 1


def test_split_view_fails_with_a_typed_error_within_the_bound() -> None:
    # two colluders: t must be > (6 + 2)/2, so 5; a round with t = 4 cannot even be made
    with pytest.raises(BoundError):
        _setup(6, 4, 2)
    names = _setup(6, 5, 2)[0].participants
    # every way of splitting the three honest peers of the victim fails (telling no one
    # that the victim dropped is no split: an honest round, and no key share of it leaves)
    for size in range(4):
        for doubters in itertools.combinations(names[1:4], size):
            if not doubters:
                assert _complete_split(c=2, t=5, doubters=set()).recovered is None
                continue
            outcome = _complete_split(c=2, t=5, doubters=set(doubters))
            assert outcome.recovered is None, doubters
            refused = [n for n in names[:4] if n in outcome.errors]
            assert refused, doubters
            assert all(isinstance(outcome.errors[n], ThresholdNotMet) for n in refused)
            for node in refused:
                assert outcome.transcript.nodes[node].reveal_log == []


# the SecAgg+ graph: the same attack inside one neighbourhood (n = 14, k = 4: five holders)


def _sparse_split(c: int, beyond: bool) -> Outcome:
    params, ids, values, rng = _setup(14, 10, c, neighbours=4)
    victim = params.participants[0]
    peers = sorted(params.neighbours_of(victim))
    colluders = set(peers[:2])  # two colluders among the victim's four neighbours
    doubters = {peers[3]} if beyond else {peers[2], peers[3]}
    return split_view(params, ids, values, rng, victim, colluders, doubters)


def test_secagg_plus_split_view_succeeds_just_beyond_the_bound() -> None:
    # declared c = 0: t_s = 3 of 5 holders. Two colluding neighbours: 2 t_s <= 5 + 2, so
    # {victim, one believer} + colluders and {one doubter} + colluders both reach 3
    outcome = _sparse_split(c=0, beyond=True)
    params = outcome.transcript.params
    assert params.shamir_threshold == 3
    assert not outcome.errors
    assert outcome.recovered is not None
    victim = params.participants[0]
    expected = outcome.transcript.nodes[victim]
    assert expected.stage.value == "done"
    assert list(outcome.recovered.to_signed()) == [1000, 0, 3, 0]


def test_secagg_plus_split_view_fails_within_the_bound() -> None:
    # declared c = 2: t_s = 4 of 5 (2 t_s > 5 + 2, t_s - 2 >= 2); no split of the two
    # honest neighbours gathers 4 signed statuses on both sides
    for beyond in (True, False):
        outcome = _sparse_split(c=2, beyond=beyond)
        assert outcome.transcript.params.shamir_threshold == 4
        assert outcome.recovered is None
        assert outcome.errors
        assert all(isinstance(e, ThresholdNotMet) for e in outcome.errors.values())


# --- dropping to the threshold ---------------------------------------------------------------


def drop_to_threshold(params: RoundParams, ids: dict[str, SigningIdentity],
                      values: list[RingVector], rng: SeededRandom, victim: str,
                      colluders: set[str], ignored: set[str]) -> Outcome:
    """The aggregator ignores the masked inputs of ``ignored`` honest nodes (as if they had
    dropped) and carries on, so that the victim's sum holds only the colluders' inputs."""

    def ignore(stage, sender, msg, t):
        return None if isinstance(msg, MaskedInput) and sender in ignored else msg

    t = run_round(values, params, identities=ids, rng=rng, node_tamper=ignore,
                  aggregator_type=RecklessAggregator)
    revealed = [m for _, _, m in t.inbox if isinstance(m, UnmaskShares)]
    return Outcome(unmask(t, victim, colluders, revealed), dict(t.node_errors), t)


def test_drop_to_threshold_succeeds_just_beyond_the_bound() -> None:
    # t = 2 of 3 holds against c = 0; with one colluder (t - c = 1) the aggregator ignores
    # node1's input and learns node0's statistic: here from the total minus the colluder's
    params, ids, values, rng = _setup(3, 2, 0)
    a, b, colluder = params.participants
    outcome = drop_to_threshold(params, ids, values, rng, a, {colluder}, {b})
    t = outcome.transcript
    assert t.result is not None and t.aggregator.survivors == (a, colluder)
    by_difference = t.result.to_signed() - values[2].to_signed()
    assert list(by_difference) == list(values[0].to_signed())
    assert outcome.recovered is not None
    assert list(outcome.recovered.to_signed()) == list(values[0].to_signed())


def test_drop_to_threshold_is_refused_within_the_bound() -> None:
    # one colluder: t - c >= 2 needs t = 3 of 3; t = 2 cannot be made, and with t = 3 the
    # victim refuses a survivor list of two: nothing is revealed, nothing released
    with pytest.raises(BoundError):
        _setup(3, 2, 1)
    params, ids, values, rng = _setup(3, 3, 1)
    a, b, colluder = params.participants
    outcome = drop_to_threshold(params, ids, values, rng, a, {colluder}, {b})
    assert isinstance(outcome.errors[a], ThresholdNotMet)
    assert outcome.transcript.nodes[a].reveal_log == []
    assert outcome.transcript.result is None
    assert outcome.recovered is None


def _sparse_drop(c: int) -> Outcome:
    # n = 14, k = 4: the aggregator ignores the victim's two honest neighbours
    params, ids, values, rng = _setup(14, 10, c, neighbours=4)
    victim = params.participants[0]
    peers = sorted(params.neighbours_of(victim))
    return drop_to_threshold(params, ids, values, rng, victim, set(peers[:2]),
                             set(peers[2:]))


def test_secagg_plus_drop_to_threshold_succeeds_just_beyond_the_bound() -> None:
    # declared c = 0: t_s = 3; the victim and its two colluding neighbours are 3 survivors
    outcome = _sparse_drop(c=0)
    assert outcome.transcript.params.participants[0] not in outcome.errors
    assert outcome.recovered is not None
    assert list(outcome.recovered.to_signed()) == [1000, 0, 3, 0]


def test_secagg_plus_drop_to_threshold_is_refused_within_the_bound() -> None:
    # declared c = 2: t_s = 4, so t_s - c >= 2 honest survivors in every neighbourhood
    outcome = _sparse_drop(c=2)
    victim = outcome.transcript.params.participants[0]
    assert isinstance(outcome.errors[victim], ThresholdNotMet)
    assert outcome.transcript.nodes[victim].reveal_log == []
    assert outcome.recovered is None


def test_a_node_refuses_a_survivor_list_it_did_not_sign() -> None:
    # the consistency round itself: a request carrying another list than the signed one
    params, ids, values, rng = _setup(6, 5, 2)

    def swap(stage, recipient, msg, t):
        if isinstance(msg, UnmaskRequest):
            return dataclasses.replace(msg, survivors=msg.survivors[1:],
                                       dropouts=msg.survivors[:1])
        return msg

    t = run_round(values, params, identities=ids, rng=rng, tamper=swap)
    assert all(isinstance(e, InconsistentView) for e in t.node_errors.values())
    assert t.node_errors and t.result is None
    assert all(isinstance(node, SecAggNode) and node.reveal_log == []
               for node in t.nodes.values())


# --- Paillier: two decryption quorums in one round ---------------------------------------------


def two_quorums(decryption_threshold: int, c: int) -> tuple[list[int] | None, Exception | None]:
    """Five key holders, node3 and node4 colluding with the aggregator and the researcher
    (who opens the partials). The aggregator asks node0 and node1 to decrypt the product of
    all five contributions and node2 the product without node0's; the colluders decrypt
    both (each runs a second copy of the real node machine). Returns node0's vector learnt
    by difference, or the typed error that stopped it."""
    from crypto.keyagreement import X25519KeyPair
    from crypto.paillier import FastEncryptor
    from crypto.threshold_paillier import deal_new
    from protocol.paillier_key import FederationKey
    from protocol.paillier_messages import DecryptRequest, PaillierResult, digest
    from protocol.paillier_node import PaillierNode
    from protocol.paillier_result import open_result

    n = 5
    rng = SeededRandom(f"test_collusion/paillier/{decryption_threshold}")
    params = make_params(n, min_threshold(n, c), LENGTH, BITS, None, rng, max_colluding=c)
    identities = {name: SigningIdentity.generate(rng) for name in params.participants}
    members = {name: i.verify_key for name, i in identities.items()}
    tp, shares = deal_new(1024, n, decryption_threshold, rng)
    names = params.participants
    key = FederationKey(tp, names)
    encryptor = FastEncryptor(tp.public, rng)
    reply = X25519KeyPair.generate(rng)
    values = [RingVector.from_ints(BITS, np.array([1000 + i, -7 * i, 3, i * i]))
              for i in range(n)]

    def machine(i: int, copy: str = "") -> PaillierNode:
        return PaillierNode(params, names[i], identities[names[i]], members, values[i], key,
                            shares[i], encryptor, reply.public, rng.child(f"{i}{copy}"))

    nodes = {name: machine(i) for i, name in enumerate(names)}
    contributions = {name: node.start() for name, node in nodes.items()}
    clones = {name: machine(i, "/again") for i, name in enumerate(names) if i >= 3}
    for clone in clones.values():
        clone.start()
    public = tp.public

    def request(contributors: list[str]) -> DecryptRequest:
        chosen = tuple(contributions[name] for name in contributors)
        product = public.to_bytes(public.combine([public.from_bytes(c.data) for c in chosen]))
        return DecryptRequest(params.query_id, params.round, chosen, product)

    quorums = [(request(list(names)), [nodes[m] for m in (names[0], names[1], *clones)]),
               (request(list(names[1:])), [nodes[names[2]], *clones.values()])]
    totals = []
    try:
        for req, deciders in quorums:
            partials = sorted((node.receive(req) for node in deciders), key=lambda p: p.sender)
            result = PaillierResult(bytes(16), params, tuple(c.sender for c in req.contributions),
                                    digest(req.product), tuple(partials), req.product,
                                    req.contributions)
            totals.append(open_result(result, query_digest=params.query_digest, key=key,
                                      members=members, reply_key=reply).to_signed())
    except FedtallyError as exc:
        return None, exc
    return [int(x) for x in totals[0] - totals[1]], None


def test_paillier_two_quorums_succeed_just_beyond_the_bound() -> None:
    # T = 3 of 5 holds against c = 0; with two colluders 2T <= N + c: {node0, node1, the
    # colluders} and {node2, the colluders} both decrypt, and the difference is node0
    learnt, error = two_quorums(decryption_threshold=3, c=0)
    assert error is None and learnt == [1000, 0, 3, 0]


def test_paillier_two_quorums_fail_within_the_bound() -> None:
    # two colluders: T > (5 + 2)/2, so 4; the manifest and the dealer refuse 3 of 5
    from fedtally.federation import deal_paillier

    with pytest.raises(FedtallyError, match=r"in \[4, 5\] for 5 nodes and 2 colluding"):
        deal_paillier(list("abcde"), 2048, 3, SeededRandom(0), max_colluding=2)
    # with T = 4 the second quorum (node2 and the two colluders) is one partial short
    learnt, error = two_quorums(decryption_threshold=4, c=2)
    assert learnt is None and isinstance(error, ThresholdNotMet)
