"""The aggregator's configuration file (written by `fedtally federation init`)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from crypto.highwater import raise_high_water
from crypto.tls import certificate_fingerprint, server_ssl_context
from protocol.errors import ConfigurationError
from protocol.manifest import MANIFEST_VERSIONS, Manifest, pinned_manifest
from stats.suggest import check_keys, json_failure


@dataclass(frozen=True)
class AggregatorConfig:
    manifest: Manifest
    host: str
    port: int
    ssl_context: ssl.SSLContext
    #: SHA-256 of the aggregator's own TLS certificate: members sign it into their hello
    certificate_fingerprint: str
    #: connections still authenticating, at most (more are turned away)
    max_unauthenticated: int = 64


#: what an aggregator.json may set (``identity``: the aggregator's key, kept for rotation)
AGGREGATOR_KEYS = frozenset({"authority", "federation", "host", "identity",
                             "max_unauthenticated", "port", "tls_ca", "tls_cert", "tls_key"})


def load_aggregator_config(path: Path) -> AggregatorConfig:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON{json_failure(exc)}") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{path} must hold a JSON object")
    check_keys(raw, AGGREGATOR_KEYS, f"aggregator configuration ({path})")
    base = path.resolve().parent

    def file(key: str) -> Path:
        value = raw.get(key)
        if not isinstance(value, str):
            raise ConfigurationError(f"{path}: {key!r} must name a file")
        resolved = (base / value).resolve()
        if not resolved.is_file():
            raise ConfigurationError(f"{path}: {key} file {resolved} does not exist")
        return resolved

    try:
        manifest_path = file("federation")
        manifest = pinned_manifest(manifest_path.read_bytes(), raw, ca_pem_fingerprint=None,
                                   source=str(manifest_path),
                                   remember_version=partial(
                                       raise_high_water, base / MANIFEST_VERSIONS))
        certificate = file("tls_cert").read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    host = raw.get("host", manifest.aggregator_host)
    port = raw.get("port", manifest.aggregator_port)
    if not isinstance(host, str) or not isinstance(port, int):
        raise ConfigurationError(f"{path}: host must be a string and port an integer")
    context = server_ssl_context(file("tls_cert"), file("tls_key"))
    pending = raw.get("max_unauthenticated", 64)
    if isinstance(pending, bool) or not isinstance(pending, int) or not 1 <= pending <= 100_000:
        raise ConfigurationError(f"{path}: max_unauthenticated must be an integer in 1..100000")
    return AggregatorConfig(manifest, host, port, context, certificate_fingerprint(certificate),
                            pending)
