"""One node's masking cost for d = 1,000,000 values, next to the raw AES-128-CTR keystream
for the same number of mask words, measured side by side in one run."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bench.common import timed
from crypto.encoding import RingVector
from crypto.prg import MaskExpander

D = 1_000_000


def raw_keystream(n_masks: int, d: int) -> None:
    zeros = bytes(8 * d)
    out = bytearray(8 * d + 15)
    for i in range(n_masks):
        key = i.to_bytes(16, "big")
        Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update_into(zeros, out)


def node_masking(n_masks: int, d: int, bits: int) -> None:
    value = RingVector.zeros(bits, d)
    expander = MaskExpander(bits, d)
    masked = value.copy()
    for i in range(n_masks):
        key = i.to_bytes(16, "big")
        if i % 2:
            expander.sub_mask_(masked, key)
        else:
            expander.add_mask_(masked, key)


def run() -> list[str]:
    lines = [f"masking one node, d = {D:,} (median of 5; min-max in brackets)"]
    for peers in (10, 50):
        n_masks = peers + 1  # pairwise masks and the self mask
        ks = timed(lambda n=n_masks: raw_keystream(n, D))
        for bits in (64, 128):
            limbs = bits // 64
            raw = timed(lambda n=n_masks, L=limbs: raw_keystream(n, D * L)) if limbs > 1 else ks
            ours = timed(lambda n=n_masks, b=bits: node_masking(n, D, b))
            lines.append(
                f"  peers={peers:3d} ring={bits:3d}b  keystream {raw[0]:.3f}s "
                f"[{raw[1]:.3f}-{raw[2]:.3f}]  masking {ours[0]:.3f}s [{ours[1]:.3f}-{ours[2]:.3f}]"
                f"  ratio {ours[0] / raw[0]:.2f}x (aim <= 2x)")
    _ = np  # numpy is what the masking adds with; imported for clarity of the dependency
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
