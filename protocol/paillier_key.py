"""The federation's threshold Paillier key as every party sees it (public parts only)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from crypto.kdf import context
from crypto.packing import Packing
from crypto.threshold_paillier import ThresholdPublic
from protocol.errors import ConfigurationError
from protocol.params import RoundParams


@dataclass(frozen=True)
class FederationKey:
    """``holders[i]`` holds key share ``i + 1``; any ``threshold`` of them decrypt."""

    threshold: ThresholdPublic
    holders: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.holders) != self.threshold.holders or len(set(self.holders)) != len(
                self.holders):
            raise ConfigurationError("one distinct key holder per key share is required")

    def index(self, name: str) -> int:
        try:
            return self.holders.index(name) + 1
        except ValueError:
            raise ConfigurationError(f"{name} holds no share of the decryption key") from None

    @cached_property
    def fingerprint(self) -> bytes:
        """Names this key (modulus, threshold, holders) in every contribution signature."""
        t = self.threshold
        return hashlib.sha256(context(b"fedtally/v1", "paillier-key", t.public.n, t.threshold,
                                      t.verification_base, *t.verification_keys,
                                      *self.holders)).digest()

    def packing(self, params: RoundParams) -> Packing:
        return Packing(params.ring_bits, len(params.participants),
                       self.threshold.public.plaintext_bits)

    def ciphertext_bytes(self, params: RoundParams) -> int:
        """Bytes of one node's contribution (and of the product) in this round."""
        count = self.packing(params).plaintexts_for(params.vector_length)
        return count * self.threshold.public.ciphertext_size
