"""Member key files: an Ed25519 seed in a small JSON document, readable by its owner only.

The one reader and writer of ``fedtally-key/1`` files::

    {"format": "fedtally-key/1", "name": "hosp-a", "role": "node",
     "federation_id": "fed-1234abcd", "seed": "<64 hex characters>"}

Files are written atomically with mode 0600 (never wider, not even for an instant) and
refused on reading if any group or other permission bit is set. Errors name the file and
the fix, never the key material, and carry no exception chain that could show it.
Checking a key against the federation manifest is the manifest's job
(:meth:`protocol.manifest.Manifest.check_identity`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto.errors import CryptoError
from crypto.identity import SigningIdentity

__all__ = ["FORMAT", "KEY_ROLES", "KeyFile", "KeyFileError", "atomic_write", "read_key_file",
           "read_private", "write_key_file"]

FORMAT = "fedtally-key/1"
#: roles a key file may carry: the members', the aggregator's and the authority's
KEY_ROLES = ("node", "researcher", "auditor", "aggregator", "authority")
#: a member name (the same rule as protocol.codec.NAME_PATTERN; crypto imports no engine)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
PRIVATE_MODE = 0o600
MAX_KEY_FILE_BYTES = 4096
_SEED_HEX = re.compile(r"[0-9a-fA-F]{64}")
_KEYS = frozenset({"format", "name", "role", "federation_id", "seed"})


class KeyFileError(CryptoError):
    """A key file is missing, malformed or accessible by others."""


@dataclass(frozen=True)
class KeyFile:
    name: str
    role: str
    federation_id: str
    identity: SigningIdentity


def write_key_file(path: str | os.PathLike[str], key: KeyFile) -> None:
    """Write a key file atomically with mode 0600 (creating its folder if needed)."""
    target = Path(path)
    problem = _check_fields(key.name, key.role, key.federation_id)
    if problem is not None:
        raise KeyFileError(f"cannot write key file {target}: {problem}")
    document = {"format": FORMAT, "name": key.name, "role": key.role,
                "federation_id": key.federation_id, "seed": key.identity.seed().hex()}
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, data, mode=PRIVATE_MODE)
    except OSError as exc:
        failure = f"cannot write key file {target}: {exc.strerror}"
    else:
        return
    raise KeyFileError(failure)


def read_key_file(path: str | os.PathLike[str]) -> KeyFile:
    """Read and check a key file; raises :class:`KeyFileError` (never showing the seed)."""
    source = Path(path)
    data = read_private(source)
    document, problem = decode_document(data)
    if problem is None:
        problem = _check_document(document)
    if problem is not None:
        raise KeyFileError(f"key file {source}: {problem}")
    return KeyFile(document["name"], document["role"], document["federation_id"],
                   SigningIdentity(bytes.fromhex(document["seed"])))


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int = PRIVATE_MODE) -> None:
    """Write ``data`` so that a reader sees the old file or the new one, never half of either.

    The temporary file is created with ``mode`` already (``O_EXCL``, then ``fchmod`` against
    a permissive umask), so a private file is never readable by others, not even for an
    instant; the data and the rename are fsynced. Raises OSError.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_private(path: Path, limit: int = MAX_KEY_FILE_BYTES) -> bytes:
    failure: str
    try:
        # O_NONBLOCK: a FIFO in the key file's place must not hang the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        failure = f"key file {path} does not exist"
    except OSError as exc:
        failure = f"cannot read key file {path}: {exc.strerror}"
    else:
        try:
            # fstat on the open file: the file checked is the file read
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                failure = f"key file {path} is not a regular file"
            elif os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                if not _holds_a_secret(_read_up_to(fd, limit + 1)):
                    # another file named in the key's place (a manifest, a bundle): saying
                    # to chmod it would be wrong advice
                    failure = (f"{path} is not a key file (it holds no private key): name "
                               "the member's own key, keys/<name>.key (or its key share, "
                               "keys/<name>.share)")
                else:
                    failure = (f"key file {path} is accessible by other users (mode "
                               f"{stat.S_IMODE(info.st_mode):04o}); a private key must be "
                               f"mode 0600: run `chmod 600 {path}` (and consider the key "
                               "exposed if others could read it)")
            else:
                data = _read_up_to(fd, limit + 1)
                if len(data) <= limit:
                    return data
                failure = f"key file {path} is larger than {limit} bytes"
        except OSError as exc:
            failure = f"cannot read key file {path}: {exc.strerror}"
        finally:
            os.close(fd)
    raise KeyFileError(failure)


def _read_up_to(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _holds_a_secret(data: bytes) -> bool:
    """Whether ``data`` may be a key or key-share file (a JSON object naming a seed or a
    share, or anything that does not parse, which is not ours to judge)."""
    document, problem = decode_document(data)
    return problem is not None or (isinstance(document, dict)
                                   and bool({"seed", "share"} & document.keys()))


def decode_document(data: bytes) -> tuple[Any, str | None]:
    """The parsed document, or a reason it is not one (never quoting the content)."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys,
                          parse_constant=_no_constants), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not valid JSON (line {exc.lineno}, column {exc.colno})"
    except (ValueError, RecursionError):
        return None, "not acceptable JSON (a duplicate key or a non-number constant)"


def _check_document(document: Any) -> str | None:
    if not isinstance(document, dict):
        return "must hold a JSON object"
    missing = sorted(_KEYS - document.keys())
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(map(str, document.keys() - _KEYS))
    if unknown:
        return f"unknown key(s) {', '.join(unknown)}"
    if document["format"] != FORMAT:
        return f"format must be {FORMAT!r}"
    problem = _check_fields(document["name"], document["role"], document["federation_id"])
    if problem is not None:
        return problem
    seed = document["seed"]
    if not isinstance(seed, str) or not _SEED_HEX.fullmatch(seed):
        return "seed must be 64 hex characters"
    return None


def _check_fields(name: Any, role: Any, federation_id: Any) -> str | None:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        return ("name must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter "
                "or digit")
    if role not in KEY_ROLES:
        return f"role must be one of {', '.join(KEY_ROLES)}"
    if not isinstance(federation_id, str) or not federation_id:
        return "federation_id must be a non-empty string"
    return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError("not a number")
