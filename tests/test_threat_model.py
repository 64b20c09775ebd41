"""threat_model.md stays true: every test it names exists."""

from __future__ import annotations

import re

from support import PROJECT_ROOT

DEFAULT_FILE = "tests/protocol/test_simulate.py"


def _named_tests() -> list[tuple[str, str]]:
    text = (PROJECT_ROOT / "threat_model.md").read_text()
    found = []
    for line in text.splitlines():
        if not re.match(r"\| [MPED]\d", line):
            continue
        current = DEFAULT_FILE
        for token in re.findall(r"`([^`]+)`", line):
            path, _, name = token.partition("::")
            if path.startswith("tests/"):
                current = path
                if name:
                    found.append((current, name))
            elif token.startswith("::"):
                found.append((current, token[2:]))
            elif re.fullmatch(r"test_\w+", token):
                found.append((current, token))
    return found


def test_every_named_test_exists() -> None:
    named = _named_tests()
    assert len(named) >= 20
    for path, name in named:
        source = (PROJECT_ROOT / path).read_text()
        assert re.search(rf"def {re.escape(name)}\(", source), f"{path}::{name} does not exist"


def test_every_threat_names_a_test() -> None:
    text = (PROJECT_ROOT / "threat_model.md").read_text()
    rows = [line for line in text.splitlines() if re.match(r"\| [MPED]\d", line)]
    assert rows
    for row in rows:
        assert "tests/" in row or re.search(r"`test_\w+`", row), row.split("|")[2]
