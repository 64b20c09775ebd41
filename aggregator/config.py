"""The aggregator's configuration file (written by `fedtally federation init`)."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path

from crypto.tls import server_ssl_context
from engine.errors import ConfigurationError
from engine.manifest import Manifest


@dataclass(frozen=True)
class AggregatorConfig:
    manifest: Manifest
    host: str
    port: int
    ssl_context: ssl.SSLContext


def load_aggregator_config(path: Path) -> AggregatorConfig:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not valid JSON") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{path} must hold a JSON object")
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
        manifest = Manifest.from_bytes(file("federation").read_bytes())
    except OSError as exc:
        raise ConfigurationError(f"cannot read the federation manifest: {exc.strerror}") from exc
    host = raw.get("host", manifest.aggregator_host)
    port = raw.get("port", manifest.aggregator_port)
    if not isinstance(host, str) or not isinstance(port, int):
        raise ConfigurationError(f"{path}: host must be a string and port an integer")
    context = server_ssl_context(file("tls_cert"), file("tls_key"))
    return AggregatorConfig(manifest, host, port, context)
