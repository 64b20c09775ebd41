"""Shared test helpers: locations of reference data, CI-sized example counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
WYCHEPROOF = SHARED / "vectors" / "wycheproof"
EXAREME2 = SHARED / "peer" / "exareme2"
VECTORS = PROJECT_ROOT / "tests" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: hypothesis examples for fuzzing the codec: the issue asks for at least 10,000 in CI
FUZZ_EXAMPLES = 10_000 if IN_CI else 1_500


def require_shared(path: Path) -> Path:
    """Skip (with the reason) where ../shared is absent, as in a user's own clone."""
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (it ships beside the repository in CI)")
    return path
