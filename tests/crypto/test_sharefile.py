"""Paillier key share files (crypto/sharefile.py): 0600, strict format, errors that never
quote the share."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from crypto.keyfile import KeyFileError
from crypto.sharefile import (
    FORMAT,
    MAX_SHARE_FILE_BYTES,
    ShareFile,
    read_share_file,
    write_share_file,
)

# stand-ins with the sizes of a 2048-bit key: the format does not check them against a key
N = (1 << 2047) + 0xABCDEF1
SHARE = int("9f3c" * 160 + "77", 16)
SHARE_HEX = format(SHARE, "x")
SHARE_FILE = ShareFile("hosp-a", "fed-1", 2, N, SHARE)


def _write(tmp_path: Path, share: ShareFile = SHARE_FILE) -> Path:
    path = tmp_path / "keys" / "hosp-a.share"
    write_share_file(path, share)
    return path


def _no_share_anywhere(error: BaseException) -> None:
    current: BaseException | None = error
    while current is not None:
        for text in (str(current), repr(current)):
            assert SHARE_HEX not in text and SHARE_HEX[:32] not in text
            assert str(SHARE) not in text
        current = current.__cause__ or current.__context__


def test_round_trip_mode_and_format(tmp_path: Path) -> None:
    path = _write(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "format": FORMAT, "name": "hosp-a", "federation_id": "fed-1", "index": 2,
        "n": format(N, "x"), "share": SHARE_HEX}
    assert read_share_file(path) == SHARE_FILE
    assert [p.name for p in path.parent.iterdir()] == ["hosp-a.share"]  # no temporary left


def test_rewriting_replaces_the_file(tmp_path: Path) -> None:
    _write(tmp_path)
    other = ShareFile("hosp-a", "fed-1", 3, N, SHARE + 1)
    path = _write(tmp_path, other)
    assert read_share_file(path) == other
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_permissive_umask_does_not_widen_the_mode(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = _write(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_repr_hides_the_share() -> None:
    for text in (repr(SHARE_FILE), str(SHARE_FILE), f"{SHARE_FILE!r}"):
        assert SHARE_HEX[:16] not in text and str(SHARE)[:16] not in text
        assert "hosp-a" in text and "2" in text


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o610, 0o601])
def test_any_group_or_other_bit_is_refused(tmp_path: Path, mode: int) -> None:
    path = _write(tmp_path)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as caught:
        read_share_file(path)
    assert str(path) in str(caught.value)
    _no_share_anywhere(caught.value)
    path.chmod(0o400)
    assert read_share_file(path).index == 2


@pytest.mark.parametrize("changes", [
    {"format": "fedtally-key/1"}, {"format": "fedtally-paillier-share/2"}, {"format": None},
    {"name": None}, {"federation_id": None}, {"index": None}, {"n": None}, {"share": None},
    {"extra": 1}, {"seed": "00" * 32},
    {"name": "a b"}, {"name": "-a"}, {"name": ""}, {"name": 5},
    {"federation_id": ""}, {"federation_id": 7},
    {"index": True}, {"index": False}, {"index": 0}, {"index": -1}, {"index": 2.0},
    {"index": "2"},
    {"share": SHARE_HEX.upper()}, {"share": "0x" + SHARE_HEX}, {"share": SHARE_HEX + "g"},
    {"share": ""}, {"share": SHARE}, {"share": " " + SHARE_HEX}, {"share": "-" + SHARE_HEX},
    {"share": "f" * 16385},
    {"n": format(N, "X")}, {"n": N}, {"n": ""},
])
def test_malformed_files_are_refused_without_the_share(tmp_path: Path,
                                                       changes: dict[str, Any]) -> None:
    path = _write(tmp_path)
    document = json.loads(path.read_text())
    document.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del document[key]
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError) as caught:
        read_share_file(path)
    assert str(path) in str(caught.value)
    _no_share_anywhere(caught.value)


@pytest.mark.parametrize("content", [
    b"{", b"[]", b"null", b"\xff\xfe", b"x" * 100,
    f'{{"share": "{SHARE_HEX}", "share": "00"}}'.encode(),
    f'{{"share": "{SHARE_HEX}" "index": 1}}'.encode(),  # JSON syntax error after the share
    f'["{SHARE_HEX}"]'.encode(),
    f'{{"share": "{SHARE_HEX}", "n": NaN}}'.encode(),
])
def test_unreadable_files_are_refused_without_the_share(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.share"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as caught:
        read_share_file(path)
    _no_share_anywhere(caught.value)


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.share"
    document = {"format": FORMAT, "name": "hosp-a", "federation_id": "fed-1", "index": 1,
                "n": "f" * 1000, "share": "a" * 1000, "pad": " " * MAX_SHARE_FILE_BYTES}
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="larger"):
        read_share_file(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        read_share_file(tmp_path / "none.share")
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_share_file(tmp_path)


def test_a_fifo_in_place_of_the_file_does_not_hang(tmp_path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    path = tmp_path / "fifo.share"
    os.mkfifo(path, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_share_file(path)


def test_writing_into_an_unwritable_place_is_a_key_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(KeyFileError) as caught:
        write_share_file(blocker / "sub" / "k.share", SHARE_FILE)
    _no_share_anywhere(caught.value)


def test_a_symlink_to_a_private_file_reads_its_target(tmp_path: Path) -> None:
    path = _write(tmp_path)
    link = tmp_path / "link.share"
    link.symlink_to(path)
    assert read_share_file(link) == SHARE_FILE
