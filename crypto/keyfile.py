"""Member key files: an Ed25519 seed in a small JSON document, readable by its owner only.

Errors name the file and the fix, never the key material.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from crypto.errors import CryptoError
from crypto.identity import SEED_SIZE, SigningIdentity

FORMAT = "fedtally-key/1"


class KeyFileError(CryptoError):
    """A key file is missing, malformed or readable by others."""


@dataclass(frozen=True)
class KeyFile:
    name: str
    role: str
    federation_id: str
    identity: SigningIdentity


def write_key_file(path: Path, key: KeyFile) -> None:
    """Write atomically with mode 0600 (the file never exists with wider permissions)."""
    document = {"format": FORMAT, "name": key.name, "role": key.role,
                "federation_id": key.federation_id, "seed": key.identity.seed().hex()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_key_file(path: Path) -> KeyFile:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {path} is readable by others: run `chmod 600 {path}`")
        document = json.loads(path.read_text())
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    except ValueError:
        raise KeyFileError(f"key file {path} is not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeyFileError(f"{path} is not a fedtally key file ({FORMAT})")
    try:
        seed = bytes.fromhex(document["seed"])
        name, role, federation = document["name"], document["role"], document["federation_id"]
    except (KeyError, TypeError, ValueError):
        raise KeyFileError(f"key file {path} is malformed") from None
    if len(seed) != SEED_SIZE or not all(isinstance(v, str) for v in (name, role, federation)):
        raise KeyFileError(f"key file {path} is malformed")
    return KeyFile(name, role, federation, SigningIdentity(seed))
