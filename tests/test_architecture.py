"""The import rules of DESIGN.md section 7, enforced by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import PROJECT_ROOT

PACKAGES = ("fedtally", "engine", "crypto", "privacy", "node", "aggregator")
#: package -> project packages it may import (besides itself)
ALLOWED = {
    "crypto": set(),
    "privacy": set(),
    "engine": {"crypto", "privacy"},
    "node": {"engine", "crypto", "privacy"},
    "aggregator": {"engine", "crypto", "privacy"},
    "fedtally": {"engine", "crypto", "privacy", "node", "aggregator"},
}
#: modules that mean I/O, clocks or concurrency: the sans-I/O engine imports none of them
IO_MODULES = {"socket", "ssl", "asyncio", "websockets", "subprocess", "selectors", "threading",
              "multiprocessing", "sqlite3", "pathlib", "shutil", "tempfile", "http", "urllib",
              "time", "os", "io", "signal", "logging"}
IO_BUILTINS = {"open", "input", "print"}
NEVER = {"pickle", "cPickle", "marshal", "shelve", "dill"}


def _modules(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {node.func.id for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}


def test_every_package_exists() -> None:
    for package in PACKAGES:
        assert (PROJECT_ROOT / package / "__init__.py").is_file(), package


@pytest.mark.parametrize("package", PACKAGES)
def test_project_imports_follow_the_layering(package: str) -> None:
    for path in _modules(package):
        for module in _imports(path):
            top = module.split(".")[0]
            if top in PACKAGES and top != package:
                assert top in ALLOWED[package], f"{path.relative_to(PROJECT_ROOT)} imports {module}"


@pytest.mark.parametrize("package", PACKAGES)
def test_only_privacy_imports_opendp(package: str) -> None:
    if package == "privacy":
        return
    for path in _modules(package):
        assert not any(m.split(".")[0] == "opendp" for m in _imports(path)), path


def test_engine_does_no_io() -> None:
    for path in _modules("engine"):
        bad = {m for m in _imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad, f"{path.relative_to(PROJECT_ROOT)} imports {bad}"
        assert not _calls(path) & IO_BUILTINS, path


@pytest.mark.parametrize("package", PACKAGES)
def test_no_pickle_and_no_eval(package: str) -> None:
    for path in _modules(package):
        assert not {m.split(".")[0] for m in _imports(path)} & NEVER, path
        assert not _calls(path) & {"eval", "exec", "compile", "__import__"}, path


def _uses_insecure_random(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr == "random"
                and isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")):
            return True
    return bool({m for m in _imports(path) if m in ("random", "numpy.random")})


def test_masks_never_come_from_numpy_random() -> None:
    for package in ("crypto", "engine", "node", "aggregator", "privacy"):
        for path in _modules(package):
            assert not _uses_insecure_random(path), path


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    # the checker must be able to fail: a module importing across the layers is caught
    bad = tmp_path / "bad.py"
    bad.write_text("import node.service\nfrom aggregator import x\nimport socket\n"
                   "import numpy as np\nnp.random.default_rng()\n")
    assert {"node.service", "aggregator", "socket"} <= _imports(bad)
    assert _uses_insecure_random(bad)
