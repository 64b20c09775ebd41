"""Proofs of plaintext knowledge in Paillier mode: what they cost next to encrypting.

One proof covers a node's whole contribution of ``K`` ciphertexts (one commitment, a
128-bit challenge per ciphertext). For ``K`` from one ciphertext (a count) to 1,177 (100,000
signed 32-bit values, 85 per ciphertext) under one 3072-bit key, interleaved in each repeat:
the node's encryption of the ``K`` ciphertexts (the baseline: what a contribution cost
before), its proof, and one verification (the aggregator, each decrypting node and the
researcher each verify every other contributor's proof). Wall and CPU time of the timing
thread, median of the repeats. Every proof is checked to verify and a forged ciphertext to
fail, so a verifier that accepted anything could not pass.

``python -m bench proofs``; ``python -m bench.proofs --help`` lists the options.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence

from bench.paillier import load, once, progress
from crypto.paillier import (
    DEFAULT_KEY_BITS,
    FastEncryptor,
    PaillierPublicKey,
    generate_keypair,
)
from crypto.plaintext_proof import InvalidPlaintextProof, prepare, proof_size, prove, verify
from crypto.randomness import SystemRandom

SIZES = (1, 12, 100, 1177)
BINDING = b"bench/proofs"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.proofs",
                                description=__doc__.split("\n")[0])
    p.add_argument("--bits", type=int, default=DEFAULT_KEY_BITS, help="modulus size")
    p.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")],
                   default=list(SIZES), help="ciphertexts per proof, comma-separated")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--nodes", type=int, default=3, help="nodes in the round estimate")
    return p.parse_args(list(argv))


def measure(public: PaillierPublicKey, encryptor: FastEncryptor, count: int, repeats: int,
            rng: SystemRandom) -> tuple[dict[str, float], dict[str, float]]:
    """Median (wall, CPU) seconds of encrypting ``count`` plaintexts, proving and verifying,
    interleaved in each repeat; checks that every proof verifies and a forged one fails."""
    plaintexts = [(rng.below(public.n) if j % 2 else j) for j in range(count)]
    samples: dict[str, list[tuple[float, float]]] = {"enc": [], "prove": [], "verify": []}
    for _ in range(repeats):
        wall, cpu, (cs, exponents) = once(lambda: encryptor.encrypt_with_exponents(plaintexts))
        samples["enc"].append((wall, cpu))
        wall, cpu, proof = once(lambda c=cs, e=exponents: prove(public, c, plaintexts, e,
                                                                BINDING, rng))
        samples["prove"].append((wall, cpu))
        wall, cpu, _ = once(lambda c=cs, p=proof: verify(public, c, p, BINDING))
        samples["verify"].append((wall, cpu))
        forged = [public.add(cs[0], cs[-1] if count > 1 else 1 + public.n), *cs[1:]]
        try:
            verify(public, forged, proof, BINDING)
        except InvalidPlaintextProof:
            continue
        raise AssertionError("a proof verified for a ciphertext it does not cover")
    return ({k: statistics.median(w for w, _ in v) for k, v in samples.items()},
            {k: statistics.median(c for _, c in v) for k, v in samples.items()})


def run(argv: Sequence[str] | None = None) -> list[str]:
    a = parse(argv or [])
    rng = SystemRandom()
    lines = [f"proofs of plaintext knowledge: {a.bits}-bit key, median of {a.repeats} "
             f"interleaved repeats (wall; CPU of the timing thread)",
             f"  at the start: {load()}"]
    progress("key generation and tables")
    key = generate_keypair(a.bits, rng)
    public = key.public
    encryptor_s, _, encryptor = once(lambda: FastEncryptor(public, rng))
    table_s, _, _ = once(lambda: prepare(public))
    lines.append(f"  tables, once per key and process: encryption {encryptor_s:.2f} s, "
                 f"proofs {table_s:.2f} s; a proof is {proof_size(public)} bytes whatever K")
    lines.append(f"  {'K':>6} {'encrypt (baseline)':>28} {'prove':>28} {'verify one':>28} "
                 f"{'prove/enc':>12} {'verify/enc':>12}")
    per_size: dict[int, tuple[float, float, float]] = {}
    for count in a.sizes:
        progress(f"K = {count}")
        wall, cpu = measure(public, encryptor, count, a.repeats, rng)

        def cell(kind: str, n: int = count, w: dict[str, float] = wall,
                 c: dict[str, float] = cpu) -> str:
            return (f"{w[kind] * 1e3:.1f} ({c[kind] * 1e3:.1f}) ms, "
                    f"{w[kind] / n * 1e3:.2f} ms/ct")

        def ratio(kind: str, w: dict[str, float] = wall, c: dict[str, float] = cpu) -> str:
            return f"{w[kind] / w['enc']:.2f} ({c[kind] / c['enc']:.2f})"

        lines.append(f"  {count:>6,} {cell('enc'):>28} {cell('prove'):>28} "
                     f"{cell('verify'):>28} {ratio('prove'):>12} {ratio('verify'):>12}")
        per_size[count] = (wall["enc"], wall["prove"], wall["verify"])
    n = a.nodes
    for count, (enc, proof_s, verify_s) in per_size.items():
        if count == max(per_size):
            lines.append(
                f"  a round of {n} nodes with K = {count:,}: each node adds "
                f"{proof_s * 1e3:.1f} ms (prove) + {n - 1} x {verify_s * 1e3:.1f} ms (verify "
                f"the others) to its {enc * 1e3:.1f} ms of encryption "
                f"(+{(proof_s + (n - 1) * verify_s) / enc:.0%}); the aggregator and the "
                f"researcher each verify {n} proofs: {n * verify_s * 1e3:.1f} ms")
    lines.append(f"  at the end: {load()}")
    return lines


if __name__ == "__main__":
    print("\n".join(run(sys.argv[1:])))
