"""`fedtally demo` (what `make demo` runs) works in both protections and shows what the
aggregator saw."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtally.demo import run_demo


@pytest.mark.parametrize(("protection", "seen"), [("mask", "MaskedInput from"),
                                                   ("paillier", "EncryptedInput from")])
def test_the_demo_runs_and_shows_what_the_aggregator_saw(
        protection: str, seen: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_demo(workdir=tmp_path / protection, scale=0.2, protection=protection)
    out = capsys.readouterr().out
    assert "all patients:" in out and "Demo finished" in out
    assert seen in out
    assert "in all" in out.split("What the aggregator saw")[1]
