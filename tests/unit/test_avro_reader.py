"""The compiled Avro reader reads exactly what fastavro reads (the contract), only faster."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import avro, avro_reader
from pipeline.avro import SerializationError
from pipeline.avro_codec import encode_long, encode_string
from pipeline.avro_reader import (
    compile_reader,
    decode_batch_fast,
    decode_batch_spans,
    decode_resolved_fast,
    frame_resolved,
)
from tests.unit.test_avro import full_event, minimal_event
from tests.unit.test_collector_server_avro import _events

_text = st.text(max_size=20)  # every code point but surrogates: astral ones included
_long_text = st.text(min_size=40, max_size=400)  # lengths past the 1-byte varint
_long = st.integers(-(2**63), 2**63 - 1)
_merges = st.lists(
    st.fixed_dictionaries({"loser": _text, "survivor": _text, "at": _long}), max_size=3
)
_folds = st.lists(
    st.fixed_dictionaries({"loser": _text, "survivor": _text, "state": st.binary(max_size=80)}),
    max_size=3,
)


@st.composite
def _any_events(draw: st.DrawFn) -> dict[str, Any]:
    """The collector tests' random events, some with long texts and the minimal event's nulls."""
    event = draw(_events())
    if draw(st.booleans()):
        event["properties"] = draw(_long_text)
        event["context"]["user_agent"] = draw(st.none() | _long_text)
    if draw(st.integers(0, 9)) == 0:
        event = avro.decode_event(avro.encode_event(minimal_event()))
    return event


def _same_types(left: Any, right: Any) -> bool:
    """Equal *and* of the same types all the way down (``True == 1``, ``1 == 1.0``)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same_types(left[k], right[k]) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(map(_same_types, left, right))
    return bool(left == right)


def test_the_reader_is_compiled_for_the_current_schemas() -> None:
    assert avro_reader.COMPILED
    assert avro_reader.FRAMABLE


# --- equality with fastavro -----------------------------------------------------------------


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(events=st.lists(_any_events(), max_size=5))
def test_batches_decode_like_fastavro_with_spans_of_each_event(
    events: list[dict[str, Any]],
) -> None:
    data = avro.encode_batch(events)
    expected = avro.decode_batch(data)
    assert _same_types(decode_batch_fast(data), expected)
    decoded, spans = decode_batch_spans(data)
    assert _same_types(decoded, expected)
    assert [data[start:end] for start, end in spans] == [avro.encode_event(e) for e in expected]


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    events=st.lists(st.tuples(_text, _any_events()), max_size=4),
    merges=_merges,
    folds=_folds,
)
def test_resolved_batches_decode_and_frame_like_fastavro(
    events: list[tuple[str, dict[str, Any]]],
    merges: list[dict[str, Any]],
    folds: list[dict[str, Any]],
) -> None:
    batch = {
        "events": [{"customer_id": c, "event": e} for c, e in events],
        "merges": merges,
        "folds": folds,
    }
    data = avro.encode_resolved(batch)
    assert _same_types(decode_resolved_fast(data), avro.decode_resolved(data))
    framed = frame_resolved([(c, avro.encode_event(e)) for c, e in events], merges, folds)
    assert framed == data


def test_forwarding_a_batch_by_its_spans_is_encoding_it_again() -> None:
    """What identity does: raw batch in, ResolvedBatch out, the events' bytes reused."""
    events = [full_event(event_id=f"e-{i}", user_id="ü🎉" * i) for i in range(150)]
    data = avro.encode_batch(events)  # 150 events: a 2-byte count
    decoded, spans = decode_batch_spans(data)
    assert decoded == events
    pairs = [(f"c-{i % 7}", data[start:end]) for i, (start, end) in enumerate(spans)]
    expected = {
        "events": [{"customer_id": c, "event": e} for (c, _), e in zip(pairs, events, strict=True)],
        "merges": [{"loser": "c-8", "survivor": "c-1", "at": 1_714_564_800_000}],
        "folds": [{"loser": "c-8", "survivor": "c-1", "state": b"\x00\xff"}],
    }
    framed = frame_resolved(pairs, expected["merges"], expected["folds"])
    assert framed == avro.encode_resolved(expected)
    assert decode_resolved_fast(framed) == expected
    assert frame_resolved([], [], []) == avro.encode_resolved({"events": []})


def test_an_empty_batch() -> None:
    data = avro.encode_batch([])
    assert decode_batch_fast(data) == []
    assert decode_batch_spans(data) == ([], [])


_EVENT_BYTES = avro.encode_event(full_event())


@pytest.mark.parametrize(
    "data",
    [
        # Two array blocks, the first with a negative count and its size in bytes.
        b"\x01" + encode_long(len(_EVENT_BYTES)) + _EVENT_BYTES + b"\x02" + _EVENT_BYTES + b"\x00",
        # A count in a longer varint than needed.
        b"\x82\x00" + _EVENT_BYTES + b"\x00",
    ],
    ids=["blocks", "long varint"],
)
def test_other_writers_layouts_decode_like_fastavro(data: bytes) -> None:
    expected = avro.decode_batch(data)
    assert decode_batch_fast(data) == expected
    decoded, spans = decode_batch_spans(data)
    assert decoded == expected
    assert all(data[start:end] == _EVENT_BYTES for start, end in spans)


