"""The compiled Event writer writes exactly what fastavro writes (the contract), only faster."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import avro
from pipeline.avro import SerializationError
from pipeline.collector.avro_writer import (
    COMPILED,
    encode_event_fast,
    encode_long,
    frame_batch,
)
from pipeline.collector.enrich import Enricher
from pipeline.identity.config import IdentityConfig

ENRICHER = Enricher(IdentityConfig.from_values(), {"k": "web"}, lambda: 1_767_225_600.0)
SEGMENT_MESSAGES: list[dict[str, Any]] = [
    {"type": "track", "userId": "u-1", "event": "Order Completed", "properties": {"n": 1}},
    {"type": "page", "anonymousId": "a-ü", "name": "Start", "context": {"locale": "de-DE"}},
    {"type": "identify", "userId": 42, "traits": {"email": "Ann@Example.com", "phone": "x"}},
    {"type": "alias", "userId": "u-1", "previousId": "ann@example.com"},
    {"type": "group", "anonymousId": "a", "groupId": "acme", "traits": {"plan": "pro"}},
    {
        "type": "screen",
        "anonymousId": "a",
        "timestamp": "1999-01-01T00:00:00Z",
        "sentAt": "2026-01-01T00:00:00+03:00",
        "context": {
            "userAgent": "Mozilla/5.0 (compatible; Googlebot/2.1)",
            "ip": "2001:db8::1",
            "consent": {"categoryPreferences": {"ads": True, "x": False}},
            "campaign": {"source": "news", "medium": "email", "name": "spring"},
        },
    },
]


def test_the_writer_is_compiled_for_the_current_schema() -> None:
    assert COMPILED


@pytest.mark.parametrize("message", SEGMENT_MESSAGES, ids=lambda m: str(m["type"]))
def test_enriched_events_encode_to_fastavros_bytes(message: dict[str, Any]) -> None:
    event = ENRICHER.event(dict(message), write_key="k", client_ip="198.51.100.7")
    assert encode_event_fast(event) == avro.encode_event(event)
    assert avro.decode_event(encode_event_fast(event)) == event


def test_a_framed_batch_is_an_event_batch() -> None:
    events = [ENRICHER.event(dict(m), write_key="k") for m in SEGMENT_MESSAGES]
    framed = frame_batch([encode_event_fast(e) for e in events])
    assert framed == avro.encode_batch(events)
    assert avro.decode_batch(framed) == events
    assert frame_batch([]) == avro.encode_batch([])


_text = st.text(max_size=20)
_optional = st.none() | _text
_long = st.integers(-(2**63), 2**63 - 1)


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    context_fields = [
        "ip",
        "user_agent",
        "page_url",
        "page_path",
        "page_title",
        "referrer",
        "locale",
        "library",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_term",
        "utm_content",
    ]
    return {
        "event_id": draw(_text),
        "type": draw(_text),
        "event": draw(_optional),
        "anonymous_id": draw(_optional),
        "user_id": draw(_optional),
        "previous_id": draw(_optional),
        "group_id": draw(_optional),
        "identifiers": draw(
            st.lists(st.fixed_dictionaries({"type": _text, "value": _text}), max_size=3)
        ),
        "timestamp": draw(_long),
        "received_at": draw(_long),
        "sent_at": draw(st.none() | _long),
        "source": draw(_text),
        "properties": orjson.dumps(draw(st.dictionaries(_text, _text, max_size=3))).decode(),
        "traits": "{}",
        "context": {name: draw(_optional) for name in context_fields},
        "enrichment": {
            "device_type": draw(_text),
            "os": draw(_optional),
            "browser": draw(_optional),
            "is_bot": draw(st.booleans()),
            "channel": draw(_text),
        },
        "consent": draw(st.lists(_text, max_size=3)),
        "original_timestamp": draw(st.none() | _long),
    }


@settings(max_examples=150, derandomize=True, database=None)
@given(events=st.lists(_events(), max_size=4))
def test_any_valid_event_encodes_like_fastavro(events: list[dict[str, Any]]) -> None:
    assert frame_batch([encode_event_fast(e) for e in events]) == avro.encode_batch(events)


def test_missing_defaulted_fields_take_their_defaults_as_in_fastavro() -> None:
    event = ENRICHER.event(dict(SEGMENT_MESSAGES[0]), write_key="k")
    for name in ("original_timestamp", "consent", "properties"):
        del event[name]
    assert encode_event_fast(event) == avro.encode_event(event)


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": None},
        {"timestamp": "soon"},
        {"timestamp": 2**63},
        {"timestamp": 1.5e12},
        {"user_id": 7},
        {"event": "\ud800"},
        {"identifiers": [{"type": "email"}]},
    ],
    ids=[
        "null string",
        "text long",
        "long overflow",
        "float long",
        "int string",
        "surrogate",
        "missing",
    ],
)
def test_records_that_break_the_schema_raise_serialization_error(change: dict[str, Any]) -> None:
    event = {**ENRICHER.event(dict(SEGMENT_MESSAGES[0]), write_key="k"), **change}
    with pytest.raises(SerializationError):
        encode_event_fast(event)


def test_a_float_equal_to_a_memoized_long_is_still_refused() -> None:
    assert encode_long(1_500_000_000_000) == encode_long(1_500_000_000_000)  # now memoized
    with pytest.raises(TypeError):
        encode_long(1.5e12)  # type: ignore[arg-type]


def test_long_encoding_matches_the_spec_at_the_edges() -> None:
    assert encode_long(0) == b"\x00"
    assert encode_long(-1) == b"\x01"
    assert encode_long(1) == b"\x02"
    assert encode_long(-64) == b"\x7f"
    assert encode_long(64) == b"\x80\x01"
    assert encode_long(2**63 - 1) == b"\xfe" + b"\xff" * 8 + b"\x01"
    assert encode_long(-(2**63)) == b"\xff" * 9 + b"\x01"


def test_large_longs_read_from_the_memo_inline_are_still_type_checked() -> None:
    event = ENRICHER.event(dict(SEGMENT_MESSAGES[0]), write_key="k")
    first = encode_event_fast({**event, "timestamp": 1_500_000_000_000})
    again = encode_event_fast({**event, "timestamp": 1_500_000_000_000})  # from the memo
    assert first == again == avro.encode_event({**event, "timestamp": 1_500_000_000_000})
    with pytest.raises(SerializationError):
        encode_event_fast({**event, "timestamp": 1.5e12})  # equal to a memoized key
