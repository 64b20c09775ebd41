"""A client used after its connection was closed (after its `with` block) says so at
once; it waited out its whole timeout (600 s) before."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import fedtally
from fedtally.synthetic import three_hospitals


def test_a_closed_client_says_so_at_once(tmp_path: Path) -> None:
    with fedtally.local_federation(three_hospitals(scale=0.02), workdir=tmp_path,
                                   max_colluding_nodes=0) as fed:
        assert fed.count() > 0
    started = time.monotonic()
    for ask in (fed.count, fed.catalog, fed.budget):
        with pytest.raises(fedtally.ServiceUnavailable, match="connection is closed"):
            ask()
    assert time.monotonic() - started < 5
    fed.close()  # closing again does nothing
