"""Paillier-mode rounds in memory: exact totals under dropouts, and refusal of a malicious
aggregator, a lying node, a node contributing ciphertexts it did not make, and a tampered
result (protocol/paillier_*.py, protocol/simulate.py).

A lying node is caught by its proof of correct partial decryption and named, even when
exactly ``t`` partials arrive (crypto/partial_proof.py). Keys are 1024 bits (the engine
accepts them; manifests need 2048) and dealt once per module, so the whole file runs in a
few seconds.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

import support
from crypto import plaintext_proof
from crypto.encoding import RingVector, plan_ring
from crypto.identity import SigningIdentity, VerifyKey
from crypto.keyagreement import X25519KeyPair
from crypto.paillier import FastEncryptor, randomizer_bits
from crypto.partial_proof import InvalidPartialDecryption, PartialProof, proof_size, verify
from crypto.plaintext_proof import InvalidPlaintextProof
from crypto.randomness import SeededRandom
from crypto.sealed import open_sealed, seal
from crypto.threshold_paillier import KeyShare, ThresholdPublic, deal_new
from protocol import codec
from protocol.errors import (
    AbortedByPeer,
    AuthenticationError,
    ConfigurationError,
    DecodeError,
    FedtallyError,
    InconsistentView,
    LocalError,
    RemoteProtocolError,
    ReplayError,
    ThresholdNotMet,
    UnexpectedMessage,
)
from protocol.messages import RoundAborted, SecAggMessage
from protocol.paillier_aggregator import PaillierAggregator, PaillierAggregatorStage
from protocol.paillier_contribution import (
    UnprovenContribution,
    make_contribution,
    verify_contribution,
)
from protocol.paillier_key import FederationKey
from protocol.paillier_messages import (
    MAX_CIPHERTEXT_BYTES,
    DecryptRequest,
    EncryptedInput,
    PaillierResult,
    PartialDecryption,
    contribution_binding,
    contribution_statement,
    digest,
    partial_binding,
    partial_statement,
)
from protocol.paillier_node import PaillierNode, PaillierStage
from protocol.paillier_result import ThresholdDecryptionFailed, open_result
from protocol.params import RoundParams
from protocol.simulate import PaillierTranscript, Tamper, make_params, run_paillier_round

KEY_BITS = 1024
N, T = 5, 3
EXAMPLES = settings(max_examples=30 if support.IN_CI else 12, deadline=None)


@functools.cache
def dealing(n: int, t: int) -> tuple[ThresholdPublic, tuple[KeyShare, ...]]:
    tp, shares = deal_new(KEY_BITS, n, t, SeededRandom(f"test_paillier_round/key/{n}/{t}"))
    return tp, tuple(shares)


@functools.cache
def encryptor(n: int, t: int) -> FastEncryptor:
    return FastEncryptor(dealing(n, t)[0].public, SeededRandom(f"test_paillier_round/enc/{n}/{t}"))


@dataclass
class Setup:
    params: RoundParams
    identities: dict[str, SigningIdentity]
    key: FederationKey
    shares: dict[str, KeyShare]
    encryptor: FastEncryptor
    reply: X25519KeyPair
    ints: list[list[int]]
    values: list[RingVector]
    rng: SeededRandom

    @property
    def members(self) -> dict[str, VerifyKey]:
        return {name: i.verify_key for name, i in self.identities.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return self.params.participants

    def run(self, **kwargs: object) -> PaillierTranscript:
        kwargs.setdefault("shares", self.shares)
        kwargs.setdefault("rng", self.rng.child("round"))
        return run_paillier_round(self.values, kwargs.pop("params", self.params),  # type: ignore[arg-type]
                                  identities=self.identities, key=self.key,
                                  encryptor=self.encryptor, reply_key=self.reply.public,
                                  **kwargs)  # type: ignore[arg-type]

    def open(self, result: PaillierResult | None, **changes: object) -> RingVector:
        assert result is not None
        args: dict[str, object] = {"query_digest": self.params.query_digest, "key": self.key,
                                   "members": self.members, "reply_key": self.reply}
        args.update(changes)
        return open_result(result, **args)  # type: ignore[arg-type]

    def expected(self, contributors: Sequence[str]) -> list[int]:
        rows = [self.ints[self.names.index(name)] for name in contributors]
        return [sum(column) for column in zip(*rows, strict=True)]

    def node(self, name: str, cls: type[PaillierNode] = PaillierNode,
             **changes: object) -> PaillierNode:
        i = self.names.index(name)
        args: dict[str, object] = {
            "params": self.params, "me": name, "identity": self.identities[name],
            "members": self.members, "value": self.values[i], "key": self.key,
            "share": self.shares[name], "encryptor": self.encryptor,
            "reply_key": self.reply.public, "rng": self.rng.child(f"node/{name}")}
        args.update(changes)
        return cls(**args)  # type: ignore[arg-type]


def setup(seed: object = 0, *, n: int = N, t: int = T, key_threshold: int | None = None,
          length: int = 6, bound: int = 2**40, ring_bits: int | None = None,
          ints: list[list[int]] | None = None) -> Setup:
    rng = SeededRandom(f"test_paillier_round/{seed}")
    kt = t if key_threshold is None else key_threshold
    tp, shares = dealing(n, kt)
    if ints is None:
        ints = [[rng.below(2 * bound + 1) - bound for _ in range(length)] for _ in range(n)]
        length = len(ints[0])
    else:
        length = len(ints[0])
        bound = max(abs(v) for row in ints for v in row)
    if ring_bits is None:
        ring_bits = plan_ring(-n * bound, n * bound).bits
    params = make_params(n, t, length, ring_bits, None, rng)
    names = params.participants
    return Setup(params=params,
                 identities={name: SigningIdentity.generate(rng) for name in names},
                 key=FederationKey(tp, names),
                 shares={name: shares[i] for i, name in enumerate(names)},
                 encryptor=encryptor(n, kt), reply=X25519KeyPair.generate(rng), ints=ints,
                 values=[RingVector.from_ints(ring_bits, row) for row in ints], rng=rng)


def total(s: Setup, transcript: PaillierTranscript) -> list[int]:
    return [int(v) for v in s.open(transcript.aggregator.result).to_signed()]


def partials_sent(transcript: PaillierTranscript) -> list[PartialDecryption]:
    return [msg for _, _, msg in transcript.inbox if isinstance(msg, PartialDecryption)]


def product_of(key: FederationKey, contributions: Sequence[EncryptedInput]) -> bytes:
    public = key.threshold.public
    return public.to_bytes(public.combine([public.from_bytes(c.data) for c in contributions]))


def rewrite_request(change: Callable[[DecryptRequest], DecryptRequest]) -> Tamper:
    """A tamper hook that rewrites every DecryptRequest with ``change(request)``."""

    def tamper(stage: str, name: str, msg: SecAggMessage, t: PaillierTranscript) -> SecAggMessage:
        return change(msg) if isinstance(msg, DecryptRequest) else msg

    return tamper


# --- honest rounds ------------------------------------------------------------------------


def test_honest_round_gives_the_exact_signed_total() -> None:
    s = setup("honest")
    t = s.run()
    assert not t.node_errors and not t.aggregator_rejections
    assert t.aggregator.stage is PaillierAggregatorStage.DONE
    result = t.aggregator.result
    assert result is not None and result.contributors == s.names
    assert [p.sender for p in result.partials] == list(s.names)
    assert total(s, t) == s.expected(s.names)
    assert any(v < 0 for v in s.expected(s.names))  # signed values really were exercised
    for node in t.nodes.values():
        assert node.stage is PaillierStage.DONE and node.decryptions == 1 and node.finished


def test_extreme_values_of_the_planned_ring() -> None:
    bound = 2**20
    ints = [[bound, -bound, 0, 1, -1, bound - 1] for _ in range(N)]
    s = setup("extremes", ints=ints)
    assert total(s, s.run()) == s.expected(s.names)


@pytest.mark.parametrize("ring_bits,bound", [(100, 2**90), (200, 2**190), (8, 20)])
def test_rings_wider_and_narrower_than_64_bits(ring_bits: int, bound: int) -> None:
    s = setup(f"ring{ring_bits}", ring_bits=ring_bits, bound=bound, length=25)
    assert total(s, s.run()) == s.expected(s.names)


def test_a_vector_spanning_several_plaintexts() -> None:
    s = setup("long", length=40, ring_bits=100, bound=2**90)
    count = s.key.packing(s.params).plaintexts_for(40)
    assert count > 1
    t = s.run()
    assert all(len(msg.data) == s.key.ciphertext_bytes(s.params)
               for _, _, msg in t.inbox if isinstance(msg, EncryptedInput))
    assert total(s, t) == s.expected(s.names)


# --- dropouts -----------------------------------------------------------------------------


@pytest.mark.parametrize("dropped", [{0}, {4}, {1, 3}])
def test_dropouts_before_contributing_leave_the_survivors_total(dropped: set[int]) -> None:
    s = setup("drop-input")
    t = s.run(dropouts={"encrypted_input": dropped})
    contributors = tuple(n for i, n in enumerate(s.names) if i not in dropped)
    assert t.aggregator.survivors == contributors
    assert t.aggregator.result is not None and t.aggregator.result.contributors == contributors
    assert total(s, t) == s.expected(contributors)
    for i in dropped:
        assert t.nodes[s.names[i]].decryptions == 0


@pytest.mark.parametrize("dropped", [{0}, {2}, {0, 4}, {1, 2}])
def test_dropouts_before_decrypting_still_give_the_full_total(dropped: set[int]) -> None:
    s = setup("drop-partial")
    t = s.run(dropouts={"partial_decryption": dropped})
    result = t.aggregator.result
    assert result is not None and result.contributors == s.names
    assert [p.sender for p in result.partials] == [n for i, n in enumerate(s.names)
                                                   if i not in dropped]
    assert total(s, t) == s.expected(s.names)


def test_dropouts_at_both_stages() -> None:
    s = setup("drop-both", n=5, t=3)
    t = s.run(dropouts={"encrypted_input": {0}, "partial_decryption": {4}})
    contributors = s.names[1:]
    assert t.aggregator.result is not None
    assert len(t.aggregator.result.partials) == 3
    assert total(s, t) == s.expected(contributors)


@pytest.mark.parametrize("dropouts", [
    {"encrypted_input": {0, 1, 2}},
    {"partial_decryption": {0, 1, 2}},
    {"encrypted_input": {0, 1}, "partial_decryption": {2}},
])
def test_too_many_dropouts_abort_without_a_result(dropouts: dict[str, set[int]]) -> None:
    s = setup("too-many")
    t = s.run(dropouts=dropouts)
    assert t.aggregator.stage is PaillierAggregatorStage.ABORTED
    assert isinstance(t.aggregator.error, ThresholdNotMet)
    assert t.aggregator.result is None


def test_fewer_contributors_than_the_decryption_threshold_abort() -> None:
    # the round needs 3 of 5, but the key needs 4 holders: 3 contributors cannot decrypt
    s = setup("key-threshold", key_threshold=4)
    t = s.run(dropouts={"encrypted_input": {0, 1}})
    assert isinstance(t.aggregator.error, ThresholdNotMet)
    assert t.aggregator.stage is PaillierAggregatorStage.ABORTED
    assert t.aggregator.result is None
    # nobody was asked to decrypt: the contributors were told the round is aborted
    assert [name for _, name, _ in t.outbox] == list(s.names[2:])
    assert all(isinstance(msg, RoundAborted) for _, _, msg in t.outbox)
    assert all(isinstance(t.node_errors[name], AbortedByPeer) for name in s.names[2:])
    assert all(node.decryptions == 0 for node in t.nodes.values())
    # with four contributors it works
    s4 = setup("key-threshold-4", key_threshold=4)
    t4 = s4.run(dropouts={"encrypted_input": {0}})
    assert total(s4, t4) == s4.expected(s4.names[1:])


@given(data=st.data(), n=st.integers(2, 5))
@EXAMPLES
def test_any_dropouts_keeping_the_threshold_give_the_exact_total(data: st.DataObject,
                                                                  n: int) -> None:
    t = data.draw(st.integers(n // 2 + 1, n), label="t")
    length = data.draw(st.integers(1, 12), label="length")
    bound = data.draw(st.sampled_from([1, 2**15, 2**40, 2**70]), label="bound")
    ints = data.draw(st.lists(st.lists(st.integers(-bound, bound), min_size=length,
                                       max_size=length), min_size=n, max_size=n), label="ints")
    early = data.draw(st.sets(st.integers(0, n - 1), max_size=n - t), label="early")
    left = [i for i in range(n) if i not in early]
    late = data.draw(st.sets(st.sampled_from(left), max_size=len(left) - t), label="late")
    s = setup(("prop", n, t, length, bound), n=n, t=t, ints=ints)
    transcript = s.run(dropouts={"encrypted_input": early, "partial_decryption": late})
    contributors = tuple(s.names[i] for i in left)
    assert transcript.aggregator.result is not None
    assert transcript.aggregator.result.contributors == contributors
    assert total(s, transcript) == s.expected(contributors)


# --- replayed contributions ----------------------------------------------------------------


def _stolen_contribution(s: Setup) -> EncryptedInput:
    """node0's signed contribution to another round of another query."""
    earlier = dataclasses.replace(s.params, query_id=b"\x01" * 16, round=7,
                                  query_digest=digest(b"an earlier query"))
    t = s.run(params=earlier, rng=s.rng.child("earlier"))
    return next(msg for _, sender, msg in t.inbox
                if sender == "node0" and isinstance(msg, EncryptedInput))


