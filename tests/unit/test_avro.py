"""pipeline.avro: round trips, errors as SerializationError, and schema evolution both ways."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline import avro
from pipeline.avro import SerializationError


def full_event(**overrides: Any) -> dict[str, Any]:
    """An event with every field set, as the collector produces it."""
    event: dict[str, Any] = {
        "event_id": "2f1c7d7e-0a4b-4c52-9d8e-6b1f0c3a9e11",
        "type": "track",
        "event": "Order Completed",
        "anonymous_id": "anon-1",
        "user_id": "user-1",
        "previous_id": None,
        "group_id": None,
        "identifiers": [
            {"type": "anonymous_id", "value": "anon-1"},
            {"type": "user_id", "value": "user-1"},
            {"type": "email", "value": "ann@example.com"},
        ],
        "timestamp": 1_714_564_770_123,
        "received_at": 1_714_564_800_123,
        "sent_at": 1_714_564_770_000,
        "source": "web",
        "properties": '{"order_id":"o-1","revenue":42.5,"currency":"EUR"}',
        "traits": '{"email":"ann@example.com"}',
        "context": {
            "ip": "203.0.113.0",
            "user_agent": "Mozilla/5.0",
            "page_url": "https://shop.example/checkout?utm_source=x",
            "page_path": "/checkout",
            "page_title": "Checkout",
            "referrer": "https://www.google.com/",
            "locale": "de-DE",
            "library": "analytics.js/4.1.0",
            "utm_source": "x",
            "utm_medium": None,
            "utm_campaign": None,
            "utm_term": None,
            "utm_content": None,
        },
        "enrichment": {
            "device_type": "desktop",
            "os": "Windows",
            "browser": "Chrome",
            "is_bot": False,
            "channel": "search",
        },
        "consent": ["analytics", "marketing"],
        "original_timestamp": 1_714_564_740_000,
    }
    event.update(overrides)
    return event


def minimal_event() -> dict[str, Any]:
    """Only the fields without a default."""
    return {
        "event_id": "e-1",
        "type": "page",
        "timestamp": 1,
        "received_at": 2,
        "source": "web",
        "context": {},
        "enrichment": {},
    }


# --- round trips ----------------------------------------------------------------------------


def test_every_schema_file_is_loaded_by_full_name() -> None:
    names = {path.stem for path in avro.SCHEMA_DIR.glob("*.avsc")}
    assert {"event", "event_batch"} <= names
    assert {"cdp.v1.Event", "cdp.v1.EventBatch"} <= set(avro.SCHEMAS)
    assert len(avro.SCHEMAS) == len(names)


@pytest.mark.parametrize(
    "events",
    [
        [],
        [full_event()],
        [full_event(), full_event(event_id="e-2", type="identify", event=None, consent=[])],
    ],
)
def test_batch_round_trip_is_exact(events: list[dict[str, Any]]) -> None:
    assert avro.decode_batch(avro.encode_batch(events)) == events


def test_event_round_trip_is_exact_and_timestamps_stay_int_millis() -> None:
    decoded = avro.decode_event(avro.encode_event(full_event()))
    assert decoded == full_event()
    assert type(decoded["timestamp"]) is int
    assert type(decoded["sent_at"]) is int


def test_missing_defaulted_fields_are_written_with_their_defaults() -> None:
    decoded = avro.decode_event(avro.encode_event(minimal_event()))
    assert decoded["event"] is None
    assert decoded["identifiers"] == []
    assert decoded["properties"] == "{}"
    assert decoded["consent"] == []
    assert decoded["original_timestamp"] is None
    assert decoded["context"]["ip"] is None
    assert decoded["enrichment"] == {
        "device_type": "unknown",
        "os": None,
        "browser": None,
        "is_bot": False,
        "channel": "direct",
    }


def test_encode_and_decode_by_schema_name() -> None:
    data = avro.encode("cdp.v1.EventBatch", {"events": [full_event()]})
    assert data == avro.encode_batch([full_event()])
    assert avro.decode("cdp.v1.EventBatch", data) == {"events": [full_event()]}


def test_resolved_batch_round_trip() -> None:
    if avro.RESOLVED_SCHEMA_NAME not in avro.SCHEMAS:
        pytest.skip("resolved_batch.avsc not present")
    batch = {
        "events": [{"customer_id": "c-1", "event": full_event()}],
        "merges": [{"loser": "c-2", "survivor": "c-1", "at": 1_714_564_800_000}],
        "folds": [{"loser": "c-2", "survivor": "c-1", "state": b"\x00state"}],
    }
    assert avro.decode_resolved(avro.encode_resolved(batch)) == batch


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        full_event(timestamp="2024-05-01"),  # not a long
        full_event(type=None),  # required string
        full_event(context=None),  # required record
        full_event(identifiers=[{"type": "email"}]),  # record missing a required field
        full_event(timestamp=2**70),  # beyond a long
        {k: v for k, v in full_event().items() if k != "event_id"},  # required, no default
    ],
)
def test_invalid_events_raise_serialization_error(event: dict[str, Any]) -> None:
    with pytest.raises(SerializationError) as info:
        avro.encode_batch([event])
    assert info.value.__cause__ is not None  # the library's error is chained, not lost


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02",  # one event announced, none there
        b"\xff" * 20,
        avro.encode_batch([full_event()])[:-5],  # truncated
        avro.encode_batch([full_event()]) + b"\x00\x00",  # trailing bytes: another schema
    ],
)
def test_undecodable_bytes_raise_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        avro.decode_batch(data)


def test_unknown_schema_name_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="no schema named"):
        avro.encode("cdp.v1.Nope", {})


def test_schemas_referring_to_undefined_types_raise() -> None:
    orphan = {"type": "record", "name": "Orphan", "fields": [{"name": "x", "type": "cdp.v9.X"}]}
    with pytest.raises(SerializationError, match="undefined types"):
        avro.parse_schemas(orphan)


# --- schema evolution -----------------------------------------------------------------------


def _event_schema_without(field_name: str) -> dict[str, Any]:
    schema = copy.deepcopy(avro.EVENT_SCHEMA_JSON)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != field_name]
    return schema


def _event_schema_with(field: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(avro.EVENT_SCHEMA_JSON)
    schema["fields"].append(field)
    return schema


def _batch_reader(event_schema: dict[str, Any]) -> Any:
    return avro.parse_schemas(event_schema, avro.BATCH_SCHEMA_JSON)["cdp.v1.EventBatch"]


def test_old_reader_reads_new_records_ignoring_the_new_field() -> None:
    """A consumer still on v1 (no original_timestamp) reads what v1.1 producers write."""
    old_reader = _batch_reader(_event_schema_without("original_timestamp"))
    events = avro.decode_batch(avro.encode_batch([full_event()]), reader_schema=old_reader)
    expected = full_event()
    del expected["original_timestamp"]
    assert events == [expected]


def test_new_reader_reads_old_records_with_the_default() -> None:
    """A consumer on a future version with an added defaulted field reads today's records."""
    new_reader = _batch_reader(
        _event_schema_with(
            {"name": "session_id", "type": ["null", "string"], "default": None, "doc": "v1.2"}
        )
    )
    events = avro.decode_batch(avro.encode_batch([full_event()]), reader_schema=new_reader)
    assert events == [full_event(session_id=None)]