# A record with every type the compiler handles.
_ALL_TYPES = parse_schema(
    {
        "type": "record",
        "name": "t.All",
        "fields": [
            {"name": "i", "type": "int"},
            {"name": "l", "type": "long"},
            {"name": "f", "type": "float"},
            {"name": "d", "type": "double"},
            {"name": "b", "type": "boolean"},
            {"name": "raw", "type": "bytes"},
            {"name": "s", "type": {"type": "string"}},
            {"name": "n", "type": "null"},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "t.Inner",
                    "fields": [{"name": "x", "type": ["null", "double"]}],
                },
            },
            {"name": "u", "type": ["long", "null", "string", "t.Inner"]},
            {"name": "one", "type": ["string"]},
            {
                "name": "nested",
                "type": {"type": "array", "items": {"type": "array", "items": "int"}},
            },
            {"name": "inners", "type": {"type": "array", "items": "t.Inner"}},
        ],
    }
)
_inner = st.fixed_dictionaries({"x": st.none() | st.floats(allow_nan=False)})
_all_types = st.fixed_dictionaries(
    {
        "i": st.integers(-(2**31), 2**31 - 1),
        "l": _long,
        "f": st.floats(width=32, allow_nan=False),
        "d": st.floats(allow_nan=False),
        "b": st.booleans(),
        "raw": st.binary(max_size=100),
        "s": _text,
        "n": st.none(),
        "u": st.none() | _long | _text | _inner,
        "one": _text,
        "nested": st.lists(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=3), max_size=3),
        "inner": _inner,
        "inners": st.lists(_inner, max_size=3),
    }
)


def _fastavro_write(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def _fastavro_read(schema: Any, data: bytes) -> Any:
    buffer = io.BytesIO(data)
    value = schemaless_reader(buffer, schema, None)
    if buffer.tell() != len(data):
        raise SerializationError("trailing bytes")
    return value


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(record=_all_types)
def test_every_supported_type_decodes_like_fastavro(record: dict[str, Any]) -> None:
    read = compile_reader(_ALL_TYPES)
    assert read is not None
    data = _fastavro_write(_ALL_TYPES, record)
    assert _same_types(read(data), _fastavro_read(_ALL_TYPES, data))


@pytest.mark.parametrize(
    ("schema", "data"),
    [
        ("boolean", b"\x02"),  # any non-zero byte is True
        (["null", "string"], b"\x01\x02ab"[:3]),  # index -1: the last branch
        (["null", "string"], b"\x03"),  # index -2: the first
        (["null", "string"], b"\x80\x00"),  # index 0 in 2 bytes
        ("long", b"\xff" * 9 + b"\x7f"),  # 10th byte beyond 64 bits: masked
        ("long", b"\x80\x80\x00"),
        ("int", b"\xff\xff\xff\xff\x7f"),  # an int is read as a long
        ({"type": "array", "items": "string"}, b"\x03\x04\x02a\x00\x00"),
    ],
)
def test_odd_but_valid_encodings_read_as_fastavro_reads_them(schema: Any, data: bytes) -> None:
    parsed = parse_schema(schema)
    read = compile_reader(parsed)
    assert read is not None
    assert _same_types(read(data), _fastavro_read(parsed, data))


# --- errors ---------------------------------------------------------------------------------

_BATCH = avro.encode_batch([full_event(), minimal_event()])


def test_every_truncation_raises_serialization_error() -> None:
    for cut in range(len(_BATCH)):
        with pytest.raises(SerializationError):
            decode_batch_fast(_BATCH[:cut])
        with pytest.raises(SerializationError):
            decode_batch_spans(_BATCH[:cut])
    resolved = avro.encode_resolved(
        {"events": [{"customer_id": "c", "event": full_event()}], "folds": []}
    )
    for cut in range(len(resolved)):
        with pytest.raises(SerializationError):
            decode_resolved_fast(resolved[:cut])


def _with_invalid_utf8(text: str, bad: bytes) -> bytes:
    data = avro.encode_batch([full_event(event_id=text)])
    assert len(bad) == len(text.encode())
    return data.replace(text.encode(), bad, 1)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02",  # one event announced, none there
        b"\xff" * 20,  # a varint longer than a long
        _BATCH + b"\x00",  # trailing bytes: another schema
        _BATCH + b"\x00\x00\x00",
        _with_invalid_utf8("xy", b"\xff\xfe"),
        _with_invalid_utf8("xyz", b"\xed\xa0\x80"),  # a UTF-8-encoded surrogate
        _with_invalid_utf8("xyz", b"\xe2\x82a"),  # a cut multi-byte sequence
        b"\x02\x03",  # a negative length
        b"\x02\x02a\x02b\x04",  # union index 2 of a 2-branch union
        b"\x02\x02a\x02b\x05",  # union index -3
        b"\xfe\xff\xff\xff\x0f\x00",  # 2**31 events in 6 bytes
        b"\x02" + b"\x80" * 11 + b"\x00",  # an 11-byte length
    ],
)
def test_undecodable_bytes_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        avro.decode_batch(data)  # fastavro refuses them too (its message may differ)
    with pytest.raises(SerializationError):
        decode_batch_fast(data)
    with pytest.raises(SerializationError):
        decode_batch_spans(data)


