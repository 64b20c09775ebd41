"""The signed federation manifest: who is a member, with which key, under which parameters.

The manifest is the root of trust of every party: a message is believed only if it is
signed by a key listed here, and the manifest is believed only if the federation
authority's Ed25519 key signed it. The signature covers the canonical JSON of the whole
document except the signature itself (sorted keys, no spaces, ASCII), so reformatting the
file is harmless and changing any value is not.

Parsing and verification are pure (bytes in, a verified :class:`Manifest` out); reading the
file is the caller's job. Every check of membership in fedtally goes through this class.
The signature is checked before the structure: :class:`AuthenticationError` means the
document is not the one the authority signed (or another authority signed it),
:class:`ConfigurationError` means the authority signed something malformed.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from types import MappingProxyType
from typing import Any

from crypto.errors import CryptoError
from crypto.highwater import HighWaterError, RolledBack
from crypto.identity import SigningIdentity, VerifyKey
from crypto.paillier import PaillierPublicKey
from crypto.threshold_paillier import ThresholdPublic
from protocol.codec import NAME_PATTERN, canonical_json
from protocol.collusion import (
    HONEST_FLOOR,
    BoundError,
    choose_neighbours,
    min_decryption_threshold,
    min_nodes,
    min_threshold,
)
from protocol.errors import (
    AuthenticationError,
    ConfigurationError,
    LocalError,
    ParameterMismatch,
    ThresholdNotMet,
)
from protocol.paillier_key import FederationKey
from protocol.params import RoundParams

__all__ = [
    "AGGREGATOR",
    "AUTHORITY",
    "DEFAULT_PARAMETERS",
    "FORMAT",
    "MANIFEST_VERSIONS",
    "MEMBER_ROLES",
    "PROTECTIONS",
    "RESERVED_NAMES",
    "Manifest",
    "Member",
    "aggregator_url",
    "canonical_json",
    "check_federation_size",
    "decode_json",
    "sign_manifest",
    "signed_content",
]

FORMAT = "fedtally-federation/1"
AGGREGATOR = "aggregator"
AUTHORITY = "authority"
MEMBER_ROLES = ("node", "researcher", "auditor")
#: the high-water file beside a node's or the aggregator's config: manifest versions seen
MANIFEST_VERSIONS = "manifest-versions"
PROTECTIONS = ("mask", "paillier")
#: the parameters a manifest carries (all of them: a manifest states every value it binds)
DEFAULT_PARAMETERS: Mapping[str, Any] = MappingProxyType({
    "threshold_fraction": 2 / 3,
    "min_participants": 2,
    "max_rows_per_node": 1 << 24,
    "protection": "mask",
    "stage_timeout_s": 60,
    # DP noise is calibrated so that the shares of this many honest surviving nodes alone
    # give the promised rho (Kairouz et al. 2021); 1 trusts no other node at all
    "dp_honest_nodes": 1,
    # c: nodes that may collude with the aggregator (or a researcher). Every threshold is
    # derived from it (protocol/collusion.py): t > (n + c)/2 and t - c >= 2 survivors, a
    # Paillier quorum T > (N + c)/2. 1, not 0: the aggregator is often run by a member
    # hospital, and with 0 the aggregator plus one node learns a third node's statistic in
    # a 2-of-3 round; under the default fraction 2/3 it changes no threshold from 4 nodes up
    "max_colluding_nodes": 1,
    # run large rounds over the SecAgg+ graph (Bell et al. 2020) when it holds against c:
    # O(log n) work per node instead of O(n), but a malicious aggregator may then learn
    # partial sums, each over at least t_s - c_local honest nodes, instead of one total
    "secagg_plus": False,
    # mask mode: nodes commit to their vectors and researchers check every total against
    # the commitments (protocol/commitment.py), so a malicious aggregator cannot forge one
    "verifiable_totals": True,
    # protection "paillier": {"n": hex modulus, "decryption_threshold": t, "holders": [node
    # names in key-share order], "verification_base": hex, "verification_keys": [hex, one
    # per holder]}; null under "mask"
    "paillier": None,
})
#: parameters a manifest may leave out (added after the first manifests were written); an
#: older manifest gets the safe values, never weaker ones
OPTIONAL_PARAMETERS = {"dp_honest_nodes": 1, "paillier": None, "max_colluding_nodes": 1,
                       "secagg_plus": False, "verifiable_totals": True}
#: the smallest Paillier modulus a manifest accepts (init defaults to 3072 bits)
MIN_MANIFEST_PAILLIER_BITS = 2048
_PAILLIER_KEYS = frozenset({"n", "decryption_threshold", "holders", "verification_base",
                            "verification_keys"})
#: names that would collide with the folder layout ``init`` writes (compared
#: case-insensitively, because a node's name is also a folder name and some file systems
#: ignore case)
RESERVED_NAMES = frozenset({AGGREGATOR, AUTHORITY, "keys", "tls", "federation.json",
                            "aggregator.json", "authority.key", "readme.txt"})
FEDERATION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
#: every input bounded: a manifest of 10,000 members is about 1.5 MB
MAX_MANIFEST_BYTES = 8 << 20
MAX_MEMBERS = 10_000
_SIGNATURE_HEX = re.compile(r"[0-9a-fA-F]{128}")
_KEY_HEX = re.compile(r"[0-9a-fA-F]{64}")
_DNS_HOST = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOP_KEYS = frozenset({"format", "federation_id", "created", "aggregator", "members",
                       "parameters", "authority_public_key", "signature"})
#: keys a manifest may leave out (added after the first manifests were written)
_OPTIONAL_TOP_KEYS = frozenset({"version"})
_AGGREGATOR_KEYS = frozenset({"name", "host", "port", "public_key"})
_OPTIONAL_AGGREGATOR_KEYS = frozenset({"tls_ca"})
_FINGERPRINT_HEX = re.compile(r"[0-9a-f]{64}")
_MEMBER_KEYS = frozenset({"name", "role", "public_key"})
_SOURCE = "federation manifest"


@dataclass(frozen=True)
class Member:
    name: str
    role: str
    verify_key: VerifyKey


def signed_content(document: Mapping[str, Any]) -> bytes:
    """The bytes the authority signs: the canonical JSON of everything but the signature."""
    return canonical_json({k: v for k, v in document.items() if k != "signature"})


def manifest_body(federation_id: str, created: str, aggregator_host: str, aggregator_port: int,
                  aggregator_key: VerifyKey, members: Iterable[tuple[str, str, VerifyKey]],
                  parameters: Mapping[str, Any], *, tls_ca: str | None = None
                  ) -> dict[str, Any]:
    """A first manifest's body (version 1, to pass to :func:`sign_manifest`): ``members``
    as (name, role, key) in the order to list them, ``parameters`` over the defaults."""
    aggregator = {"name": AGGREGATOR, "host": aggregator_host, "port": aggregator_port,
                  "public_key": aggregator_key.hex()}
    if tls_ca is not None:
        aggregator["tls_ca"] = tls_ca
    return {"format": FORMAT, "federation_id": federation_id, "version": 1,
            "created": created, "aggregator": aggregator,
            "members": [{"name": name, "role": role, "public_key": key.hex()}
                        for name, role, key in members],
            "parameters": {**DEFAULT_PARAMETERS, **parameters}}


def sign_manifest(body: Mapping[str, Any], authority: SigningIdentity) -> dict[str, Any]:
    """``body`` with the authority's public key and signature added (pure: no clock, no I/O).

    The result is not checked: pass it to :meth:`Manifest.from_document` to verify it.
    """
    if "signature" in body or "authority_public_key" in body:
        raise LocalError("the manifest body must not carry an authority key or signature")
    signed = {**body, "authority_public_key": authority.verify_key.hex()}
    try:
        content = signed_content(signed)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"the manifest body is not plain JSON: {exc}") from None
    return {**signed, "signature": authority.sign(content).hex()}


def aggregator_url(host: str, port: int) -> str:
    """The websocket URL of an aggregator (an IPv6 literal goes in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"wss://{shown}:{port}"


def round_threshold(threshold_fraction: float, participants: int, max_colluding: int = 0,
                    honest: int = HONEST_FLOOR) -> int:
    """Survivors a round of ``participants`` nodes needs under ``threshold_fraction`` with up
    to ``max_colluding`` colluding nodes: at least the fraction, never more than everyone,
    and always within the collusion bounds (t > (n + c)/2, t - c >= ``honest``; so a
    strict majority). ThresholdNotMet when no threshold of that many nodes holds."""
    if isinstance(participants, bool) or not isinstance(participants, int) or participants < 1:
        raise LocalError("the number of participants must be a positive integer")
    n = participants
    # the fraction as the simple ratio it stands for (2/3, not 0.666...6), so that float
    # rounding never asks for one participant more than intended
    fraction = Fraction(threshold_fraction).limit_denominator(1_000_000)
    try:
        bound = min_threshold(n, max_colluding, honest)
    except BoundError as exc:
        raise ThresholdNotMet(str(exc)) from None
    return min(n, max(bound, math.ceil(fraction * n)))


@dataclass(frozen=True)
class Manifest:
    """A verified federation manifest. Build it with :meth:`from_bytes` or
    :meth:`from_document`; never construct it directly."""

    federation_id: str
    #: the members by name, in the order the document lists them (the aggregator is not one)
    members: Mapping[str, Member]
    aggregator: Member
    aggregator_host: str
    aggregator_port: int
    parameters: Mapping[str, Any]
    authority_key: VerifyKey
    document: Mapping[str, Any]

    # --- parsing -------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, raw: bytes, *, authority_key: str | VerifyKey | None = None,
                   source: str = _SOURCE) -> Manifest:
        """Parse and verify; raises AuthenticationError for a bad signature or pinned key
        mismatch and ConfigurationError for a malformed document. ``source`` names the
        manifest in error messages (e.g. its path)."""
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise LocalError("a manifest is parsed from bytes")
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ConfigurationError(f"{source}: larger than {MAX_MANIFEST_BYTES} bytes")
        return cls.from_document(decode_json(bytes(raw), source), authority_key=authority_key,
                                 source=source)

    @classmethod
    def from_document(cls, document: Any, *, authority_key: str | VerifyKey | None = None,
                      source: str = _SOURCE) -> Manifest:
        """Verify a parsed manifest: the signature first, then the structure it signed."""
        if not isinstance(document, dict):
            raise ConfigurationError(f"{source}: a manifest is a JSON object")
        authority = _check_signature(document, source, authority_key)
        return _build(document, source, authority)

    def to_document(self) -> dict[str, Any]:
        """The JSON object this manifest was read from, signature included (a copy)."""
        return copy.deepcopy(dict(self.document))

    # --- derived values ------------------------------------------------------------------

    @property
    def signed_content(self) -> bytes:
        return signed_content(self.document)

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 of the signed canonical bytes: names this exact manifest in logs."""
        return hashlib.sha256(self.signed_content).digest()

    @property
    def created(self) -> str:
        return str(self.document["created"])

    @property
    def aggregator_url(self) -> str:
        return aggregator_url(self.aggregator_host, self.aggregator_port)

    @property
    def version(self) -> int:
        """Raised by every re-signing (add-member, remove-member, rotate-key): members
        refuse a manifest whose version goes backwards."""
        return int(self.document.get("version", 1))

    @property
    def tls_ca(self) -> str | None:
        """SHA-256 (hex) of the federation CA's certificate, as the authority signed it."""
        value = self.document["aggregator"].get("tls_ca")
        return None if value is None else str(value)

    @property
    def authority_fingerprint(self) -> str:
        """SHA-256 (hex) of the authority's public key: what members pin."""
        return key_fingerprint(self.authority_key)

    # --- membership ----------------------------------------------------------------------

    def member(self, name: str, role: str | None = None) -> Member:
        """The member called ``name`` (of ``role``, if given). Unknown names, the
        aggregator's name and wrong roles raise AuthenticationError."""
        found = self.members.get(name) if isinstance(name, str) else None
        if found is None:
            shown = repr(name) if isinstance(name, str) and NAME_PATTERN.fullmatch(name) else "?"
            raise AuthenticationError(f"{shown} is not a member of this federation")
        if role is not None and found.role != role:
            raise AuthenticationError(f"member {name} is not a {role}")
        return found

    def names(self, role: str) -> tuple[str, ...]:
        return tuple(sorted(n for n, m in self.members.items() if m.role == role))

    def nodes(self) -> tuple[str, ...]:
        return self.names("node")

    def researchers(self) -> tuple[str, ...]:
        return self.names("researcher")

    def auditors(self) -> tuple[str, ...]:
        return self.names("auditor")

    def verify_keys(self) -> dict[str, VerifyKey]:
        """Every party's public key by name: all members and the aggregator."""
        keys = {name: m.verify_key for name, m in self.members.items()}
        keys[self.aggregator.name] = self.aggregator.verify_key
        return keys

    def check_identity(self, name: str, role: str, federation_id: str,
                       verify_key: VerifyKey) -> None:
        """Check that a key file's contents are the key this manifest lists for ``name``
        as ``role`` (``aggregator`` and ``authority`` included), in this federation.

        Raises ConfigurationError: a key that does not match is a local set-up mistake.
        """
        if federation_id != self.federation_id:
            raise ConfigurationError(f"the key belongs to federation {federation_id!r}, "
                                     f"not {self.federation_id!r}")
        if role == AUTHORITY:
            listed = self.authority_key
        elif role == AGGREGATOR and name == self.aggregator.name:
            listed = self.aggregator.verify_key
        else:
            member = self.members.get(name)
            if member is None or member.role != role:
                raise ConfigurationError(f"the manifest has no {role} called {name!r}")
            listed = member.verify_key
        if listed != verify_key:
            raise ConfigurationError(f"this is not the key the manifest lists for {name!r}")

    # --- parameters ----------------------------------------------------------------------

    def threshold_for(self, participants: int) -> int:
        """Survivors a round of ``participants`` nodes needs: the threshold fraction, and
        within the collusion bounds for ``max_colluding_nodes`` (ThresholdNotMet when no
        threshold of that many nodes holds)."""
        return round_threshold(self.threshold_fraction, participants, self.max_colluding_nodes,
                               self.honest_floor)

    def graph_for(self, participants: int) -> int:
        """The neighbours k of the SecAgg+ graph a round of ``participants`` nodes runs
        over, or 0 for the complete graph (SecAgg+ not enabled, or not cheaper)."""
        if not self.secagg_plus or self.protection != "mask":
            return 0
        return choose_neighbours(participants, self.max_colluding_nodes, self.honest_floor)

    def check_round(self, params: RoundParams) -> None:
        """A round's parameters against the collusion bound this manifest states; raises
        ParameterMismatch (or ThresholdNotMet when the participants are too few)."""
        n = len(params.participants)
        if params.max_colluding < self.max_colluding_nodes:
            raise ParameterMismatch(f"the round holds against {params.max_colluding} "
                                    f"colluding node(s); the manifest states "
                                    f"{self.max_colluding_nodes}")
        if params.threshold < self.threshold_for(n):
            raise ParameterMismatch("the round's threshold is below what the manifest demands")
        if params.neighbours:
            if not self.secagg_plus or self.protection != "mask":
                raise ParameterMismatch("this federation runs rounds over the complete graph")
            if params.honest_inputs < self.honest_floor:
                raise ParameterMismatch(f"the round's SecAgg+ graph does not give every sum "
                                        f"{self.honest_floor} honest inputs")

    @property
    def max_colluding_nodes(self) -> int:
        return int(self.parameters["max_colluding_nodes"])

    @property
    def secagg_plus(self) -> bool:
        return bool(self.parameters["secagg_plus"])

    @property
    def verifiable_totals(self) -> bool:
        """Mask mode with committed contributions (Paillier totals are decrypted from the
        signed ciphertexts, so there is nothing to add there)."""
        return self.protection == "mask" and bool(self.parameters["verifiable_totals"])

    @property
    def honest_floor(self) -> int:
        """Honest inputs every released sum must hold: two, or the DP assumption if more."""
        return max(HONEST_FLOOR, self.dp_honest_nodes)

    @property
    def dp_honest_nodes(self) -> int:
        return int(self.parameters["dp_honest_nodes"])

    @property
    def threshold_fraction(self) -> float:
        return float(self.parameters["threshold_fraction"])

    @property
    def min_participants(self) -> int:
        return int(self.parameters["min_participants"])

    @property
    def max_rows_per_node(self) -> int:
        return int(self.parameters["max_rows_per_node"])

    @property
    def protection(self) -> str:
        return str(self.parameters["protection"])

    @property
    def stage_timeout_s(self) -> float:
        return float(self.parameters["stage_timeout_s"])

    @cached_property
    def paillier_key(self) -> FederationKey | None:
        """The federation's threshold Paillier key (protection "paillier"), else None."""
        if self.protection != "paillier":
            return None
        return _paillier_key(self.parameters["paillier"], self.nodes(), "paillier",
                             self.max_colluding_nodes)


