"""Differential privacy through a real federation: budgets charged at every node before
anything leaves, BudgetExhausted naming what remains, fed.budget(), the ledgers where the
issue says, and `fedtally audit verify / report` on them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import fedtally
from fedtally.synthetic import stroke_model, three_hospitals

#: exact answers granted too: the test checks they still work beside the metered ones
POLICY = {"budgets": {"alice": {"*": {"rho": 1.0}}}, "exact_access": ["alice"]}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("dp")
    data = three_hospitals(seed=11, scale=0.1)
    with fedtally.local_federation(data, stroke_model(), workdir=workdir,
                                   policy=POLICY) as fed:
        yield fed, workdir, data


def audit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedtally", "audit", *args],
                          capture_output=True, text=True, timeout=120)


def test_budgets_are_charged_and_enforced_at_every_node(federation) -> None:
    fed, workdir, data = federation
    rows = sum(len(frame) for frame in data.values())
    first = fed.count(privacy=fedtally.DP(rho=0.4))
    assert isinstance(first, fedtally.NoisyValue)
    assert abs(first.value - rows) < 10 * first.noise_std
    assert first.privacy["rho"] == pytest.approx(0.4)
    stats = fed.descriptive_stats(["age"], privacy=fedtally.DP(rho=0.4))
    assert {"count_noise_std", "mean_ci_low", "mean_ci_high"} <= set(stats.columns)
    with pytest.raises(fedtally.BudgetExhausted, match="0.2 remaining"):
        fed.count(privacy=fedtally.DP(rho=0.4))
    budget = fed.budget()
    assert set(budget.index.get_level_values("node")) == set(data)
    # each node lists its "*" grant (what a dataset it does not name gets) beside the spent one
    budget = budget.drop("*", level="dataset")
    assert budget["spent_rho"].tolist() == pytest.approx([0.8] * 3)
    assert budget["remaining_rho"].tolist() == pytest.approx([0.2] * 3)
    # exact queries cost no budget and still work
    assert fed.count() == rows
    assert fed.count(privacy=fedtally.DP(rho=0.2)).noise_std > 0
    with pytest.raises(fedtally.QueryError, match="bounds"):
        fed.descriptive_stats(["age"], privacy=fedtally.DP(rho=0.01, bounds={"age": (5, 1)}))


def test_ledgers_verify_and_report(federation, tmp_path: Path) -> None:
    fed, workdir, data = federation
    manifest = workdir / "federation.json"
    for node in data:
        ledger = workdir / node / "ledger.db"
        assert ledger.is_file()
        out = audit("verify", str(ledger), "--federation", str(manifest))
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.strip().splitlines()) == 1
    html, report = tmp_path / "report.html", tmp_path / "report.json"
    ledgers = [str(workdir / node / "ledger.db") for node in data]
    out = audit("report", *ledgers, "--federation", str(manifest), "--html", str(html),
                "--json", str(report))
    assert out.returncode == 0, out.stderr
    assert "<svg" in html.read_text()
    assert json.loads(report.read_text())


def test_a_tampered_ledger_fails_verification(federation, tmp_path: Path) -> None:
    fed, workdir, data = federation
    node = next(iter(data))
    copy = tmp_path / "ledger.db"
    source = sqlite3.connect(workdir / node / "ledger.db")
    target = sqlite3.connect(copy)
    source.backup(target)
    source.close()
    tables = [r[0] for r in target.execute("select name from sqlite_master where type='table'")]
    table = next(t for t in tables if "entr" in t)
    for (trigger,) in target.execute("select name from sqlite_master where type='trigger'"):
        target.execute(f"drop trigger {trigger}")
    columns = [r[1] for r in target.execute(f"pragma table_info({table})")]
    column = next(c for c in columns if c in ("researcher", "rho_nano", "dataset"))
    value = "mallory" if column != "rho_nano" else 1
    target.execute(f"update {table} set {column} = ? where rowid = (select max(rowid) from "
                   f"{table})", (value,))
    target.commit()
    target.close()
    out = audit("verify", str(copy), "--federation", str(workdir / "federation.json"))
    assert out.returncode == 1
    assert "entry" in (out.stdout + out.stderr)
