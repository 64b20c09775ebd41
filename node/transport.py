"""Client side of the websocket transport (nodes and researchers connect out to the
aggregator): TLS, bounded frames, keepalive pings, the signed challenge-response, and what
a failure to connect means (:func:`explain_failure`: one line with a hint, and whether
trying again can help)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from crypto.identity import SigningIdentity
from crypto.tls import certificate_fingerprint
from protocol.codec import EncodeError, decode, encode
from protocol.errors import (
    AuthenticationError,
    ConfigurationError,
    DuplicateMember,
    FedtallyError,
    RemoteProtocolError,
    ServiceUnavailable,
    UnexpectedMessage,
)
from protocol.service_messages import (
    Challenge,
    ErrorNotice,
    Hello,
    MemberInfo,
    Welcome,
    hello_statement,
)
from protocol.transport import MAX_FRAME, error_from_notice

CONNECT_TIMEOUT_S = 15.0
#: what connecting can raise besides our own errors (anything else is a bug: it propagates)
CONNECT_ERRORS = (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed,
                  FedtallyError)
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_CERT_HAS_EXPIRED
_HOSTNAME_MISMATCH = 62
_CERT_EXPIRED = 10


def _server_certificate(connection: ClientConnection) -> str:
    """SHA-256 of the certificate this connection's TLS session presented."""
    ssl_object = connection.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise AuthenticationError("the aggregator presented no TLS certificate")
    return certificate_fingerprint(der)


async def open_session(url: str, ssl_context: object, *, name: str, role: str,
                       identity: SigningIdentity, federation_id: str,
                       software: str | None = None) -> tuple[ClientConnection, Welcome]:
    """Connect, prove our identity, and return the connection with the aggregator's Welcome;
    then state our ``software`` version, if given (for ``fedtally status``)."""
    connection = await asyncio.wait_for(
        connect(url, ssl=ssl_context, max_size=MAX_FRAME, max_queue=16, compression=None,
                ping_interval=20, ping_timeout=20, open_timeout=CONNECT_TIMEOUT_S),
        CONNECT_TIMEOUT_S)
    try:
        challenge = decode(await asyncio.wait_for(connection.recv(), CONNECT_TIMEOUT_S),
                           MAX_FRAME)
        if not isinstance(challenge, Challenge):
            raise UnexpectedMessage("the aggregator did not start with a challenge")
        if challenge.federation_id != federation_id:
            raise AuthenticationError("the aggregator serves another federation")
        signature = identity.sign(hello_statement(federation_id, challenge.nonce, name, role,
                                                  _server_certificate(connection)))
        await connection.send(encode(Hello(name, role, signature)))
        reply = decode(await asyncio.wait_for(connection.recv(), CONNECT_TIMEOUT_S), MAX_FRAME)
        if isinstance(reply, ErrorNotice):
            raise error_from_notice(reply)
        if not isinstance(reply, Welcome) or reply.name != name:
            raise UnexpectedMessage("the aggregator did not welcome us")
        if software is not None:
            await connection.send(_member_info(software))
    except BaseException:
        await connection.close()
        raise
    return connection, reply


def _member_info(software: str) -> bytes:
    """Our version as the wire allows it (a build's odd version string becomes "unknown":
    it is informational, and must never stop a connection)."""
    try:
        return encode(MemberInfo(software))
    except EncodeError:
        return encode(MemberInfo("unknown"))


@dataclass(frozen=True)
class ConnectFailure:
    """Why a connection to the aggregator failed: ``error`` to raise (its text is one line
    with a hint), and whether it is ``permanent`` (trying again cannot help until someone
    changes a configuration: a certificate that does not verify, a refused identity, another
    federation, another protocol)."""

    error: FedtallyError
    permanent: bool


