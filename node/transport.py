"""Client side of the websocket transport (nodes and researchers connect out to the
aggregator): TLS, bounded frames, keepalive pings, and the signed challenge-response."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect

from crypto.identity import SigningIdentity
from crypto.tls import certificate_fingerprint
from engine.codec import decode, encode
from engine.errors import AuthenticationError, UnexpectedMessage
from engine.service_messages import Challenge, ErrorNotice, Hello, Welcome, hello_statement
from engine.transport import MAX_FRAME, error_from_notice

CONNECT_TIMEOUT_S = 15.0


def _server_certificate(connection: ClientConnection) -> str:
    """SHA-256 of the certificate this connection's TLS session presented."""
    ssl_object = connection.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise AuthenticationError("the aggregator presented no TLS certificate")
    return certificate_fingerprint(der)


async def open_session(url: str, ssl_context: object, *, name: str, role: str,
                       identity: SigningIdentity, federation_id: str
                       ) -> tuple[ClientConnection, Welcome]:
    """Connect, prove our identity, and return the connection with the aggregator's Welcome."""
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
    except BaseException:
        await connection.close()
        raise
    return connection, reply