@pytest.mark.parametrize("rewrite_header", [True, False])
def test_a_contribution_from_another_round_is_refused_by_the_aggregator(
        rewrite_header: bool) -> None:
    s = setup("replay-agg")
    stolen = _stolen_contribution(s)
    p = s.params
    replayed = dataclasses.replace(stolen, query_id=p.query_id, round=p.round) \
        if rewrite_header else stolen

    def replay(stage: str, sender: str, msg: SecAggMessage, t: object) -> SecAggMessage:
        return replayed if sender == "node0" and isinstance(msg, EncryptedInput) else msg

    t = s.run(node_tamper=replay)
    error = t.aggregator_rejections["node0"]
    assert isinstance(error, AuthenticationError if rewrite_header else ReplayError)
    assert t.aggregator.survivors == s.names[1:]
    assert total(s, t) == s.expected(s.names[1:])


def test_a_contribution_for_the_same_ids_but_another_query_is_refused() -> None:
    s = setup("replay-digest")
    other = dataclasses.replace(s.params, query_digest=digest(b"another query"))
    t0 = s.run(params=other, rng=s.rng.child("other"))
    stolen = next(msg for _, sender, msg in t0.inbox if sender == "node1")
    t = s.run(node_tamper=lambda stage, sender, msg, t: stolen if sender == "node1" else msg)
    assert isinstance(t.aggregator_rejections["node1"], AuthenticationError)
    assert "node1" not in t.aggregator.survivors


@pytest.mark.parametrize("other_key", ["reordered holders", "another modulus", "threshold"])
def test_a_contribution_signed_for_another_key_is_refused(other_key: str) -> None:
    s = setup("fingerprint")
    if other_key == "reordered holders":
        other = FederationKey(s.key.threshold, tuple(reversed(s.names)))
    elif other_key == "another modulus":
        other = FederationKey(dealing(N, 4)[0], s.names)
    else:
        tp = s.key.threshold
        other = FederationKey(ThresholdPublic(tp.public, 4, tp.holders), s.names)
    assert other.fingerprint != s.key.fingerprint

    def resign(stage: str, sender: str, msg: SecAggMessage, t: object) -> SecAggMessage:
        if sender != "node2" or not isinstance(msg, EncryptedInput):
            return msg
        statement = contribution_statement(s.params, other.fingerprint, sender, digest(msg.data),
                                           digest(msg.proof))
        return dataclasses.replace(msg, signature=s.identities[sender].sign(statement))

    t = s.run(node_tamper=resign)
    assert isinstance(t.aggregator_rejections["node2"], AuthenticationError)
    assert "node2" not in t.aggregator.survivors


def test_a_replayed_contribution_smuggled_in_by_the_aggregator_is_refused_by_nodes() -> None:
    s = setup("replay-nodes")
    stolen = _stolen_contribution(s)
    p = s.params
    replayed = dataclasses.replace(stolen, query_id=p.query_id, round=p.round)

    def smuggle(msg: DecryptRequest) -> DecryptRequest:
        contributions = (replayed,) + msg.contributions[1:]
        return dataclasses.replace(msg, contributions=contributions,
                                   product=product_of(s.key, contributions))

    t = s.run(tamper=rewrite_request(smuggle))
    assert set(t.node_errors) == set(s.names)
    assert all(isinstance(e, AuthenticationError) for e in t.node_errors.values())
    assert all(node.decryptions == 0 for node in t.nodes.values())
    assert not partials_sent(t) and t.aggregator.result is None


