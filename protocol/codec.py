"""Versioned binary codec for wire messages: strict, bounded, typed errors, no pickle/eval.

Frame layout::

    b"FTLY" | version u8 | suite u8 | message type u16 | body

The body is the message's fields in declaration order, each with a fixed wire type declared
next to the field (:func:`wire`). Every length is bounded by the field's own limit and by the
frame limit; trailing bytes, unknown types, bad UTF-8, out-of-range integers and values that
fail the message's own validation are all :class:`DecodeError`. Nothing else escapes
:func:`decode`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from protocol.errors import DecodeError, LocalError

MAGIC = b"FTLY"
VERSION = 1
SUITE = 1  # X25519 / Ed25519 / HKDF-SHA256 / AES-128-CTR masks / ChaCha20-Poly1305 seals
HEADER = struct.Struct(">4sBBH")
DEFAULT_MAX_FRAME = 64 * 1024 * 1024
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
#: data-model codes (variables, datasets): the MIP also starts some with "_"
CODE_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")


class EncodeError(LocalError):
    """We tried to encode a value that the wire format does not allow."""

    code = "encode"


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError("frame is truncated")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out


class WireType(ABC):
    """How one field is written and read."""

    @abstractmethod
    def encode(self, value: Any, out: bytearray) -> None: ...

    @abstractmethod
    def decode(self, reader: _Reader) -> Any: ...


class UInt(WireType):
    def __init__(self, size: int, maximum: int | None = None) -> None:
        self.size = size
        self.maximum = (1 << (8 * size)) - 1 if maximum is None else maximum

    def encode(self, value: Any, out: bytearray) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= self.maximum:
            raise EncodeError(f"integer out of range [0, {self.maximum}]")
        out += value.to_bytes(self.size, "big")

    def decode(self, reader: _Reader) -> int:
        value = int.from_bytes(reader.take(self.size), "big")
        if value > self.maximum:
            raise DecodeError("integer out of range")
        return value


class Bool(WireType):
    def encode(self, value: Any, out: bytearray) -> None:
        if not isinstance(value, bool):
            raise EncodeError("expected a bool")
        out.append(1 if value else 0)

    def decode(self, reader: _Reader) -> bool:
        b = reader.take(1)[0]
        if b > 1:
            raise DecodeError("bool must be 0 or 1")
        return b == 1


class Bytes(WireType):
    def __init__(self, maximum: int, exact: int | None = None) -> None:
        self.maximum = maximum
        self.exact = exact

    def encode(self, value: Any, out: bytearray) -> None:
        if not isinstance(value, bytes):
            raise EncodeError("expected bytes")
        self._check(len(value), EncodeError)
        out += len(value).to_bytes(4, "big") + value

    def _check(self, n: int, error: type[Exception]) -> None:
        if self.exact is not None and n != self.exact:
            raise error(f"expected exactly {self.exact} bytes")
        if n > self.maximum:
            raise error(f"byte string longer than {self.maximum}")

    def decode(self, reader: _Reader) -> bytes:
        n = int.from_bytes(reader.take(4), "big")
        self._check(n, DecodeError)
        return reader.take(n)


class Str(WireType):
    def __init__(self, maximum: int = 4096, pattern: re.Pattern[str] | None = None) -> None:
        self.maximum = maximum
        self.pattern = pattern

    def encode(self, value: Any, out: bytearray) -> None:
        if not isinstance(value, str):
            raise EncodeError("expected str")
        try:
            raw = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError("string is not encodable as UTF-8") from exc
        if len(raw) > self.maximum or (self.pattern and not self.pattern.fullmatch(value)):
            raise EncodeError("string too long or not allowed")
        out += len(raw).to_bytes(4, "big") + raw

    def decode(self, reader: _Reader) -> str:
        n = int.from_bytes(reader.take(4), "big")
        if n > self.maximum:
            raise DecodeError("string too long")
        try:
            value = reader.take(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("string is not valid UTF-8") from exc
        if self.pattern and not self.pattern.fullmatch(value):
            raise DecodeError("string has characters that are not allowed")
        return value


class Choice(WireType):
    """One of a fixed set of strings, sent as its index (u8)."""

    def __init__(self, *options: str) -> None:
        if not 0 < len(options) <= 256 or len(set(options)) != len(options):
            raise TypeError("a choice needs 1 to 256 distinct options")
        self.options = options

    def encode(self, value: Any, out: bytearray) -> None:
        if value not in self.options:
            raise EncodeError(f"expected one of {self.options}")
        out.append(self.options.index(value))

    def decode(self, reader: _Reader) -> str:
        index = reader.take(1)[0]
        if index >= len(self.options):
            raise DecodeError("choice out of range")
        return self.options[index]


#: member names, dataset names, variable codes: short and plain
NAME = Str(64, NAME_PATTERN)


class Seq(WireType):
    def __init__(self, element: WireType, maximum: int) -> None:
        self.element = element
        self.maximum = maximum

    def encode(self, value: Any, out: bytearray) -> None:
        if not isinstance(value, tuple):
            raise EncodeError("sequences are tuples")
        if len(value) > self.maximum:
            raise EncodeError(f"more than {self.maximum} elements")
        out += len(value).to_bytes(4, "big")
        for item in value:
            self.element.encode(item, out)

    def decode(self, reader: _Reader) -> tuple[Any, ...]:
        n = int.from_bytes(reader.take(4), "big")
        if n > self.maximum:
            raise DecodeError(f"more than {self.maximum} elements")
        return tuple(self.element.decode(reader) for _ in range(n))


class Struct(WireType):
    def __init__(self, cls: type) -> None:
        self.cls = cls

    def encode(self, value: Any, out: bytearray) -> None:
        if type(value) is not self.cls:
            raise EncodeError(f"expected {self.cls.__name__}")
        _encode_fields(value, out)

    def decode(self, reader: _Reader) -> Any:
        return _decode_fields(self.cls, reader)


def wire(wire_type: WireType, **kwargs: Any) -> Any:
    """Declare a dataclass field together with its wire type."""
    return dataclasses.field(metadata={"wire": wire_type}, **kwargs)


def _fields(cls: type) -> list[tuple[str, WireType]]:
    cached = cls.__dict__.get("_wire_fields")
    if cached is None:
        cached = []
        for f in dataclasses.fields(cls):
            if "wire" not in f.metadata:
                raise TypeError(f"{cls.__name__}.{f.name} has no wire type")
            cached.append((f.name, f.metadata["wire"]))
        cls._wire_fields = cached  # type: ignore[attr-defined]
    return cached


def _encode_fields(value: Any, out: bytearray) -> None:
    for name, wire_type in _fields(type(value)):
        wire_type.encode(getattr(value, name), out)


def _decode_fields(cls: type, reader: _Reader) -> Any:
    values = {name: wire_type.decode(reader) for name, wire_type in _fields(cls)}
    try:
        return cls(**values)
    except DecodeError:
        raise
    except (ValueError, TypeError, ArithmeticError) as exc:
        # the message's own validation refused the values; keep its text out of the error
        raise DecodeError(f"invalid {cls.__name__}") from exc


class Message:
    """Base of wire messages. Subclasses are frozen dataclasses registered with a type id."""

    TYPE: ClassVar[int]


_REGISTRY: dict[int, type[Message]] = {}
M = TypeVar("M", bound=type)
T = TypeVar("T")


def message(type_id: int) -> Callable[[M], M]:
    """Register a frozen dataclass as a wire message with a unique type id."""

    def register(cls: M) -> M:
        if type_id in _REGISTRY:
            raise TypeError(f"message type {type_id} already registered")
        if not 0 < type_id < 1 << 16:
            raise TypeError("message type ids are u16 and non-zero")
        _fields(cls)  # every field must declare its wire type
        cls.TYPE = type_id  # type: ignore[attr-defined]
        _REGISTRY[type_id] = cls  # type: ignore[assignment]
        return cls

    return register


def registered_types() -> dict[int, type[Message]]:
    return dict(_REGISTRY)


def encode(msg: Message) -> bytes:
    cls = type(msg)
    if _REGISTRY.get(getattr(cls, "TYPE", -1)) is not cls:
        raise EncodeError(f"{cls.__name__} is not a registered message")
    out = bytearray(HEADER.pack(MAGIC, VERSION, SUITE, cls.TYPE))
    _encode_fields(msg, out)
    return bytes(out)


def encode_struct(value: Any) -> bytes:
    """Canonical bytes of a wire struct (used for digests and signatures)."""
    out = bytearray()
    _encode_fields(value, out)
    return bytes(out)


def decode_struct(cls: type[T], data: bytes) -> T:
    """Decode canonical struct bytes (as made by :func:`encode_struct`); strict like decode."""
    reader = _Reader(bytes(data))
    try:
        value = _decode_fields(cls, reader)
    except (RecursionError, MemoryError) as exc:
        raise DecodeError("struct too complex") from exc
    if reader.pos != len(reader.data):
        raise DecodeError("trailing bytes after struct")
    return value


def decode(frame: bytes, max_size: int = DEFAULT_MAX_FRAME) -> Message:
    """Decode one frame; any problem raises :class:`DecodeError` (and nothing else)."""
    if not isinstance(frame, bytes | bytearray | memoryview):
        raise DecodeError("frame must be bytes")
    try:
        frame = memoryview(frame).cast("B")  # measure and slice in bytes, whatever the format
    except (ValueError, TypeError) as exc:
        raise DecodeError("frame is not a readable byte buffer") from exc
    if len(frame) > max_size:
        raise DecodeError(f"frame larger than {max_size} bytes")
    if len(frame) < HEADER.size:
        raise DecodeError("frame shorter than its header")
    magic, version, suite, type_id = HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise DecodeError("not a fedtally frame")
    if version != VERSION:
        raise DecodeError(f"unsupported protocol version {version}")
    if suite != SUITE:
        raise DecodeError(f"unsupported cipher suite {suite}")
    cls = _REGISTRY.get(type_id)
    if cls is None:
        raise DecodeError(f"unknown message type {type_id}")
    reader = _Reader(bytes(frame[HEADER.size:]))
    try:
        msg = _decode_fields(cls, reader)
    except DecodeError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise DecodeError("frame too complex") from exc
    if reader.pos != len(reader.data):
        raise DecodeError("trailing bytes after message")
    return msg


def canonical_json(obj: Any) -> bytes:
    """The one JSON form we hash and sign: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()
