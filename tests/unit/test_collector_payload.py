"""Validation of Segment payloads (pipeline.collector.payload) and dead-letter records."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.collector import payload as payload_module
from pipeline.collector.deadletter import MAX_RAW_BYTES, dead_letter_record, raw_excerpt
from pipeline.collector.payload import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    MAX_ID_CHARS,
    TEXT_LIMITS,
    AuthError,
    Message,
    PayloadError,
    PayloadTooLargeError,
    clean_text,
    decode_json,
    parse_consent,
    parse_message,
)

TS = "2024-05-01T12:00:00Z"
TS_MS = 1_714_564_800_000


# --- decode_json ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"type":"track"}', {"type": "track"}),
        (b'  {"a": [1, 2, {"b": null}]} \n', {"a": [1, 2, {"b": None}]}),
        (b'\xef\xbb\xbf{"bom": true}', {"bom": True}),  # a UTF-8 BOM is tolerated
        ('{"name":"Zoë 日本"}'.encode(), {"name": "Zoë 日本"}),
    ],
)
def test_decode_json_accepts_objects(body: bytes, expected: dict[str, Any]) -> None:
    assert decode_json(body) == expected


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not valid UTF-8 JSON"),
        (b"{", "not valid UTF-8 JSON"),
        (b"{'a': 1}", "not valid UTF-8 JSON"),
        (b'{"a": "\xff\xfe"}', "not valid UTF-8 JSON"),  # invalid UTF-8
        (b'{"a": "\\ud800"}', "not valid UTF-8 JSON"),  # lone surrogate escape
        (b'{"a": NaN}', "not valid UTF-8 JSON"),
        (b"[" * 2000 + b"]" * 2000, "not valid UTF-8 JSON"),  # nesting bomb
        (b"[]", "must be a JSON object, got array"),
        (b'"track"', "must be a JSON object, got string"),
        (b"42", "must be a JSON object, got number"),
        (b"null", "must be a JSON object, got null"),
    ],
)
def test_decode_json_rejects(body: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_json(body)
    assert info.value.field == "$"
    assert reason in info.value.reason
    assert info.value.status == 400
    assert not isinstance(info.value, PayloadTooLargeError)


def test_decode_json_refuses_oversized_bodies_with_413() -> None:
    body = b'{"a":"' + b"x" * MAX_BATCH_BYTES + b'"}'
    with pytest.raises(PayloadTooLargeError) as info:
        decode_json(body)
    assert info.value.status == 413
    assert info.value.code == "too_large"
    with pytest.raises(PayloadTooLargeError):
        decode_json(b'{"a":"' + b"x" * 100 + b'"}', max_bytes=50)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decode_json_only_ever_raises_payload_error(body: bytes) -> None:
    with contextlib.suppress(PayloadError):
        assert isinstance(decode_json(body), dict)


# --- parse_message: valid messages ----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "type_hint", "expected"),
    [
        (
            {"type": "track", "event": "Signed Up", "userId": "u1", "timestamp": TS},
            None,
            {"type": "track", "event": "Signed Up", "user_id": "u1", "timestamp_ms": TS_MS},
        ),
        (  # the endpoint gives the type
            {"event": "Signed Up", "anonymousId": "a1"},
            "track",
            {"type": "track", "event": "Signed Up", "anonymous_id": "a1"},
        ),
        (
            {"type": "page", "name": "Home", "anonymousId": "a1"},
            "page",
            {"type": "page", "event": "Home"},
        ),
        ({"type": "page", "anonymousId": "a1"}, None, {"type": "page", "event": None}),
        (
            {"type": "screen", "name": "Cart", "userId": 42},  # numeric user ids are common
            None,
            {"type": "screen", "event": "Cart", "user_id": "42"},
        ),
        (
            {"type": "identify", "userId": " u1 ", "traits": {"email": "a@b.co"}},
            None,
            {"type": "identify", "user_id": "u1", "traits": {"email": "a@b.co"}},
        ),
        (
            {"type": "alias", "userId": "u1", "previousId": "anon-9"},
            None,
            {"type": "alias", "user_id": "u1", "previous_id": "anon-9"},
        ),
        (
            {"type": "group", "groupId": "acme", "userId": "u1", "traits": {"plan": "pro"}},
            None,
            {"type": "group", "group_id": "acme", "properties": {"plan": "pro"}, "traits": {}},
        ),
        (  # "" and whitespace ids mean absent, not an error
            {"type": "track", "event": "E", "userId": "", "anonymousId": "a1", "messageId": " "},
            None,
            {"user_id": None, "anonymous_id": "a1", "message_id": None},
        ),
        (  # null objects count as absent
            {
                "type": "track",
                "event": "E",
                "anonymousId": "a",
                "properties": None,
                "context": None,
            },
            None,
            {"properties": {}, "traits": {}},
        ),
        (  # email-pixel extension: an email trait identifies the sender
            {"type": "track", "event": "Email Opened", "context": {"traits": {"email": "a@b.co"}}},
            None,
            {"user_id": None, "anonymous_id": None},
        ),
    ],
)
def test_valid_messages(
    payload: dict[str, Any], type_hint: str | None, expected: dict[str, Any]
) -> None:
    message = parse_message(payload, type_hint=type_hint)
    assert {key: getattr(message, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("value", "expected_ms"),
    [
        ("2024-05-01T12:00:00Z", TS_MS),
        ("2024-05-01T12:00:00.250Z", TS_MS + 250),
        ("2024-05-01T14:00:00+02:00", TS_MS),
        ("2024-05-01T12:00:00", TS_MS),  # no offset: UTC
        ("2024-05-01", TS_MS - 12 * 3600 * 1000),
        ("20240501T120000Z", TS_MS),  # ISO-8601 basic format
        ("1969-12-31T23:59:59Z", -1000),
    ],
)
def test_timestamps_parse_as_iso_8601(value: str, expected_ms: int) -> None:
    message = parse_message({"type": "identify", "userId": "u", "timestamp": value})
    assert message.timestamp_ms == expected_ms


def test_original_timestamp_is_the_fallback_and_sent_at_is_parsed() -> None:
    message = parse_message(
        {"type": "identify", "userId": "u", "originalTimestamp": TS, "sentAt": TS}
    )
    assert (message.timestamp_ms, message.sent_at_ms) == (TS_MS, TS_MS)


def test_identify_traits_overlay_context_traits_and_both_are_kept() -> None:
    message = parse_message(
        {
            "type": "identify",
            "userId": "u",
            "traits": {"email": "new@x.io", "plan": "pro"},
            "context": {"traits": {"email": "old@x.io", "city": "Oslo"}},
        }
    )
    assert message.traits == {"email": "new@x.io", "plan": "pro", "city": "Oslo"}
    assert message.context_traits == {"email": "old@x.io", "city": "Oslo"}


def test_context_fields_are_read_and_cleaned() -> None:
    message = parse_message(
        {
            "type": "track",
            "event": "E",
            "anonymousId": "a",
            "context": {
                "ip": "203.0.113.9",
                "userAgent": "UA\r\n1",
                "locale": "de-DE",
                "library": {"name": "analytics.js", "version": "4.1.0"},
                "page": {
                    "url": "https://x.io/a?b=1",
                    "path": "/a",
                    "title": "T\x00itle",
                    "referrer": "https://r.io/",
                },
                "campaign": {"source": "news", "medium": "email", "name": "spring"},
            },
        }
    )
    assert message.ip == "203.0.113.9"
    assert message.user_agent == "UA  1"
    assert message.locale == "de-DE"
    assert message.library == "analytics.js/4.1.0"
    assert (message.page_url, message.page_path, message.referrer) == (
        "https://x.io/a?b=1",
        "/a",
        "https://r.io/",
    )
    assert message.page_title == "T itle"
    assert message.campaign == {
        "utm_source": "news",
        "utm_medium": "email",
        "utm_campaign": "spring",
    }


def test_page_properties_fill_missing_page_context() -> None:
    message = parse_message(
        {
            "type": "page",
            "anonymousId": "a",
            "properties": {"url": "https://x.io/p", "title": "P", "referrer": 7},
            "context": {"page": {"path": "/p"}},
        }
    )
    assert (message.page_url, message.page_path, message.page_title) == (
        "https://x.io/p",
        "/p",
        "P",
    )
    assert message.referrer is None  # free-form properties: a non-string is ignored


def test_long_text_is_truncated_not_rejected() -> None:
    url = "https://x.io/" + "a" * 10_000
    message = parse_message(
        {"type": "page", "anonymousId": "a", "context": {"page": {"url": url}, "locale": "x" * 99}}
    )
    assert message.page_url == url[: TEXT_LIMITS["url"]]
    assert message.locale == "x" * TEXT_LIMITS["locale"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ([], ()),
        (["Analytics", "marketing", "analytics", " "], ("analytics", "marketing")),
        ({"categoryPreferences": {"Advertising": True, "Analytics": False}}, ("advertising",)),
        ({"categories": ["functional"]}, ("functional",)),
        ({"categoryPreferences": {"b": True}, "categories": ["a"]}, ("a", "b")),
        ({}, ()),
    ],
)
def test_consent_categories(value: Any, expected: tuple[str, ...]) -> None:
    assert parse_consent(value) == expected


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("analytics", "context.consent"),
        ([1], "context.consent[0]"),
        ({"categoryPreferences": ["a"]}, "context.consent.categoryPreferences"),
        ({"categoryPreferences": {"ads": "yes"}}, "context.consent.categoryPreferences.ads"),
        ({"categories": "a"}, "context.consent.categories"),
    ],
)
def test_malformed_consent_is_rejected(value: Any, field: str) -> None:
    with pytest.raises(PayloadError) as info:
        parse_consent(value)
    assert info.value.field == field


# --- parse_message: invalid messages --------------------------------------------------------

LONG_ID = "x" * (MAX_ID_CHARS + 1)


def nested(depth: int) -> Any:
    return [nested(depth - 1)] if depth else 0


@pytest.mark.parametrize(
    ("payload", "type_hint", "field", "reason"),
    [
        ({"event": "E", "userId": "u"}, None, "type", "is required"),
        ({"type": "batch", "userId": "u"}, None, "type", "is not one of"),
        ({"type": 3, "userId": "u"}, None, "type", "must be a string"),
        ({"type": "page", "userId": "u"}, "track", "type", "does not match the /v1/track"),
        ({"type": "track", "userId": "u"}, None, "event", "is required for track"),
        ({"type": "track", "event": "", "userId": "u"}, None, "event", "is required"),
        ({"type": "track", "event": "\n\t", "userId": "u"}, None, "event", "must not be blank"),
        ({"type": "track", "event": 5, "userId": "u"}, None, "event", "must be a string"),
        ({"type": "track", "event": "e" * 256, "userId": "u"}, None, "event", "the limit is 255"),
        ({"type": "page", "name": ["x"], "userId": "u"}, None, "name", "must be a string"),
        ({"type": "track", "event": "E"}, None, "userId", "userId or anonymousId is required"),
        ({"type": "identify", "traits": {"email": 5}}, None, "userId", "or anonymousId"),
        (  # a group's traits.email is the account's, not the sender's
            {"type": "group", "groupId": "g", "traits": {"email": "a@b.co"}},
            None,
            "userId",
            "or anonymousId",
        ),
        ({"type": "alias", "previousId": "p"}, None, "userId", "is required for alias"),
        ({"type": "alias", "userId": "u"}, None, "previousId", "is required for alias"),
        ({"type": "group", "userId": "u"}, None, "groupId", "is required for group"),
        ({"type": "identify", "userId": True}, None, "userId", "got boolean"),
        ({"type": "identify", "userId": 1.5}, None, "userId", "got number"),
        ({"type": "identify", "anonymousId": {"id": 1}}, None, "anonymousId", "got object"),
        ({"type": "identify", "userId": LONG_ID}, None, "userId", "the limit is 256"),
        ({"type": "identify", "userId": "a\x00b"}, None, "userId", "control characters"),
        ({"type": "identify", "userId": "u", "messageId": "m\x00x"}, None, "messageId", "control"),
        ({"type": "identify", "userId": "u", "properties": []}, None, "properties", "got array"),
        ({"type": "identify", "userId": "u", "traits": "x"}, None, "traits", "got string"),
        ({"type": "identify", "userId": "u", "context": 1}, None, "context", "got number"),
        ({"type": "identify", "userId": "u", "integrations": []}, None, "integrations", "object"),
        (
            {"type": "identify", "userId": "u", "context": {"traits": []}},
            None,
            "context.traits",
            "must be an object",
        ),
        (
            {"type": "identify", "userId": "u", "context": {"page": {"url": 1}}},
            None,
            "context.page.url",
            "must be a string",
        ),
        (
            {"type": "identify", "userId": "u", "context": {"userAgent": {}}},
            None,
            "context.userAgent",
            "must be a string",
        ),
        (
            {"type": "identify", "userId": "u", "context": {"campaign": {"medium": 1}}},
            None,
            "context.campaign.medium",
            "must be a string",
        ),
        (
            {"type": "identify", "userId": "u", "context": {"library": "js"}},
            None,
            "context.library",
            "must be an object",
        ),
        ({"type": "identify", "userId": "u", "timestamp": 1714564800}, None, "timestamp", "ISO"),
        ({"type": "identify", "userId": "u", "timestamp": "yesterday"}, None, "timestamp", "ISO"),
        ({"type": "identify", "userId": "u", "sentAt": "2024-13-01T00:00Z"}, None, "sentAt", "ISO"),
        ({"type": "identify", "userId": "u", "timestamp": "2" * 65}, None, "timestamp", "ISO"),
        ({"type": "identify", "userId": "u", "writeKey": 5}, None, "writeKey", "must be a string"),
        (  # valid JSON (orjson reads 1024 levels) that cannot be written back (254 levels)
            {"type": "identify", "userId": "u", "properties": {"deep": nested(300)}},
            None,
            "$",
            "cannot be serialized",
        ),
    ],
)
def test_invalid_messages_name_the_field(
    payload: dict[str, Any], type_hint: str | None, field: str, reason: str
) -> None:
    with pytest.raises(PayloadError) as info:
        parse_message(payload, type_hint=type_hint)
    assert info.value.field == field
    assert reason in info.value.reason
    assert str(info.value).startswith(f"{field}: ")


def test_oversized_event_is_too_large() -> None:
    payload = {"type": "track", "event": "E", "userId": "u", "properties": {"x": "y" * 40_000}}
    with pytest.raises(PayloadTooLargeError) as info:
        parse_message(payload)
    assert info.value.status == 413
    assert str(MAX_EVENT_BYTES) in info.value.reason


def test_an_event_just_under_the_limit_is_accepted() -> None:
    payload: dict[str, Any] = {"type": "track", "event": "E", "userId": "u", "properties": {}}
    payload["properties"]["x"] = "y" * (MAX_EVENT_BYTES - len(orjson.dumps(payload)) - 10)
    assert isinstance(parse_message(payload), Message)


def test_hostile_error_messages_are_bounded_and_printable() -> None:
    with pytest.raises(PayloadError) as info:
        parse_message({"type": "\x1b[31m" + "t" * 10_000, "userId": "u"})
    assert len(str(info.value)) < 200
    assert "\x1b" not in str(info.value)


def test_auth_error_is_not_a_payload_error() -> None:
    error = AuthError("unknown write key")
    assert not isinstance(error, PayloadError)
    assert (error.status, error.code) == (401, "unauthorized")


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("  plain  ", 10, "plain"),
        ("a\x00b\x7fc\x9fd", 10, "a b c d"),
        ("x\ud800y", 10, "x y"),  # lone surrogates cannot be UTF-8 encoded later
        ("\n\r\t", 10, None),
        ("abcdef", 3, "abc"),
    ],
)
def test_clean_text(value: str, limit: int, expected: str | None) -> None:
    assert clean_text(value, limit) == expected


# --- dead letters ---------------------------------------------------------------------------


def test_dead_letter_record_shape() -> None:
    record = orjson.loads(dead_letter_record(b'{"type":1}', "type: bad", "type", "web", 123))
    assert record == {
        "schema": "cdp.deadletter.v1",
        "reason": "type: bad",
        "field": "type",
        "source": "web",
        "received_at": 123,
        "raw": '{"type":1}',
        "raw_bytes": 10,
        "raw_truncated": False,
    }


@pytest.mark.parametrize(
    ("raw", "excerpt", "truncated", "total"),
    [
        (b"\xff\xfeok", "\ufffd\ufffdok", False, 4),  # the invalid UTF-8 that got it refused
        ("héllo", "héllo", False, 6),
        ({"a": 1}, '{"a":1}', False, 7),
        ({1: 2**70}, None, False, None),  # not JSON-serializable: repr fallback
        ("x\ud800", "x?", False, 2),
        (b"y" * (MAX_RAW_BYTES + 1), "y" * MAX_RAW_BYTES, True, MAX_RAW_BYTES + 1),
    ],
)
def test_raw_excerpt(raw: Any, excerpt: str | None, truncated: bool, total: int | None) -> None:
    got_excerpt, got_truncated, got_total = raw_excerpt(raw)
    if excerpt is not None:
        assert got_excerpt == excerpt
    assert got_truncated is truncated
    if total is not None:
        assert got_total == total


def test_dead_letter_raw_is_bounded() -> None:
    record = orjson.loads(dead_letter_record(b"z" * 600_000, "too big", None, None, 1))
    assert len(record["raw"]) == MAX_RAW_BYTES
    assert record["raw_truncated"] is True
    assert record["raw_bytes"] == 600_000


def test_dead_letter_truncation_mid_character_stays_valid_utf8() -> None:
    raw = "é" * MAX_RAW_BYTES  # 2 bytes each: the cut lands inside a character
    record = orjson.loads(dead_letter_record(raw, "r", None, None, 1))
    assert record["raw"].endswith("é")


@settings(max_examples=100, deadline=None)
@given(
    raw=st.one_of(st.binary(), st.text(st.characters(exclude_categories=()))),
    reason=st.text(st.characters(exclude_categories=())),
)
def test_dead_letter_record_is_always_json(raw: bytes | str, reason: str) -> None:
    assert orjson.loads(dead_letter_record(raw, reason, reason, reason, 0))["received_at"] == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"writeKey": "s3cret", "type": "track"}',
        '{"writeKey":"s3cret\\"x"}',
        {"writeKey": "s3cret", "batch": []},
    ],
)
def test_write_keys_are_redacted_from_dead_letters(raw: Any) -> None:
    record = orjson.loads(dead_letter_record(raw, "r", None, "web", 1))
    assert "s3cret" not in record["raw"]
    assert '"<redacted>"' in record["raw"]


_LIBRARIES: list[Any] = [
    {"name": "analytics.js", "version": "4.1.0"},
    {"name": "analytics.js"},
    {"name": "analytics.js", "version": None},
    {"name": "analytics.js", "version": ""},
    {"name": "  ", "version": "1"},
    {"name": "a\x00b", "version": "1\x7f"},
    {"name": "n" * 128, "version": "v"},
    {"name": "n" * 129, "version": "v"},
    {"name": "n", "version": "v" * 200},
    {"name": 1, "version": "1"},
    {"name": True, "version": "1"},
    {"name": "x", "version": 2},
    {"name": ["x"], "version": "1"},
    {"version": "1"},
    {},
    None,
    "analytics.js",
    [],
]


@pytest.mark.parametrize("library", _LIBRARIES, ids=repr)
def test_the_memoized_library_is_what_the_full_parse_gives(library: Any) -> None:
    context = {"library": library}

    def outcome(parse: Any) -> tuple[str, Any]:
        try:
            return "ok", parse(context)
        except PayloadError as exc:
            return "error", (exc.field, exc.reason)

    expected = outcome(payload_module._parse_library)
    for _ in range(2):  # computed, then from the memo
        assert outcome(payload_module._library) == expected


def test_parse_message_builds_a_complete_message() -> None:
    message = parse_message(
        {"type": "track", "event": "E", "userId": "u", "context": {"ip": "1.2.3.4"}}
    )
    assert type(message) is Message
    assert len(message) == len(Message._fields)
    assert message == Message(**message._asdict())
    assert (message.type, message.event, message.user_id, message.ip) == (
        "track",
        "E",
        "u",
        "1.2.3.4",
    )
