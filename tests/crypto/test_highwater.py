"""High-water files: a value below the mark is refused, a broken file is an error (never
silently reset), and marks are kept per name."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto.highwater import HighWaterError, RolledBack, raise_high_water


def test_marks_only_go_up_per_name(tmp_path: Path) -> None:
    path = tmp_path / "marks"
    assert raise_high_water(path, "fed-a", 3) == 3
    assert raise_high_water(path, "fed-a", 3) == 3
    assert raise_high_water(path, "fed-b", 1) == 1  # another federation has its own mark
    with pytest.raises(RolledBack) as info:
        raise_high_water(path, "fed-a", 2)
    assert (info.value.value, info.value.seen) == (2, 3)
    assert raise_high_water(path, "fed-a", 5) == 5


@pytest.mark.parametrize("content", [b"", b"[1]", b'{"fed-a": -1}', b'{"fed-a": 1.5}',
                                     b'{"fed-a": true}', b"\xff", b" " * (1 << 17)])
def test_a_broken_file_is_an_error_not_a_reset(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "marks"
    path.write_bytes(content)
    with pytest.raises(HighWaterError, match="not a high-water file"):
        raise_high_water(path, "fed-a", 1)
    assert path.read_bytes() == content
