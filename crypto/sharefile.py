"""A node's share of the federation's Paillier decryption key, in a 0600 JSON file::

    {"format": "fedtally-paillier-share/1", "name": "hosp-a", "federation_id": "fed-1",
     "index": 1, "n": "<modulus, hex>", "share": "<integer share, hex>"}

Written atomically and refused on reading if group or other permission bits are set, like
member key files (:mod:`crypto.keyfile`). Errors never quote the share. Checking the file
against the manifest's key is the caller's job (the modulus and index must match).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from crypto.keyfile import (
    NAME_PATTERN,
    PRIVATE_MODE,
    KeyFileError,
    atomic_write,
    decode_document,
    read_private,
)

FORMAT = "fedtally-paillier-share/1"
MAX_SHARE_FILE_BYTES = 64 * 1024
_HEX = re.compile(r"[0-9a-f]{1,16384}")
_KEYS = frozenset({"format", "name", "federation_id", "index", "n", "share"})


@dataclass(frozen=True)
class ShareFile:
    name: str
    federation_id: str
    index: int
    n: int
    share: int

    def __repr__(self) -> str:
        return f"ShareFile(name={self.name!r}, index={self.index})"


def write_share_file(path: str | os.PathLike[str], share: ShareFile) -> None:
    target = Path(path)
    document = {"format": FORMAT, "name": share.name, "federation_id": share.federation_id,
                "index": share.index, "n": format(share.n, "x"),
                "share": format(share.share, "x")}
    problem = "n and share must be non-negative" if share.n < 1 or share.share < 0 \
        else _check(document)
    if problem is not None:
        raise KeyFileError(f"cannot write key share file {target}: {problem}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode(),
                     mode=PRIVATE_MODE)
    except OSError as exc:
        failure = f"cannot write key share file {target}: {exc.strerror}"
    else:
        return
    raise KeyFileError(failure)


def read_share_file(path: str | os.PathLike[str]) -> ShareFile:
    source = Path(path)
    document, problem = decode_document(read_private(source, MAX_SHARE_FILE_BYTES))
    if problem is None:
        problem = _check(document)
    if problem is not None:
        raise KeyFileError(f"key share file {source}: {problem}")
    return ShareFile(document["name"], document["federation_id"], document["index"],
                     int(document["n"], 16), int(document["share"], 16))


def _check(document: object) -> str | None:
    if not isinstance(document, dict):
        return "must hold a JSON object"
    if document.keys() != _KEYS:
        return f"must have exactly the keys {', '.join(sorted(_KEYS))}"
    if document["format"] != FORMAT:
        return f"format must be {FORMAT!r}"
    if not isinstance(document["name"], str) or not NAME_PATTERN.fullmatch(document["name"]):
        return "name is not a valid member name"
    if not isinstance(document["federation_id"], str) or not document["federation_id"]:
        return "federation_id must be a non-empty string"
    index = document["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 1:
        return "index must be a positive integer"
    for field in ("n", "share"):
        if not isinstance(document[field], str) or not _HEX.fullmatch(document[field]):
            return f"{field} must be lower-case hex"
    return None
