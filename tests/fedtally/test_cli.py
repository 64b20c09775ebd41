"""The command line: every command listed, errors as one readable line and an exit code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedtally.cli import build_parser, main


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
    # both trust roots, printed for checking out of band (as README.txt states them)
    readme = (tmp_path / "fed" / "README.txt").read_text()
    for line in out.stdout.splitlines()[1:3]:
        fingerprint = line.split(":", 1)[1].strip()
        assert len(fingerprint) == 64 and fingerprint in readme


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


_MODEL = ('{"format": "fedtally-datamodel/1", "code": "m", "version": "1", "variables": ['
          '{"code": "dataset", "sql_type": "text", "is_categorical": true, '
          '"enumerations": [{"code": "a"}]}, {"code": "age", "sql_type": "int", '
          '"is_categorical": false, "min": 18, "max": 100}, {"code": "sex", "sql_type": "text", '
          '"is_categorical": true, "enumerations": [{"code": "F"}, {"code": "M"}]}]}')


@pytest.mark.parametrize(("rows", "code", "expected"), [
    # valid: a summary per variable on stdout, the unknown column as a warning
    ("dataset,age,sex,id\na,70,F,1\na,,M,2\na,40,,3\n", 0,
     ["a: 3 valid rows of m:1; datasets a", "out of range", "int [18, 100]",
      "warning: column 'id': not a variable of data model m:1", "the data is valid"]),
    # a renamed header: served, "sex == 'F'" would match nothing
    ("dataset,age,gender\na,70,F\na,50,M\n", 1,
     ["no column (missing for every row here): sex", "not in the data model: gender",
      "column 'gender': not a variable of data model m:1, while the data lacks 1 of its "
      "variables ('sex'): a renamed header?", "NOT valid"]),
    ("dataset,Age,sex\na,70,F\n", 1, ["did you mean 'age', which the data lacks?"]),
    ("dataset,age,sex\na,170,F\na,x,M\n", 1,
     ["row 1, column 'age': value '170' is above the maximum 100",
      "row 2, column 'age': value 'x' is not a number"]),
    # a semicolon-separated export: one line naming the separator
    ("dataset;age;sex\na;70;F\n", 1, ["fedtally: error: CSV file", "separated by ';'"]),
    # the header only: valid, and said to be empty
    ("dataset,age,sex\n", 0, ["a: 0 valid rows of m:1", "warning: the data holds no rows",
                              "the data is valid"]),
])
def test_node_check_summarises_and_catches_real_mistakes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: str, code: int,
        expected: list[str]) -> None:
    import json

    assert main(["federation", "init", str(tmp_path), "--nodes", "a,b,c", "--researchers", "r",
                 "--force"]) == 0
    (tmp_path / "model.json").write_text(_MODEL)
    (tmp_path / "a" / "rows.csv").write_text(rows)
    config = tmp_path / "a" / "node.json"
    document = json.loads(config.read_text())
    document.update(data=[{"kind": "csv", "path": "rows.csv"}], data_model="../model.json")
    config.write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["node", "check", "--config", str(config)]) == code
    out = capsys.readouterr()
    text = out.out if code == 0 else out.err
    for line in expected:
        assert line in text, (line, text)
    assert "Traceback" not in out.err


def test_node_check_reads_the_rows_where_node_serve_keeps_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CSV files are checked in DuckDB, as node serve keeps them, never read whole into
    pandas, and the report is the pandas store's, line for line."""
    import json

    import node.datasource

    assert main(["federation", "init", str(tmp_path), "--nodes", "a,b,c", "--researchers", "r",
                 "--force"]) == 0
    (tmp_path / "model.json").write_text(_MODEL)
    (tmp_path / "a" / "rows.csv").write_text("dataset,age,sex,id\na,70,F,1\na,,M,2\na,40,,3\n")
    config = tmp_path / "a" / "node.json"
    document = json.loads(config.read_text())
    document.update(data=[{"kind": "csv", "path": "rows.csv"}], data_model="../model.json")
    reports = {}
    for store in ("pandas", "duckdb"):
        config.write_text(json.dumps({**document, "row_store": store}))
        capsys.readouterr()
        with monkeypatch.context() as patch:
            if store == "duckdb":  # the pandas reader is not asked
                patch.setattr(node.datasource, "load_all", None)
            assert main(["node", "check", "--config", str(config)]) == 0
        reports[store] = capsys.readouterr().out
    assert reports["duckdb"] == reports["pandas"]
    assert "3 valid rows of m:1" in reports["duckdb"]


