"""The federation on disk: reading its manifest, key and config files, and ``init``.

The manifest itself (parsing, signature, structure, membership) is
:mod:`protocol.manifest`; key files are :mod:`crypto.keyfile`. This module adds what needs
files: :func:`load_manifest` and :func:`load_identity` read them, :func:`load_config` reads
a node's or the aggregator's config, and :func:`init_federation` writes a complete
federation into one folder: the manifest, every private key (mode 0600, written
atomically), the TLS CA and the aggregator's certificate, one config file per service, and
a README telling the operator what goes where.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from crypto.identity import SigningIdentity, VerifyKey
from crypto.keyfile import KeyFile, KeyFileError, atomic_write, read_key_file, write_key_file
from crypto.paillier import DEFAULT_KEY_BITS, MAX_KEY_BITS
from crypto.randomness import RandomSource, SystemRandom
from crypto.sharefile import ShareFile, write_share_file
from crypto.threshold_paillier import KeyShare, ThresholdPublic, deal_new
from crypto.tls import certificate_fingerprint, generate_ca, issue_server_certificate
from node.config import PREVIOUS_SUFFIX
from protocol.codec import NAME_PATTERN
from protocol.collusion import BoundError, min_decryption_threshold
from protocol.errors import ConfigurationError
from protocol.manifest import (
    AGGREGATOR,
    AUTHORITY,
    DEFAULT_PARAMETERS,
    MAX_MANIFEST_BYTES,
    MEMBER_ROLES,
    MIN_MANIFEST_PAILLIER_BITS,
    Manifest,
    aggregator_url,
    check_federation_size,
    decode_json,
    manifest_body,
    sign_manifest,
)

__all__ = ["add_member", "deal_paillier", "init_federation", "load_config", "load_identity",
           "load_manifest", "machine_files", "pack_command", "remove_member", "rotate_key"]

MAX_CONFIG_BYTES = 1 << 20
PUBLIC_MODE = 0o644
PRIVATE_MODE = 0o600


# --- reading --------------------------------------------------------------------------------


def load_manifest(path: str | os.PathLike[str], *,
                  expected_authority: str | VerifyKey | None = None) -> Manifest:
    """Read and verify a manifest file (see :meth:`protocol.manifest.Manifest.from_bytes`).

    Raises AuthenticationError if the signature does not verify or another authority than
    ``expected_authority`` (when pinned) signed it; ConfigurationError if the file is
    missing, unreadable or malformed.
    """
    source = Path(path)
    data = _read_bytes(source, "federation manifest", MAX_MANIFEST_BYTES)
    return Manifest.from_bytes(data, authority_key=expected_authority,
                               source=f"federation manifest {source}")


def load_identity(path: str | os.PathLike[str], *, manifest: Manifest | None = None) -> KeyFile:
    """Read a key file, refusing one other users can access. With ``manifest``, also check
    that the key is the one it lists for that name and role, in that federation.

    Raises ConfigurationError; messages name the file, never the key.
    """
    source = Path(path)
    try:
        key = read_key_file(source)
    except KeyFileError as exc:
        failure = str(exc)
    else:
        if manifest is None:
            return key
        try:
            manifest.check_identity(key.name, key.role, key.federation_id,
                                    key.identity.verify_key)
            return key
        except ConfigurationError as exc:
            failure = f"key file {source}: {exc}"
    # raised outside the except blocks: no exception chain leads back to the file's content
    raise ConfigurationError(failure)


def _read_bytes(path: Path, what: str, limit: int) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigurationError(f"{what} {path} is larger than {limit} bytes")
    return data


# --- config files -------------------------------------------------------------------------------

ConfigKind = Literal["node", "aggregator"]
_PATH_KEYS: dict[ConfigKind, tuple[str, ...]] = {
    "node": ("federation", "identity", "ca", "data_model", "policy", "ledger",
             "paillier_share"),
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
    config = decode_json(_read_bytes(source, "config file", MAX_CONFIG_BYTES),
                         f"config file {source}")
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
    if not NAME_PATTERN.fullmatch(config["name"]):
        raise ConfigurationError(f"{where}: 'name' {config['name']!r} is not a valid name")
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


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where} must be a non-empty string")
    return value


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigurationError(f"{where} must be an integer in 1..65535")
    return value


# --- init -----------------------------------------------------------------------------------------


def init_federation(
    directory: str | os.PathLike[str],
    nodes: list[str],
    researchers: list[str],
    *,
    aggregator_host: str = "127.0.0.1",
    aggregator_port: int = 8765,
    federation_id: str | None = None,
    threshold_fraction: float = DEFAULT_PARAMETERS["threshold_fraction"],
    auditors: list[str] | None = None,
    protection: str = DEFAULT_PARAMETERS["protection"],
    paillier_bits: int = DEFAULT_KEY_BITS,
    decryption_threshold: int | None = None,
    max_colluding_nodes: int = DEFAULT_PARAMETERS["max_colluding_nodes"],
    secagg_plus: bool = DEFAULT_PARAMETERS["secagg_plus"],
    verifiable_totals: bool = DEFAULT_PARAMETERS["verifiable_totals"],
    force: bool = False,
    rng: RandomSource | None = None,
) -> Path:
    """Create a federation in ``directory`` and return the path of its signed manifest.

    Everything is validated before the first file is written: the signed manifest is
    checked by :class:`protocol.manifest.Manifest`, the same code every reader uses. ``rng``
    feeds the Ed25519 identities and the federation id (tests inject a seeded one); TLS keys
    always come from the OS. ``force`` lets an existing non-empty folder be used: the files
    init writes are replaced, other files are left alone.

    With ``protection="paillier"`` init is also the trusted dealer of the threshold key: it
    makes a ``paillier_bits`` key, gives each node a share (``keys/<node>.share``, 0600) so
    that any ``decryption_threshold`` nodes (default: a strict majority) decrypt together,
    and keeps nothing else: the primes and the decryption exponent exist only in this
    process's memory and are gone when it returns.

    ``max_colluding_nodes`` (c) is how many nodes may collude with the aggregator; every
    threshold follows from it (:mod:`protocol.collusion`), and a federation too small to
    hold c colluders off is refused. ``secagg_plus`` lets large rounds run over the SecAgg+
    graph (see the threat model for what that changes). ``verifiable_totals`` (mask mode,
    on by default) has nodes commit to their vectors so that researchers can check every
    total the aggregator hands over.
    """
    root = Path(directory)
    roles = {"node": nodes, "researcher": researchers, "auditor": auditors or []}
    for role, names in roles.items():
        if isinstance(names, str | bytes) or not isinstance(names, list | tuple) \
                or not all(isinstance(name, str) for name in names):
            raise ConfigurationError(f"the {role}s must be a list of names")
    _check_directory(root, force)
    rng = rng if rng is not None else SystemRandom()
    if federation_id is None:
        federation_id = f"fed-{rng.bytes(4).hex()}"

    authority = SigningIdentity.generate(rng)
    aggregator_identity = SigningIdentity.generate(rng)
    # a list, not a dict: a name given twice must reach the manifest's check
    identities = [(name, role, SigningIdentity.generate(rng))
                  for role, names in roles.items() for name in names]
    created = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
    holders = sorted(nodes)
    shares: list[KeyShare] = []
    paillier: dict[str, Any] | None = None
    if isinstance(max_colluding_nodes, bool) or not isinstance(max_colluding_nodes, int) or \
            max_colluding_nodes < 0:
        raise ConfigurationError("the number of colluding nodes must be an integer >= 0")
    if not isinstance(secagg_plus, bool) or not isinstance(verifiable_totals, bool):
        raise ConfigurationError("secagg_plus and verifiable_totals must be true or false")
    # before dealing a key: a federation too small for c is refused in one line
    check_federation_size(len(nodes), max_colluding_nodes,
                          DEFAULT_PARAMETERS["dp_honest_nodes"], "the new federation")
    if protection == "paillier":
        paillier, shares, _ = deal_paillier(holders, paillier_bits, decryption_threshold, rng,
                                            max_colluding=max_colluding_nodes)
    elif decryption_threshold is not None:
        raise ConfigurationError("a decryption threshold only applies to protection "
                                 "'paillier'")
    tls = _make_tls(aggregator_host, federation_id)
    body = manifest_body(
        federation_id, created.replace("+00:00", "Z"), aggregator_host, aggregator_port,
        aggregator_identity.verify_key,
        [(name, role, identity.verify_key) for name, role, identity in identities],
        {"threshold_fraction": threshold_fraction, "protection": protection,
         "paillier": paillier, "max_colluding_nodes": max_colluding_nodes,
         "secagg_plus": secagg_plus, "verifiable_totals": verifiable_totals},
        tls_ca=certificate_fingerprint(tls["ca.pem"]))
    document = sign_manifest(body, authority)
    # verify what we are about to publish with the same code every reader will use
    manifest = Manifest.from_document(document, authority_key=authority.verify_key,
                                      source="the new federation")
    host, port = manifest.aggregator_host, manifest.aggregator_port
    node_names = list(manifest.nodes())

    _make_folders(root, node_names)
    _write_private(root / "authority.key",
                   KeyFile(AUTHORITY, AUTHORITY, federation_id, authority))
    _write_private(root / "keys" / f"{AGGREGATOR}.key",
                   KeyFile(AGGREGATOR, AGGREGATOR, federation_id, aggregator_identity))
    for name, role, identity in identities:
        _write_private(root / "keys" / f"{name}.key",
                       KeyFile(name, role, federation_id, identity))
    for name, share in zip(holders, shares, strict=False):
        _write_private(root / "keys" / f"{name}.share", ShareFile(
            name, federation_id, share.index, share.threshold_public.public.n, share.value))
    for filename, pem in tls.items():
        private = filename.endswith(".key")
        atomic_write(root / "tls" / filename, pem, mode=PRIVATE_MODE if private else PUBLIC_MODE)
    pins = {"authority": manifest.authority_fingerprint, "tls_ca": manifest.tls_ca}
    _write_configs(root, node_names, host, port, pins, with_shares=bool(shares))
    _write_bundles(root, list(manifest.researchers()), manifest.aggregator_url, pins)
    # the manifest last: a folder whose init was interrupted has no manifest to trust
    manifest_path = root / "federation.json"
    _write_json(manifest_path, document)
    _write_readme(root, manifest)
    return manifest_path


# --- membership changes ---------------------------------------------------------------------


def _resign(root: Path, change: Callable[[dict[str, Any]], None]) -> tuple[dict[str, Any], Manifest]:
    """Apply ``change`` to the manifest body, raise its version and sign it with the
    authority key kept in ``root``. Nothing is written: the caller writes the member's files
    first and the manifest last, so an interrupted change leaves the old manifest in force."""
    authority = load_identity(root / "authority.key")
    current = load_manifest(root / "federation.json",
                            expected_authority=authority.identity.verify_key)
    body = {k: v for k, v in current.to_document().items()
            if k not in ("signature", "authority_public_key")}
    change(body)
    body["version"] = current.version + 1
    document = sign_manifest(body, authority.identity)
    manifest = Manifest.from_document(document, authority_key=authority.identity.verify_key,
                                      source="the changed federation")
    return document, manifest


def _current(root: Path) -> Manifest:
    if not (root / "authority.key").is_file():
        raise ConfigurationError(f"{root} is not an authority's folder (no authority.key): "
                                 "membership changes are signed by the authority")
    return load_manifest(root / "federation.json")


def _known(manifest: Manifest, name: str) -> str:
    """The role of ``name`` in the federation (the aggregator included)."""
    if name == AGGREGATOR:
        return AGGREGATOR
    if name not in manifest.members:
        raise ConfigurationError(f"{name!r} is not a member of federation "
                                 f"{manifest.federation_id}")
    return manifest.members[name].role


def add_member(directory: str | Path, name: str, role: str, *,
               rng: RandomSource | None = None) -> Manifest:
    """Add a node, researcher or auditor to the federation in ``directory`` (the authority's
    folder, with ``authority.key``): a new key file, its config or bundle, and the manifest
    re-signed with a higher version. Members refuse a manifest whose version goes backwards.
    A node cannot join a Paillier federation: it would need a share of the dealt key."""
    root = Path(directory)
    if role not in MEMBER_ROLES:
        raise ConfigurationError(f"a member is one of {', '.join(MEMBER_ROLES)}")
    before = _current(root)
    if name in before.members or name in (AGGREGATOR, AUTHORITY):
        raise ConfigurationError(f"{name!r} is already a name in federation "
                                 f"{before.federation_id}")
    if role == "node" and before.protection == "paillier":
        raise ConfigurationError("a node cannot join a Paillier federation: the decryption "
                                 "key was dealt among the nodes at init (run init again)")
    identity = SigningIdentity.generate(rng if rng is not None else SystemRandom())

    def change(body: dict[str, Any]) -> None:
        body["members"].append({"name": name, "role": role,
                                "public_key": identity.verify_key.hex()})

    document, manifest = _resign(root, change)
    _write_private(root / "keys" / f"{name}.key",
                   KeyFile(name, role, manifest.federation_id, identity))
    pins = {"authority": manifest.authority_fingerprint, "tls_ca": manifest.tls_ca}
    if role == "node":
        _make_folders(root, [name])
        _write_configs(root, [name], manifest.aggregator_host, manifest.aggregator_port, pins,
                       aggregator=False)
    elif role == "researcher":
        _write_bundles(root, [name], manifest.aggregator_url, pins)
    _write_json(root / "federation.json", document)
    _write_readme(root, manifest)
    return manifest


def remove_member(directory: str | Path, name: str) -> Manifest:
    """Remove a member; the manifest is re-signed with a higher version and the member's key
    is deleted here. A node cannot leave a Paillier federation (its key share would still
    decrypt), nor one its departure leaves too small for the collusion bound."""
    root = Path(directory)
    before = _current(root)
    role = _known(before, name)
    if role == AGGREGATOR:
        raise ConfigurationError("the aggregator is not a member; rotate its key instead")
    if role == "node" and before.protection == "paillier":
        raise ConfigurationError("a node cannot leave a Paillier federation: its key share "
                                 "would still decrypt (run init again)")

    def change(body: dict[str, Any]) -> None:
        body["members"] = [m for m in body["members"] if m["name"] != name]

    document, manifest = _resign(root, change)  # refuses a federation left too small
    _write_json(root / "federation.json", document)
    _write_readme(root, manifest)
    (root / "keys" / f"{name}.key").unlink(missing_ok=True)
    if role == "researcher":
        (root / "researchers" / f"{name}.json").unlink(missing_ok=True)
    return manifest


def rotate_key(directory: str | Path, name: str, *,
               rng: RandomSource | None = None) -> Manifest:
    """Give a member (or the aggregator) a new identity key; the manifest is re-signed with
    a higher version and lists the new public key, so the old key is refused everywhere.

    A node's ledger is signed under its old key: the old key file is kept beside the new one
    as ``keys/NAME.key.previous`` (when this folder still holds it, and unless one is there
    already: rotating twice before the node restarted keeps the key its ledger is under).
    The node, given both, records the rotation in its ledger (signed with the old key) at
    its next start and deletes the previous key."""
    root = Path(directory)
    role = _known(_current(root), name)
    identity = SigningIdentity.generate(rng if rng is not None else SystemRandom())
    old_path = root / "keys" / f"{name}.key"
    previous_path = root / "keys" / f"{name}.key{PREVIOUS_SUFFIX}"
    if role == "node" and old_path.is_file() and not previous_path.exists():
        _write_private(previous_path, load_identity(old_path))

    def change(body: dict[str, Any]) -> None:
        target = body["aggregator"] if role == AGGREGATOR else next(
            m for m in body["members"] if m["name"] == name)
        target["public_key"] = identity.verify_key.hex()

    document, manifest = _resign(root, change)
    # the new key beside the old one until the manifest that lists it is written
    staged = root / "keys" / f"{name}.key.new"
    _write_private(staged, KeyFile(name, role, manifest.federation_id, identity))
    _write_json(root / "federation.json", document)
    os.replace(staged, root / "keys" / f"{name}.key")
    _write_readme(root, manifest)
    return manifest


def deal_paillier(holders: list[str], bits: int, threshold: int | None, rng: RandomSource, *,
                  min_bits: int = MIN_MANIFEST_PAILLIER_BITS,
                  max_colluding: int = DEFAULT_PARAMETERS["max_colluding_nodes"]
                  ) -> tuple[dict[str, Any], list[KeyShare], ThresholdPublic]:
    """The dealer: a fresh ``bits`` key shared among ``holders`` so that any ``threshold``
    (default: the least quorum above (N + c)/2 for ``max_colluding`` colluders) decrypt.
    Returns the manifest's ``paillier`` entry, the shares in holder order, and the public
    threshold key; the primes go out of scope inside
    :func:`crypto.threshold_paillier.deal_new`. Bad options raise ConfigurationError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not min_bits <= bits <= \
            MAX_KEY_BITS or bits % 2:
        raise ConfigurationError(f"the Paillier key size must be an even number of bits in "
                                 f"[{min_bits}, {MAX_KEY_BITS}]")
    count = len(holders)
    if count < 2:
        raise ConfigurationError("a federation needs at least two nodes")
    try:
        low = min_decryption_threshold(count, max_colluding)
    except BoundError as exc:
        raise ConfigurationError(str(exc)) from None
    threshold = low if threshold is None else threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int) or \
            not low <= threshold <= count:
        raise ConfigurationError(
            f"the decryption threshold must be in [{low}, {count}] for {count} nodes and "
            f"{max_colluding} colluding node(s): more than (N + c)/2, so that two decryption "
            "quorums always share an honest node")
    tp, shares = deal_new(bits, count, threshold, rng)
    public = {"n": format(tp.public.n, "x"), "decryption_threshold": threshold,
              "holders": list(holders), "verification_base": format(tp.verification_base, "x"),
              "verification_keys": [format(k, "x") for k in tp.verification_keys]}
    return public, shares, tp


