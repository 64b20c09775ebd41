"""Pure helpers shared by every websocket endpoint: frame limits and typed error notices.

Only curated text crosses the wire: a :class:`FedtallyError` marked ``public`` sends its
message; anything else sends a fixed sentence. The receiving side turns a notice back into
the matching exception class.
"""

from __future__ import annotations

from protocol import errors
from protocol.service_messages import ErrorNotice

#: one websocket frame at most (a masked vector of 2M values in 3 limbs fits)
MAX_FRAME = 64 * 1024 * 1024 + 4096
NO_REQUEST = bytes(16)
GENERIC = "the request failed inside the service; its operator's log has the details"


def public_text(exc: BaseException) -> str:
    """What a remote party may read about ``exc``."""
    if isinstance(exc, errors.FedtallyError) and exc.public:
        return str(exc)[:2000]
    return GENERIC


def error_notice(request_id: bytes, exc: BaseException) -> ErrorNotice:
    code = exc.code if isinstance(exc, errors.FedtallyError) else "internal"
    return ErrorNotice(request_id, code, public_text(exc))


def _codes() -> dict[str, type[errors.FedtallyError]]:
    table: dict[str, type[errors.FedtallyError]] = {}
    stack: list[type[errors.FedtallyError]] = [errors.FedtallyError]
    while stack:
        cls = stack.pop()
        table.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return table


def error_from_notice(notice: ErrorNotice) -> errors.FedtallyError:
    """The exception a client raises for a notice (unknown codes become FedtallyError)."""
    cls = _codes().get(notice.code, errors.FedtallyError)
    error = cls(notice.message)
    error.remote_code = notice.code  # type: ignore[attr-defined]
    return error