def test_trailing_bytes_after_a_resolved_batch_raise() -> None:
    data = avro.encode_resolved({"events": []})
    with pytest.raises(SerializationError, match="trailing"):
        decode_resolved_fast(data + b"\x00")


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(position=st.integers(0, len(_BATCH) - 1), byte=st.integers(0, 255))
def test_corrupted_bytes_read_as_fastavro_reads_them_or_raise(position: int, byte: int) -> None:
    data = bytearray(_BATCH)
    data[position] = byte
    try:
        expected: Any = avro.decode_batch(bytes(data))
    except SerializationError:
        expected = SerializationError
    try:
        actual: Any = decode_batch_fast(bytes(data))
    except SerializationError:
        actual = SerializationError
    assert _same_types(actual, expected)


@pytest.mark.parametrize(
    ("events", "merges"),
    [
        ([(7, _EVENT_BYTES)], []),  # a customer id that is not a string
        ([("\ud800", _EVENT_BYTES)], []),  # a surrogate
        ([("c", "not bytes")], []),
        ([], [{"loser": "c-2", "survivor": "c-1"}]),  # a merge without its time
    ],
)
def test_frame_resolved_refuses_what_fastavro_refuses(events: Any, merges: Any) -> None:
    with pytest.raises(SerializationError):
        frame_resolved(events, merges, [])


# --- fallback -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "map", "values": "string"},
        {"type": "enum", "name": "t.E", "symbols": ["A", "B"]},
        {"type": "fixed", "name": "t.F", "size": 4},
        {"type": "array", "items": "null"},  # zero-byte items: a count is not bounded by size
        {
            "type": "record",
            "name": "t.Node",
            "fields": [{"name": "next", "type": ["null", "t.Node"]}],
        },
    ],
    ids=["map", "enum", "fixed", "null items", "recursive"],
)
def test_unsupported_schemas_are_not_compiled(schema: Any) -> None:
    assert compile_reader(parse_schema(schema)) is None


def test_everything_goes_through_fastavro_when_not_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(avro_reader, "COMPILED", False)
    monkeypatch.setattr(avro_reader, "FRAMABLE", False)
    events = [full_event(), minimal_event(), full_event(user_id="𝄞")]
    data = avro.encode_batch(events)
    expected = avro.decode_batch(data)
    assert decode_batch_fast(data) == expected
    decoded, spans = decode_batch_spans(data)
    assert decoded == expected
    assert [data[s:e] for s, e in spans] == [avro.encode_event(e) for e in expected]
    batch = {
        "events": [{"customer_id": "c", "event": e} for e in expected],
        "merges": [{"loser": "c-2", "survivor": "c", "at": -1}],
        "folds": [],
    }
    resolved = avro.encode_resolved(batch)
    assert decode_resolved_fast(resolved) == avro.decode_resolved(resolved)
    pairs = [("c", avro.encode_event(e)) for e in expected]
    assert frame_resolved(pairs, batch["merges"], []) == resolved
    with pytest.raises(SerializationError):
        decode_batch_fast(data[:-1])
    # Spans come from encoding again, which only locates events in fastavro's own layout.
    with pytest.raises(SerializationError, match="canonical"):
        decode_batch_spans(b"\x82\x00" + avro.encode_event(full_event()) + b"\x00")


def test_a_changed_resolved_layout_is_not_framed_by_hand() -> None:
    resolved = avro.SCHEMAS[avro.RESOLVED_SCHEMA_NAME]
    named = avro_reader.collect_named(avro.SCHEMAS.values())
    assert avro_reader._framable(resolved, named)
    reordered = {**resolved, "fields": [*resolved["fields"][1:], resolved["fields"][0]]}
    assert not avro_reader._framable(reordered, named)


def test_encode_string_is_avros_string() -> None:
    assert encode_string("") == b"\x00"
    assert encode_string("é" * 40) == encode_long(80) + "é".encode() * 40


def test_bytes_like_input_reads_as_bytes() -> None:
    data = avro.encode_resolved(
        {"events": [], "folds": [{"loser": "a", "survivor": "b", "state": b"\x01"}]}
    )
    for view in (bytearray(data), memoryview(data)):
        decoded = decode_resolved_fast(view)  # type: ignore[arg-type]
        assert _same_types(decoded, avro.decode_resolved(data))
