"""Paillier mode for one round, next to python-paillier (``phe``) in the same run.

Three nodes each pack and encrypt 100,000 signed 32-bit values under one 3072-bit key; the
aggregator multiplies their ciphertexts; two key holders decrypt with their shares. Our
figures and phe's come from the same key and the same values, measured in alternation.
phe is sampled (30 encryptions, 50 decryptions per round) and scaled to a per-value rate.
Every decrypted total is checked against numpy, so a wrong but fast result cannot pass.

``python -m bench paillier`` runs the defaults; ``python -m bench.paillier --help`` lists
the options (``--values 10000 --bits 2048`` makes a quick run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import phe

from bench.common import timed
from crypto.encoding import plan_ring
from crypto.packing import Packing
from crypto.paillier import DEFAULT_KEY_BITS, FastEncryptor, PaillierPublicKey, generate_keypair
from crypto.partial_proof import PartialProof, prove, verify
from crypto.randomness import SystemRandom
from crypto.threshold_paillier import KeyShare, ThresholdPublic, deal

TARGET_ENCRYPT_RATIO = 1000
TARGET_COMBINE_RATE = 1_000_000
TARGET_DECRYPT_RATIO = 10


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.paillier", description=__doc__.split("\n")[0])
    p.add_argument("--bits", type=int, default=DEFAULT_KEY_BITS, help="modulus size")
    p.add_argument("--values", type=int, default=100_000, help="values per node")
    p.add_argument("--value-bits", type=int, default=32, help="signed width of each value")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--threshold", type=int, default=2, help="key holders needed to decrypt")
    p.add_argument("--workers", type=int, default=2,
                   help="threads per node for the secondary decryption line (0: skip)")
    p.add_argument("--wide-values", type=int, default=20_000,
                   help="values per node for the 64-bit secondary line (0: skip)")
    p.add_argument("--phe-encrypt-sample", type=int, default=30)
    p.add_argument("--phe-decrypt-sample", type=int, default=50)
    return p.parse_args(list(argv))


def progress(message: str) -> None:
    print(f"  ... {message}", file=sys.stderr, flush=True)


def once(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, this thread's CPU seconds, result) of one call. On a shared machine the
    CPU time shows what the wall time would be without the other load."""
    start, cpu = time.perf_counter(), time.thread_time()
    out = fn()
    return time.perf_counter() - start, time.thread_time() - cpu, out


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


def sec(seconds: float) -> str:
    return f"{seconds:.2f}s"


def rate(per_second: float) -> str:
    return f"{per_second:,.0f}/s"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def spread(samples: Sequence[float], unit: Callable[[float], str]) -> str:
    return f"{unit(statistics.median(samples))} [{unit(min(samples))}-{unit(max(samples))}]"


def signed_inputs(rng: np.random.Generator, bits: int, nodes: int, length: int) -> list[np.ndarray]:
    """Benchmark inputs only (numpy's generator); int64 holds up to 64-bit values."""
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)
    return [rng.integers(lo, hi, size=length, dtype=np.int64) for _ in range(nodes)]


def exact_totals(inputs: list[np.ndarray], bits: int) -> np.ndarray:
    if bits + len(inputs).bit_length() <= 63:
        return np.sum(np.stack(inputs), axis=0)  # cannot overflow int64
    return np.sum(np.stack([x.astype(object) for x in inputs]), axis=0)  # Python ints


def packing_for(public: PaillierPublicKey, value_bits: int, nodes: int) -> Packing:
    top = 1 << (value_bits - 1)
    ring = plan_ring(-nodes * top, nodes * (top - 1)).bits
    return Packing(value_bits=ring, max_contributors=nodes, plaintext_bits=public.plaintext_bits)


