"""The node's configuration file (written by `fedtally federation init`, then edited by the
node's operator to point at its data, data model and policy)."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from crypto.errors import CryptoError
from crypto.highwater import raise_high_water
from crypto.identity import SigningIdentity
from crypto.keyfile import read_key_file
from crypto.sharefile import read_share_file
from crypto.threshold_paillier import KeyShare
from crypto.tls import certificate_fingerprint, client_ssl_context
from node.admission import NodeIdentity
from node.datasource import DataSource
from node.policy import Policy
from protocol.errors import ConfigurationError
from protocol.manifest import MANIFEST_VERSIONS, Manifest, pinned_manifest
from stats.datamodel import DATASET, DataModel
from stats.suggest import check_keys, did_you_mean, json_failure

#: beside the node's key file, its key before `fedtally federation rotate-key`
PREVIOUS_SUFFIX = ".previous"


@dataclass(frozen=True)
class NodeConfig:
    me: NodeIdentity
    aggregator_url: str
    ssl_context: ssl.SSLContext
    sources: tuple[DataSource, ...]
    model_path: Path | None
    policy: Policy
    ledger: Path
    base: Path
    #: this node's share of the federation's decryption key (protection "paillier")
    key_share: KeyShare | None = None
    #: threads for Paillier partial decryptions (default: the machine's cores, at most 8)
    decrypt_workers: int = 1
    #: the federation's CA certificate (named in connection errors)
    ca_path: Path | None = None
    #: after `fedtally federation rotate-key` of this node: its previous key (the identity
    #: file's name + ".previous", where it is looked for), which signs the ledger's
    #: key_rotation entry
    previous_identity: SigningIdentity | None = None
    previous_key_path: Path | None = None
    #: where CSV and Parquet rows are kept and computed: "duckdb" (default) or "pandas"
    row_store: str = "duckdb"


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON{json_failure(exc)}") from exc


def load_model(path: Path) -> DataModel:
    """A data model file: the MIP's CDEsMetadata.json, or our own JSON form of a model."""
    document = _load_json(path)
    if isinstance(document, dict) and document.get("format", "").startswith("fedtally-datamodel"):
        return DataModel.from_json(document)
    return DataModel.from_cdes(path)


def check_source_datasets(config: NodeConfig, model: DataModel) -> None:
    """Every dataset a data source entry gives its rows is one the data model declares,
    before any row is read: a name it does not declare would leave those rows out of every
    answer (the SQL stores only checked a dataset column's own codes)."""
    declared = model.variables[DATASET].enumerations if DATASET in model.variables else ()
    for number, source in enumerate(config.sources, 1):
        if source.dataset is None or not declared or source.dataset in declared:
            continue
        raise ConfigurationError(
            f"{config.me.name}: data source {number} (\"data\" in its node configuration) "
            f"gives its rows the dataset {source.dataset!r}, which data model {model.name} "
            "does not declare "
            f"({', '.join(map(repr, declared))}){did_you_mean(source.dataset, declared)}; "
            "correct the entry, or declare the dataset in the data model (at every node: "
            "the federation shares it)")


#: what a node.json may set (a key misspelt, "polcy", would otherwise drop the node's
#: policy without a word)
NODE_KEYS = frozenset({"aggregator_url", "authority", "ca", "data", "data_model",
                       "decrypt_workers", "federation", "identity", "ledger", "name",
                       "paillier_share", "policy", "row_store", "tls_ca"})