# --- a malicious aggregator ---------------------------------------------------------------


def _refused_by_every_node(s: Setup, t: PaillierTranscript, error: type[Exception]) -> None:
    assert set(t.node_errors) == set(s.names), t.node_errors
    for name, exc in t.node_errors.items():
        assert type(exc) is error, (name, exc)
        assert t.nodes[name].stage is PaillierStage.FAILED and t.nodes[name].error is exc
        assert t.nodes[name].decryptions == 0
    assert not partials_sent(t)
    assert t.aggregator.result is None
    assert isinstance(t.aggregator.error, ThresholdNotMet)


@pytest.mark.parametrize("wrong", ["one contribution", "all but one", "a fresh ciphertext",
                                   "product squared"])
def test_a_product_that_is_not_the_contributions_product_is_refused(wrong: str) -> None:
    s = setup("wrong-product")
    public = s.key.threshold.public

    def swap(msg: DecryptRequest) -> DecryptRequest:
        if wrong == "one contribution":
            product = msg.contributions[0].data
        elif wrong == "all but one":
            product = product_of(s.key, msg.contributions[1:])
        elif wrong == "a fresh ciphertext":
            count = s.key.packing(s.params).plaintexts_for(s.params.vector_length)
            product = public.to_bytes(s.encryptor.encrypt_many([5] * count))
        else:
            product = public.to_bytes(public.combine([public.from_bytes(msg.product)] * 2))
        assert len(product) == len(msg.product)
        return dataclasses.replace(msg, product=product)

    t = s.run(tamper=rewrite_request(swap))
    _refused_by_every_node(s, t, InconsistentView)


@pytest.mark.parametrize("kept", [1, 2])
def test_decrypting_fewer_contributions_than_the_round_threshold_is_refused(kept: int) -> None:
    # the attack: ask the key holders to decrypt one hospital's ciphertext alone
    s = setup("isolate")

    def isolate(msg: DecryptRequest) -> DecryptRequest:
        contributions = msg.contributions[:kept]
        return DecryptRequest(msg.query_id, msg.round, contributions,
                              product_of(s.key, contributions))

    t = s.run(tamper=rewrite_request(isolate))
    _refused_by_every_node(s, t, ThresholdNotMet)


def test_an_altered_ciphertext_in_a_contribution_is_refused() -> None:
    s = setup("altered")

    def alter(msg: DecryptRequest) -> DecryptRequest:
        data = bytearray(msg.contributions[1].data)
        data[-1] ^= 0x01
        forged = dataclasses.replace(msg.contributions[1], data=bytes(data))
        contributions = msg.contributions[:1] + (forged,) + msg.contributions[2:]
        return dataclasses.replace(msg, contributions=contributions,
                                   product=product_of(s.key, contributions))

    t = s.run(tamper=rewrite_request(alter))
    _refused_by_every_node(s, t, AuthenticationError)


def test_a_contribution_with_a_forged_signature_is_refused() -> None:
    s = setup("forged")

    def forge(msg: DecryptRequest) -> DecryptRequest:
        c = msg.contributions[2]
        forged = dataclasses.replace(c, signature=msg.contributions[3].signature)
        return dataclasses.replace(msg, contributions=msg.contributions[:2] + (forged,)
                                   + msg.contributions[3:])

    t = s.run(tamper=rewrite_request(forge))
    _refused_by_every_node(s, t, AuthenticationError)


def test_a_contribution_of_the_wrong_size_is_refused() -> None:
    s = setup("short")

    def shorten(msg: DecryptRequest) -> DecryptRequest:
        c = msg.contributions[0]
        short = dataclasses.replace(c, data=c.data[:-1])
        return dataclasses.replace(msg, contributions=(short,) + msg.contributions[1:])

    t = s.run(tamper=rewrite_request(shorten))
    _refused_by_every_node(s, t, RemoteProtocolError)


def test_a_contributor_who_is_not_a_participant_is_refused() -> None:
    s = setup("outsider")
    outsider = SigningIdentity.generate(SeededRandom("outsider"))

    def add(msg: DecryptRequest) -> DecryptRequest:
        data, proof = msg.contributions[0].data, msg.contributions[0].proof
        statement = contribution_statement(s.params, s.key.fingerprint, "zz-outsider",
                                           digest(data), digest(proof))
        extra = EncryptedInput(msg.query_id, msg.round, "zz-outsider", data, proof,
                               outsider.sign(statement))
        contributions = msg.contributions + (extra,)
        return dataclasses.replace(msg, contributions=contributions,
                                   product=product_of(s.key, contributions))

    t = s.run(tamper=rewrite_request(add))
    _refused_by_every_node(s, t, InconsistentView)


@pytest.mark.parametrize("field", ["query_id", "round"])
def test_a_decrypt_request_of_another_round_is_a_replay(field: str) -> None:
    s = setup("request-replay")
    change = {"query_id": b"\x09" * 16} if field == "query_id" else {"round": 5}
    t = s.run(tamper=rewrite_request(lambda msg: dataclasses.replace(msg, **change)))
    _refused_by_every_node(s, t, ReplayError)


def test_a_node_decrypts_at_most_once_per_round() -> None:
    s = setup("once")
    t = s.run()
    requests = [msg for _, _, msg in t.outbox if isinstance(msg, DecryptRequest)]
    assert len(requests) == N
    first = requests[0]
    smaller = DecryptRequest(first.query_id, first.round, first.contributions[:T],
                             product_of(s.key, first.contributions[:T]))
    for node in t.nodes.values():
        assert node.stage is PaillierStage.DONE
        for again in (first, smaller):
            with pytest.raises(LocalError, match="over"):
                node.receive(again)
        assert node.decryptions == 1 and node.stage is PaillierStage.DONE


def test_a_node_asked_before_it_contributed_fails() -> None:
    s = setup("early")
    t = s.run()
    request = next(msg for _, _, msg in t.outbox if isinstance(msg, DecryptRequest))
    node = s.node("node0")
    with pytest.raises(UnexpectedMessage):
        node.receive(request)
    assert node.stage is PaillierStage.FAILED and node.decryptions == 0
    with pytest.raises(LocalError):
        node.start()


def test_a_node_starts_once_and_honours_an_abort() -> None:
    s = setup("abort")
    node = s.node("node1")
    node.start()
    with pytest.raises(LocalError):
        node.start()
    with pytest.raises(AbortedByPeer):
        node.receive(RoundAborted(s.params.query_id, s.params.round, "threshold_not_met"))
    assert node.stage is PaillierStage.ABORTED and node.finished
    replayed = s.node("node2")
    replayed.start()
    with pytest.raises(ReplayError):
        replayed.receive(RoundAborted(b"\x00" * 16, s.params.round, "x"))
    assert replayed.stage is PaillierStage.FAILED


def test_a_node_with_a_partial_member_list_fails_with_a_typed_error() -> None:
    """Members come from the manifest; one missing must not crash the node with a KeyError."""
    s = setup("partial-members")
    t = s.run()
    request = next(msg for _, _, msg in t.outbox if isinstance(msg, DecryptRequest))
    partial = {name: key for name, key in s.members.items() if name != "node4"}
    try:
        node = s.node("node0", members=partial)
    except LocalError:
        return  # refusing at construction (as the aggregator and SecAggNode do) is the fix
    node.start()
    with pytest.raises(FedtallyError):
        node.receive(request)
    assert node.stage is PaillierStage.FAILED and node.decryptions == 0


# --- a lying node ---------------------------------------------------------------------------


def _liar_shares(s: Setup, liar: str) -> dict[str, KeyShare]:
    good = s.shares[liar]
    return {**s.shares, liar: KeyShare(good.index, good.value + 1, good.threshold_public)}