def threshold_decrypt(tp: ThresholdPublic, holders: Sequence[KeyShare], total: list,
                      packing: Packing, length: int, expected: np.ndarray, label: str,
                      between: Callable[[], None] = lambda: None,
                      ) -> tuple[dict[int, list], list[float], list[float], float, float]:
    """What the protocol does, timed: each holder's single-threaded partial decryption and
    its proof of correctness, on its own (holders run on separate machines; ``between``
    runs after each), then the researcher's verification of every proof, combination and
    unpacking. Returns (partials, wall and CPU seconds per holder, verify + combine s,
    unpack s) after checking the totals."""
    partials, per_holder, per_holder_cpu, proofs = {}, [], [], {}
    binding = b"bench"
    rng = SystemRandom()
    for share in holders:
        progress(f"{label}: holder {share.index}, partial decryption and proof of "
                 f"{len(total):,} ciphertexts on one thread")

        def work(s: KeyShare = share) -> tuple[list, PartialProof]:
            values = s.partial_decrypt(total)
            return values, prove(s, total, values, binding, rng)

        seconds, cpu, (partials[share.index], proofs[share.index]) = once(work)
        per_holder.append(seconds)
        per_holder_cpu.append(cpu)
        between()

    def researcher() -> list[int]:
        for index, values in partials.items():
            verify(tp, index, total, values, proofs[index], binding)
        return tp.combine(partials)

    combine_s, _, plaintexts = once(researcher)
    contributors = packing.max_contributors  # every node contributed
    unpack_s, _, totals = once(lambda: packing.unpack(plaintexts, length, contributors))
    assert np.array_equal(np.array(totals, dtype=expected.dtype), expected), \
        f"{label}: the decrypted totals are wrong"
    return partials, per_holder, per_holder_cpu, combine_s, unpack_s


