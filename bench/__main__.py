"""Run every benchmark: `python -m bench` (add names to run only some)."""

from __future__ import annotations

import sys

from bench import (
    federation,
    masking,
    modes,
    nodes,
    paillier,
    proofs,
    regression,
    scale,
    secure_sum,
    verifiable,
)
from bench.common import machine

SUITES = {"masking": masking.run, "secure_sum": secure_sum.run, "federation": federation.run,
          "regression": regression.run, "paillier": paillier.run, "modes": modes.run,
          "nodes": nodes.run, "verifiable": verifiable.run, "proofs": proofs.run,
          "scale": scale.run}


def main(argv: list[str]) -> None:
    chosen = argv or list(SUITES)
    print(f"machine: {machine()}")
    for name in chosen:
        for line in SUITES[name]():
            print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