# --- fedtally audit -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory):
    """A federation, node a's ledger with a few queries, the receipts a researcher kept,
    and a copy of the ledger from before the last queries."""
    from ledger_support import POLICY, dp, exact

    from fedtally.federation import load_identity
    from privacy.head import write_receipts
    from privacy.ledger import Ledger

    root = tmp_path_factory.mktemp("audit")
    assert run("federation", "init", str(root), "--nodes", "a,b,c", "--researchers", "r",
               "--force").returncode == 0
    identity = load_identity(root / "keys" / "a.key").identity
    ledger_path = root / "a" / "ledger.db"
    with Ledger(ledger_path, identity, identity.verify_key.raw) as ledger:
        ledger.record_policy(POLICY)
        heads = [exact(ledger, "01").head, ledger.release(dp(ledger, "02", 0.1).charge)]
        shutil.copy(ledger_path, root / "older.db")
        heads += [exact(ledger, "03").head, ledger.release(dp(ledger, "04", 0.2).charge)]
    receipts = root / "r.receipts"
    write_receipts(receipts, heads)
    return root, ledger_path, receipts, heads


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    text = out.stdout if out.returncode == 0 else out.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def audit(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """``fedtally audit ...`` in this process (the CLI's code path, without the start-up of
    a new interpreter), pinned to the manifest's authority as the README asks unless
    ``args`` pin one; the result shaped like ``run``'s."""
    from fedtally.federation import load_manifest

    if "--federation" in args and "--authority" not in args:
        federation = args[args.index("--federation") + 1]
        args = (*args, "--authority", load_manifest(federation).authority_fingerprint)
    capsys.readouterr()
    code = main(["audit", *args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["fedtally", "audit", *args], code, captured.out,
                                       captured.err)


def test_audit_verify_prints_the_full_head_and_checks_receipts_and_heads(audited,
                                                                         capsys) -> None:
    root, ledger, receipts, heads = audited
    fed = str(root / "federation.json")
    out = run("audit", "verify", str(ledger), "--federation", fed)  # a real process, once
    assert out.returncode == 0
    # unpinned: verified against a manifest whose signer nobody checked, and told so
    assert out.stderr.startswith(f"warning: {fed} was not checked against the federation "
                                 "authority") and "--authority FINGERPRINT" in out.stderr
    line = _one_line(out)
    assert line.endswith(f"head {heads[-1].text}")  # SEQ:HEX with all 64 hex digits
    out = audit(capsys, "verify", str(ledger), "--federation", fed, "--receipts",
                str(receipts), "--expected-head", heads[-1].text)
    assert out.returncode == 0
    assert "4 receipts checked, expected head found" in _one_line(out)


def test_audit_verify_fails_on_a_rolled_back_ledger_with_receipts_or_expected_head(
        audited, capsys) -> None:
    root, _, receipts, heads = audited
    fed, older = str(root / "federation.json"), str(root / "older.db")
    assert audit(capsys, "verify", older, "--federation", fed).returncode == 0  # alone: valid
    for extra in (("--receipts", str(receipts)), ("--expected-head", heads[-1].text)):
        out = audit(capsys, "verify", older, "--federation", fed, *extra)
        assert out.returncode == 1
        line = _one_line(out)
        assert "INVALID: ReceiptMismatch" in line and "rolled back" in line


@pytest.mark.parametrize("extra, message", [
    (("--expected-head", "12:abc"), "--expected-head: a head is SEQ:HEX"),
    (("--receipts", "{root}/missing.receipts"), "cannot read the receipts file"),
])
def test_audit_verify_usage_errors_are_one_line(audited, capsys, extra, message) -> None:
    root, ledger, _, _ = audited
    out = audit(capsys, "verify", str(ledger), "--federation",
                str(root / "federation.json"), *(e.replace("{root}", str(root)) for e in extra))
    assert out.returncode == 2
    assert message in _one_line(out)


def test_audit_report_writes_files_at_a_chosen_delta(audited, capsys, tmp_path: Path) -> None:
    import json

    root, ledger, receipts, _ = audited
    page, data = tmp_path / "r.html", tmp_path / "r.json"
    out = audit(capsys, "report", str(ledger), "--federation", str(root / "federation.json"),
                "--html", str(page), "--json", str(data), "--receipts", str(receipts),
                "--delta", "1e-9")
    assert out.returncode == 0, out.stderr
    assert "4 receipts checked" in _one_line(out)
    report = json.loads(data.read_text())
    assert report["delta"] == 1e-9 and len(report["queries"]) == 4
    assert "<svg" in page.read_text()
    bad = audit(capsys, "report", str(ledger), "--federation", str(root / "federation.json"),
                "--json", str(data), "--delta", "2")
    assert bad.returncode == 2 and "--delta" in _one_line(bad)


def test_the_submodules_the_readme_names_are_there_after_a_plain_import() -> None:
    """A fresh interpreter (this one imported them already): README's
    ``fedtally.synthetic.stroke_model()`` and ``fedtally.dp.NOISE_WARNING_FRACTION``."""
    out = subprocess.run([sys.executable, "-c", "import fedtally; "
                          "print(fedtally.synthetic.stroke_model().name, "
                          "fedtally.dp.NOISE_WARNING_FRACTION, fedtally.coverage.LEFT != '')"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["stroke:1", "0.5", "True"]


def test_a_reader_that_stops_reading_gets_no_traceback(tmp_path: Path) -> None:
    """`fedtally node check ... | head -1`: the pipe closes before the output is written;
    the command stops quietly (it printed a BrokenPipeError traceback)."""
    reader = subprocess.Popen([sys.executable, "-m", "fedtally", "federation", "init",
                               str(tmp_path / "fed"), "--nodes", "a,b,c", "--researchers", "r"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None and reader.stderr is not None
    reader.stdout.close()
    error = reader.stderr.read().decode()
    assert reader.wait(120) == 1
    assert error == "", error
    assert (tmp_path / "fed" / "federation.json").is_file()  # the work itself was done
