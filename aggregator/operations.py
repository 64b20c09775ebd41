"""The aggregator's operator surface that is not the protocol: the health check load
balancers ask, what ``fedtally status`` remembers of nodes that left, and one-line errors
for a server that cannot listen."""

from __future__ import annotations

import errno
import http
import json
import socket
import time
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from protocol.errors import ConfigurationError

#: the load balancers' health check (answered over HTTPS, before any websocket handshake)
HEALTH_PATH = "/healthz"


def now_ms() -> int:
    return int(time.time() * 1000)


def health_response(connection: ServerConnection, request: Request, started_at_ms: int
                    ) -> Response | None:
    """``GET /healthz``: 200 and ``{"status": "ok", "uptime_s": N}``, a body under 64
    bytes whoever is connected: it names no member, no version and no count (threat M32).
    None for any other request (the websocket handshake goes on, and refuses plain HTTP)."""
    if request.path.split("?", 1)[0] != HEALTH_PATH:
        return None
    body = json.dumps({"status": "ok", "uptime_s": (now_ms() - started_at_ms) // 1000})
    response = connection.respond(http.HTTPStatus.OK, body + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    response.headers["Cache-Control"] = "no-store"
    return response


@dataclass
class Presence:
    """What ``fedtally status`` shows of a node that has connected since the start."""

    software: str
    connected_at_ms: int
    disconnected_at_ms: int = 0


def bind_error(exc: OSError, host: str, port: int) -> ConfigurationError:
    """One line, with a hint, for a server that cannot listen."""
    where = f"cannot listen on {host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ConfigurationError(f"{where}: the host name {host!r} does not resolve; set "
                                  "\"host\" in aggregator.json to an address of this machine "
                                  "(or 0.0.0.0 for all of them)")
    if exc.errno == errno.EADDRINUSE:
        return ConfigurationError(f"{where}: the port is in use (another aggregator still "
                                  "running?); stop it, or choose another port with --port or "
                                  "\"port\" in aggregator.json")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigurationError(f"{where}: {host} is not an address of this machine; set "
                                  "\"host\" in aggregator.json to one of its addresses (or "
                                  "0.0.0.0)")
    if exc.errno == errno.EACCES:
        return ConfigurationError(f"{where}: permission denied (ports below 1024 need "
                                  "privileges); choose a port above 1023")
    return ConfigurationError(f"{where}: {exc.strerror or exc}")
