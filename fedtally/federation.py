"""The federation: who is in it (a manifest signed by the authority), and ``init``.

The manifest is the root of trust of every node: a message is believed only if it is
signed by a key listed here, and the manifest is believed only if the federation
authority's Ed25519 key signed it. The signature covers the canonical JSON of the whole
manifest except the signature itself (sorted keys, no spaces, ASCII), so reformatting the
file is harmless and changing any value is not.

``init_federation`` writes a complete federation into one folder: the manifest, every
private key (mode 0600, written atomically), the TLS CA and the aggregator's certificate,
one config file per service, and a README telling the operator what goes where.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, cast

from crypto.errors import CryptoError
from crypto.identity import SigningIdentity, VerifyKey
from crypto.randomness import RandomSource, SystemRandom
from crypto.tls import generate_ca, issue_server_certificate
from engine.codec import NAME_PATTERN
from engine.errors import AuthenticationError, ConfigurationError, LocalError

__all__ = [
    "AggregatorEntry",
    "FORMAT",
    "KEY_FORMAT",
    "Manifest",
    "Member",
    "Parameters",
    "canonical_json",
    "init_federation",
    "load_config",
    "load_identity",
]

FORMAT = "fedtally-federation/1"
KEY_FORMAT = "fedtally-key/1"
AGGREGATOR = "aggregator"
AUTHORITY = "authority"
Role = Literal["node", "researcher", "auditor"]
ROLES: tuple[Role, ...] = ("node", "researcher", "auditor")
#: roles a key file may carry: the members', the aggregator's and the authority's
KEY_ROLES = (*ROLES, AGGREGATOR, AUTHORITY)
PROTECTIONS = ("mask", "paillier")
DEFAULT_PARAMETERS: Mapping[str, Any] = {
    "threshold_fraction": 2 / 3,
    "min_participants": 2,
    "max_rows_per_node": 16_777_216,
    "protection": "mask",
    "stage_timeout_s": 60,
}
#: names that would collide with the folder layout init writes (compared case-insensitively,
#: because a node's name is also a folder name and some file systems ignore case)
RESERVED_NAMES = frozenset({AGGREGATOR, AUTHORITY, "keys", "tls", "federation.json",
                            "aggregator.json", "authority.key", "readme.txt"})
FEDERATION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
#: every input bounded: a manifest of 10,000 members is about 1.5 MB
MAX_MANIFEST_BYTES = 8 << 20
MAX_MEMBERS = 10_000
MAX_CONFIG_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 4096
#: private files: readable and writable by the owner only
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
#: an Ed25519 signature and public key in hex
_SIGNATURE_HEX = 128
_KEY_HEX = 64
_DNS_HOST = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOP_KEYS = frozenset({"format", "federation_id", "created", "aggregator", "members",
                       "parameters", "authority_public_key", "signature"})
_AGGREGATOR_KEYS = frozenset({"name", "host", "port", "public_key"})
_MEMBER_KEYS = frozenset({"name", "role", "public_key"})
_KEY_FILE_KEYS = frozenset({"format", "name", "role", "federation_id", "seed"})


# --- the manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    role: Role
    public_key: VerifyKey


@dataclass(frozen=True)
class AggregatorEntry:
    name: str
    host: str
    port: int
    public_key: VerifyKey

    @property
    def url(self) -> str:
        return aggregator_url(self.host, self.port)


@dataclass(frozen=True)
class Parameters:
    threshold_fraction: float
    min_participants: int
    max_rows_per_node: int
    protection: str
    stage_timeout_s: float


@dataclass(frozen=True)
class Manifest:
    """A verified federation manifest. Build it with :meth:`load` or :meth:`from_document`."""

    federation_id: str
    created: str
    aggregator: AggregatorEntry
    members: tuple[Member, ...]
    parameters: Parameters
    authority_public_key: VerifyKey
    signature: bytes = field(repr=False)
    #: SHA-256 of the signed canonical bytes: names this exact manifest in logs and protocols
    digest: bytes = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *,
             expected_authority: str | VerifyKey | None = None) -> Manifest:
        """Read and verify a manifest file.

        Raises :class:`AuthenticationError` if the signature does not verify under the
        embedded authority key, or that key is not ``expected_authority`` (when pinned);
        :class:`ConfigurationError` if the file is missing or malformed.
        """
        source = Path(path)
        document = _read_json(source, "federation manifest", MAX_MANIFEST_BYTES)
        return cls.from_document(document, expected_authority=expected_authority,
                                 source=str(source))

    @classmethod
    def parse(cls, data: bytes, *, expected_authority: str | VerifyKey | None = None,
              source: str = "federation manifest") -> Manifest:
        """Verify a manifest received as bytes (e.g. over the wire)."""
        if len(data) > MAX_MANIFEST_BYTES:
            raise ConfigurationError(f"{source}: larger than {MAX_MANIFEST_BYTES} bytes")
        return cls.from_document(_decode_json(data, source), expected_authority=expected_authority,
                                 source=source)

    @classmethod
    def from_document(cls, document: Any, *, expected_authority: str | VerifyKey | None = None,
                      source: str = "federation manifest") -> Manifest:
        """Verify a parsed manifest: signature first, then the structure of what it signed."""
        if not isinstance(document, dict):
            raise ConfigurationError(f"{source}: a manifest is a JSON object")
        authority, signature, signed = _check_signature(document, source, expected_authority)
        return _build_manifest(document, source, authority, signature, signed)

    def to_document(self) -> dict[str, Any]:
        """The JSON object this manifest was read from (signature included)."""
        body = _manifest_body(self.federation_id, self.created, self.aggregator, self.members,
                              self.parameters, self.authority_public_key)
        return {**body, "signature": self.signature.hex()}

    @cached_property
    def _index(self) -> dict[str, Member]:
        return {member.name: member for member in self.members}

    def member(self, name: str, role: Role | None = None) -> Member:
        """The member called ``name`` (of ``role``, if given); unknown names are refused."""
        found = self._index.get(name) if isinstance(name, str) else None
        if found is None:
            shown = repr(name) if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else "?"
            raise AuthenticationError(f"{shown} is not a member of this federation")
        if role is not None and found.role != role:
            raise AuthenticationError(f"member {name} is not a {role}")
        return found

    def nodes(self) -> tuple[Member, ...]:
        return self._with_role("node")

    def researchers(self) -> tuple[Member, ...]:
        return self._with_role("researcher")

    def auditors(self) -> tuple[Member, ...]:
        return self._with_role("auditor")

    def _with_role(self, role: Role) -> tuple[Member, ...]:
        return tuple(member for member in self.members if member.role == role)

    def verify_keys(self) -> dict[str, VerifyKey]:
        """Every party's public key by name: all members and the aggregator."""
        keys = {member.name: member.public_key for member in self.members}
        keys[self.aggregator.name] = self.aggregator.public_key
        return keys

    def threshold_for(self, n_participants: int) -> int:
        """How many of ``n_participants`` must survive: a strict majority at the least."""
        if isinstance(n_participants, bool) or not isinstance(n_participants, int) \
                or n_participants < 1:
            raise LocalError("the number of participants must be a positive integer")
        n = n_participants
        # the fraction as the simple ratio it stands for (2/3, not 0.666...6), so that
        # float rounding never asks for one participant more than intended
        fraction = Fraction(self.parameters.threshold_fraction).limit_denominator(1_000_000)
        return min(n, max(n // 2 + 1, math.ceil(fraction * n)))


def canonical_json(value: Any) -> bytes:
    """The bytes the authority signs: sorted keys, no whitespace, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")


def sign_manifest(body: Mapping[str, Any], authority: SigningIdentity) -> dict[str, Any]:
    """``body`` with the authority's signature added (``body`` has no ``signature`` key)."""
    if "signature" in body:
        raise LocalError("the manifest body must not carry a signature already")
    signed = {**body, "authority_public_key": authority.verify_key.hex()}
    return {**signed, "signature": authority.sign(canonical_json(signed)).hex()}


def aggregator_url(host: str, port: int) -> str:
    # an IPv6 literal goes in brackets in a URL
    shown = f"[{host}]" if ":" in host else host
    return f"wss://{shown}:{port}"


def _check_signature(document: dict[str, Any], source: str,
                     expected: str | VerifyKey | None) -> tuple[VerifyKey, bytes, bytes]:
    authority = _hex_key(document.get("authority_public_key"), f"{source}: authority key",
                         AuthenticationError)
    if expected is not None and authority != _pinned(expected):
        raise AuthenticationError(f"{source}: signed by another authority than the pinned one")
    text = document.get("signature")
    if not isinstance(text, str) or not re.fullmatch(f"[0-9a-fA-F]{{{_SIGNATURE_HEX}}}", text):
        raise AuthenticationError(f"{source}: the signature is missing or malformed")
    signature = bytes.fromhex(text)
    signed = canonical_json({k: v for k, v in document.items() if k != "signature"})
    try:
        authority.verify(signed, signature)
    except CryptoError:
        raise AuthenticationError(
            f"{source}: the authority's signature does not verify (the file was changed "
            "after it was signed)") from None
    return authority, signature, signed


def _pinned(expected: str | VerifyKey) -> VerifyKey:
    if isinstance(expected, VerifyKey):
        return expected
    return _hex_key(expected, "the pinned authority key", ConfigurationError)


def _hex_key(value: Any, what: str, error: type[Exception]) -> VerifyKey:
    if not isinstance(value, str) or not re.fullmatch(f"[0-9a-fA-F]{{{_KEY_HEX}}}", value):
        raise error(f"{what} must be {_KEY_HEX} hex characters")
    return VerifyKey(bytes.fromhex(value))


def _build_manifest(doc: dict[str, Any], source: str, authority: VerifyKey, signature: bytes,
                    signed: bytes) -> Manifest:
    _keys(doc, _TOP_KEYS, source)
    if doc["format"] != FORMAT:
        raise ConfigurationError(f"{source}: format must be {FORMAT!r}")
    federation_id = _text(doc["federation_id"], f"{source}: federation_id", FEDERATION_ID_PATTERN)
    created = _timestamp(doc["created"], f"{source}: created")
    aggregator = _aggregator(doc["aggregator"], f"{source}: aggregator")
    members = _members(doc["members"], f"{source}: members")
    parameters = _parameters(doc["parameters"], f"{source}: parameters")
    _check_membership(aggregator, members, parameters, source)
    return Manifest(federation_id=federation_id, created=created, aggregator=aggregator,
                    members=members, parameters=parameters, authority_public_key=authority,
                    signature=signature, digest=hashlib.sha256(signed).digest())


def _aggregator(value: Any, where: str) -> AggregatorEntry:
    _keys(value, _AGGREGATOR_KEYS, where)
    if value["name"] != AGGREGATOR:
        raise ConfigurationError(f"{where}: name must be {AGGREGATOR!r}")
    return AggregatorEntry(name=AGGREGATOR, host=_host(value["host"], f"{where}.host"),
                           port=_port(value["port"], f"{where}.port"),
                           public_key=_hex_key(value["public_key"], f"{where}.public_key",
                                               ConfigurationError))


def _members(value: Any, where: str) -> tuple[Member, ...]:
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise ConfigurationError(f"{where} must be a list of at most {MAX_MEMBERS} members")
    members = []
    for i, raw in enumerate(value):
        at = f"{where}[{i}]"
        _keys(raw, _MEMBER_KEYS, at)
        if raw["role"] not in ROLES:
            raise ConfigurationError(f"{at}.role must be one of {', '.join(ROLES)}")
        members.append(Member(name=_text(raw["name"], f"{at}.name", NAME_PATTERN),
                              role=cast(Role, raw["role"]),
                              public_key=_hex_key(raw["public_key"], f"{at}.public_key",
                                                  ConfigurationError)))
    return tuple(members)


def _parameters(value: Any, where: str) -> Parameters:
    _keys(value, frozenset(DEFAULT_PARAMETERS), where)
    fraction = _number(value["threshold_fraction"], f"{where}.threshold_fraction")
    if not 0 < fraction <= 1:
        raise ConfigurationError(f"{where}.threshold_fraction must be in (0, 1]")
    if value["protection"] not in PROTECTIONS:
        raise ConfigurationError(f"{where}.protection must be one of {', '.join(PROTECTIONS)}")
    timeout = _number(value["stage_timeout_s"], f"{where}.stage_timeout_s")
    if timeout <= 0:
        raise ConfigurationError(f"{where}.stage_timeout_s must be positive")
    return Parameters(
        threshold_fraction=fraction,
        min_participants=_integer(value["min_participants"], f"{where}.min_participants", 2),
        max_rows_per_node=_integer(value["max_rows_per_node"], f"{where}.max_rows_per_node", 1),
        protection=value["protection"],
        stage_timeout_s=timeout,
    )


def _check_membership(aggregator: AggregatorEntry, members: tuple[Member, ...],
                      parameters: Parameters, source: str) -> None:
    _check_names([m.name for m in members], source)
    # one key per party: a shared key would let one party speak as another
    keys = [aggregator.public_key, *(m.public_key for m in members)]
    if len(set(keys)) != len(keys):
        raise ConfigurationError(f"{source}: two parties have the same public key")
    n_nodes = sum(1 for m in members if m.role == "node")
    if n_nodes < parameters.min_participants:
        raise ConfigurationError(f"{source}: {n_nodes} node(s), fewer than min_participants "
                                 f"({parameters.min_participants})")


def _manifest_body(federation_id: str, created: str, aggregator: AggregatorEntry,
                   members: Iterable[Member], parameters: Parameters,
                   authority: VerifyKey) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "federation_id": federation_id,
        "created": created,
        "aggregator": {"name": aggregator.name, "host": aggregator.host, "port": aggregator.port,
                       "public_key": aggregator.public_key.hex()},
        "members": [{"name": m.name, "role": m.role, "public_key": m.public_key.hex()}
                    for m in members],
        "parameters": {
            "threshold_fraction": parameters.threshold_fraction,
            "min_participants": parameters.min_participants,
            "max_rows_per_node": parameters.max_rows_per_node,
            "protection": parameters.protection,
            "stage_timeout_s": parameters.stage_timeout_s,
        },
        "authority_public_key": authority.hex(),
    }


# --- validation helpers (every failure is a readable ConfigurationError) ---------------------


def _keys(value: Any, expected: frozenset[str], where: str) -> None:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a JSON object")
    missing = sorted(expected - value.keys())
    unknown = sorted(map(str, value.keys() - expected))
    if missing:
        raise ConfigurationError(f"{where}: missing {', '.join(missing)}")
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _text(value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where} must be a non-empty string")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigurationError(f"{where}: {value!r} must match {pattern.pattern}")
    return value


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{where} must be an integer >= {minimum}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{where} must be a finite number")
    return value


def _port(value: Any, where: str) -> int:
    port = _integer(value, where, 1)
    if port > 65535:
        raise ConfigurationError(f"{where} must be in 1..65535")
    return port


def _host(value: Any, where: str) -> str:
    """A host nodes can connect to: an IP address (not a wildcard) or an ASCII DNS name."""
    text = _text(value, where)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        if len(text) > 253 or not _DNS_HOST.fullmatch(text):
            raise ConfigurationError(
                f"{where}: {text!r} is neither an IP address nor a DNS name") from None
        return text
    if address.is_unspecified or getattr(address, "scope_id", None):
        raise ConfigurationError(
            f"{where}: {text!r} is not an address nodes can connect to; give the aggregator's "
            "public name or IP (to listen on every interface, edit 'host' in aggregator.json)")
    return text


def _timestamp(value: Any, where: str) -> str:
    text = _text(value, where)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigurationError(f"{where} must be an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise ConfigurationError(f"{where} must say its time zone (UTC)")
    return text


def _check_names(names: list[str], where: str) -> None:
    seen: dict[str, str] = {}
    for name in names:
        _text(name, f"{where}: member name", NAME_PATTERN)
        folded = name.lower()
        if folded in RESERVED_NAMES:
            raise ConfigurationError(f"{where}: the name {name!r} is reserved")
        if folded in seen:
            raise ConfigurationError(f"{where}: the name {name!r} is used twice"
                                     + (f" (as {seen[folded]!r})" if seen[folded] != name else ""))
        seen[folded] = name


# --- JSON files -------------------------------------------------------------------------------


def _read_json(path: Path, what: str, limit: int) -> Any:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigurationError(f"{what} {path} is larger than {limit} bytes")
    return _decode_json(data, f"{what} {path}")


def _decode_json(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys,
                          parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise ConfigurationError(f"{where} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ConfigurationError(f"{where} is not acceptable JSON: {exc}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # two values for one key would let two JSON parsers read two different manifests
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of either.

    The temporary file is created with ``mode`` already (os.open, O_EXCL), so a private key
    is never readable by others, not even for an instant.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if hasattr(os, "fchmod"):
                os.fchmod(handle.fileno(), mode)  # the umask may have taken more bits away
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write_json(path: Path, value: Any, mode: int = PUBLIC_MODE) -> None:
    _write_file(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(), mode)


# --- key files ----------------------------------------------------------------------------------


def write_identity(path: str | os.PathLike[str], name: str, role: str, federation_id: str,
                   identity: SigningIdentity) -> None:
    """Write a private key file (mode 0600, atomically)."""
    document = {"format": KEY_FORMAT, "name": name, "role": role,
                "federation_id": federation_id, "seed": identity.seed().hex()}
    _write_json(Path(path), document, PRIVATE_MODE)


def load_identity(path: str | os.PathLike[str], *,
                  manifest: Manifest | None = None) -> tuple[str, str, SigningIdentity]:
    """Read a key file: ``(name, role, identity)``.

    Refuses a file that other users can read. With ``manifest``, also checks that the key is
    the one the manifest lists for that name (or the aggregator's), in that federation.
    Error messages never contain the key.
    """
    source = Path(path)
    document = _decode_json(_read_private(source), f"key file {source}")
    _keys(document, _KEY_FILE_KEYS, f"key file {source}")
    if document["format"] != KEY_FORMAT:
        raise ConfigurationError(f"key file {source}: format must be {KEY_FORMAT!r}")
    name = _text(document["name"], f"key file {source}: name", NAME_PATTERN)
    role = document["role"]
    if role not in KEY_ROLES:
        raise ConfigurationError(f"key file {source}: role must be one of {', '.join(KEY_ROLES)}")
    federation_id = _text(document["federation_id"], f"key file {source}: federation_id")
    seed = document["seed"]
    if not isinstance(seed, str) or not re.fullmatch(f"[0-9a-fA-F]{{{_KEY_HEX}}}", seed):
        raise ConfigurationError(f"key file {source}: seed must be {_KEY_HEX} hex characters")
    identity = SigningIdentity(bytes.fromhex(seed))
    if manifest is not None:
        _check_identity_in(manifest, source, name, role, federation_id, identity)
    return name, role, identity


def _read_private(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ConfigurationError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        # fstat on the open file: the file checked is the file read
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"key file {path} is not a regular file")
        if os.name == "posix" and info.st_mode & 0o077:
            raise ConfigurationError(
                f"key file {path} is accessible by other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); a private key must be mode 0600: "
                f"run `chmod 600 {path}` (and consider the key exposed if others could read it)")
        data = handle.read(MAX_KEY_FILE_BYTES + 1)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigurationError(f"key file {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
    return data


def _check_identity_in(manifest: Manifest, source: Path, name: str, role: str,
                       federation_id: str, identity: SigningIdentity) -> None:
    if federation_id != manifest.federation_id:
        raise ConfigurationError(f"key file {source} belongs to federation {federation_id!r}, "
                                 f"not {manifest.federation_id!r}")
    if role == AGGREGATOR:
        listed = manifest.aggregator.public_key
    else:
        try:
            listed = manifest.member(name, cast(Role, role)).public_key
        except AuthenticationError:
            raise ConfigurationError(
                f"key file {source}: the manifest has no {role} called {name!r}") from None
    if listed != identity.verify_key:
        raise ConfigurationError(
            f"key file {source}: this is not the key the manifest lists for {name!r}")


# --- config files -------------------------------------------------------------------------------

ConfigKind = Literal["node", "aggregator"]
_PATH_KEYS: dict[ConfigKind, tuple[str, ...]] = {
    "node": ("federation", "identity", "ca", "data_model", "policy", "ledger"),
    "aggregator": ("federation", "identity", "tls_cert", "tls_key"),
}
_REQUIRED_TEXT: dict[ConfigKind, tuple[str, ...]] = {
    "node": ("name", "federation", "identity", "aggregator_url", "ca"),
    "aggregator": ("federation", "identity", "host", "tls_cert", "tls_key"),
}


def load_config(path: str | os.PathLike[str], kind: ConfigKind | None = None) -> dict[str, Any]:
    """Read a node or aggregator config; relative paths become absolute, taken from the
    config file's folder (``~`` is expanded). Paths are returned as strings.

    The kind is recognised from the keys (``aggregator_url`` for a node, ``tls_cert`` for
    the aggregator); pass ``kind`` to insist on one. Keys this function does not know are
    passed through unchanged.
    """
    source = Path(path)
    config = _read_json(source, "config file", MAX_CONFIG_BYTES)
    if not isinstance(config, dict):
        raise ConfigurationError(f"config file {source} must hold a JSON object")
    found = _config_kind(config, source)
    if kind is not None and found != kind:
        raise ConfigurationError(f"config file {source} is a {found} config, not a {kind} one")
    _check_config(config, found, source)
    base = source.resolve().parent
    resolved = dict(config)
    for key in _PATH_KEYS[found]:
        if isinstance(config.get(key), str):
            resolved[key] = _resolve(base, config[key])
    if found == "node":
        resolved["data"] = [_resolve_source(base, item, f"config file {source}: data[{i}]")
                            for i, item in enumerate(config.get("data") or [])]
    return resolved


def _config_kind(config: dict[str, Any], source: Path) -> ConfigKind:
    if "aggregator_url" in config:
        return "node"
    if "tls_cert" in config:
        return "aggregator"
    raise ConfigurationError(f"config file {source} is neither a node config (no "
                             "'aggregator_url') nor an aggregator config (no 'tls_cert')")


def _check_config(config: dict[str, Any], kind: ConfigKind, source: Path) -> None:
    where = f"config file {source}"
    for key in _REQUIRED_TEXT[kind]:
        if key not in config:
            raise ConfigurationError(f"{where}: missing {key!r}")
        _text(config[key], f"{where}: {key!r}")
    if kind == "aggregator":
        _port(config.get("port"), f"{where}: 'port'")
        return
    _text(config["name"], f"{where}: 'name'", NAME_PATTERN)
    if not config["aggregator_url"].startswith("wss://"):
        raise ConfigurationError(f"{where}: 'aggregator_url' must start with wss:// (TLS)")
    if not isinstance(config.get("data", []), list | type(None)):
        raise ConfigurationError(f"{where}: 'data' must be a list of data sources")
    for key in ("data_model", "policy"):
        if not isinstance(config.get(key), str | dict | type(None)):
            raise ConfigurationError(f"{where}: {key!r} must be a path, an object or null")
    if not isinstance(config.get("ledger", ""), str):
        raise ConfigurationError(f"{where}: 'ledger' must be a path")


def _resolve(base: Path, value: str) -> str:
    if value == ":memory:":  # SQLite's in-memory database is not a path
        return value
    # resolve() folds the "../" of the default layout, so messages show the real file
    return str((base / Path(value).expanduser()).resolve())


def _resolve_source(base: Path, item: Any, where: str) -> Any:
    if isinstance(item, str):
        return _resolve(base, item)
    if isinstance(item, dict):
        if isinstance(item.get("path"), str):
            return {**item, "path": _resolve(base, item["path"])}
        return dict(item)
    raise ConfigurationError(f"{where} must be a path or a data source object")


# --- init -----------------------------------------------------------------------------------------


def init_federation(
    directory: str | os.PathLike[str],
    nodes: list[str],
    researchers: list[str],
    *,
    aggregator_host: str = "127.0.0.1",
    aggregator_port: int = 8765,
    federation_id: str | None = None,
    threshold_fraction: float = 2 / 3,
    auditors: list[str] | None = None,
    protection: str = "mask",
    force: bool = False,
    rng: RandomSource | None = None,
) -> Path:
    """Create a federation in ``directory`` and return the path of its signed manifest.

    Everything is validated before the first file is written. ``rng`` feeds the Ed25519
    identities and the federation id (tests inject a seeded one); TLS keys always come from
    the OS. ``force`` lets an existing non-empty folder be used: the files init writes are
    replaced, other files are left alone.
    """
    root = Path(directory)
    roles = _validated_roles(nodes, researchers, auditors or [])
    parameters = _validated_parameters(threshold_fraction, protection, len(roles["node"]))
    host = _host(aggregator_host, "aggregator_host")
    port = _port(aggregator_port, "aggregator_port")
    _check_directory(root, force)
    rng = rng if rng is not None else SystemRandom()
    if federation_id is None:
        federation_id = f"fed-{rng.bytes(4).hex()}"
    _text(federation_id, "federation_id", FEDERATION_ID_PATTERN)

    authority = SigningIdentity.generate(rng)
    aggregator_identity = SigningIdentity.generate(rng)
    identities = {name: (role, SigningIdentity.generate(rng))
                  for role, names in roles.items() for name in names}
    aggregator = AggregatorEntry(AGGREGATOR, host, port, aggregator_identity.verify_key)
    members = [Member(name, cast(Role, role), identity.verify_key)
               for name, (role, identity) in identities.items()]
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    created = created.replace("+00:00", "Z")
    body = _manifest_body(federation_id, created, aggregator, members, parameters,
                          authority.verify_key)
    document = sign_manifest(body, authority)
    # verify what we are about to publish with the same code every reader will use
    Manifest.from_document(document, expected_authority=authority.verify_key)

    _make_folders(root, roles["node"])
    write_identity(root / "authority.key", AUTHORITY, AUTHORITY, federation_id, authority)
    write_identity(root / "keys" / f"{AGGREGATOR}.key", AGGREGATOR, AGGREGATOR, federation_id,
                   aggregator_identity)
    for name, (role, identity) in identities.items():
        write_identity(root / "keys" / f"{name}.key", name, role, federation_id, identity)
    _write_tls(root / "tls", host, federation_id)
    _write_configs(root, roles["node"], host, port)
    # the manifest last: a folder whose init was interrupted has no manifest to trust
    manifest_path = root / "federation.json"
    _write_json(manifest_path, document)
    readme = _readme(federation_id, authority.verify_key.hex(), roles, host, port)
    _write_file(root / "README.txt", readme.encode(), PUBLIC_MODE)
    return manifest_path


def _validated_roles(nodes: list[str], researchers: list[str],
                     auditors: list[str]) -> dict[str, list[str]]:
    roles = {"node": nodes, "researcher": researchers, "auditor": auditors}
    for role, names in roles.items():
        if isinstance(names, str | bytes) or not isinstance(names, list | tuple):
            raise ConfigurationError(f"the {role}s must be a list of names")
        for name in names:
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                raise ConfigurationError(
                    f"{role} name {name!r} is not allowed: use 1 to 64 letters, digits, '_', "
                    "'.' or '-', starting with a letter or digit")
    _check_names([name for names in roles.values() for name in names], "member names")
    if len(nodes) + len(researchers) + len(auditors) > MAX_MEMBERS:
        raise ConfigurationError(f"a federation has at most {MAX_MEMBERS} members")
    return {role: list(names) for role, names in roles.items()}


def _validated_parameters(threshold_fraction: float, protection: str, n_nodes: int) -> Parameters:
    defaults = DEFAULT_PARAMETERS
    fraction = _number(threshold_fraction, "threshold_fraction")
    if not 0 < fraction <= 1:
        raise ConfigurationError("threshold_fraction must be in (0, 1]")
    if protection not in PROTECTIONS:
        raise ConfigurationError(f"protection must be one of {', '.join(PROTECTIONS)}, "
                                 f"not {protection!r}")
    if n_nodes < defaults["min_participants"]:
        raise ConfigurationError(f"a federation needs at least {defaults['min_participants']} "
                                 f"nodes (a secure sum over one node reveals it); got {n_nodes}")
    return Parameters(threshold_fraction=float(fraction),
                      min_participants=defaults["min_participants"],
                      max_rows_per_node=defaults["max_rows_per_node"],
                      protection=protection, stage_timeout_s=defaults["stage_timeout_s"])


def _check_directory(root: Path, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ConfigurationError(
            f"{root} already exists and is not empty; choose a new folder, or use force to "
            "overwrite the federation files in it (other files are kept)")


def _make_folders(root: Path, nodes: list[str]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for private in ("keys", "tls"):
            (root / private).mkdir(exist_ok=True)
        # the keys folder holds nothing but secrets: keep others out of listing it too
        os.chmod(root / "keys", 0o700)
        for name in nodes:
            (root / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the federation folder {root}: "
                                 f"{exc.strerror}") from None


def _write_tls(folder: Path, host: str, federation_id: str) -> None:
    hosts = list(dict.fromkeys([host, "127.0.0.1", "::1", "localhost"]))
    ca_cert, ca_key = generate_ca(f"fedtally CA for {federation_id}")
    cert, key = issue_server_certificate(ca_cert, ca_key, AGGREGATOR, hosts)
    _write_file(folder / "ca.pem", ca_cert, PUBLIC_MODE)
    _write_file(folder / "ca.key", ca_key, PRIVATE_MODE)
    _write_file(folder / "aggregator.pem", cert, PUBLIC_MODE)
    _write_file(folder / "aggregator.key", key, PRIVATE_MODE)


def _write_configs(root: Path, nodes: list[str], host: str, port: int) -> None:
    _write_json(root / "aggregator.json", {
        "federation": "federation.json", "identity": f"keys/{AGGREGATOR}.key",
        "host": host, "port": port,
        "tls_cert": "tls/aggregator.pem", "tls_key": "tls/aggregator.key",
    })
    for name in nodes:
        _write_json(root / name / "node.json", {
            "name": name, "federation": "../federation.json", "identity": f"../keys/{name}.key",
            "aggregator_url": aggregator_url(host, port), "ca": "../tls/ca.pem",
            "data": [], "data_model": None, "policy": None, "ledger": "ledger.db",
        })


def _readme(federation_id: str, authority_key: str, roles: Mapping[str, list[str]], host: str,
            port: int) -> str:
    lines = [
        f"fedtally federation {federation_id}",
        f"aggregator: {aggregator_url(host, port)}",
        f"authority public key: {authority_key}",
        "  (tell every party this key through a channel other than this folder)",
        "",
        "This folder holds every private key of the federation. Move each key to its",
        "owner over a secure channel, then delete it here. Keep the folder layout on each",
        "machine: paths in the config files are relative to the config file's own folder.",
        "Private keys are mode 0600; fedtally refuses a key file that others can read.",
        "",
        "STAYS OFFLINE (never copy to a server):",
        "  authority.key   signs federation.json; whoever holds it decides who is a member",
        "  tls/ca.key      whoever holds it can impersonate the aggregator's TLS endpoint",
        "",
        "AGGREGATOR machine:",
        "  federation.json, aggregator.json, keys/aggregator.key,",
        "  tls/aggregator.pem, tls/aggregator.key",
        "  ('host' in aggregator.json is the address it listens on: 0.0.0.0 listens on all)",
        "",
    ]
    for name in roles["node"]:
        lines += [f"NODE {name}:",
                  f"  federation.json, keys/{name}.key, tls/ca.pem, {name}/node.json",
                  f"  then fill in 'data', 'data_model' and 'policy' in {name}/node.json", ""]
    for role in ("researcher", "auditor"):
        for name in roles[role]:
            extra = ", tls/ca.pem" if role == "researcher" else ""
            lines += [f"{role.upper()} {name}:", f"  federation.json, keys/{name}.key{extra}", ""]
    lines += ["Every party checks federation.json against the authority's public key:",
              "compare its 'authority_public_key' with the one you were given separately.", ""]
    return "\n".join(lines)