def test_records_written_by_an_old_producer_read_with_current_schema() -> None:
    """Records from a v1 producer (no original_timestamp) read as v1.1 get the default."""
    old = avro.parse_schemas(_event_schema_without("original_timestamp"), avro.BATCH_SCHEMA_JSON)[
        "cdp.v1.EventBatch"
    ]
    old_event = full_event()
    del old_event["original_timestamp"]
    data = avro.encode_batch([old_event], schema=old)
    events = avro.decode_batch(data, writer_schema=old, reader_schema=avro.BATCH_SCHEMA)
    assert events == [full_event(original_timestamp=None)]


def test_batch_schema_fingerprint_identifies_the_writer_schema() -> None:
    old = avro.parse_schemas(_event_schema_without("original_timestamp"), avro.BATCH_SCHEMA_JSON)[
        "cdp.v1.EventBatch"
    ]
    assert len(avro.BATCH_SCHEMA_FINGERPRINT) == 16
    assert avro.schema_fingerprint(avro.BATCH_SCHEMA) == avro.BATCH_SCHEMA_FINGERPRINT
    assert avro.schema_fingerprint(old) != avro.BATCH_SCHEMA_FINGERPRINT


def test_every_added_field_of_the_event_schema_has_a_default() -> None:
    """The compatibility rule of event.avsc: fields after v1's last one must carry defaults."""
    names = [f["name"] for f in avro.EVENT_SCHEMA_JSON["fields"]]
    added = names[names.index("consent") + 1 :]
    fields = {f["name"]: f for f in avro.EVENT_SCHEMA_JSON["fields"]}
    assert added, "expected v1.1's original_timestamp"
    assert all("default" in fields[name] for name in added)
