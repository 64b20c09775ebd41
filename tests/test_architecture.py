"""The import rules of DESIGN.md section 7, enforced by reading every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import PROJECT_ROOT

PACKAGES = ("fedtally", "protocol", "stats", "crypto", "privacy", "node", "aggregator")
#: package -> project packages it may import (besides itself); ARCHITECTURE.md draws it
ALLOWED = {
    "crypto": set(),
    "privacy": set(),
    "protocol": {"crypto", "privacy"},
    "stats": {"protocol", "crypto", "privacy"},
    "node": {"stats", "protocol", "crypto", "privacy"},
    "aggregator": {"stats", "protocol", "crypto", "privacy"},
    "fedtally": {"stats", "protocol", "crypto", "privacy", "node", "aggregator"},
}
#: the sans-I/O packages: the rounds, and the query language and statistics
SANS_IO = ("protocol", "stats")
#: the one file a sans-I/O module reads: a data model's file, named by its caller
READS_A_FILE = {"stats/datamodel.py": {"pathlib"}}
#: modules that mean I/O, clocks or concurrency: the sans-I/O packages import none of them
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


@pytest.mark.parametrize("package", SANS_IO)
def test_protocol_and_stats_do_no_io(package: str) -> None:
    for path in _modules(package):
        where = str(path.relative_to(PROJECT_ROOT))
        bad = {m for m in _imports(path) if m.split(".")[0] in IO_MODULES}
        assert not bad - READS_A_FILE.get(where, set()), f"{where} imports {bad}"
        assert not _calls(path) & IO_BUILTINS, path


@pytest.mark.parametrize("package", PACKAGES)
def test_no_pickle_and_no_eval(package: str) -> None:
    for path in _modules(package):
        assert not {m.split(".")[0] for m in _imports(path)} & NEVER, path
        assert not _calls(path) & {"eval", "exec", "compile", "__import__"}, path


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports at run time, function-local imports
    included (``if TYPE_CHECKING:`` blocks are not imports at run time)."""
    paths = {_module_name(root, path): path
             for package in PACKAGES for path in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        typing_only = {id(inner) for node in ast.walk(tree)
                       if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                       for stmt in node.body for inner in ast.walk(stmt)}
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in paths)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in paths:
                        edges.add(full)
                    elif node.module in paths:
                        edges.add(node.module)
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles(_project_graph(PROJECT_ROOT))
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_check_can_fail(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "stats" / "a.py").write_text("def f():\n    from stats.b import g\n")
    (tmp_path / "stats" / "b.py").write_text("from stats import a\n")
    (tmp_path / "stats" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stats import a\n")
    assert _cycles(_project_graph(tmp_path)) == [["stats.a", "stats.b"]]


def _uses_insecure_random(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr == "random"
                and isinstance(node.value, ast.Name) and node.value.id in ("np", "numpy")):
            return True
    return bool({m for m in _imports(path) if m in ("random", "numpy.random")})


def test_masks_never_come_from_numpy_random() -> None:
    for package in ("crypto", "protocol", "stats", "node", "aggregator", "privacy"):
        for path in _modules(package):
            assert not _uses_insecure_random(path), path


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    # the checker must be able to fail: a module importing across the layers is caught
    bad = tmp_path / "bad.py"
    bad.write_text("import node.service\nfrom aggregator import x\nimport socket\n"
                   "import numpy as np\nnp.random.default_rng()\n")
    assert {"node.service", "aggregator", "socket"} <= _imports(bad)
    assert _uses_insecure_random(bad)
