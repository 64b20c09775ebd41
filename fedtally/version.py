"""The fedtally version this process runs: the installed distribution's, or the source
tree's when it is not installed (a checkout run in place)."""

from __future__ import annotations

from importlib import metadata

from protocol.service_messages import SOFTWARE_PATTERN

#: kept equal to pyproject.toml's version (tests/fedtally/test_operations.py checks it)
SOURCE_VERSION = "0.1.0"


def software_version() -> str:
    """The version, or "unknown" if it is not one members can state on the wire."""
    try:
        version = metadata.version("fedtally")
    except metadata.PackageNotFoundError:
        version = SOURCE_VERSION
    return version if SOFTWARE_PATTERN.fullmatch(version) else "unknown"
