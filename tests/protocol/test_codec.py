"""The wire codec: round trips of every registered message, and a fuzzer proving that
``decode`` only ever returns a registered message or raises ``DecodeError``.

Strategies are built from the wire types declared next to each dataclass field, so a new
message type or field is covered without touching this file (only a new *kind* of wire type,
or a message with cross-field constraints like ``RoundParams``, needs a strategy here).
"""

from __future__ import annotations

import array
import dataclasses
import functools
import operator
import string
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import protocol.paillier_messages  # noqa: E402,F401  - every wire message, whatever ran before
import protocol.service_messages  # noqa: E402,F401
import support
from crypto.encoding import MAX_RING_BITS, MIN_RING_BITS
from protocol import codec
from protocol.codec import (
    DEFAULT_MAX_FRAME,
    HEADER,
    MAGIC,
    NAME_PATTERN,
    SUITE,
    VERSION,
    Bool,
    Bytes,
    Choice,
    EncodeError,
    Seq,
    Str,
    Struct,
    UInt,
    wire,
)
from protocol.collusion import BoundError, min_threshold, sparse_bounds
from protocol.errors import DecodeError, LocalError, RemoteProtocolError
from protocol.messages import (
    SECAGG_MESSAGES,
    AdvertiseKeys,
    KeyRoster,
    MaskedInput,
    RoundAborted,
    RoundStart,
    SealedShare,
    ShareBundle,
    SurvivorList,
    UnmaskRequest,
)
from protocol.params import MAX_NODES, MAX_VECTOR_LENGTH, RoundParams

REGISTERED = codec.registered_types()
TYPES = [REGISTERED[type_id] for type_id in sorted(REGISTERED)]
#: keep generated values small: the fuzzer's power is in the count, not the size
MAX_SEQ = 4
MAX_BLOB = 48

