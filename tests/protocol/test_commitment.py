"""Verifiable totals, on the real state machines: a total the aggregator alters, a commitment
it drops or swaps, or one signed for another query, fails the researcher's check with
ForgedTotal; an honest round passes it."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from crypto.encoding import RingVector
from crypto.identity import SigningIdentity
from crypto.randomness import SeededRandom
from protocol.commitment import ForgedTotal
from protocol.params import RoundParams
from protocol.service_messages import QueryResult
from protocol.simulate import run_round
from stats.datamodel import DataModel, PlanModel, Variable
from stats.planner import layout
from stats.plans import BLINDING
from stats.query import QuerySpec
from stats.verified_totals import check_result, commit_vector

NAMES = ("n1", "n2", "n3", "n4")


def _round(seed: int = 1):  # noqa: ANN202
    model = DataModel("m", "1", {"dataset": Variable("dataset", "d", "text", True, ("a",)),
                                 "x": Variable("x", "x", "real", False, min=0, max=10)})
    spec = QuerySpec("descriptive_stats", "m:1", ("a",), ("x",))
    plan = layout(spec, PlanModel(model), 1 << 20, verifiable=True)
    rng = SeededRandom(seed)
    identities = {n: SigningIdentity.generate(rng) for n in NAMES}
    digest = hashlib.sha256(spec.canonical()).digest()
    params = RoundParams("fed", rng.bytes(16), 0, NAMES, 3, plan.length, plan.ring_bits, 0,
                         digest, max_colluding=1)
    vectors, commitments = [], {}
    for i, name in enumerate(NAMES):
        values = [(i + 1) * (j % 7) - 3 for j in range(plan.length)]
        commitments[name] = commit_vector(values, plan, rng)
        vectors.append(RingVector.from_ints(plan.ring_bits, np.array(values, dtype=object)))
    transcript = run_round(vectors, params, identities=identities, rng=rng,
                           commitments=commitments)
    assert transcript.result is not None
    agg = transcript.aggregator
    reply = QueryResult(bytes(16), params.query_id, NAMES, agg.survivors, plan.ring_bits,
                        plan.length, transcript.result.to_bytes(), (), agg.commitments())
    members = {n: i.verify_key for n, i in identities.items()}
    return reply, plan, digest, members


def test_an_honest_total_opens_the_signed_commitments() -> None:
    reply, plan, digest, members = _round()
    assert len(reply.commitments) == len(NAMES)
    assert plan.verifiable and plan.slots[-1].key == BLINDING[-1]
    check_result(reply, plan, digest, members)


def _altered(reply: QueryResult, slot: int, delta: int) -> QueryResult:
    total = RingVector.from_bytes(reply.ring_bits, reply.vector_length, reply.total)
    values = [int(v) for v in total.to_signed()]
    values[slot] += delta
    changed = RingVector.from_ints(reply.ring_bits, np.array(values, dtype=object))
    return dataclasses.replace(reply, total=changed.to_bytes())


@pytest.mark.parametrize(("slot", "delta"), [(0, 1), (2, -1), (3, 2**40), (-1, 1)])
def test_an_altered_total_is_refused(slot: int, delta: int) -> None:
    reply, plan, digest, members = _round()
    with pytest.raises(ForgedTotal):
        check_result(_altered(reply, slot, delta), plan, digest, members)


def test_dropped_swapped_or_foreign_commitments_are_refused() -> None:
    reply, plan, digest, members = _round()
    first, second = reply.commitments[:2]
    cases = [
        reply.commitments[1:],  # one dropped: the rest opens nothing
        (dataclasses.replace(first, commitment=second.commitment), *reply.commitments[1:]),
        (dataclasses.replace(first, signature=second.signature), *reply.commitments[1:]),
        (*reply.commitments, first),  # one twice
    ]
    for commitments in cases:
        with pytest.raises(ForgedTotal):
            check_result(dataclasses.replace(reply, commitments=commitments), plan, digest,
                         members)
    with pytest.raises(ForgedTotal):  # signed for another query
        check_result(reply, plan, hashlib.sha256(b"other").digest(), members)
    with pytest.raises(ForgedTotal):  # an aggregator claiming fewer survivors
        check_result(dataclasses.replace(reply, survivors=reply.survivors[1:]), plan, digest,
                     members)