def _write_private(path: Path, secret: KeyFile | ShareFile) -> None:
    """A key file or a key share file, mode 0600; failures as ConfigurationError."""
    try:
        if isinstance(secret, KeyFile):
            write_key_file(path, secret)
        else:
            write_share_file(path, secret)
    except KeyFileError as exc:
        failure = str(exc)
    else:
        return
    raise ConfigurationError(failure)


def _write_json(path: Path, value: Any) -> None:
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(),
                 mode=PUBLIC_MODE)


def _check_directory(root: Path, force: bool) -> None:
    if root.exists() and not root.is_dir():
        raise ConfigurationError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ConfigurationError(
            f"{root} already exists and is not empty; choose a new folder, or pass --force "
            "(force=True) to overwrite the federation files in it (other files are kept)")


def _make_folders(root: Path, nodes: list[str]) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        for private in ("keys", "tls", "researchers"):
            (root / private).mkdir(exist_ok=True)
        # the keys folder holds nothing but secrets: keep others out of listing it too
        os.chmod(root / "keys", 0o700)
        for name in nodes:
            (root / name).mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the federation folder {root}: "
                                 f"{exc.strerror}") from None


def _make_tls(host: str, federation_id: str) -> dict[str, bytes]:
    """The federation's CA and the aggregator's certificate (PEM), by file name."""
    if not isinstance(host, str):
        raise ConfigurationError("the aggregator host must be a string")
    hosts = list(dict.fromkeys([host, "127.0.0.1", "::1", "localhost"]))
    ca_cert, ca_key = generate_ca(f"fedtally CA for {federation_id}")
    try:
        cert, key = issue_server_certificate(ca_cert, ca_key, AGGREGATOR, hosts)
    except ValueError as exc:  # a host no certificate can name
        raise ConfigurationError(f"aggregator host: {exc}") from None
    return {"ca.pem": ca_cert, "ca.key": ca_key, "aggregator.pem": cert,
            "aggregator.key": key}