# --- signature ----------------------------------------------------------------------------


def _check_signature(document: dict[str, Any], source: str,
                     pinned: str | VerifyKey | None) -> VerifyKey:
    authority = _hex_key(document.get("authority_public_key"), f"{source}: authority key",
                         AuthenticationError)
    if pinned is not None and authority != _pinned(pinned):
        raise AuthenticationError(f"{source}: signed by another authority than the pinned one")
    text = document.get("signature")
    if not isinstance(text, str) or not _SIGNATURE_HEX.fullmatch(text):
        raise AuthenticationError(f"{source}: the signature is missing or malformed")
    try:
        content = signed_content(document)
    except (TypeError, ValueError, RecursionError):
        raise ConfigurationError(f"{source}: the document is not plain JSON") from None
    try:
        authority.verify(content, bytes.fromhex(text))
    except CryptoError:
        raise AuthenticationError(f"{source}: the authority's signature does not verify (the "
                                  "document was changed after it was signed)") from None
    return authority


def pinned_manifest(raw: bytes, pins: Mapping[str, Any], *, ca_pem_fingerprint: str | None,
                    source: str,
                    remember_version: Callable[[str, int], int] | None = None) -> Manifest:
    """A member's manifest checked against the trust roots its config pins: ``authority``
    (fingerprint of the authority key) and ``tls_ca`` (fingerprint of the CA certificate),
    and the CA file the member actually uses (its fingerprint, when it has one). A config
    without pins (written before pinning existed) is refused: a member that pins nothing
    would believe any authority.

    ``remember_version(federation_id, version)`` (a member's high-water file, see
    :func:`crypto.highwater.raise_high_water`) refuses a manifest older than one the member
    has accepted: a rolled-back manifest may still list a removed member or a replaced key."""
    authority, tls_ca = pins.get("authority"), pins.get("tls_ca")
    for name, value in (("authority", authority), ("tls_ca", tls_ca)):
        if not isinstance(value, str) or not _FINGERPRINT_HEX.fullmatch(value):
            raise ConfigurationError(f"{source}: the config must pin {name!r} (a 64-hex-digit "
                                     "SHA-256 fingerprint; federation init writes it)")
    manifest = Manifest.from_bytes(raw, source=source)
    check_pins(manifest, authority=authority, tls_ca=tls_ca, source=source)
    if ca_pem_fingerprint is not None and ca_pem_fingerprint != tls_ca:
        raise AuthenticationError(
            f"{source}: the CA certificate file is {ca_pem_fingerprint[:16]}..., not the "
            f"pinned {str(tls_ca)[:16]}...: refusing it")
    if remember_version is not None:
        try:
            remember_version(manifest.federation_id, manifest.version)
        except RolledBack as exc:
            raise AuthenticationError(
                f"{source} is version {exc.value}, older than version {exc.seen} this member "
                "has already accepted: refusing a rolled-back manifest (it may still list a "
                "removed member or a replaced key)") from None
        except HighWaterError as exc:
            raise ConfigurationError(str(exc)) from None
    return manifest