@pytest.mark.parametrize("liar,dropped", [
    ("node0", {3, 4}),   # exactly t partials, the liar among them
    ("node2", {0, 1}),
    ("node0", {4}),      # t + 1 partials: the liar is in the first subset combined
    ("node3", {4}),      # ... or only in the second
    ("node1", set()),    # all five
])
def test_a_wrong_partial_decryption_releases_nothing(liar: str, dropped: set[int]) -> None:
    s = setup("liar")
    t = s.run(shares=_liar_shares(s, liar), dropouts={"partial_decryption": dropped})
    # the aggregator cannot tell: it relays the sealed partials
    assert t.aggregator.stage is PaillierAggregatorStage.DONE and not t.node_errors
    assert liar in [p.sender for p in t.aggregator.result.partials]  # type: ignore[union-attr]
    # the liar's proof (made with the share it used) does not verify against its key in
    # the manifest: it is named, before anything is combined
    with pytest.raises(ThresholdDecryptionFailed, match=rf"of {liar} is wrong") as caught:
        s.open(t.aggregator.result)
    assert isinstance(caught.value.__cause__, InvalidPartialDecryption)


def test_a_wrong_partial_left_out_does_not_matter() -> None:
    s = setup("liar-out")
    t = s.run(shares=_liar_shares(s, "node4"), dropouts={"partial_decryption": {4}})
    assert total(s, t) == s.expected(s.names)


@dataclass(frozen=True, repr=False)
class ShiftingShare(KeyShare):
    """A lying holder: its partials are the honest ones with the first multiplied by
    ``(1+n)^f``; it still proves with its real share (PaillierNode calls prove())."""

    f: int = 0

    def partial_decrypt(self, ciphertexts: Sequence[int], *, workers: int = 1) -> list[mpz]:
        return shift_first(self.threshold_public, super().partial_decrypt(ciphertexts,
                                                                          workers=workers),
                           self.f)


def shift_first(tp: ThresholdPublic, partials: Sequence[mpz], f: int) -> list[mpz]:
    n, n2 = tp.public.n_mpz, tp.public.n_square
    return [gmpy2.t_mod(mpz(partials[0]) * (1 + mpz(f % int(n)) * n), n2), *partials[1:]]


def shift_for(tp: ThresholdPublic, liar: int, indices: Sequence[int], shift: int = 1) -> int:
    """The f that moves the first plaintext by ``shift`` when ``indices`` are combined."""
    k = tp.coefficients(list(indices))[liar]
    n = tp.public.n
    return shift * tp.delta ** 2 * int(gmpy2.invert(k % n, n)) % n


def open_blobs(s: Setup, result: PaillierResult,
               params: RoundParams | None = None) -> dict[str, tuple[list[mpz], bytes]]:
    """Each sender's sealed (partials, proof bytes), opened with the researcher's key."""
    p = params or s.params
    public = s.key.threshold.public
    size = s.key.packing(p).plaintexts_for(p.vector_length) * public.ciphertext_size
    out = {}
    for partial in result.partials:
        raw = open_sealed(s.reply, partial.ephemeral_public, partial.sealed,
                          partial_binding(p, partial.sender, partial.contributors,
                                          partial.product_digest))
        out[partial.sender] = (public.from_bytes(raw[:size]), raw[size:])
    return out


def reseal(s: Setup, msg: PartialDecryption, blob: bytes, label: str) -> PartialDecryption:
    """``msg`` with ``blob`` sealed and signed as its sender would (a node that lies)."""
    rng = SeededRandom(f"reseal/{label}")
    ephemeral = X25519KeyPair.generate(rng)
    sealed = seal(ephemeral, s.reply.public, blob,
                  partial_binding(s.params, msg.sender, msg.contributors, msg.product_digest),
                  rng)
    signature = s.identities[msg.sender].sign(partial_statement(
        s.params, msg.sender, msg.contributors, msg.product_digest, ephemeral.public, sealed))
    return dataclasses.replace(msg, ephemeral_public=ephemeral.public, sealed=sealed,
                               signature=signature)


@pytest.mark.parametrize("n,t,liar,dropped", [
    (3, 2, "node0", {2}),        # exactly t = 2: no second subset to cross-check
    (3, 2, "node1", {0}),
    (5, 3, "node2", {0, 4}),     # exactly t = 3
    (5, 3, "node4", {1, 2}),
    (5, 3, "node0", set()),      # all five: named by its proof, before the cross-check
])
def test_a_node_shifting_its_partial_is_caught_and_named(n: int, t: int, liar: str,
                                                         dropped: set[int]) -> None:
    s = setup(("shift", n, t, liar), n=n, t=t)
    tp = s.key.threshold
    answering = [i + 1 for i in range(n) if i not in dropped][:t]
    honest = s.shares[liar]
    f = shift_for(tp, honest.index, answering)
    lying = ShiftingShare(honest.index, honest.value, honest.threshold_public, f)
    transcript = s.run(shares={**s.shares, liar: lying}, dropouts={"partial_decryption": dropped})
    result = transcript.aggregator.result
    assert result is not None and not transcript.node_errors
    assert transcript.nodes[liar].stage is PaillierStage.DONE  # it took part normally
    # why the proof is needed: without it, the first t partials combine and unpack to a
    # plausible total that is off by one in the first value
    blobs = open_blobs(s, result)
    first_t = {s.key.index(name): blobs[name][0] for name in s.names
               if s.key.index(name) in answering}
    packing = s.key.packing(s.params)
    wrong = packing.unpack(tp.combine(first_t), s.params.vector_length, n)
    expected = s.expected(s.names)
    assert wrong == [expected[0] + 1] + expected[1:]
    # but its proof does not verify: the researcher names it and releases nothing
    with pytest.raises(ThresholdDecryptionFailed, match=rf"of {liar} is wrong") as caught:
        s.open(result)
    assert isinstance(caught.value.__cause__, InvalidPartialDecryption)
    # every other node's partial is fine, and without the liar the total is exact
    others = tuple(p for p in result.partials if p.sender != liar)
    if len(others) >= tp.threshold:
        assert list(s.open(dataclasses.replace(result, partials=others)).to_signed()) == \
            expected
    else:
        with pytest.raises(ThresholdNotMet):
            s.open(dataclasses.replace(result, partials=others))


def test_a_shifted_partial_with_the_honest_proof_is_caught() -> None:
    """The liar proves its honest partials but sends shifted ones (exactly t = 2)."""
    s = setup("shift-honest-proof", n=3, t=2)
    tp = s.key.threshold
    f = shift_for(tp, 1, [1, 2])

    def lie(stage: str, sender: str, msg: SecAggMessage, t: object) -> SecAggMessage:
        if sender != "node0" or not isinstance(msg, PartialDecryption):
            return msg
        raw = open_sealed(s.reply, msg.ephemeral_public, msg.sealed,
                          partial_binding(s.params, sender, msg.contributors,
                                          msg.product_digest))
        size = len(raw) - proof_size(tp)
        partials = tp.public.from_bytes(raw[:size])
        return reseal(s, msg, tp.public.to_bytes(shift_first(tp, partials, f)) + raw[size:],
                      "honest-proof")

    t = s.run(node_tamper=lie, dropouts={"partial_decryption": {2}})
    assert not t.aggregator_rejections  # correctly signed by node0: relayed
    with pytest.raises(ThresholdDecryptionFailed, match="of node0 is wrong"):
        s.open(t.aggregator.result)


def test_the_reseal_helper_keeps_an_honest_partial_valid() -> None:
    s = setup("reseal-honest")

    def again(stage: str, sender: str, msg: SecAggMessage, t: object) -> SecAggMessage:
        if sender != "node1" or not isinstance(msg, PartialDecryption):
            return msg
        raw = open_sealed(s.reply, msg.ephemeral_public, msg.sealed,
                          partial_binding(s.params, sender, msg.contributors,
                                          msg.product_digest))
        return reseal(s, msg, raw, "honest")

    assert total(s, s.run(node_tamper=again)) == s.expected(s.names)


@pytest.mark.parametrize("replayed", ["proof only", "proof with shifted partials",
                                      "whole blob"])
