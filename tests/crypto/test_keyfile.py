"""Key files: the one reader and writer of ``fedtally-key/1``."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from crypto.identity import SigningIdentity
from crypto.keyfile import FORMAT, KeyFile, KeyFileError, read_key_file, write_key_file
from crypto.randomness import SeededRandom

IDENTITY = SigningIdentity.generate(SeededRandom("keyfile"))
SEED = IDENTITY.seed().hex()


def _write(tmp_path: Path, **fields: Any) -> Path:
    key = KeyFile(**{"name": "hosp-a", "role": "node", "federation_id": "fed-1",
                     "identity": IDENTITY, **fields})
    path = tmp_path / "keys" / "k.key"
    write_key_file(path, key)
    return path


def _no_seed_anywhere(error: BaseException) -> None:
    current: BaseException | None = error
    while current is not None:
        assert SEED not in str(current) and SEED not in repr(current)
        current = current.__cause__ or current.__context__


def test_round_trip_mode_and_format(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {"format": FORMAT, "name": "hosp-a", "role": "node",
                                            "federation_id": "fed-1", "seed": SEED}
    key = read_key_file(path)
    assert (key.name, key.role, key.federation_id) == ("hosp-a", "node", "fed-1")
    assert key.identity.verify_key == IDENTITY.verify_key
    assert SEED not in repr(key)
    assert [p.name for p in path.parent.iterdir()] == ["k.key"]  # no temporary left


def test_a_permissive_umask_does_not_widen_the_mode(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = _write(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o610])
def test_any_group_or_other_bit_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)
    _no_seed_anywhere(caught.value)
    path.chmod(0o400)
    assert read_key_file(path).name == "hosp-a"


def test_a_readable_file_that_is_no_key_is_named_as_such(tmp_path: Path) -> None:
    """A manifest given in the key's place (mode 0644, as it should be) is not a key to
    chmod: the error says what it is not."""
    path = tmp_path / "federation.json"
    path.write_text('{"version": 1, "members": []}')
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"is not a key file \(it holds no private key\)"):
        read_key_file(path)


@pytest.mark.parametrize("changes", [
    {"seed": "00" * 31}, {"seed": "zz" * 32}, {"seed": None}, {"seed": 5}, {"role": "king"},
    {"format": "other"}, {"name": "a b"}, {"name": "-a"}, {"federation_id": ""},
    {"extra": 1}, {"name": None},
])
def test_malformed_files_are_refused_without_the_seed(tmp_path: Path,
                                                      changes: dict[str, Any]) -> None:
    path = _write(tmp_path)
    document = json.loads(path.read_text())
    document.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del document[key]
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    _no_seed_anywhere(caught.value)


@pytest.mark.parametrize("content", [b"{", b"[]", b"\xff", b'{"seed": 1, "seed": 2}',
                                     b"x" * 5000])
def test_unreadable_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        read_key_file(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "none.key")
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key_file(tmp_path)


@pytest.mark.parametrize("fields", [{"name": "a/b"}, {"role": "king"}, {"federation_id": ""}])
def test_writing_refuses_what_reading_would(tmp_path: Path, fields: dict[str, Any]) -> None:
    with pytest.raises(KeyFileError):
        _write(tmp_path, **fields)
    assert not (tmp_path / "keys" / "k.key").exists()