def key_fingerprint(key: VerifyKey) -> str:
    """SHA-256 (hex) of an Ed25519 public key."""
    return hashlib.sha256(key.raw).hexdigest()


def check_pins(manifest: Manifest, *, authority: str | None, tls_ca: str | None,
               source: str) -> None:
    """Refuse a manifest signed by another authority than the pinned one, or naming another
    CA than the pinned one: one line naming both fingerprints."""
    if authority is not None and manifest.authority_fingerprint != authority.lower():
        raise AuthenticationError(
            f"{source} is signed by authority {manifest.authority_fingerprint[:16]}..., not "
            f"the pinned {authority.lower()[:16]}...: refusing it")
    if tls_ca is not None and manifest.tls_ca is not None and manifest.tls_ca != tls_ca.lower():
        raise AuthenticationError(
            f"{source} names TLS CA {manifest.tls_ca[:16]}..., not the pinned "
            f"{tls_ca.lower()[:16]}...: refusing it")


def _pinned(pinned: str | VerifyKey) -> VerifyKey:
    if isinstance(pinned, VerifyKey):
        return pinned
    return _hex_key(pinned, "the pinned authority key", ConfigurationError)


def _hex_key(value: Any, what: str, error: type[Exception]) -> VerifyKey:
    if not isinstance(value, str) or not _KEY_HEX.fullmatch(value):
        raise error(f"{what} must be 64 hex characters")
    try:
        return VerifyKey(bytes.fromhex(value))
    except CryptoError:
        raise error(f"{what} is not a valid Ed25519 public key") from None


