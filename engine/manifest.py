"""The signed federation manifest: who is a member, with which key, under which parameters.

Parsing and verification are pure (bytes in, a verified :class:`Manifest` out); reading the
file is the caller's job. Every check of membership in fedtally goes through this class.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crypto.errors import InvalidKey, InvalidSignature
from crypto.identity import VerifyKey
from engine.codec import NAME_PATTERN
from engine.errors import AuthenticationError, ConfigurationError
from engine.query import canonical_json

FORMAT = "fedtally-federation/1"
MEMBER_ROLES = ("node", "researcher", "auditor")
DEFAULT_PARAMETERS: dict[str, Any] = {
    "threshold_fraction": 2 / 3,
    "min_participants": 2,
    "max_rows_per_node": 1 << 24,
    "protection": "mask",
    "stage_timeout_s": 60,
}


@dataclass(frozen=True)
class Member:
    name: str
    role: str
    verify_key: VerifyKey


def signed_content(document: Mapping[str, Any]) -> bytes:
    """The bytes the authority signs: the canonical JSON of everything but the signature."""
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


@dataclass(frozen=True)
class Manifest:
    federation_id: str
    members: Mapping[str, Member]
    aggregator: Member
    aggregator_host: str
    aggregator_port: int
    parameters: Mapping[str, Any]
    authority_key: VerifyKey
    document: Mapping[str, Any]

    @classmethod
    def from_bytes(cls, raw: bytes, *, authority_key: str | None = None) -> Manifest:
        """Parse and verify; raises AuthenticationError for a bad signature or pinned key
        mismatch and ConfigurationError for a malformed document."""
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigurationError("the federation manifest is not valid JSON") from exc
        return cls.from_document(document, authority_key=authority_key)

    @classmethod
    def from_document(cls, document: Any, *, authority_key: str | None = None) -> Manifest:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ConfigurationError(f"the federation manifest is not in format {FORMAT}")
        try:
            authority = VerifyKey.from_hex(_text(document, "authority_public_key"))
            if authority_key is not None and authority.hex() != authority_key.lower():
                raise AuthenticationError("the manifest is signed by another authority")
            signature = bytes.fromhex(_text(document, "signature"))
            authority.verify(signed_content(document), signature)
        except (InvalidSignature, InvalidKey, ValueError) as exc:
            raise AuthenticationError("the federation manifest signature does not verify") \
                from exc
        return cls._parse(document, authority)

    @classmethod
    def _parse(cls, document: dict[str, Any], authority: VerifyKey) -> Manifest:
        federation_id = _text(document, "federation_id")
        aggregator_doc = document.get("aggregator")
        if not isinstance(aggregator_doc, dict):
            raise ConfigurationError("the manifest has no aggregator entry")
        aggregator = Member(_name(aggregator_doc), "aggregator", _key(aggregator_doc))
        members: dict[str, Member] = {}
        raw_members = document.get("members")
        if not isinstance(raw_members, list):
            raise ConfigurationError("the manifest's members must be a list")
        for entry in raw_members:
            if not isinstance(entry, dict):
                raise ConfigurationError("a manifest member is not an object")
            name, role = _name(entry), _text(entry, "role")
            if role not in MEMBER_ROLES:
                raise ConfigurationError(f"member {name} has unknown role {role!r}")
            if name in members or name == aggregator.name:
                raise ConfigurationError(f"member name {name} appears twice")
            members[name] = Member(name, role, _key(entry))
        parameters = dict(DEFAULT_PARAMETERS)
        given = document.get("parameters", {})
        if not isinstance(given, dict) or set(given) - set(DEFAULT_PARAMETERS):
            raise ConfigurationError("the manifest's parameters are malformed or unknown")
        parameters.update(given)
        fraction = parameters["threshold_fraction"]
        if not isinstance(fraction, int | float) or not 0.5 < fraction <= 1:
            raise ConfigurationError("threshold_fraction must be in (0.5, 1]")
        port = aggregator_doc.get("port")
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise ConfigurationError("the aggregator port is invalid")
        return cls(federation_id, members, aggregator, _text(aggregator_doc, "host"), port,
                   parameters, authority, document)

    # --- accessors -------------------------------------------------------------------

    def member(self, name: str) -> Member:
        if name == self.aggregator.name:
            return self.aggregator
        try:
            return self.members[name]
        except KeyError:
            raise AuthenticationError(f"{name!r} is not a member of this federation") from None

    def names(self, role: str) -> tuple[str, ...]:
        return tuple(sorted(n for n, m in self.members.items() if m.role == role))

    def nodes(self) -> tuple[str, ...]:
        return self.names("node")

    def researchers(self) -> tuple[str, ...]:
        return self.names("researcher")

    def verify_keys(self) -> dict[str, VerifyKey]:
        keys = {name: m.verify_key for name, m in self.members.items()}
        keys[self.aggregator.name] = self.aggregator.verify_key
        return keys

    def threshold_for(self, participants: int) -> int:
        """Survivors a round of ``participants`` nodes needs: a strict majority at least."""
        wanted = math.ceil(self.parameters["threshold_fraction"] * participants - 1e-9)
        return min(participants, max(participants // 2 + 1, wanted))

    @property
    def min_participants(self) -> int:
        return int(self.parameters["min_participants"])

    @property
    def max_rows_per_node(self) -> int:
        return int(self.parameters["max_rows_per_node"])

    @property
    def stage_timeout_s(self) -> float:
        return float(self.parameters["stage_timeout_s"])


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"the manifest lacks {key!r}")
    return value


def _name(doc: Mapping[str, Any]) -> str:
    name = _text(doc, "name")
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigurationError(f"{name!r} is not a valid member name")
    return name


def _key(doc: Mapping[str, Any]) -> VerifyKey:
    try:
        return VerifyKey.from_hex(_text(doc, "public_key"))
    except InvalidKey as exc:
        raise ConfigurationError(f"the public key of {doc.get('name')!r} is invalid") from exc