def _write_configs(root: Path, nodes: list[str], host: str, port: int,
                   pins: Mapping[str, str | None], *, with_shares: bool = False,
                   aggregator: bool = True) -> None:
    """Every member's config pins the authority's key and the CA's certificate (SHA-256):
    a manifest signed by another authority, or a CA file swapped at a member, is refused."""
    if aggregator:
        _write_json(root / "aggregator.json", {
            "federation": "federation.json", "identity": f"keys/{AGGREGATOR}.key",
            "host": host, "port": port,
            "tls_cert": "tls/aggregator.pem", "tls_key": "tls/aggregator.key", **pins,
        })
    for name in nodes:
        _write_json(root / name / "node.json", {
            "name": name, "federation": "../federation.json", "identity": f"../keys/{name}.key",
            "aggregator_url": aggregator_url(host, port), "ca": "../tls/ca.pem",
            "data": [], "data_model": None, "policy": None, "ledger": "ledger.db",
            **({"paillier_share": f"../keys/{name}.share"} if with_shares else {}), **pins,
        })


def _write_bundles(root: Path, researchers: list[str], url: str,
                   pins: Mapping[str, str | None]) -> None:
    """A researcher's bundle: what `fedtally.connect(bundle=...)` needs, pins included."""
    for name in researchers:
        _write_json(root / "researchers" / f"{name}.json", {
            "url": url, "federation": "../federation.json", "identity": f"../keys/{name}.key",
            "ca": "../tls/ca.pem", **pins})