# --- structure ----------------------------------------------------------------------------


def _build(doc: dict[str, Any], source: str, authority: VerifyKey) -> Manifest:
    _keys(doc, _TOP_KEYS, source, _OPTIONAL_TOP_KEYS)
    if doc["format"] != FORMAT:
        raise ConfigurationError(f"{source}: format must be {FORMAT!r}")
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**53:
        raise ConfigurationError(f"{source}: version must be a whole number of at least 1")
    federation_id = _text(doc["federation_id"], f"{source}: federation_id",
                          FEDERATION_ID_PATTERN)
    _timestamp(doc["created"], f"{source}: created")
    where = f"{source}: aggregator"
    raw = doc["aggregator"]
    _keys(raw, _AGGREGATOR_KEYS, where, _OPTIONAL_AGGREGATOR_KEYS)
    if raw["name"] != AGGREGATOR:
        raise ConfigurationError(f"{where}: name must be {AGGREGATOR!r}")
    tls_ca = raw.get("tls_ca")
    if tls_ca is not None and (not isinstance(tls_ca, str)
                               or not _FINGERPRINT_HEX.fullmatch(tls_ca)):
        raise ConfigurationError(f"{where}.tls_ca must be the CA certificate's SHA-256 (64 "
                                 "lowercase hex digits)")
    aggregator = Member(AGGREGATOR, AGGREGATOR,
                        _hex_key(raw["public_key"], f"{where}.public_key", ConfigurationError))
    host, port = _host(raw["host"], f"{where}.host"), _port(raw["port"], f"{where}.port")
    members = _members(doc["members"], f"{source}: members")
    parameters = _parameters(doc["parameters"], f"{source}: parameters")
    _check_names([m.name for m in members], source)
    # one key per party: a shared key would let one party speak as another
    keys = [aggregator.verify_key, *(m.verify_key for m in members)]
    if len(set(keys)) != len(keys):
        raise ConfigurationError(f"{source}: two parties have the same public key")
    n_nodes = sum(1 for m in members if m.role == "node")
    nodes = tuple(sorted(m.name for m in members if m.role == "node"))
    colluding = parameters["max_colluding_nodes"]
    check_federation_size(n_nodes, colluding, parameters["dp_honest_nodes"], source)
    if parameters["protection"] == "paillier":
        _paillier_key(parameters["paillier"], nodes, f"{source}: parameters.paillier",
                      colluding)
    elif parameters["paillier"] is not None:
        raise ConfigurationError(f"{source}: parameters.paillier must be null unless "
                                 "protection is 'paillier'")
    if n_nodes < parameters["min_participants"]:
        raise ConfigurationError(
            f"{source}: {n_nodes} node(s), fewer than min_participants "
            f"({parameters['min_participants']}); a secure sum over one node reveals it")
    return Manifest(federation_id=federation_id,
                    members=MappingProxyType({m.name: m for m in members}),
                    aggregator=aggregator, aggregator_host=host, aggregator_port=port,
                    parameters=MappingProxyType(parameters), authority_key=authority,
                    document=MappingProxyType(copy.deepcopy(doc)))


