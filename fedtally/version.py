"""The fedtally version this process runs: the installed distribution's, or the source
tree's when it is not installed (a checkout run in place)."""

from __future__ import annotations

from importlib import metadata

#: kept equal to pyproject.toml's version (tests/fedtally/test_operations.py checks it)
SOURCE_VERSION = "0.1.0"


def software_version() -> str:
    try:
        return metadata.version("fedtally")
    except metadata.PackageNotFoundError:
        return SOURCE_VERSION
