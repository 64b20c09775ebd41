"""`fedtally demo` (what `make demo` runs) works in both protections, shows every section
(regression, Kaplan-Meier curves saved as a PNG, a DP count with its budget, an audit of a
node's ledger) and what the aggregator saw; it names its data model; it keeps its folder
only when asked, and names the folder only then."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from fedtally.cli import main
from fedtally.demo import KM_FILE, run_demo

SECTIONS = ("What the federation holds", "Linear regression: mrs_90d on",
            "Survival after stroke, by sex (Kaplan-Meier)",
            "Differential privacy: a noisy count and the budget it spends",
            "What the aggregator saw", "Auditing hosp_a's privacy ledger")


@pytest.mark.parametrize(("protection", "seen"), [("mask", "MaskedInput from"),
                                                   ("paillier", "EncryptedInput from")])
def test_the_demo_runs_every_section_and_keeps_its_folder_when_asked(
        protection: str, seen: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if protection == "mask":  # `fedtally demo --keep`: a new temporary folder, kept, named
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        assert main(["demo", "--keep", "--scale", "0.2"]) == 0
        (workdir,) = list(tmp_path.iterdir())
    else:  # --workdir: that folder, kept and named
        workdir = tmp_path / protection
        run_demo(workdir=workdir, scale=0.2, protection=protection)
    out = capsys.readouterr().out
    assert "all patients:" in out and "Demo finished" in out
    for title in SECTIONS:
        assert f"== {title}" in out, title
    assert seen in out
    assert "in all" in out.split("What the aggregator saw")[1]
    # the data model has a name, not the inferred model's "local:1"
    assert "data model stroke:1" in out and "local:1" not in out
    # the regression's summary, and its agreement with least squares on the pooled rows
    regression = out.split("Linear regression")[1].split("== Survival")[0]
    assert "OLS Regression Results" in regression and "thrombolysis" in regression
    gap = float(re.search(r"largest difference (\S+);", regression).group(1))
    assert gap < 1e-8
    # the curves were drawn to a real PNG in the kept folder, at the path printed
    png = workdir / KM_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert str(png) in out
    # a DP count, the budget before (nothing spent) and after (epsilon 0.5 spent per node)
    dp = out.split("== Differential privacy")[1].split("== What the aggregator saw")[0]
    assert "count with epsilon 0.5:" in dp and "noise std" in dp
    before, after = dp.split("The budgets after it")
    assert "remaining_epsilon" in before and "0.500" not in before
    assert after.count("0.500") >= 3
    # the audit verified hosp_a's ledger against the receipts the client kept
    audit = out.split("== Auditing hosp_a's privacy ledger")[1]
    assert "hosp_a/ledger.db: valid" in audit and "receipts checked" in audit
    assert "--authority" in audit and "warning" not in audit  # pinned, as auditors pin
    assert "1 answered-dp" in audit
    assert f"The federation's files are kept in {workdir}" in out
    assert (workdir / "hosp_a" / "ledger.db").exists() and (workdir / "aggregator.log").exists()


def test_the_demo_removes_its_folder_and_never_names_it_unless_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    run_demo(scale=0.2)
    out = capsys.readouterr().out
    assert "Demo finished" in out and "files are kept" not in out
    assert str(tmp_path) not in out and "fedtally-demo-" not in out
    assert list(tmp_path.iterdir()) == []  # removed, PNG and all