def check_federation_size(nodes: int, max_colluding: int, dp_honest_nodes: int,
                          where: str) -> None:
    """ConfigurationError when even a round of all ``nodes`` cannot hold
    ``max_colluding`` colluders off (every sum must hold max(2, dp_honest_nodes) honest
    inputs)."""
    honest = max(HONEST_FLOOR, dp_honest_nodes)
    if nodes < min_nodes(max_colluding, honest):
        raise ConfigurationError(
            f"{where}: {nodes} node(s) cannot protect a node's statistic against the "
            f"aggregator and {max_colluding} colluding node(s): every sum must hold {honest} "
            f"honest inputs, so a round needs at least {min_nodes(max_colluding, honest)} "
            "nodes (lower max_colluding_nodes, or add nodes)")


def _members(value: Any, where: str) -> list[Member]:
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise ConfigurationError(f"{where} must be a list of at most {MAX_MEMBERS} members")
    members = []
    for i, raw in enumerate(value):
        at = f"{where}[{i}]"
        _keys(raw, _MEMBER_KEYS, at)
        if raw["role"] not in MEMBER_ROLES:
            raise ConfigurationError(f"{at}.role must be one of {', '.join(MEMBER_ROLES)}")
        members.append(Member(_name(raw["name"], f"{at}.name"), raw["role"],
                              _hex_key(raw["public_key"], f"{at}.public_key",
                                       ConfigurationError)))
    return members


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        value = {**OPTIONAL_PARAMETERS, **value}
    _keys(value, frozenset(DEFAULT_PARAMETERS), where)
    _integer(value["dp_honest_nodes"], f"{where}.dp_honest_nodes", 1)
    _integer(value["max_colluding_nodes"], f"{where}.max_colluding_nodes", 0)
    for flag in ("secagg_plus", "verifiable_totals"):
        if not isinstance(value[flag], bool):
            raise ConfigurationError(f"{where}.{flag} must be true or false")
    fraction = _number(value["threshold_fraction"], f"{where}.threshold_fraction")
    if not 0 < fraction <= 1:  # threshold_for never goes below a strict majority anyway
        raise ConfigurationError(f"{where}.threshold_fraction must be in (0, 1]")
    if value["protection"] not in PROTECTIONS:
        raise ConfigurationError(f"{where}.protection must be one of {', '.join(PROTECTIONS)}")
    if _number(value["stage_timeout_s"], f"{where}.stage_timeout_s") <= 0:
        raise ConfigurationError(f"{where}.stage_timeout_s must be positive")
    _integer(value["min_participants"], f"{where}.min_participants", 2)
    _integer(value["max_rows_per_node"], f"{where}.max_rows_per_node", 1)
    return dict(value)


