"""The auditors' report: JSON/CSV content, and the HTML rendered in headless Chromium."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import nacl.signing
import pytest

from privacy.audit import cli_report
from privacy.errors import BudgetExhausted
from privacy.ledger import Ledger
from privacy.report import build_report

CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
KEYS = {name: nacl.signing.SigningKey(bytes([i]) * 32)
        for i, name in enumerate(("hospital-a", "hospital-b"), start=1)}


def _ledger(path: Path, node: str, charges: int, day: int) -> None:
    key = KEYS[node]
    ticks = iter(range(0, 24 * 60, 7))
    limits = {"edsd": 0.5, "ppmi": 0.3}

    def clock() -> str:
        minute = next(ticks)
        return f"2025-04-{day:02d}T{minute // 60:02d}:{minute % 60:02d}:00Z"

    with Ledger(path, key, bytes(key.verify_key), clock=clock) as ledger:
        for i in range(charges):
            who = ("alice", "bob")[i % 2]
            try:
                r = ledger.charge(who, ["edsd", "ppmi"] if i % 3 == 0 else ["edsd"], 0.1,
                                  limits.get, query_id=f"{day:02x}{i:04x}", method="count",
                                  mechanism="distributed discrete gaussian", epsilon=1.0,
                                  delta=1e-6)
            except BudgetExhausted:
                continue
            if i == 4:
                ledger.refund(r, "aggregator gone before any send")
            else:
                ledger.release(r)
        ledger.refuse("carol", ["edsd"], "algorithm-not-allowed", query_id="cc", method="pca")


@pytest.fixture(scope="module")
def ledgers(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Path, bytes]]:
    root = tmp_path_factory.mktemp("report")
    out = []
    for node, charges, day in (("hospital-a", 14, 1), ("hospital-b", 6, 2)):
        path = root / node / "ledger.db"
        path.parent.mkdir()
        _ledger(path, node, charges, day)
        out.append((node, path, bytes(KEYS[node].verify_key)))
    return out


def test_json_report_has_spending_budgets_and_refusals(ledgers) -> None:
    data = json.loads(build_report(ledgers).to_json())
    assert [n["valid"] for n in data["ledgers"]] == [True, True]
    budgets = {(b["node"], b["researcher"], b["dataset"]): b for b in data["budgets"]}
    a_alice = budgets["hospital-a", "alice", "edsd"]
    # seven attempts of 0.1 on a budget of 0.5: one refunded, so six charged, the last refused
    assert (a_alice["spent_rho"], a_alice["limit_rho"], a_alice["remaining_rho"]) == (
        "0.5", "0.5", "0")
    assert (a_alice["charges"], a_alice["refunds"], a_alice["refusals"]) == (6, 1, 1)
    refused = {(r["node"], r["researcher"], r["reason"]) for r in data["refusals"]}
    assert ("hospital-a", "carol", "algorithm-not-allowed") in refused
    assert any(r[2] == "budget-exhausted" for r in refused)
    series = {(s["node"], s["researcher"], s["dataset"]): s["points"] for s in data["spending"]}
    points = series["hospital-a", "alice", "edsd"]
    assert [p["spent_rho"] for p in points][:2] == ["0.1", "0.2"]
    assert all(p["time"].startswith("2025-04-01") for p in points)


def test_budgets_given_override_the_recorded_limits(ledgers) -> None:
    budgets = {"hospital-a": {"alice": {"*": {"rho": 2}}, "*": {"edsd": 1.0}}}
    rows = {(b.node, b.researcher, b.dataset): b for b in build_report(ledgers, budgets).budgets}
    assert rows["hospital-a", "alice", "ppmi"].limit_nano == 2 * 10**9
    assert rows["hospital-a", "bob", "edsd"].limit_nano == 10**9
    assert rows["hospital-a", "bob", "ppmi"].limit_nano is None  # not granted
    assert rows["hospital-b", "alice", "edsd"].limit_nano == 500_000_000  # recorded


def test_csv_lists_every_verified_entry(ledgers) -> None:
    report = build_report(ledgers)
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert len(rows) == sum(n.entries for n in report.nodes)
    assert {r["node"] for r in rows} == {"hospital-a", "hospital-b"}
    assert rows[1]["kind"] == "charge" and rows[1]["rho"] == "0.1"


def test_an_invalid_ledger_is_reported_and_left_out(ledgers, tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    shutil.copy(ledgers[1][1], bad)
    conn = sqlite3.connect(bad)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("UPDATE entries SET rho_nano = 1 WHERE seq = 1")
    conn.commit()
    conn.close()
    report = build_report([ledgers[0], ("hospital-b", bad, ledgers[1][2])])
    status = {n.node: n for n in report.nodes}
    assert status["hospital-a"].valid and not status["hospital-b"].valid
    assert "ledger entry 1" in status["hospital-b"].error
    assert {b.node for b in report.budgets} == {"hospital-a"}
    assert "INVALID" in report.to_html()


def test_cli_report_writes_files_and_fails_on_an_invalid_ledger(ledgers, tmp_path: Path,
                                                               capsys) -> None:
    html, js, cs = tmp_path / "r.html", tmp_path / "r.json", tmp_path / "r.csv"
    assert cli_report(ledgers, html=html, json=js, csv=cs) == 0
    assert html.stat().st_size and json.loads(js.read_text())["format"]
    assert cs.read_text().startswith("node,seq,")
    assert capsys.readouterr().out.count("valid") == 2
    missing = [*ledgers, ("hospital-c", tmp_path / "absent.db", ledgers[0][2])]
    assert cli_report(missing, html=html) == 1
    assert "hospital-c: INVALID" in capsys.readouterr().err


def test_html_is_self_contained(ledgers) -> None:
    page = build_report(ledgers).to_html()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"""(src|href)\s*=|url\(""", page)
    # the only URL is the SVG namespace name, which is never fetched
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) == {"http://www.w3.org/2000/svg"}


def _chromium() -> Path:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = ("headless Chromium is needed to render the audit report: install it with "
               "`apt-get update && apt-get install -y chromium` (Debian package 'chromium', "
               "binary /usr/bin/chromium)")
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _render(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(_chromium()), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
         "--window-size=1200,2000", *mode, page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_html_report_renders_with_its_plots_in_headless_chromium(ledgers,
                                                                 tmp_path: Path) -> None:
    report = build_report(ledgers)
    page = tmp_path / "report.html"
    page.write_text(report.to_html(), encoding="utf-8")
    done = _render(page, tmp_path / "profile-dom", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # the DOM Chromium built (not our string): every chart and series is there
    spending = re.findall(r'<svg class="chart chart-spending"[^>]*data-node="([^"]+)"', dom)
    assert spending == ["hospital-a", "hospital-b"]
    assert len(re.findall(r'<path class="series"', dom)) == len(report.spending)
    assert len(re.findall(r'<line class="limit"', dom)) == len(report.spending)
    assert len(re.findall(r'<svg class="chart chart-budgets"', dom)) == 1
    assert len(re.findall(r'<rect class="bar-spent"', dom)) == len(report.budgets)
    table = re.search(r'<table class="refusals">(.*?)</table>', dom, re.S)
    assert table and table.group(1).count("<tr>") == len(report.refusals) + 1
    # and it paints: a screenshot with the charts' coloured pixels
    shot = tmp_path / "report.png"
    done = _render(page, tmp_path / "profile-png", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
    series_blue = (0x4E, 0x79, 0xA7)  # the first palette colour: lines and spent bars
    assert any(c == series_blue and n > 200 for n, c in colours), "no chart pixels painted"
    assert sum(n for n, c in colours if c != (255, 255, 255)) > 20_000