def _write_readme(root: Path, manifest: Manifest) -> None:
    atomic_write(root / "README.txt", _readme(manifest, root).encode(), mode=PUBLIC_MODE)


def machine_files(manifest: Manifest, name: str, root: Path | None = None) -> list[str]:
    """The files of the authority's folder that the machine of ``name`` (a member, or the
    aggregator) needs, at the relative paths its config or bundle names them by (with
    ``root``, a rotated node's previous key too, when that folder holds one)."""
    if name == AGGREGATOR:
        return ["federation.json", "aggregator.json", f"keys/{AGGREGATOR}.key",
                "tls/aggregator.pem", "tls/aggregator.key"]
    role = manifest.member(name).role
    files = ["federation.json", f"keys/{name}.key"]
    if role == "node":
        files += ["tls/ca.pem", f"{name}/node.json"]
        previous = f"keys/{name}.key{PREVIOUS_SUFFIX}"
        if root is not None and (root / previous).is_file():
            files.append(previous)
        if manifest.protection == "paillier":
            files.append(f"keys/{name}.share")
    elif role == "researcher":
        files += ["tls/ca.pem", f"researchers/{name}.json"]
    return files


def pack_command(manifest: Manifest, name: str, root: Path | None = None) -> str:
    """The command, run inside the authority's folder, that packs the files of ``name``'s
    machine into ``../<name>.tgz`` with their relative paths."""
    return f"tar -czf ../{name}.tgz " + " ".join(machine_files(manifest, name, root))