def test_a_proof_from_another_round_does_not_verify(replayed: str) -> None:
    s = setup("proof-replay")
    tp = s.key.threshold
    earlier = dataclasses.replace(s.params, query_id=b"\x02" * 16, round=3,
                                  query_digest=digest(b"an earlier query"))
    old = s.run(params=earlier, rng=s.rng.child("earlier"))
    assert old.aggregator.result is not None
    old_partials, old_proof = open_blobs(s, old.aggregator.result, earlier)["node0"]
    PartialProof.from_bytes(tp, old_proof)  # a well-formed proof, valid in its own round
    f = shift_for(tp, 1, [1, 2, 3])

    def replay(stage: str, sender: str, msg: SecAggMessage, t: object) -> SecAggMessage:
        if sender != "node0" or not isinstance(msg, PartialDecryption):
            return msg
        raw = open_sealed(s.reply, msg.ephemeral_public, msg.sealed,
                          partial_binding(s.params, sender, msg.contributors,
                                          msg.product_digest))
        partials = tp.public.from_bytes(raw[:len(raw) - len(old_proof)])
        if replayed == "proof only":
            blob = tp.public.to_bytes(partials) + old_proof
        elif replayed == "proof with shifted partials":
            blob = tp.public.to_bytes(shift_first(tp, partials, f)) + old_proof
        else:
            blob = tp.public.to_bytes(old_partials) + old_proof
        return reseal(s, msg, blob, replayed)

    t = s.run(node_tamper=replay, dropouts={"partial_decryption": {3, 4}})
    assert not t.aggregator_rejections
    with pytest.raises(ThresholdDecryptionFailed, match="of node0 is wrong"):
        s.open(t.aggregator.result)


def test_the_proofs_are_bound_to_the_round_and_the_product() -> None:
    s = setup("proof-binding")
    t = s.run()
    result = t.aggregator.result
    assert result is not None
    tp = s.key.threshold
    product = tp.public.from_bytes(result.product)
    for name, (partials, raw) in open_blobs(s, result).items():
        proof = PartialProof.from_bytes(tp, raw)
        binding = partial_binding(s.params, name, result.contributors, result.product_digest)
        verify(tp, s.key.index(name), product, partials, proof, binding)
        other_round = partial_binding(dataclasses.replace(s.params, round=s.params.round + 1),
                                      name, result.contributors, result.product_digest)
        other_set = partial_binding(s.params, name, result.contributors[:4],
                                    result.product_digest)
        for binding in (other_round, other_set):
            with pytest.raises(InvalidPartialDecryption):
                verify(tp, s.key.index(name), product, partials, proof, binding)


# --- the product the result carries ----------------------------------------------------------