def load_node_config(path: Path, *, aggregator_url: str | None = None) -> NodeConfig:
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{path} must hold a JSON object")
    check_keys(raw, NODE_KEYS, f"node configuration ({path})")
    base = path.resolve().parent

    def file(key: str, required: bool = True) -> Path | None:
        value = raw.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise ConfigurationError(f"{path}: {key!r} must name a file")
        return (base / value).resolve()

    manifest_path = file("federation")
    ca = file("ca")
    assert manifest_path is not None and ca is not None
    try:
        ca_pem = ca.read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the federation's CA certificate {ca} (\"ca\" in {path}): "
            f"{exc.strerror}; copy tls/ca.pem from the federation's folder and point \"ca\" "
            "at it") from exc
    try:
        manifest = pinned_manifest(manifest_path.read_bytes(), raw,
                                   ca_pem_fingerprint=certificate_fingerprint(ca_pem),
                                   source=str(manifest_path),
                                   remember_version=partial(raise_high_water,
                                                            base / MANIFEST_VERSIONS))
    except OSError as exc:
        raise ConfigurationError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    except ssl.CertificateError:
        raise ConfigurationError(f"{ca} is not a certificate") from None
    identity_path = file("identity")
    assert identity_path is not None
    try:
        key = read_key_file(identity_path)
    except CryptoError as exc:
        raise ConfigurationError(str(exc)) from None
    name = raw.get("name", key.name)
    if name != key.name or key.federation_id != manifest.federation_id:
        raise ConfigurationError(f"{identity_path} is not {name}'s key for this federation")
    member = manifest.member(name)
    if member.role != "node" or member.verify_key != key.identity.verify_key:
        raise ConfigurationError(f"{name} is not a node with this key in the manifest")
    previous_path = identity_path.with_name(identity_path.name + PREVIOUS_SUFFIX)
    previous = None
    if previous_path.exists():
        try:
            old = read_key_file(previous_path)
        except CryptoError as exc:
            raise ConfigurationError(str(exc)) from None
        if (old.name, old.role, old.federation_id) != (name, "node", manifest.federation_id):
            raise ConfigurationError(f"{previous_path} is not {name}'s previous node key for "
                                     "this federation")
        previous = old.identity
    sources = raw.get("data", [])
    if not isinstance(sources, list):
        raise ConfigurationError(f"{path}: 'data' must be a list of data sources")
    policy_path = file("policy", required=False)
    url = aggregator_url or raw.get("aggregator_url")
    if not isinstance(url, str) or not url.startswith("wss://"):
        raise ConfigurationError(f"{path}: aggregator_url must be a wss:// URL (TLS is required)")
    workers = raw.get("decrypt_workers", min(8, os.cpu_count() or 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise ConfigurationError(f"{path}: 'decrypt_workers' must be an integer in 1..256")
    row_store = raw.get("row_store", "duckdb")
    if row_store not in ("duckdb", "pandas"):
        raise ConfigurationError(f"{path}: 'row_store' must be \"duckdb\" or \"pandas\"")
    share = None
    if manifest.protection == "paillier":
        share = load_key_share(file("paillier_share"), manifest, name)  # type: ignore[arg-type]
    return NodeConfig(
        me=NodeIdentity(name, key.identity, manifest),
        aggregator_url=url,
        ssl_context=client_ssl_context(ca),
        sources=tuple(DataSource.from_config(s, base) for s in sources),
        model_path=file("data_model", required=False),
        policy=Policy.from_file(policy_path) if policy_path else Policy.default(),
        ledger=file("ledger", required=False) or base / "ledger.db",
        base=base,
        key_share=share,
        decrypt_workers=workers,
        ca_path=ca,
        previous_identity=previous,
        previous_key_path=previous_path,
        row_store=row_store,
    )


def load_key_share(path: Path, manifest: Manifest, name: str) -> KeyShare:
    """This node's Paillier key share, checked against the manifest's key."""
    key = manifest.paillier_key
    assert key is not None
    try:
        raw = read_share_file(path)
    except CryptoError as exc:
        failure = str(exc)
    else:
        if (raw.name, raw.federation_id) != (name, manifest.federation_id):
            failure = f"{path} is not {name}'s key share for this federation"
        elif raw.n != key.threshold.public.n or raw.index != key.index(name) or pow(
                key.threshold.verification_base, raw.share,
                int(key.threshold.public.n_square)) != key.threshold.verification_key(raw.index):
            failure = f"{path} is not a share of the key in the manifest (or not {name}'s)"
        else:
            return KeyShare(raw.index, raw.share, key.threshold)
    raise ConfigurationError(failure)