def _paillier_key(value: Any, nodes: tuple[str, ...], where: str,
                  max_colluding: int) -> FederationKey:
    """The threshold key a manifest declares: every node holds one share, and any
    decryption quorum is more than (N + c)/2 of them (so two quorums always share an honest
    node, even with c colluders decrypting for both, and an honest node decrypts at most
    once per round)."""
    _keys(value, _PAILLIER_KEYS, where)
    try:
        public = PaillierPublicKey(_big_hex(value["n"], f"{where}.n"))
    except CryptoError as exc:
        raise ConfigurationError(f"{where}.n: {exc}") from None
    if public.bits < MIN_MANIFEST_PAILLIER_BITS:
        raise ConfigurationError(f"{where}.n has {public.bits} bits; at least "
                                 f"{MIN_MANIFEST_PAILLIER_BITS} are required")
    holders = value["holders"]
    if not isinstance(holders, list) or not all(isinstance(h, str) for h in holders) or \
            sorted(holders) != list(nodes) or len(set(holders)) != len(holders):
        raise ConfigurationError(f"{where}.holders must list every node exactly once")
    threshold = _integer(value["decryption_threshold"], f"{where}.decryption_threshold", 1)
    try:
        low = min_decryption_threshold(len(nodes), max_colluding)
    except BoundError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    if not low <= threshold <= len(nodes):
        raise ConfigurationError(f"{where}.decryption_threshold must be in [{low}, "
                                 f"{len(nodes)}] for {len(nodes)} nodes and "
                                 f"{max_colluding} colluding node(s)")
    keys = value["verification_keys"]
    if not isinstance(keys, list) or len(keys) != len(nodes):
        raise ConfigurationError(f"{where}.verification_keys must hold one key per holder")
    try:
        threshold_public = ThresholdPublic(
            public, threshold, len(nodes),
            _big_hex(value["verification_base"], f"{where}.verification_base"),
            tuple(_big_hex(k, f"{where}.verification_keys[{i}]") for i, k in enumerate(keys)))
    except CryptoError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    return FederationKey(threshold_public, tuple(holders))


