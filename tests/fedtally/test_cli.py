"""The command line: every command listed, errors as one readable line and an exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedtally.cli import build_parser


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedtally", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_help_lists_every_command_with_a_description() -> None:
    out = run("--help")
    assert out.returncode == 0
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():  # type: ignore[union-attr]
        assert name in out.stdout
        assert sub.description or any(c.dest == name and c.help for c in
                                       commands._choices_actions)  # type: ignore[attr-defined]
    for group in ("federation", "aggregator", "node"):
        assert run(group, "--help").returncode == 0


def test_federation_init_writes_a_federation(tmp_path: Path) -> None:
    out = run("federation", "init", str(tmp_path / "fed"), "--nodes", "a,b,c",
              "--researchers", "alice")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "fed" / "federation.json").is_file()
    assert (tmp_path / "fed" / "a" / "node.json").is_file()
    assert (tmp_path / "fed" / "keys" / "alice.key").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("args", [
    ("federation", "init", "{tmp}/x", "--nodes", "a,a", "--researchers", "r"),
    ("federation", "init", "{tmp}/x", "--nodes", "bad name,b", "--researchers", "r"),
    ("node", "serve", "--config", "{tmp}/missing.json"),
    ("aggregator", "serve", "--config", "{tmp}/missing.json"),
    ("node", "check", "--config", "{tmp}/missing.json"),
])
def test_errors_are_one_line_and_an_exit_code(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = run(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("fedtally: error: ")
    assert "Traceback" not in out.stderr


def test_init_refuses_a_colluding_bound_the_nodes_cannot_meet(tmp_path: Path) -> None:
    out = run("federation", "init", str(tmp_path / "x"), "--nodes", "a,b,c",
              "--researchers", "r", "--max-colluding-nodes", "2")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("fedtally: error: ") and "at least 4 nodes" in lines[0]
    assert not (tmp_path / "x").exists()
    ok = run("federation", "init", str(tmp_path / "y"), "--nodes", "a,b,c,d",
             "--researchers", "r", "--max-colluding-nodes", "2", "--secagg-plus")
    assert ok.returncode == 0, ok.stderr
    parameters = json.loads((tmp_path / "y" / "federation.json").read_text())["parameters"]
    assert (parameters["max_colluding_nodes"], parameters["secagg_plus"]) == (2, True)


def test_node_check_reports_data_problems(tmp_path: Path) -> None:
    assert run("federation", "init", str(tmp_path), "--nodes", "a,b", "--researchers", "r",
               "--max-colluding-nodes", "0", "--force").returncode == 0
    data = tmp_path / "a" / "rows.csv"
    data.write_text("dataset,age\na,70\na,old\n")
    model = tmp_path / "model.json"
    model.write_text('{"format": "fedtally-datamodel/1", "code": "m", "version": "1", '
                     '"variables": [{"code": "dataset", "sql_type": "text", "is_categorical": true,'
                     ' "enumerations": [{"code": "a"}]}, {"code": "age", "sql_type": "real", '
                     '"is_categorical": false}]}')
    config = tmp_path / "a" / "node.json"

    document = json.loads(config.read_text())
    document.update(data=[{"kind": "csv", "path": "rows.csv"}], data_model="../model.json")
    config.write_text(json.dumps(document))
    out = run("node", "check", "--config", str(config))
    assert out.returncode == 1
    assert "row 2" in out.stderr and "age" in out.stderr