def _where(url: str) -> tuple[str, str]:
    """(host, host:port) of a wss:// URL, for messages."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "?", parts.port or 443
    except ValueError:
        return "?", url
    return host, f"{host}:{port}"


def _tls_failure(exc: ssl.SSLCertVerificationError, url: str, ca: str | None) -> str:
    host, where = _where(url)
    detail = exc.verify_message or exc.reason or "verification failed"
    if exc.verify_code == _HOSTNAME_MISMATCH:
        return (f"TLS: the aggregator's certificate is not valid for {host!r} ({detail}); "
                "connect with the host name or address given to `federation init "
                "--aggregator-host`")
    if exc.verify_code == _CERT_EXPIRED:
        return (f"TLS: the certificate of the server at {where} has expired ({detail}); the "
                "authority must issue a new one (rotate-key aggregator)")
    the_ca = f"the CA file {ca}" if ca else "the federation's CA file"
    return (f"TLS certificate verification failed ({detail}): the server at {where} presented "
            f"a certificate not signed by {the_ca}. Either the URL is not this federation's "
            f"aggregator, or {the_ca} belongs to another federation (pass ca= / set \"ca\" to "
            "the tls/ca.pem that `federation init` wrote for this one)")


def explain_failure(exc: BaseException, url: str, *, name: str,
                    ca: str | None = None) -> ConnectFailure:
    """What a failure of :func:`open_session` means, for ``name`` connecting to ``url``."""
    host, where = _where(url)

    def transient(reason: str) -> ConnectFailure:
        return ConnectFailure(ServiceUnavailable(f"cannot connect to {url}: {reason}"), False)

    def permanent(error: FedtallyError) -> ConnectFailure:
        return ConnectFailure(error, True)

    if isinstance(exc, ssl.SSLCertVerificationError):
        return permanent(ConfigurationError(f"cannot connect to {url}: "
                                            f"{_tls_failure(exc, url, ca)}"))
    if isinstance(exc, ssl.SSLError):
        return transient(f"the TLS handshake failed ({exc.reason or exc}); is the server at "
                         f"{where} the aggregator (a TLS websocket server)?")
    if isinstance(exc, socket.gaierror):
        return transient(f"the host name {host!r} does not resolve ({exc.strerror}); check "
                         "the URL and this machine's DNS")
    if isinstance(exc, ConnectionRefusedError):
        return transient(f"connection refused: nothing listens on {where} (is the aggregator "
                         "running, and is the port right?)")
    if isinstance(exc, TimeoutError):
        return transient(f"no answer within {CONNECT_TIMEOUT_S:.0f} s (a firewall dropping "
                         "the connection, or the aggregator overloaded)")
    if isinstance(exc, OSError):
        return transient(f"{exc.strerror or type(exc).__name__} (connecting to {where})")
    if isinstance(exc, InvalidURI):
        return permanent(ConfigurationError(f"{url} is not a valid wss:// URL"))
    if isinstance(exc, InvalidStatus):
        return transient(f"the server at {where} answered HTTP {exc.response.status_code} "
                         "instead of opening a websocket (a proxy or load balancer in front of "
                         "the aggregator?)")
    if isinstance(exc, InvalidHandshake):
        return transient(f"the websocket handshake failed ({exc})")
    if isinstance(exc, ConnectionClosed):
        close = exc.rcvd
        if close is not None and close.code == 1013:
            return transient("the aggregator is busy (too many connections authenticating); "
                             "trying again later helps")
        code = f"code {close.code}" if close is not None else "no close frame"
        return transient(f"the aggregator closed the connection while authenticating ({code})")
    if isinstance(exc, DuplicateMember):
        return permanent(DuplicateMember(f"the aggregator at {url} refused {name}: {exc}"))
    if isinstance(exc, AuthenticationError):
        if getattr(exc, "remote_code", None) is None:  # we refused the aggregator
            return permanent(type(exc)(
                f"cannot connect to {url}: {exc} (is the URL this federation's aggregator, "
                "and this federation.json the one it serves?)"))
        return permanent(type(exc)(
            f"the aggregator at {url} refused {name}: {exc} (do this member's key and "
            "federation.json match the aggregator's? after add-member, remove-member or "
            "rotate-key, copy the new federation.json and key)"))
    if isinstance(exc, RemoteProtocolError):
        return permanent(type(exc)(
            f"cannot connect to {url}: the aggregator does not speak this protocol ({exc}); "
            "run the same fedtally version as the aggregator"))
    if isinstance(exc, FedtallyError):
        return transient(f"{exc}")
    return transient(type(exc).__name__)