def run(argv: Sequence[str] | None = None) -> list[str]:
    a = parse(argv or [])
    if not 1 <= a.threshold <= a.nodes:
        raise SystemExit("--threshold lies in [1, --nodes]")
    lines = [f"paillier: {a.bits}-bit key, {a.nodes} nodes, threshold {a.threshold}, "
             f"{a.values:,} signed {a.value_bits}-bit values per node",
             f"  at the start: {load()}"]

    # --- keys and tables ------------------------------------------------------------------
    progress("key generation")
    keygen_s, _, key = once(lambda: generate_keypair(a.bits, SystemRandom()))
    deal_s, _, (tp, shares) = once(lambda: deal(key, a.nodes, a.threshold, SystemRandom()))
    public = tp.public
    phe_public = phe.PaillierPublicKey(public.n)
    phe_private = phe.PaillierPrivateKey(phe_public, key.p, key.q)
    packing = packing_for(public, a.value_bits, a.nodes)
    table_s, encryptors = [], []
    for _ in range(a.nodes):
        seconds, _, enc = once(lambda: FastEncryptor(public, SystemRandom()))
        table_s.append(seconds)
        encryptors.append(enc)
    lines += [
        f"  packing: ring {packing.value_bits} bits, slot {packing.slot_bits} bits, "
        f"{packing.slots} values per ciphertext, {packing.plaintexts_for(a.values):,} "
        f"ciphertexts per node",
        f"  key generation {sec(keygen_s)} + dealing {deal_s * 1e3:.1f} ms (once per federation); "
        f"encryption table per node {spread(table_s, sec)} (once per key and process)"]

    # --- encryption: each node in turn, each followed by a phe sample ----------------------
    rng = np.random.default_rng(0)
    inputs = signed_inputs(rng, a.value_bits, a.nodes, a.values)
    expected = exact_totals(inputs, a.value_bits)
    ours_enc, phe_enc, contributions, phe_ciphertexts = [], [], [], []
    ours_enc_cpu, phe_enc_cpu = [], []
    for node, (values, enc) in enumerate(zip(inputs, encryptors, strict=True)):
        progress(f"node {node + 1}: pack and encrypt {a.values:,} values")
        seconds, cpu, cs = once(lambda v=values, e=enc: e.encrypt_many(packing.pack(v)))
        ours_enc.append(a.values / seconds)
        ours_enc_cpu.append(a.values / cpu)
        contributions.append(cs)
        sample = [int(v) for v in values[:a.phe_encrypt_sample]]
        seconds, cpu, encrypted = once(lambda s=sample: [phe_public.encrypt(v) for v in s])
        phe_enc.append(len(sample) / seconds)
        phe_enc_cpu.append(len(sample) / cpu)
        phe_ciphertexts += list(zip(sample, encrypted, strict=True))
    enc_ratio = statistics.median(ours_enc) / statistics.median(phe_enc)

    # --- the aggregator ------------------------------------------------------------------------
    wire = [public.to_bytes(cs) for cs in contributions]
    combine = timed(lambda: public.combine(contributions))
    parse_combine = timed(lambda: public.combine([public.from_bytes(w) for w in wire]), repeat=3)
    total = public.combine([public.from_bytes(w) for w in wire])

    # --- threshold decryption, with phe decryption samples between the holders -------------
    holders = shares[:a.threshold]
    decrypt_sample = phe_ciphertexts[:a.phe_decrypt_sample]
    phe_dec: list[float] = []
    phe_dec_cpu: list[float] = []

    def phe_decrypt_round() -> None:
        seconds, cpu, plain = once(lambda: [phe_private.decrypt(e) for _, e in decrypt_sample])
        assert plain == [v for v, _ in decrypt_sample], "phe decrypted wrongly"
        phe_dec.append(seconds / len(decrypt_sample))
        phe_dec_cpu.append(cpu / len(decrypt_sample))

    phe_decrypt_round()
    partials, per_holder, per_holder_cpu, combine_s, unpack_s = threshold_decrypt(
        tp, holders, total, packing, a.values, expected, f"{a.value_bits}-bit values",
        between=phe_decrypt_round)
    phe_per_value = statistics.median(phe_dec)
    decrypt_wall = max(per_holder) + combine_s + unpack_s
    per_value = decrypt_wall / a.values

    # --- the table ---------------------------------------------------------------------------
    w = 34
    lines += [
        f"  {'step':<{w}} {'ours':>16} {'phe (sampled)':>16} {'ratio':>9}   target",
        f"  {'encrypt values/s, one node':<{w}} {rate(statistics.median(ours_enc)):>16} "
        f"{rate(statistics.median(phe_enc)):>16} {enc_ratio:>8,.0f}x   >= {TARGET_ENCRYPT_RATIO}x"
        f"  {verdict(enc_ratio >= TARGET_ENCRYPT_RATIO)}",
        f"      ours per node {spread(ours_enc, rate)}; phe "
        f"{spread(phe_enc, rate)} ({a.phe_encrypt_sample} values per round)",
    ]
    combine_rate = (a.nodes - 1) * a.values / combine[0]
    lines += [
        f"  {'aggregator combine, values/s':<{w}} {rate(combine_rate):>16} {'':>16} {'':>9}   "
        f">= {TARGET_COMBINE_RATE:,}/s  {verdict(combine_rate >= TARGET_COMBINE_RATE)}",
        f"      ({a.nodes - 1} x {a.values:,} additions in {combine[0] * 1e3:.1f} ms "
        f"[{combine[1] * 1e3:.1f}-{combine[2] * 1e3:.1f}]; counting all {a.nodes} x {a.values:,}: "
        f"{rate(a.nodes * a.values / combine[0])}; with parsing and checking the wire bytes: "
        f"{rate(a.nodes * a.values / parse_combine[0])} of all values)",
    ]
    dec_ratio = phe_per_value / per_value
    lines += [
        f"  {'threshold decrypt, per value':<{w}} {ms(per_value):>16} {ms(phe_per_value):>16} "
        f"{dec_ratio:>8.1f}x   >= {TARGET_DECRYPT_RATIO}x  "
        f"{verdict(dec_ratio >= TARGET_DECRYPT_RATIO)}",
        f"      slowest of {a.threshold} holders {sec(max(per_holder))} (each: "
        f"{', '.join(sec(s) for s in per_holder)}; one thread, own machine; with its proof) + "
        f"verifying the proofs and combining "
        f"{sec(combine_s)} + unpack {sec(unpack_s)}, over {a.values:,} values; phe per value "
        f"{spread(phe_dec, ms)} ({len(decrypt_sample)} values per round, {len(phe_dec)} rounds)",
    ]

    # --- secondary: two threads per holder ----------------------------------------------
    if a.workers > 1:
        share = holders[0]
        progress(f"holder {share.index}: partial decryption with {a.workers} threads")
        seconds, _, threaded = once(lambda: share.partial_decrypt(total, workers=a.workers))
        assert threaded == partials[share.index], "threaded partial decryption differs"
        threaded_value = (seconds + combine_s + unpack_s) / a.values
        lines.append(
            f"  {f'  ... {a.workers} threads per holder':<{w}} {ms(threaded_value):>16} "
            f"{ms(phe_per_value):>16} {phe_per_value / threaded_value:>8.1f}x   (holder "
            f"{share.index} {sec(seconds)} vs {sec(per_holder[0])} on one thread; holders are "
            f"alike, so one was timed)")

    # --- secondary: 64-bit values, wider slots ----------------------------------------------
    if a.wide_values > 0:
        wide_bits = 64
        wide = packing_for(public, wide_bits, a.nodes)
        wide_inputs = signed_inputs(rng, wide_bits, a.nodes, a.wide_values)
        wide_expected = exact_totals(wide_inputs, wide_bits)
        progress(f"{wide_bits}-bit values: encrypting {a.nodes} x {a.wide_values:,}")
        wide_total = public.combine([e.encrypt_many(wide.pack(v))
                                     for v, e in zip(wide_inputs, encryptors, strict=True)])
        _, holder_s, _, wide_combine_s, wide_unpack_s = threshold_decrypt(
            tp, holders, wide_total, wide, a.wide_values, wide_expected,
            f"{wide_bits}-bit values")
        wide_value = (max(holder_s) + wide_combine_s + wide_unpack_s) / a.wide_values
        lines.append(
            f"  {f'  ... signed {wide_bits}-bit values':<{w}} {ms(wide_value):>16} "
            f"{ms(phe_per_value):>16} {phe_per_value / wide_value:>8.1f}x   (ring "
            f"{wide.value_bits} bits, slot {wide.slot_bits}, {wide.slots} values per "
            f"ciphertext; measured on {a.wide_values:,} values per node, one thread)")

    enc_cpu_ratio = statistics.median(ours_enc_cpu) / statistics.median(phe_enc_cpu)
    dec_cpu = (max(per_holder_cpu) + combine_s + unpack_s) / a.values
    phe_dec_cpu_value = statistics.median(phe_dec_cpu)
    lines += [
        f"  the same by CPU time of the timing thread (what an unloaded machine shows): "
        f"encrypt {rate(statistics.median(ours_enc_cpu))} vs phe "
        f"{rate(statistics.median(phe_enc_cpu))} = {enc_cpu_ratio:,.0f}x; decrypt per value "
        f"{ms(dec_cpu)} vs phe {ms(phe_dec_cpu_value)} = {phe_dec_cpu_value / dec_cpu:.1f}x "
        f"(holders' CPU {', '.join(sec(s) for s in per_holder_cpu)})",
        f"  at the end: {load()}",
    ]
    lines.append(f"  all decrypted totals equal numpy's exact sums ({a.nodes} x {a.values:,}"
                 + (f" and {a.nodes} x {a.wide_values:,} wide" if a.wide_values > 0 else "")
                 + ")")
    return lines


if __name__ == "__main__":
    print("\n".join(run(sys.argv[1:])))