FUZZ = settings(max_examples=support.FUZZ_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
#: a round trip is a property of each message type's fields, drawn afresh per type: 250
#: examples of each of the 30 types in CI (7,500 in all); the fuzzers above keep their
#: 10,000 inputs each
ROUND_TRIP = settings(FUZZ, max_examples=max(100, support.FUZZ_EXAMPLES // 40))


# --- strategies built from the declared wire types -----------------------------------------


def wire_of(cls: type, name: str) -> codec.WireType:
    return next(f.metadata["wire"] for f in dataclasses.fields(cls) if f.name == name)


def _fit_utf8(text: str, limit: int) -> str:
    while len(text.encode("utf-8")) > limit:
        text = text[:-1]
    return text


def _checked_name(name: str) -> str:
    assert NAME_PATTERN.fullmatch(name), f"{name!r}: update the names strategy to the pattern"
    return name


_ALNUM = string.ascii_letters + string.digits
#: NAME_PATTERN spelled out (st.from_regex is several times slower); checked against it
names = st.builds(operator.add, st.sampled_from(_ALNUM),
                  st.text(alphabet=_ALNUM + "_.-", max_size=63)).map(_checked_name)


@functools.cache
def wire_strategy(wt: codec.WireType) -> st.SearchStrategy[Any]:
    if isinstance(wt, UInt):
        return st.one_of(st.sampled_from([0, wt.maximum]), st.integers(0, wt.maximum))
    if isinstance(wt, Bool):
        return st.booleans()
    if isinstance(wt, Choice):
        return st.sampled_from(wt.options)
    if isinstance(wt, Bytes):
        if wt.exact is not None:
            return st.binary(min_size=wt.exact, max_size=wt.exact)
        return st.binary(max_size=min(wt.maximum, MAX_BLOB))
    if isinstance(wt, Str):
        if wt.pattern is NAME_PATTERN:
            return names
        if wt.pattern is not None:
            return st.from_regex(wt.pattern, fullmatch=True).filter(
                lambda s: len(s.encode("utf-8")) <= wt.maximum)
        return st.text(max_size=wt.maximum).map(lambda s: _fit_utf8(s, wt.maximum))
    if isinstance(wt, Seq):
        return st.lists(wire_strategy(wt.element),
                        max_size=min(wt.maximum, MAX_SEQ)).map(tuple)
    if isinstance(wt, Struct):
        return instances(wt.cls)
    raise AssertionError(f"no strategy for wire type {type(wt).__name__}: add one here")


def _is_name_seq(wt: codec.WireType) -> bool:
    return isinstance(wt, Seq) and isinstance(wt.element, Str)


@st.composite
def _generic_instance(draw: st.DrawFn, cls: type) -> Any:
    values = {f.name: draw(wire_strategy(f.metadata["wire"])) for f in dataclasses.fields(cls)}
    try:
        return cls(**values)
    except ValueError:
        pass
    # the class's own validation refused: its name lists must be sorted and unique
    for f in dataclasses.fields(cls):
        wt = f.metadata["wire"]
        if _is_name_seq(wt):
            values[f.name] = tuple(sorted(set(values[f.name])))
        elif isinstance(wt, Seq) and isinstance(wt.element, Struct) and \
                "sender" in {g.name for g in dataclasses.fields(wt.element.cls)}:
            # a list of signed items sorted and unique by sender (DecryptRequest)
            by_sender = {item.sender: item for item in values[f.name]}
            values[f.name] = tuple(by_sender[s] for s in sorted(by_sender))
    return cls(**values)


@st.composite
def round_params(draw: st.DrawFn) -> RoundParams:
    values = {f.name: draw(wire_strategy(f.metadata["wire"]))
              for f in dataclasses.fields(RoundParams)}
    name = wire_strategy(wire_of(RoundParams, "participants").element)
    participants = tuple(sorted(draw(st.lists(name, min_size=2, max_size=MAX_SEQ + 4,
                                              unique=True))))
    n = len(participants)
    colluding = draw(st.integers(0, n - 2))
    values.update(
        participants=participants,
        max_colluding=colluding,
        threshold=draw(st.integers(min_threshold(n, colluding), n)),
        vector_length=draw(st.integers(1, MAX_VECTOR_LENGTH)),
        ring_bits=draw(st.integers(MIN_RING_BITS, MAX_RING_BITS)),
        neighbours=draw(st.sampled_from([0, *(k for k in range(2, n - 1, 2)
                                              if _sparse_ok(n, k, colluding))])),
    )
    return RoundParams(**values)


def _sparse_ok(n: int, k: int, colluding: int) -> bool:
    try:
        sparse_bounds(n, k, colluding)
    except BoundError:
        return False
    return True


SPECIAL: dict[type, st.SearchStrategy[Any]] = {RoundParams: round_params()}


@functools.cache
def instances(cls: type) -> st.SearchStrategy[Any]:
    return SPECIAL[cls] if cls in SPECIAL else _generic_instance(cls)


any_message = st.one_of([instances(cls) for cls in TYPES])


# --- a mirror of the encoder that records where every length, integer and bool lies ---------


@dataclass(frozen=True)
class Mark:
    kind: str  # "length", "uint" or "bool"
    offset: int
    size: int
    maximum: int


def layout(msg: codec.Message) -> tuple[bytes, list[Mark]]:
    out = bytearray(HEADER.pack(MAGIC, VERSION, SUITE, type(msg).TYPE))
    marks: list[Mark] = []
    _walk(Struct(type(msg)), msg, out, marks)
    return bytes(out), marks


def _walk(wt: codec.WireType, value: Any, out: bytearray, marks: list[Mark]) -> None:
    if isinstance(wt, Struct):
        for f in dataclasses.fields(value):
            _walk(f.metadata["wire"], getattr(value, f.name), out, marks)
        return
    if isinstance(wt, Seq):
        marks.append(Mark("length", len(out), 4, wt.maximum))
        out += len(value).to_bytes(4, "big")
        for item in value:
            _walk(wt.element, item, out, marks)
        return
    if isinstance(wt, Bytes | Str):
        marks.append(Mark("length", len(out), 4, wt.maximum))
    elif isinstance(wt, UInt):
        marks.append(Mark("uint", len(out), wt.size, wt.maximum))
    elif isinstance(wt, Bool):
        marks.append(Mark("bool", len(out), 1, 1))
    elif isinstance(wt, Choice):
        marks.append(Mark("uint", len(out), 1, len(wt.options) - 1))
    wt.encode(value, out)


# --- the property every decode must have ---------------------------------------------------


def decode_or_reject(frame: bytes) -> codec.Message | None:
    """``decode`` returns a registered message (whose encoding is exactly ``frame``: the
    format is canonical) or raises DecodeError; any other exception fails the test."""
    try:
        msg = codec.decode(frame)
    except DecodeError:
        return None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the property under test: nothing else escapes
        pytest.fail(f"{type(exc).__name__} escaped decode for frame {frame!r}: {exc!r}")
    assert REGISTERED.get(type(msg).TYPE) is type(msg)
    assert codec.encode(msg) == bytes(frame), "decode accepted a non-canonical frame"
    return msg


# --- (a) round trips -----------------------------------------------------------------------


def test_every_secagg_message_and_round_start_is_registered() -> None:
    assert set(SECAGG_MESSAGES) | {RoundStart} <= set(TYPES)
    assert len({cls.TYPE for cls in TYPES}) == len(TYPES)
    codec.registered_types().clear()  # a copy: the registry itself is untouched
    assert codec.registered_types() == REGISTERED


@pytest.mark.parametrize("cls", TYPES, ids=lambda cls: cls.__name__)
@ROUND_TRIP
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    msg = data.draw(instances(cls))
    frame = codec.encode(msg)
    mirrored, _ = layout(msg)
    assert mirrored == frame  # the fuzzer's layout mirror agrees with the encoder
    decoded = codec.decode(frame)
    assert type(decoded) is cls
    assert decoded == msg
    assert codec.decode(bytearray(frame)) == msg
    assert codec.decode(memoryview(frame)) == msg


def test_round_trip_at_the_limits() -> None:
    names = tuple(f"n{i:04d}" for i in range(MAX_NODES))
    longest = "a" * 64
    for msg in (
        SurvivorList(b"\xff" * 16, 2**32 - 1, names),
        RoundAborted(bytes(16), 0, "a" * 64),  # the longest code
        ShareBundle(bytes(16), 0, (longest,), (SealedShare(longest, "0", bytes(512)),)),
        RoundStart(RoundParams("f" * 128, bytes(16), 2**32 - 1, names, MAX_NODES,
                               MAX_VECTOR_LENGTH, MAX_RING_BITS, MAX_NODES - 2, bytes(32))),
        RoundStart(RoundParams("", bytes(16), 0, ("a", "b"), 2, 1, MIN_RING_BITS, 0,
                               bytes(32))),
    ):
        assert codec.decode(codec.encode(msg)) == msg


# --- (b) mutated frames and random bytes ---------------------------------------------------

U32 = 2**32 - 1


#: mutants drawn from each generated message: drawing a whole message costs hypothesis ten
#: times what drawing a mutation does, so each example checks several frames
MUTANTS_PER_MESSAGE = 10


@st.composite
def mutated(draw: st.DrawFn) -> tuple[codec.Message, bytes, list[bytes]]:
    msg = draw(any_message)
    frame, marks = layout(msg)
    mutants = []
    for _ in range(MUTANTS_PER_MESSAGE):
        data = bytearray(frame)
        for op in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
            data = op(draw, data, marks)
        mutants.append(bytes(data))
    return msg, frame, mutants


def _flip(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    if data:
        data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
    return data


def _replace(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    if data:
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return data


def _truncate(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    return data[:draw(st.integers(0, max(len(data) - 1, 0)))]


def _insert(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


def _append(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    return data + draw(st.binary(min_size=1, max_size=16))


def _write(data: bytearray, mark: Mark, value: int) -> bytearray:
    if mark.offset + mark.size <= len(data):
        data[mark.offset:mark.offset + mark.size] = value.to_bytes(mark.size, "big")
    return data


def _pick(draw: st.DrawFn, marks: list[Mark], kind: str) -> Mark | None:
    chosen = [m for m in marks if m.kind == kind]
    return draw(st.sampled_from(chosen)) if chosen else None


def _inflate_length(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    mark = _pick(draw, marks, "length")
    if mark is None:
        return data
    current = int.from_bytes(data[mark.offset:mark.offset + 4], "big")
    value = draw(st.one_of(
        st.sampled_from([U32, 2**31 - 1, 2**31, mark.maximum, min(mark.maximum + 1, U32),
                         min(current + 1, U32), max(current - 1, 0), 0]),
        st.integers(min(mark.maximum + 1, U32), U32),
        st.integers(0, U32),
    ))
    return _write(data, mark, value)


def _bad_integer(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    mark = _pick(draw, marks, draw(st.sampled_from(["uint", "bool"])))
    if mark is None:
        return data
    top = (1 << (8 * mark.size)) - 1
    return _write(data, mark, draw(st.integers(min(mark.maximum + 1, top), top)
                                   | st.integers(0, top)))


def _header(draw: st.DrawFn, data: bytearray, marks: list[Mark]) -> bytearray:
    if len(data) < HEADER.size:
        return data
    magic, version, suite, type_id = HEADER.unpack_from(data)
    which = draw(st.sampled_from(["magic", "version", "suite", "type"]))
    if which == "magic":
        magic = draw(st.binary(min_size=4, max_size=4))
    elif which == "version":
        version = draw(st.integers(0, 255))
    elif which == "suite":
        suite = draw(st.integers(0, 255))
    else:  # another registered type (type confusion) or any u16
        type_id = draw(st.sampled_from(sorted(REGISTERED)) | st.integers(0, 2**16 - 1))
    HEADER.pack_into(data, 0, magic, version, suite, type_id)
    return data


MUTATIONS = [_flip, _replace, _truncate, _insert, _append, _inflate_length, _bad_integer,
             _header]


@settings(FUZZ, max_examples=support.FUZZ_EXAMPLES // MUTANTS_PER_MESSAGE)
@given(case=mutated())
def test_mutated_frames_decode_or_raise_decode_error(
        case: tuple[codec.Message, bytes, list[bytes]]) -> None:
    """FUZZ_EXAMPLES mutated frames in all (10,000 in CI), MUTANTS_PER_MESSAGE per message."""
    msg, frame, mutants = case
    assert codec.decode(frame) == msg  # the unmutated frame round-trips
    for data in mutants:
        decode_or_reject(data)


#: inputs per example in the random-input fuzz tests: hypothesis's cost is mostly per
#: example, so FUZZ_EXAMPLES inputs are drawn in batches (still 10,000 in CI)
BATCH = 10
BATCHED = settings(FUZZ, max_examples=support.FUZZ_EXAMPLES // BATCH)


@BATCHED
@given(batch=st.lists(st.binary(max_size=512), min_size=BATCH, max_size=BATCH))
def test_random_bytes_decode_or_raise_decode_error(batch: list[bytes]) -> None:
    for data in batch:
        decode_or_reject(data)


@BATCHED
@given(batch=st.lists(st.tuples(st.sampled_from(sorted(REGISTERED)), st.binary(max_size=512)),
                      min_size=BATCH, max_size=BATCH))
def test_random_bodies_behind_a_valid_header(batch: list[tuple[int, bytes]]) -> None:
    for type_id, body in batch:
        decode_or_reject(HEADER.pack(MAGIC, VERSION, SUITE, type_id) + body)


@ROUND_TRIP
@given(msg=any_message, junk=st.binary(min_size=1, max_size=16))
def test_every_strict_prefix_and_every_extension_is_rejected(msg: codec.Message,
                                                             junk: bytes) -> None:
    frame = codec.encode(msg)
    for cut in range(len(frame)):
        with pytest.raises(DecodeError):
            codec.decode(frame[:cut])
    with pytest.raises(DecodeError):
        codec.decode(frame + junk)


# --- (c) explicit cases ----------------------------------------------------------------------


def minimal(cls: type) -> Any:
    """The smallest valid instance of a wire dataclass."""
    if cls is RoundParams:
        return RoundParams("fed", bytes(16), 0, ("a", "b"), 2, 1, MIN_RING_BITS, 0, bytes(32))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        wt = f.metadata["wire"]
        if isinstance(wt, UInt):
            values[f.name] = 0
        elif isinstance(wt, Bool):
            values[f.name] = False
        elif isinstance(wt, Choice):
            values[f.name] = wt.options[0]
        elif isinstance(wt, Bytes):
            values[f.name] = bytes(wt.exact or 0)
        elif isinstance(wt, Str):
            values[f.name] = "a" if wt.pattern is not None else ""
        elif isinstance(wt, Seq):
            values[f.name] = ()
        elif isinstance(wt, Struct):
            values[f.name] = minimal(wt.cls)
        else:
            raise AssertionError(f"no minimal value for {type(wt).__name__}")
    return cls(**values)


def unchecked(cls: type, **values: Any) -> Any:
    """An instance that skips the class's own validation (what a hostile peer can encode)."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        object.__setattr__(obj, f.name, values[f.name])
    return obj


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def raw_str(raw: bytes) -> bytes:
    return u32(len(raw)) + raw


def frame_with(msg: codec.Message, **raw: bytes) -> bytes:
    """Encode ``msg`` with the named top-level fields replaced by raw wire bytes."""
    out = bytearray(HEADER.pack(MAGIC, VERSION, SUITE, type(msg).TYPE))
    for f in dataclasses.fields(msg):
        if f.name in raw:
            out += raw.pop(f.name)
        else:
            f.metadata["wire"].encode(getattr(msg, f.name), out)
    assert not raw, f"unknown fields {sorted(raw)}"
    return bytes(out)


ADVERT = minimal(AdvertiseKeys)


def test_minimal_frames_decode() -> None:
    for cls in TYPES:
        assert codec.decode(codec.encode(minimal(cls))) == minimal(cls)


def test_frame_helper_matches_encoder() -> None:
    assert frame_with(ADVERT, sender=raw_str(b"a")) == codec.encode(ADVERT)


def test_oversized_frame_is_rejected_before_parsing() -> None:
    # not even a fedtally frame, but the size is what gets reported: checked first
    with pytest.raises(DecodeError, match="larger than"):
        codec.decode(bytes(DEFAULT_MAX_FRAME + 1))
    frame = codec.encode(ADVERT)
    with pytest.raises(DecodeError, match="larger than"):
        codec.decode(frame, max_size=len(frame) - 1)
    with pytest.raises(DecodeError, match="larger than"):
        codec.decode(b"junk" * 10, max_size=39)
    assert codec.decode(frame, max_size=len(frame)) == ADVERT


@pytest.mark.parametrize("cls", TYPES, ids=lambda cls: cls.__name__)
def test_trailing_bytes_are_rejected(cls: type) -> None:
    frame = codec.encode(minimal(cls))
    for junk in (b"\x00", b"\xff" * 7):
        with pytest.raises(DecodeError, match="trailing"):
            codec.decode(frame + junk)


@pytest.mark.parametrize("frame", [
    b"", b"FTLY", HEADER.pack(MAGIC, VERSION, SUITE, 1)[:-1],
    HEADER.pack(b"FTLX", VERSION, SUITE, 1), HEADER.pack(b"\x00" * 4, VERSION, SUITE, 1),
    HEADER.pack(MAGIC, 0, SUITE, 1), HEADER.pack(MAGIC, VERSION + 1, SUITE, 1),
    HEADER.pack(MAGIC, 255, SUITE, 1),
    HEADER.pack(MAGIC, VERSION, 0, 1), HEADER.pack(MAGIC, VERSION, SUITE + 1, 1),
    HEADER.pack(MAGIC, VERSION, SUITE, 0), HEADER.pack(MAGIC, VERSION, SUITE, 2**16 - 1),
    HEADER.pack(MAGIC, VERSION, SUITE, max(REGISTERED) + 1),
])
def test_bad_headers_are_rejected(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(frame + codec.encode(ADVERT)[HEADER.size:])


@pytest.mark.parametrize("value", [None, "FTLY", 42, [70, 84, 76, 89], 1.5])
def test_decode_refuses_non_bytes(value: Any) -> None:
    with pytest.raises(DecodeError):
        codec.decode(value)


BAD_UTF8 = [b"\xff", b"a\xfe", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
            b"\xe2\x82"]


@pytest.mark.parametrize("raw", BAD_UTF8)
def test_invalid_utf8_is_rejected(raw: bytes) -> None:
    with pytest.raises(DecodeError, match="UTF-8"):
        codec.decode(frame_with(ADVERT, sender=raw_str(raw)))
    # a free-text field too (no pattern to catch it afterwards)
    with pytest.raises(DecodeError, match="UTF-8"):
        codec.decode(frame_with(minimal(RoundAborted), code=raw_str(raw)))
    with pytest.raises(DecodeError, match="UTF-8"):
        codec.decode(frame_with(minimal(SurvivorList), survivors=u32(1) + raw_str(raw)))


BAD_NAMES = ["", "-a", "_a", ".a", "a b", "a/b", "a\n", "a\x00", "é", "aé", "\uff21", "a" * 65,
             "a:b", "a\t"]
GOOD_NAMES = ["a", "Z", "0", "a" * 64, "a-b_c.d", "node.01-x_"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_outside_the_pattern_are_rejected(name: str) -> None:
    with pytest.raises(DecodeError):
        codec.decode(frame_with(ADVERT, sender=raw_str(name.encode("utf-8"))))
    with pytest.raises(DecodeError):
        codec.decode(frame_with(minimal(SurvivorList),
                                survivors=u32(1) + raw_str(name.encode("utf-8"))))
    with pytest.raises(EncodeError):
        codec.encode(dataclasses.replace(ADVERT, sender=name))


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_inside_the_pattern_are_accepted(name: str) -> None:
    msg = dataclasses.replace(ADVERT, sender=name)
    assert codec.decode(frame_with(ADVERT, sender=raw_str(name.encode()))) == msg


def test_strings_longer_than_their_maximum_are_rejected() -> None:
    code_wt = wire_of(RoundAborted, "code")
    too_long = "é" * 32 + "a"  # 33 characters, 65 bytes > 64
    with pytest.raises(DecodeError, match="too long"):
        codec.decode(frame_with(minimal(RoundAborted), code=raw_str(too_long.encode())))
    with pytest.raises(EncodeError):
        codec.encode(RoundAborted(bytes(16), 0, too_long))
    # the length prefix alone is enough: nothing past it is read
    with pytest.raises(DecodeError, match="too long"):
        codec.decode(frame_with(minimal(RoundAborted), code=u32(code_wt.maximum + 1)))
    with pytest.raises(DecodeError):
        codec.decode(frame_with(minimal(RoundAborted), code=u32(U32)))


@pytest.mark.parametrize("count", [MAX_NODES + 1, 2**31, U32])
def test_counts_above_sequence_maxima_are_rejected(count: int) -> None:
    with pytest.raises(DecodeError, match="more than"):
        codec.decode(frame_with(minimal(SurvivorList), survivors=u32(count)))
    with pytest.raises(DecodeError, match="more than"):
        codec.decode(frame_with(minimal(KeyRoster), adverts=u32(count)))
    with pytest.raises(DecodeError, match="more than"):
        codec.decode(frame_with(minimal(UnmaskRequest), signatures=u32(count)))


def test_sequence_counts_larger_than_the_frame_are_truncation() -> None:
    with pytest.raises(DecodeError, match="truncated"):
        codec.decode(frame_with(minimal(SurvivorList), survivors=u32(MAX_NODES)))


@pytest.mark.parametrize("length", [0, 31, 33, 2**16, U32])
def test_exact_size_byte_fields_are_enforced(length: int) -> None:
    with pytest.raises(DecodeError, match="exactly"):
        codec.decode(frame_with(ADVERT, enc_public=u32(length) + bytes(min(length, 64))))


@pytest.mark.parametrize("length", [2**20, wire_of(MaskedInput, "data").maximum, U32])
def test_inflated_byte_lengths_fail_without_allocating(length: int) -> None:
    with pytest.raises(DecodeError):
        codec.decode(frame_with(minimal(MaskedInput), data=u32(length) + b"abc"))


@dataclass(frozen=True)
class Flags:
    on: bool = wire(Bool())
    small: int = wire(UInt(1, maximum=9))


def test_bool_accepts_only_zero_and_one() -> None:
    assert codec.decode_struct(Flags, b"\x00\x00") == Flags(False, 0)
    assert codec.decode_struct(Flags, b"\x01\x09") == Flags(True, 9)
    for byte in (2, 3, 0x80, 0xFF):
        with pytest.raises(DecodeError, match="bool"):
            codec.decode_struct(Flags, bytes([byte, 0]))
    for value in (1, 0, None, "true"):
        with pytest.raises(EncodeError):
            codec.encode_struct(Flags(value, 0))  # type: ignore[arg-type]


def test_integers_above_their_maximum_are_rejected() -> None:
    for byte in (10, 0xFF):
        with pytest.raises(DecodeError, match="out of range"):
            codec.decode_struct(Flags, bytes([1, byte]))
    with pytest.raises(EncodeError):
        codec.encode_struct(Flags(True, 10))
    params = minimal(RoundParams)
    frame = codec.encode(RoundStart(params))
    for name, value in (("ring_bits", MAX_RING_BITS + 1), ("ring_bits", 2**16 - 1),
                        ("vector_length", MAX_VECTOR_LENGTH + 1), ("vector_length", U32)):
        size = wire_of(RoundParams, name).size
        offset = HEADER.size + _offset_of(params, name)
        bad = frame[:offset] + value.to_bytes(size, "big") + frame[offset + size:]
        with pytest.raises(DecodeError, match="out of range"):
            codec.decode(bad)


def _offset_of(value: Any, name: str) -> int:
    out = bytearray()
    for f in dataclasses.fields(value):
        if f.name == name:
            return len(out)
        f.metadata["wire"].encode(getattr(value, f.name), out)
    raise AssertionError(name)


def test_decode_struct_is_strict() -> None:
    raw = codec.encode_struct(minimal(RoundParams))
    assert codec.decode_struct(RoundParams, raw) == minimal(RoundParams)
    with pytest.raises(DecodeError, match="trailing"):
        codec.decode_struct(RoundParams, raw + b"\x00")
    with pytest.raises(DecodeError, match="truncated"):
        codec.decode_struct(RoundParams, raw[:-1])


INVALID_PARAMS = {
    "unsorted participants": dict(participants=("b", "a")),
    "duplicate participants": dict(participants=("a", "a", "b"), threshold=2),
    "one participant": dict(participants=("a",), threshold=1),
    "no participants": dict(participants=(), threshold=0),
    "threshold n/2": dict(participants=("a", "b", "c", "d"), threshold=2),
    "threshold above n": dict(participants=("a", "b", "c"), threshold=4),
    "threshold zero": dict(threshold=0),
    "ring too narrow": dict(ring_bits=MIN_RING_BITS - 1),
    "empty vector": dict(vector_length=0),
    "odd neighbours": dict(participants=tuple("abcdef"), threshold=4, neighbours=3),
    "neighbours n-1": dict(participants=tuple("abcdef"), threshold=4, neighbours=5),
    "neighbours n": dict(participants=tuple("abcd"), threshold=3, neighbours=4),
    "neighbours in pair": dict(neighbours=2),
    # with c colluders: t > (n + c)/2 and t - c >= 2, and per neighbourhood on SecAgg+
    "threshold (n + c)/2": dict(participants=tuple("abcdef"), threshold=4, max_colluding=2),
    "threshold c + 1": dict(participants=tuple("abc"), threshold=2, max_colluding=1),
    "too few for c": dict(participants=("a", "b"), threshold=2, max_colluding=1),
    "neighbours too few for c": dict(participants=tuple("abcdefghij"), threshold=8,
                                     max_colluding=3, neighbours=2),
}


@pytest.mark.parametrize("change", INVALID_PARAMS.values(), ids=INVALID_PARAMS.keys())
def test_invalid_round_params_are_a_decode_error(change: dict[str, Any]) -> None:
    values = {**dataclasses.asdict(minimal(RoundParams)), **change}
    with pytest.raises(ValueError):
        RoundParams(**values)
    frame = codec.encode(RoundStart(unchecked(RoundParams, **values)))
    with pytest.raises(DecodeError, match="^invalid RoundParams$") as info:
        codec.decode(frame)
    assert isinstance(info.value.__cause__, ValueError)  # its text stays out of the error


@pytest.mark.parametrize("msg", [
    unchecked(SurvivorList, query_id=bytes(16), round=0, survivors=("b", "a")),
    unchecked(SurvivorList, query_id=bytes(16), round=0, survivors=("a", "a")),
    unchecked(ShareBundle, query_id=bytes(16), round=0, committed=("b", "a"), shares=()),
    unchecked(UnmaskRequest, query_id=bytes(16), round=0, survivors=("a",),
              dropouts=("c", "b"), signatures=()),
], ids=["survivors-unsorted", "survivors-duplicate", "committed-unsorted", "dropouts-unsorted"])
def test_unsorted_or_repeated_name_lists_are_a_decode_error(msg: codec.Message) -> None:
    with pytest.raises(DecodeError, match="^invalid "):
        codec.decode(codec.encode(msg))


# --- encoding refuses what the format does not allow ---------------------------------------


class NotRegistered(AdvertiseKeys):
    pass


@pytest.mark.parametrize("value", [
    None, object(), b"FTLY", {"sender": "a"}, minimal(SealedShare), minimal(RoundParams),
    unchecked(NotRegistered, **dataclasses.asdict(ADVERT)),
], ids=["None", "object", "bytes", "dict", "SealedShare", "RoundParams", "subclass"])
def test_encode_refuses_unregistered_values(value: Any) -> None:
    with pytest.raises(EncodeError):
        codec.encode(value)


WRONG_FIELDS = {
    "round str": dict(round="1"),
    "round bool": dict(round=True),
    "round negative": dict(round=-1),
    "round float": dict(round=1.0),
    "round too big": dict(round=2**32),
    "sender bytes": dict(sender=b"a"),
    "sender None": dict(sender=None),
    "key short": dict(enc_public=bytes(31)),
    "key long": dict(mask_public=bytes(33)),
    "key bytearray": dict(enc_public=bytearray(32)),
    "key str": dict(enc_public="0" * 32),
    "query id short": dict(query_id=bytes(15)),
    "signature empty": dict(signature=b""),
}


@pytest.mark.parametrize("change", WRONG_FIELDS.values(), ids=WRONG_FIELDS.keys())
def test_encode_refuses_wrong_typed_fields(change: dict[str, Any]) -> None:
    with pytest.raises(EncodeError):
        codec.encode(dataclasses.replace(ADVERT, **change))


def test_encode_refuses_wrong_containers() -> None:
    for msg in (
        KeyRoster(bytes(16), 0, [ADVERT]),  # type: ignore[arg-type]
        KeyRoster(bytes(16), 0, (minimal(SealedShare),)),  # type: ignore[arg-type]
        KeyRoster(bytes(16), 0, (unchecked(NotRegistered, **dataclasses.asdict(ADVERT)),)),
        SurvivorList(bytes(16), 0, tuple(f"n{i:04d}" for i in range(MAX_NODES + 1))),
        ShareBundle(bytes(16), 0, (), (SealedShare("a", "b", bytes(513)),)),
        RoundStart(dataclasses.replace(minimal(RoundParams), federation_id="f" * 129)),
        RoundAborted(bytes(16), 0, "x" * 65),
    ):
        with pytest.raises(EncodeError):
            codec.encode(msg)


def test_encode_errors_are_our_fault_not_a_peers() -> None:
    assert issubclass(EncodeError, LocalError)
    assert not issubclass(EncodeError, RemoteProtocolError)
    assert issubclass(DecodeError, RemoteProtocolError)


def test_encode_refuses_unencodable_strings() -> None:
    with pytest.raises(EncodeError):
        codec.encode(RoundAborted(bytes(16), 0, "\ud800"))


def test_decode_measures_memoryviews_in_bytes() -> None:
    for size in range(1, 9):
        frame = codec.encode(RoundAborted(bytes(16), 0, "x" * size))
        if len(frame) % 8 == 0:
            break
    wide = memoryview(array.array("Q", frame))
    assert wide.nbytes == len(frame) and len(wide) == len(frame) // 8
    with pytest.raises(DecodeError, match="larger than"):
        codec.decode(wide, max_size=len(frame) - 1)
    assert codec.decode(wide) == codec.decode(frame)