def _readme(manifest: Manifest, root: Path | None = None) -> str:
    authority, names = manifest.authority_fingerprint, list(manifest.members)
    lines = [
        f"fedtally federation {manifest.federation_id} (federation.json version "
        f"{manifest.version})",
        f"aggregator: {manifest.aggregator_url}",
        f"authority fingerprint (SHA-256 of its public key): {authority}",
        f"TLS CA fingerprint (SHA-256 of tls/ca.pem): {manifest.tls_ca}",
        "  (tell every party both through a channel other than this folder; every config",
        "   file written here pins them, and members refuse anything signed or issued by",
        "   another authority or CA)",
        "",
        "This folder holds every private key of the federation. Each machine gets its own",
        "files below, in a folder of its own, at the same relative paths as here: paths in",
        "the config files are relative to the config file's own folder (hosp/node.json",
        "finds the manifest at ../federation.json). From inside this folder, the 'pack'",
        "line of a machine writes its files to ../NAME.tgz; carry that over a secure",
        "channel (it holds a private key), unpack it on the machine in an empty folder",
        "(mkdir fedtally && tar -xzf NAME.tgz -C fedtally), then delete the archive and",
        "the key here. Private keys are mode 0600; fedtally refuses a key file that others",
        "can read.",
        "",
        "STAYS OFFLINE (never copy to a server):",
        "  authority.key   signs federation.json; whoever holds it decides who is a member",
        "  tls/ca.key      whoever holds it can impersonate the aggregator's TLS endpoint",
        "",
        "AGGREGATOR machine:",
        "  federation.json, aggregator.json, keys/aggregator.key,",
        "  tls/aggregator.pem, tls/aggregator.key",
        "  ('host' in aggregator.json is the address it listens on: 0.0.0.0 listens on all)",
        f"  pack: {pack_command(manifest, AGGREGATOR)}",
        "",
    ]
    for name in names:
        if manifest.member(name).role != "node":
            continue
        lines += [f"NODE {name}:",
                  f"  federation.json, keys/{name}.key, tls/ca.pem, {name}/node.json"
                  + (f",\n  keys/{name}.share (its share of the decryption key)"
                     if manifest.protection == "paillier" else ""),
                  f"  then fill in 'data', 'data_model' and 'policy' in {name}/node.json",
                  f"  pack: {pack_command(manifest, name, root)}", ""]
    for role in ("researcher", "auditor"):
        for name in names:
            if manifest.member(name).role != role:
                continue
            extra = (f", tls/ca.pem, researchers/{name}.json\n  (connect with "
                     f"fedtally.connect(bundle='researchers/{name}.json'))"
                     if role == "researcher" else "")
            lines += [f"{role.upper()} {name}:", f"  federation.json, keys/{name}.key{extra}",
                      f"  pack: {pack_command(manifest, name)}", ""]
    lines += ["After a membership change (add-member, remove-member, rotate-key) copy the new",
              "federation.json to every machine, over its old one, a rotated key to its owner",
              "and a new member its files (its pack line above), and restart the aggregator",
              "and the nodes. A rotated node also gets keys/NAME.key.previous (its old key,",
              "in its pack line): at its next start the node records the rotation in its",
              "ledger, signed with the old key, keeps every budget spent, and deletes the",
              "old key. If this folder no longer held the node's old key, the node's",
              "operator renames its current keys/NAME.key to keys/NAME.key.previous before",
              "unpacking the new one. A node without it refuses to start.",
              "",
              "Auditors verify ledgers with `fedtally audit verify ... --authority "
              f"{authority}`.", ""]
    return "\n".join(lines)
