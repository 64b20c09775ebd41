"""The ledger receipts a researcher keeps: each node's signed ledger head after its entry
for every query the researcher asked.

A receipt only counts once its signature verifies against the node's key in the manifest.
The newest per node is kept in memory (``fed.receipts()``) and every receipt is appended to
a small file beside the researcher's key, which an auditor can pass to
``fedtally audit verify --receipts``: a node's ledger that no longer holds an entry a receipt
names was truncated or rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from privacy.errors import PrivacyError
from privacy.head import HeadReceipt, write_receipts
from protocol.errors import AuthenticationError


class Receipts:
    def __init__(self, node_keys: Mapping[str, bytes], path: Path | None = None) -> None:
        self._owners = {key: name for name, key in node_keys.items()}
        self.path = path
        self.newest: dict[str, HeadReceipt] = {}

    def keep(self, lines: Iterable[str]) -> None:
        """Verify and keep the receipts that came with a result; a receipt that does not
        verify is refused (the aggregator relays them and cannot forge one)."""
        accepted = []
        for line in lines:
            try:
                receipt = HeadReceipt.from_json(line)
                name = self._owners.get(receipt.node_key)
                if name is None:
                    raise AuthenticationError("a ledger receipt names no node of the federation")
                receipt.check_signature(receipt.node_key)
            except PrivacyError as exc:
                raise AuthenticationError(f"a ledger receipt does not verify: {exc}") from None
            accepted.append(receipt)
            if name not in self.newest or receipt.seq > self.newest[name].seq:
                self.newest[name] = receipt
        if accepted and self.path is not None:
            write_receipts(self.path, accepted)

    def frame(self) -> pd.DataFrame:
        """The newest receipt per node: its head ``SEQ:HEX`` and the receipt line."""
        rows = [{"node": name, "seq": r.seq, "head": r.text, "receipt": r.to_json()}
                for name, r in sorted(self.newest.items())]
        return pd.DataFrame(rows, columns=["node", "seq", "head", "receipt"]).set_index("node")