def test_an_altered_product_is_refused(honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    product = bytearray(result.product)
    product[-1] ^= 0x01
    with pytest.raises(InconsistentView, match="product"):
        s.open(dataclasses.replace(result, product=bytes(product)))
    with pytest.raises(InconsistentView):
        s.open(dataclasses.replace(result, product=result.product[:-1]))
    with pytest.raises(InconsistentView):
        s.open(dataclasses.replace(result, product=b""))


def test_a_product_replaced_with_its_digest_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    public = s.key.threshold.public
    product = public.from_bytes(result.product)
    # another product of valid ciphertexts: the product times an encryption of one per slot
    other = public.to_bytes(public.combine([product, s.encryptor.encrypt_many([1] * len(product))]))
    assert len(other) == len(result.product) and other != result.product
    replaced = dataclasses.replace(result, product=other, product_digest=digest(other))
    with pytest.raises(InconsistentView, match="another product"):  # the partials disagree
        s.open(replaced)
    # rewriting the digest in every partial too: the nodes' signatures cover it
    partials = tuple(dataclasses.replace(p, product_digest=digest(other))
                     for p in result.partials)
    with pytest.raises(AuthenticationError):
        s.open(dataclasses.replace(replaced, partials=partials))


def test_a_malformed_product_with_a_matching_digest_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    # checked before any partial is looked at (so the partials' digests do not matter)
    for bad in (bytes(len(result.product)), result.product[:-1], result.product + b"\x00",
                b""):
        with pytest.raises(RemoteProtocolError, match="product is malformed"):
            s.open(dataclasses.replace(result, product=bad, product_digest=digest(bad)))


def test_a_node_sending_a_tampered_partial_is_dropped_by_the_aggregator() -> None:
    s = setup("tampered-partial")

    def flip(stage: str, sender: str, msg: SecAggMessage, t: object) -> SecAggMessage:
        if sender == "node1" and isinstance(msg, PartialDecryption):
            sealed = bytearray(msg.sealed)
            sealed[20] ^= 1
            return dataclasses.replace(msg, sealed=bytes(sealed))
        return msg

    t = s.run(node_tamper=flip)
    assert isinstance(t.aggregator_rejections["node1"], AuthenticationError)
    result = t.aggregator.result
    assert result is not None and "node1" not in [p.sender for p in result.partials]
    assert total(s, t) == s.expected(s.names)


def test_a_node_contributing_an_invalid_ciphertext_is_dropped() -> None:
    s = setup("invalid-ciphertext")
    size = s.key.threshold.public.ciphertext_size

    def zero(stage: str, sender: str, msg: SecAggMessage, t: object) -> SecAggMessage:
        if sender != "node3" or not isinstance(msg, EncryptedInput):
            return msg
        data = bytes(len(msg.data))  # right size, correctly signed, but 0 is no ciphertext
        assert len(data) % size == 0
        statement = contribution_statement(s.params, s.key.fingerprint, sender, digest(data),
                                           digest(msg.proof))
        return dataclasses.replace(msg, data=data, signature=s.identities[sender].sign(statement))

    t = s.run(node_tamper=zero)
    assert type(t.aggregator_rejections["node3"]) is RemoteProtocolError
    assert total(s, t) == s.expected([n for n in s.names if n != "node3"])


# --- a node contributing what it did not encrypt (E14) --------------------------------------------

ATTACKER, VICTIM = "node1", "node4"
#: the nodes whose earlier ciphertexts the attacker inverts
OTHERS = ("node0", "node2", "node3")
PROOF_ATTEMPTS = ["its own part as the witness", "a victim's proof from the earlier round",
                  "no proof"]


def _earlier_request(s: Setup) -> DecryptRequest:
    """What the attacker legitimately received in an earlier round of the same query over
    the same rows: every signed contribution, to check the product."""
    earlier = dataclasses.replace(s.params, query_id=b"\x02" * 16, round=3,
                                  query_digest=digest(b"the same query, asked earlier"))
    t = s.run(params=earlier, rng=s.rng.child("earlier-round"))
    assert t.aggregator.result is not None
    return next(msg for _, name, msg in t.outbox
                if name == ATTACKER and isinstance(msg, DecryptRequest))


class CombiningNode(PaillierNode):
    """A malicious node made from the real machine. Instead of encrypting its vector it
    contributes, per ciphertext, ``inv(c0 * c2 * c3) * Enc(fill)`` from the ciphertexts it
    saw in an earlier round, signed with its own key; ``fill`` (the one part it made) puts
    the slot offsets back, so the total over all five decrypts to the victim's vector. It
    cannot prove knowledge of that plaintext, so it attaches what it has (``attempt``)."""

    def __init__(self, *args: object, earlier: DecryptRequest, attempt: str,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._earlier = earlier
        self._attempt = attempt

    def _contribute(self) -> EncryptedInput:
        p, key = self.params, self._key
        public = key.threshold.public
        n2 = public.n_square
        seen = {c.sender: public.from_bytes(c.data) for c in self._earlier.contributions}
        others = public.combine([seen[name] for name in OTHERS])
        packing = key.packing(p)
        offsets = packing.pack([0] * p.vector_length)  # one offset per slot
        fill = [(len(p.participants) - 1) * o for o in offsets]
        fill_cs, fill_exponents = self._encryptor.encrypt_with_exponents(fill)
        forged = [gmpy2.t_mod(gmpy2.invert(o, n2) * f, n2)
                  for o, f in zip(others, fill_cs, strict=True)]
        data = public.to_bytes(forged)
        if self._attempt == "its own part as the witness":
            proof = plaintext_proof.prove(
                public, forged, fill, fill_exponents,
                contribution_binding(p, key.fingerprint, self.me), self._rng).to_bytes(public)
        elif self._attempt == "a victim's proof from the earlier round":
            proof = self._earlier.contributions[0].proof
        else:
            proof = bytes(plaintext_proof.proof_size(public))
        signature = self._identity.sign(contribution_statement(p, key.fingerprint, self.me,
                                                               digest(data), digest(proof)))
        self.stage = PaillierStage.CONTRIBUTED
        return EncryptedInput(p.query_id, p.round, self.me, data, proof, signature)


@dataclass
class AttackRound:
    aggregator: PaillierAggregator
    #: refused by the aggregator on arrival
    rejected: dict[str, FedtallyError]
    #: refused by the nodes asked to decrypt
    refused: dict[str, FedtallyError]
    nodes: dict[str, PaillierNode]


def _attack(s: Setup, attempt: str) -> AttackRound:
    """One round through the real aggregator and node machines, node1 combining."""
    nodes = {name: s.node(name) for name in s.names}
    nodes[ATTACKER] = s.node(ATTACKER, CombiningNode, earlier=_earlier_request(s),
                             attempt=attempt)
    aggregator = PaillierAggregator(s.params, s.members, s.key)
    run = AttackRound(aggregator, {}, {}, nodes)
    for name, node in nodes.items():
        try:
            aggregator.receive(name, node.start())
        except FedtallyError as exc:
            run.rejected[name] = exc
    replies = []
    for name, request in aggregator.close_stage():
        try:
            replies.append(nodes[name].receive(request))
        except FedtallyError as exc:
            run.refused[name] = exc
    if aggregator.stage is PaillierAggregatorStage.COLLECT_PARTIALS:
        for reply in replies:
            assert isinstance(reply, PartialDecryption)
            aggregator.receive(reply.sender, reply)
        aggregator.close_stage()
    return run


def _signature_only(params: RoundParams, key: FederationKey, msg: EncryptedInput,
                    verify_key: VerifyKey) -> list[mpz]:
    """The check of a party that ignores proofs of plaintext knowledge (the code before
    them, or a colluder): size, signature and ciphertext range only."""
    if len(msg.data) != key.ciphertext_bytes(params):
        raise RemoteProtocolError("wrong size")
    verify_key.verify(contribution_statement(params, key.fingerprint, msg.sender,
                                             digest(msg.data), digest(msg.proof)),
                      msg.signature)
    return key.threshold.public.from_bytes(msg.data)


def _skip_proofs(monkeypatch: pytest.MonkeyPatch, *where: str) -> None:
    for module in where:
        monkeypatch.setattr(f"protocol.{module}.verify_contribution", _signature_only)


def _names_the_attacker(error: FedtallyError | None, *, with_cause: bool = True) -> None:
    assert type(error) is UnprovenContribution, error
    assert error.sender == ATTACKER and f"contribution of {ATTACKER}" in str(error)
    if with_cause:  # a node machine re-raises its error alone (round_machine._fail)
        assert isinstance(error.__cause__, InvalidPlaintextProof)


def test_combining_earlier_ciphertexts_isolates_a_hospital_when_nobody_checks_proofs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the proof exists: without it everyone accepts node1's contribution, and the
    "total over 5 nodes" is exactly node4's vector."""
    s = setup("combining-unchecked")
    _skip_proofs(monkeypatch, "paillier_aggregator", "paillier_node", "paillier_result")
    run = _attack(s, "its own part as the witness")
    assert not run.rejected and not run.refused
    result = run.aggregator.result
    assert result is not None and result.contributors == s.names
    opened = [int(v) for v in s.open(result).to_signed()]
    assert opened == s.ints[s.names.index(VICTIM)]
    assert opened != s.expected(s.names)


@pytest.mark.parametrize("attempt", PROOF_ATTEMPTS)
def test_an_honest_aggregator_drops_the_combining_node_and_names_it(attempt: str) -> None:
    s = setup("combining-aggregator")
    run = _attack(s, attempt)
    assert set(run.rejected) == {ATTACKER} and not run.refused
    _names_the_attacker(run.rejected[ATTACKER])
    honest = tuple(name for name in s.names if name != ATTACKER)
    result = run.aggregator.result
    assert result is not None and result.contributors == honest
    assert [int(v) for v in s.open(result).to_signed()] == s.expected(honest)


@pytest.mark.parametrize("attempt", PROOF_ATTEMPTS)
def test_every_contributor_refuses_it_when_a_colluding_aggregator_forwards_it(
        attempt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = setup("combining-nodes")
    _skip_proofs(monkeypatch, "paillier_aggregator")
    run = _attack(s, attempt)
    assert not run.rejected
    assert set(run.refused) == set(s.names)  # node1's own machine checks as well
    for name, error in run.refused.items():
        _names_the_attacker(error, with_cause=False)
        node = run.nodes[name]
        assert node.stage is PaillierStage.FAILED and node.decryptions == 0
    assert run.aggregator.result is None
    assert isinstance(run.aggregator.error, ThresholdNotMet)


@pytest.mark.parametrize("attempt", PROOF_ATTEMPTS)
def test_the_researcher_refuses_it_even_if_every_decryptor_skipped_the_check(
        attempt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    s = setup("combining-researcher")
    _skip_proofs(monkeypatch, "paillier_aggregator", "paillier_node")
    run = _attack(s, attempt)
    assert not run.rejected and not run.refused
    with pytest.raises(UnprovenContribution) as caught:
        s.open(run.aggregator.result)
    _names_the_attacker(caught.value)


def _resigned(s: Setup, msg: EncryptedInput, data: bytes, proof: bytes) -> EncryptedInput:
    """``data`` and ``proof`` signed by ``msg.sender`` for this round and key: the sender
    signs whatever it likes, so only the proof can refuse it."""
    statement = contribution_statement(s.params, s.key.fingerprint, msg.sender, digest(data),
                                       digest(proof))
    return dataclasses.replace(msg, data=data, proof=proof,
                               signature=s.identities[msg.sender].sign(statement))


@pytest.mark.parametrize("source", ["another sender, this round", "this sender, another round",
                                    "another sender, another round", "another key"])
def test_a_proof_made_for_another_round_sender_or_key_does_not_verify(source: str) -> None:
    s = setup("proof-binding-contribution")
    earlier = dataclasses.replace(s.params, query_id=b"\x03" * 16, round=5,
                                  query_digest=digest(b"an earlier query"))
    old = {sender: msg for _, sender, msg in s.run(params=earlier,
                                                  rng=s.rng.child("old")).inbox
           if isinstance(msg, EncryptedInput)}
    other_key = FederationKey(s.key.threshold, tuple(reversed(s.names)))  # same modulus

    def swap(stage: str, sender: str, msg: SecAggMessage, t: PaillierTranscript) -> SecAggMessage:
        if sender != "node2" or not isinstance(msg, EncryptedInput):
            return msg
        if source == "another sender, this round":
            copied = next(m for _, name, m in t.inbox if name == "node0")
            assert isinstance(copied, EncryptedInput)
            return _resigned(s, msg, copied.data, copied.proof)
        if source == "this sender, another round":
            return _resigned(s, msg, old["node2"].data, old["node2"].proof)
        if source == "another sender, another round":
            return _resigned(s, msg, old["node0"].data, old["node0"].proof)
        made = make_contribution(s.params, other_key, "node2", s.identities["node2"],
                                 s.encryptor, s.key.packing(s.params).pack(s.ints[2]),
                                 SeededRandom("other-key"))
        return _resigned(s, msg, made.data, made.proof)

    t = s.run(node_tamper=swap)
    error = t.aggregator_rejections["node2"]
    assert type(error) is UnprovenContribution and error.sender == "node2"
    assert set(t.aggregator_rejections) == {"node2"} and not t.node_errors
    assert total(s, t) == s.expected([name for name in s.names if name != "node2"])


def test_every_honest_contribution_verifies_for_its_sender_only() -> None:
    s = setup("contribution-verify")
    t = s.run()
    result = t.aggregator.result
    assert result is not None
    assert tuple(c.sender for c in result.contributions) == result.contributors == s.names
    public = s.key.threshold.public
    for c in result.contributions:
        ciphertexts = verify_contribution(s.params, s.key, c, s.members[c.sender])
        assert public.to_bytes(ciphertexts) == c.data
        assert len(c.proof) == plaintext_proof.proof_size(public)
        proof = plaintext_proof.PlaintextProof.from_bytes(public, c.proof)
        for sender in s.names:
            binding = contribution_binding(s.params, s.key.fingerprint, sender)
            if sender == c.sender:
                plaintext_proof.verify(public, ciphertexts, proof, binding)
            else:
                with pytest.raises(InvalidPlaintextProof):
                    plaintext_proof.verify(public, ciphertexts, proof, binding)


@given(data=st.data())
@EXAMPLES
def test_contributions_round_trip_verify_and_decrypt_to_the_vector(data: st.DataObject) -> None:
    s = setup("contribution-property")
    name = data.draw(st.sampled_from(s.names), label="sender")
    bound = 2**39
    vector = data.draw(st.lists(st.integers(-bound, bound), min_size=s.params.vector_length,
                                max_size=s.params.vector_length), label="vector")
    packing = s.key.packing(s.params)
    seed = data.draw(st.integers(0, 2**32), label="seed")
    made = make_contribution(s.params, s.key, name, s.identities[name], s.encryptor,
                             packing.pack(vector), SeededRandom(seed))
    again = codec.decode(codec.encode(made))
    assert again == made
    assert isinstance(again, EncryptedInput)
    ciphertexts = verify_contribution(s.params, s.key, again, s.members[name])
    shares = [s.shares[n] for n in s.names[:T]]
    plaintexts = s.key.threshold.combine({sh.index: sh.partial_decrypt(ciphertexts)
                                          for sh in shares})
    assert packing.unpack(plaintexts, s.params.vector_length, 1) == vector


# --- the contributions the result carries (checked by the researcher) ------------------------------


def test_a_result_without_the_contributions_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    with pytest.raises(InconsistentView, match="contributions"):
        s.open(dataclasses.replace(result, contributions=()))
    with pytest.raises(InconsistentView, match="contributions"):
        s.open(dataclasses.replace(result, contributions=result.contributions[:4]))
    swapped = (result.contributions[1], result.contributions[0]) + result.contributions[2:]
    with pytest.raises(InconsistentView, match="contributions"):
        s.open(dataclasses.replace(result, contributions=swapped))


def _with_contribution(result: PaillierResult, i: int, msg: EncryptedInput) -> PaillierResult:
    contributions = list(result.contributions)
    contributions[i] = msg
    return dataclasses.replace(result, contributions=tuple(contributions))


def test_a_tampered_contribution_in_the_result_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    c = result.contributions[2]
    proof = bytearray(c.proof)
    proof[-1] ^= 1
    with pytest.raises(AuthenticationError):  # the sender's signature covers its proof
        s.open(_with_contribution(result, 2, dataclasses.replace(c, proof=bytes(proof))))
    with pytest.raises(InconsistentView, match="another round"):
        s.open(_with_contribution(result, 2, dataclasses.replace(c, round=c.round + 1)))
    with pytest.raises(AuthenticationError):
        s.open(result, members={n: k for n, k in s.members.items() if n != "node2"})


def test_a_product_that_is_not_the_signed_contributions_product_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    """node2 signed and proved a second, different contribution: every check of it passes,
    but the product the partials decrypt is not the product of what the result shows."""
    s, result = honest
    packing = s.key.packing(s.params)
    other = make_contribution(s.params, s.key, "node2", s.identities["node2"], s.encryptor,
                              packing.pack(s.ints[2]), SeededRandom("second contribution"))
    assert other.data != result.contributions[2].data
    with pytest.raises(InconsistentView, match="not the product of the signed"):
        s.open(_with_contribution(result, 2, other))


# --- the aggregator's own checks --------------------------------------------------------------


def test_aggregator_transitions() -> None:
    s = setup("aggregator")
    nodes = {name: s.node(name) for name in s.names}
    inputs = {name: node.start() for name, node in nodes.items()}
    agg = PaillierAggregator(s.params, s.members, s.key)
    with pytest.raises(AuthenticationError):  # names another sender than its connection
        agg.receive("node0", inputs["node1"])
    with pytest.raises(UnexpectedMessage):  # node0 was dropped for that
        agg.receive("node0", inputs["node0"])
    with pytest.raises(UnexpectedMessage):
        agg.receive("mallory", inputs["node1"])
    agg.receive("node1", inputs["node1"])
    with pytest.raises(UnexpectedMessage):  # once per stage
        agg.receive("node1", inputs["node1"])
    with pytest.raises(ReplayError):
        agg.receive("node2", dataclasses.replace(inputs["node2"], round=1))
    for name in ("node3", "node4"):
        agg.receive(name, inputs[name])
    assert agg.complete
    out = agg.close_stage()
    assert [name for name, _ in out] == ["node1", "node3", "node4"]
    request = out[0][1]
    assert isinstance(request, DecryptRequest) and request.contributors == ("node1", "node3",
                                                                            "node4")
    with pytest.raises(UnexpectedMessage):  # (and node0, not asked, stays out)
        agg.receive("node0", inputs["node0"])
    partial = nodes["node3"].receive(request)
    assert isinstance(partial, PartialDecryption)
    with pytest.raises(UnexpectedMessage):  # node0 contributed nothing: it is not asked
        agg.receive("node0", partial)
    agg.receive("node3", partial)
    for name in ("node1", "node4"):
        agg.receive(name, nodes[name].receive(request))
    assert agg.close_stage() == [] and agg.stage is PaillierAggregatorStage.DONE
    with pytest.raises(UnexpectedMessage):
        agg.receive("node1", partial)
    with pytest.raises(LocalError):
        agg.close_stage()
    assert list(s.open(agg.result).to_signed()) == s.expected(("node1", "node3", "node4"))


def test_aggregator_refuses_partials_for_another_request() -> None:
    s = setup("agg-partial")
    nodes = {name: s.node(name) for name in s.names}
    agg = PaillierAggregator(s.params, s.members, s.key)
    for name, node in nodes.items():
        agg.receive(name, node.start())
    request = agg.close_stage()[0][1]
    assert isinstance(request, DecryptRequest)
    other = DecryptRequest(request.query_id, request.round, request.contributions[:4],
                           product_of(s.key, request.contributions[:4]))
    with pytest.raises(RemoteProtocolError, match="another request"):
        agg.receive("node0", nodes["node0"].receive(other))


def test_aggregator_needs_every_participants_key() -> None:
    s = setup("agg-members")
    with pytest.raises(LocalError):
        PaillierAggregator(s.params, {n: k for n, k in s.members.items() if n != "node1"}, s.key)


# --- the researcher's checks ------------------------------------------------------------------


@pytest.fixture(scope="module")
def honest() -> tuple[Setup, PaillierResult]:
    s = setup("researcher")
    result = s.run().aggregator.result
    assert result is not None
    return s, result


def _with_partial(result: PaillierResult, i: int, **changes: object) -> PaillierResult:
    partials = list(result.partials)
    partials[i] = dataclasses.replace(partials[i], **changes)
    return dataclasses.replace(result, partials=tuple(partials))


def test_the_honest_result_opens(honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    assert list(s.open(result).to_signed()) == s.expected(s.names)
    assert list(s.open(dataclasses.replace(result, partials=result.partials[2:])).to_signed()) \
        == s.expected(s.names)


def test_a_flipped_byte_in_a_sealed_partial_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    sealed = bytearray(result.partials[1].sealed)
    sealed[-3] ^= 0x80
    with pytest.raises(AuthenticationError):  # the signature covers the sealed bytes
        s.open(_with_partial(result, 1, sealed=bytes(sealed)))


def test_a_signed_but_unopenable_partial_is_a_protocol_error(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    p = result.partials[1]
    sealed = bytearray(p.sealed)
    sealed[-3] ^= 0x80
    signature = s.identities[p.sender].sign(partial_statement(
        s.params, p.sender, p.contributors, p.product_digest, p.ephemeral_public, bytes(sealed)))
    with pytest.raises(RemoteProtocolError) as caught:
        s.open(_with_partial(result, 1, sealed=bytes(sealed), signature=signature))
    assert type(caught.value) is RemoteProtocolError


def test_a_partial_with_a_wrong_signature_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    with pytest.raises(AuthenticationError):
        s.open(_with_partial(result, 0, signature=result.partials[1].signature))
    with pytest.raises(AuthenticationError):
        s.open(_with_partial(result, 0, ephemeral_public=result.partials[1].ephemeral_public))
    forged = SigningIdentity.generate(SeededRandom("forger"))
    p = result.partials[0]
    signature = forged.sign(partial_statement(s.params, p.sender, p.contributors,
                                              p.product_digest, p.ephemeral_public, p.sealed))
    with pytest.raises(AuthenticationError):
        s.open(_with_partial(result, 0, signature=signature))


def test_partials_for_another_contributor_set_or_product_are_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    with pytest.raises(InconsistentView):
        s.open(_with_partial(result, 2, contributors=s.names[:4]))
    with pytest.raises(InconsistentView):
        s.open(_with_partial(result, 2, product_digest=digest(b"another product")))
    with pytest.raises(InconsistentView):
        s.open(dataclasses.replace(result, product_digest=digest(b"another product")))
    with pytest.raises(InconsistentView):  # the result claims fewer contributors
        s.open(dataclasses.replace(result, contributors=s.names[:4]))


def test_a_consistently_rewritten_contributor_set_does_not_verify(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    fewer = s.names[:4]
    partials = tuple(dataclasses.replace(p, contributors=fewer) for p in result.partials[:4])
    with pytest.raises(AuthenticationError):
        s.open(dataclasses.replace(result, contributors=fewer, partials=partials))


def test_a_result_for_another_query_or_round_is_refused(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    with pytest.raises(InconsistentView, match="another query"):
        s.open(result, query_digest=digest(b"what I asked"))
    other = dataclasses.replace(result, params=dataclasses.replace(s.params, round=9))
    with pytest.raises(InconsistentView):
        s.open(other)


def test_duplicate_unknown_and_too_few_partials(honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    with pytest.raises(InconsistentView):
        s.open(dataclasses.replace(result, partials=(result.partials[0],) + result.partials))
    with pytest.raises(ThresholdNotMet):
        s.open(dataclasses.replace(result, partials=result.partials[:T - 1]))
    with pytest.raises(ThresholdNotMet):
        s.open(dataclasses.replace(result, partials=()))
    with pytest.raises(ThresholdNotMet):
        s.open(dataclasses.replace(result, contributors=s.names[:T - 1],
                                   partials=result.partials[:T - 1]))
    outsider = dataclasses.replace(result, contributors=s.names + ("zz-outsider",))
    with pytest.raises(InconsistentView):
        s.open(outsider)
    no_key = {n: k for n, k in s.members.items() if n != "node0"}
    with pytest.raises(AuthenticationError):
        s.open(result, members=no_key)


def test_a_partial_moved_to_another_sender_does_not_open(
        honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    p0, p1 = result.partials[0], result.partials[1]
    # node1 re-signs node0's sealed partial as its own: the seal is bound to node0
    signature = s.identities["node1"].sign(partial_statement(
        s.params, "node1", p0.contributors, p0.product_digest, p0.ephemeral_public, p0.sealed))
    moved = dataclasses.replace(p1, ephemeral_public=p0.ephemeral_public, sealed=p0.sealed,
                                signature=signature)
    with pytest.raises(RemoteProtocolError):
        s.open(dataclasses.replace(result, partials=(p0, moved) + result.partials[2:]))


def test_only_the_researcher_can_open(honest: tuple[Setup, PaillierResult]) -> None:
    s, result = honest
    with pytest.raises(RemoteProtocolError):
        s.open(result, reply_key=X25519KeyPair.generate(SeededRandom("the aggregator")))


def test_the_aggregator_never_holds_the_total() -> None:
    s = setup("blind", length=4, ring_bits=64, bound=2**50)
    t = s.run()
    opened = s.open(t.aggregator.result)
    expected = s.expected(s.names)
    assert list(opened.to_signed()) == expected
    packing = s.key.packing(s.params)
    packed = [sum(column) for column in zip(*(packing.pack(row) for row in s.ints), strict=True)]
    secrets = [opened.to_bytes(), b"".join(v.to_bytes(8, "little", signed=True) for v in expected)]
    secrets += [m.to_bytes((m.bit_length() + 7) // 8, "big") for m in packed]
    secrets += [m.to_bytes((m.bit_length() + 7) // 8, "little") for m in packed]
    frames = [codec.encode(msg) for _, _, msg in t.inbox + t.outbox]
    frames.append(codec.encode(t.aggregator.result))  # type: ignore[arg-type]
    for frame in frames:
        for secret in secrets:
            assert secret not in frame
    assert not hasattr(t.aggregator, "share") and not hasattr(t.aggregator, "_share")


# --- construction --------------------------------------------------------------------------


def test_a_node_refuses_a_share_that_is_not_its_own() -> None:
    s = setup("construct")
    with pytest.raises(LocalError, match="share"):
        s.node("node0", share=s.shares["node1"])
    other_tp, other_shares = dealing(N, 4)
    with pytest.raises(LocalError, match="share"):
        s.node("node0", share=other_shares[0])
    with pytest.raises(LocalError, match="share"):  # same modulus, another threshold
        tp = s.key.threshold
        s.node("node0", share=KeyShare(1, s.shares["node0"].value,
                                       ThresholdPublic(tp.public, 4, tp.holders)))
    with pytest.raises(LocalError, match="encryptor"):
        s.node("node0", encryptor=encryptor(N, 4))
    public = s.key.threshold.public
    too_long = FastEncryptor(public, SeededRandom("long"), randomizer_bits(public.bits) + 1)
    with pytest.raises(LocalError, match="randomizers"):  # a proof could not cover them
        s.node("node0", encryptor=too_long)
    with pytest.raises(LocalError, match="participant"):
        s.node("node0", me="node9")
    with pytest.raises(LocalError, match="identity"):
        s.node("node0", identity=s.identities["node1"])
    with pytest.raises(LocalError, match="ring"):
        s.node("node0", value=RingVector.from_ints(s.params.ring_bits + 1, s.ints[0]))
    with pytest.raises(LocalError, match="ring"):
        s.node("node0", value=RingVector.from_ints(s.params.ring_bits, s.ints[0][:-1]))
    assert s.node("node0").stage is PaillierStage.START


def test_a_key_needs_one_distinct_holder_per_share() -> None:
    tp, _ = dealing(N, T)
    with pytest.raises(ConfigurationError):
        FederationKey(tp, ("a", "b", "c", "d"))
    with pytest.raises(ConfigurationError):
        FederationKey(tp, ("a", "b", "c", "d", "a"))
    key = FederationKey(tp, ("a", "b", "c", "d", "e"))
    assert key.index("c") == 3
    with pytest.raises(ConfigurationError):
        key.index("f")


# --- the wire -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def messages() -> list[object]:
    s = setup("wire", length=30, ring_bits=100, bound=2**90)
    t = s.run()
    found: dict[type, object] = {}
    for _, _, msg in t.inbox + t.outbox:
        found.setdefault(type(msg), msg)
    found[PaillierResult] = t.aggregator.result
    assert set(found) == {EncryptedInput, DecryptRequest, PartialDecryption, PaillierResult}
    return list(found.values())


def test_every_paillier_message_round_trips(messages: list[object]) -> None:
    for msg in messages:
        frame = codec.encode(msg)  # type: ignore[arg-type]
        assert codec.decode(frame) == msg
        assert codec.encode(codec.decode(frame)) == frame


def test_truncated_oversized_and_padded_frames_are_decode_errors(messages: list[object]) -> None:
    for msg in messages:
        frame = codec.encode(msg)  # type: ignore[arg-type]
        for cut in {1, 7, 8, 9, 40, len(frame) // 2, len(frame) - 1}:
            with pytest.raises(DecodeError):
                codec.decode(frame[:cut])
        with pytest.raises(DecodeError):
            codec.decode(frame + b"\x00")
        with pytest.raises(DecodeError):
            codec.decode(frame, max_size=len(frame) - 1)


def test_a_ciphertext_length_above_the_limit_is_a_decode_error(messages: list[object]) -> None:
    msg = next(m for m in messages if isinstance(m, EncryptedInput))
    frame = codec.encode(msg)  # type: ignore[arg-type]
    prefix = len(msg.data).to_bytes(4, "big") + msg.data[:16]
    at = frame.index(prefix)
    garbled = frame[:at] + (MAX_CIPHERTEXT_BYTES + 1).to_bytes(4, "big") + frame[at + 4:]
    with pytest.raises(DecodeError):
        codec.decode(garbled)


def test_a_frame_repeating_a_contributor_is_a_decode_error(messages: list[object]) -> None:
    msg = next(m for m in messages if isinstance(m, DecryptRequest))
    frame = codec.encode(msg)  # type: ignore[arg-type]
    assert frame.count(b"node1") == 1
    with pytest.raises(DecodeError):
        codec.decode(frame.replace(b"node1", b"node0"))
    with pytest.raises(ValueError):
        DecryptRequest(msg.query_id, msg.round, (msg.contributions[0],) * 2, msg.product)


@given(data=st.data())
@EXAMPLES
def test_garbled_paillier_frames_decode_or_raise_decode_error(messages: list[object],
                                                               data: st.DataObject) -> None:
    msg = data.draw(st.sampled_from(messages))
    frame = bytearray(codec.encode(msg))  # type: ignore[arg-type]
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    try:
        decoded = codec.decode(bytes(frame))
    except DecodeError:
        return
    assert type(decoded) in codec.registered_types().values()


def test_result_and_requests_name_only_registered_wire_types() -> None:
    registered = codec.registered_types()
    for cls in (EncryptedInput, DecryptRequest, PartialDecryption, PaillierResult):
        assert cls in registered.values()