def _big_hex(value: Any, where: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{1,4096}", value):
        raise ConfigurationError(f"{where} must be a positive integer in lower-case hex")
    return int(value, 16)


def _check_names(names: list[str], where: str) -> None:
    seen: dict[str, str] = {}
    for name in names:
        folded = name.lower()
        if folded in RESERVED_NAMES:
            raise ConfigurationError(f"{where}: the name {name!r} is reserved")
        if folded in seen:
            raise ConfigurationError(f"{where}: the name {name!r} is used twice"
                                     + (f" (as {seen[folded]!r})" if seen[folded] != name else ""))
        seen[folded] = name


# --- validation helpers (every failure is a readable ConfigurationError) ------------------


def _keys(value: Any, expected: frozenset[str], where: str,
          optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where} must be a JSON object")
    missing = sorted(expected - value.keys())
    unknown = sorted(map(str, value.keys() - expected - optional))
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


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        shown = repr(value) if isinstance(value, str) and len(value) <= 80 else "the name"
        raise ConfigurationError(f"{where}: {shown} is not a valid name: use 1 to 64 letters, "
                                 "digits, '_', '.' or '-', starting with a letter or digit")
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
                f"{where}: {text[:80]!r} is neither an IP address nor a DNS name") from None
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


def decode_json(data: bytes, where: str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no NaN or Infinity; else ConfigurationError."""
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
