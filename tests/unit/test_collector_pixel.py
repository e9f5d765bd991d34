"""Pixel decoding (pipeline.collector.pixel): base64 data, the short form, the GIF."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.collector.enrich import Enricher
from pipeline.collector.payload import PayloadError, PayloadTooLargeError
from pipeline.collector.pixel import (
    MAX_DATA_CHARS,
    MAX_EXTRA_PARAMS,
    TRANSPARENT_GIF,
    decode_pixel_data,
    pixel_type,
    short_pixel_payload,
)
from pipeline.identity.config import IdentityConfig

MESSAGE = {"writeKey": "wk", "event": "Email Opened", "userId": "~~~>>>???", "properties": {"n": 1}}
RAW = orjson.dumps(MESSAGE)


@pytest.fixture
def enricher() -> Enricher:
    return Enricher(IdentityConfig(), {"wk": "email"}, now=lambda: 1_714_564_800.0)


# --- /v1/pixel/<type>?data= -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        base64.b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("="),  # padding optional
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        base64.b64encode(RAW).decode().replace("+", " "),  # '+' form-decoded to ' '
        "  " + base64.b64encode(RAW).decode() + "\n",
    ],
)
def test_pixel_data_in_any_base64_flavour(data: str) -> None:
    assert decode_pixel_data(data) == MESSAGE


def test_the_fixture_really_exercises_both_alphabets() -> None:
    # Bytes chosen so that standard base64 contains '+' and '/' (and url-safe '-' and '_').
    assert {"+", "/"} <= set(base64.b64encode(RAW).decode())


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "is required"),
        ("", "is required"),
        ("!!!!", "not valid base64"),
        ("a", "not valid base64"),  # 1 char past a multiple of 4 can never be base64
        (base64.b64encode(b"\xff\xfe{}").decode(), "not valid UTF-8 JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "must be a JSON object"),
        (base64.b64encode(b"{").decode(), "not valid UTF-8 JSON"),
        ("A" * (MAX_DATA_CHARS + 1), "the limit is"),
    ],
)
def test_bad_pixel_data_names_the_data_field(data: str | None, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_pixel_data(data)
    assert info.value.field == "data"
    assert reason in info.value.reason


def test_oversized_decoded_pixel_is_too_large() -> None:
    body = orjson.dumps({"x": "y" * 40_000})
    with pytest.raises(PayloadTooLargeError) as info:
        decode_pixel_data(base64.b64encode(body).decode()[:MAX_DATA_CHARS])
    assert info.value.field == "data"


@pytest.mark.parametrize("kind", ["track", "page", "identify"])
def test_pixel_types(kind: str) -> None:
    assert pixel_type(kind) == kind


@pytest.mark.parametrize("kind", ["alias", "batch", "group", ""])
def test_other_pixel_types_are_refused(kind: str) -> None:
    with pytest.raises(PayloadError) as info:
        pixel_type(kind)
    assert info.value.field == "type"


def test_pixel_data_enriches_with_the_path_type(enricher: Enricher) -> None:
    payload = decode_pixel_data(base64.urlsafe_b64encode(RAW).decode())
    event = enricher.event(payload, type_hint=pixel_type("track"))
    assert (event["type"], event["event"], event["user_id"], event["source"]) == (
        "track",
        "Email Opened",
        "~~~>>>???",
        "email",
    )


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=150).map(lambda b: base64.b64encode(b).decode()))
def test_pixel_data_only_ever_raises_payload_error(data: str) -> None:
    try:
        assert isinstance(decode_pixel_data(data), dict)
    except PayloadError as exc:
        assert exc.field == "data"


# --- /i?... ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {"k": "wk", "aid": "a1", "u": "https://x.io/p", "t": "Title", "r": "https://g.co/"},
            {
                "type": "page",
                "anonymousId": "a1",
                "writeKey": "wk",
                "properties": {
                    "url": "https://x.io/p",
                    "referrer": "https://g.co/",
                    "title": "Title",
                },
                "context": {
                    "page": {"url": "https://x.io/p", "referrer": "https://g.co/", "title": "Title"}
                },
            },
        ),
        (
            {"e": "Email Opened", "em": "ann@x.io", "campaign_id": "s24", "utm_source": "news"},
            {
                "type": "track",
                "event": "Email Opened",
                "properties": {"campaign_id": "s24"},
                "context": {"traits": {"email": "ann@x.io"}, "campaign": {"source": "news"}},
            },
        ),
        (
            {
                "e": "Clicked",
                "uid": "u1",
                "utm_source": "s",
                "utm_medium": "m",
                "utm_campaign": "c",
                "utm_term": "t",
                "utm_content": "x",
            },
            {
                "type": "track",
                "event": "Clicked",
                "userId": "u1",
                "properties": {},
                "context": {
                    "campaign": {
                        "source": "s",
                        "medium": "m",
                        "name": "c",
                        "term": "t",
                        "content": "x",
                    }
                },
            },
        ),
        (  # empty values are absent
            {"e": "", "uid": "", "u": ""},
            {"type": "page", "properties": {}, "context": {}},
        ),
    ],
)
def test_short_pixel_payload(query: dict[str, str], expected: dict[str, Any]) -> None:
    assert short_pixel_payload(query) == expected


def test_too_many_extra_parameters_are_refused() -> None:
    query = {f"p{i}": "v" for i in range(MAX_EXTRA_PARAMS + 1)}
    with pytest.raises(PayloadError, match="extra parameters"):
        short_pixel_payload(query)


@pytest.mark.parametrize(
    ("query", "checks"),
    [
        (  # an email open: no cookie, no login, only the address
            {"k": "wk", "e": "Email Opened", "em": " Ann@X.io "},
            {"type": "track", "identifiers": [{"type": "email", "value": "ann@x.io"}]},
        ),
        (
            {"k": "wk", "aid": "a1", "u": "https://shop.io/?utm_medium=cpc&utm_source=google"},
            {
                "type": "page",
                "identifiers": [{"type": "anonymous_id", "value": "a1"}],
                "channel": "paid",
                "page_path": "/",
            },
        ),
    ],
)
def test_short_pixel_through_the_enricher(
    enricher: Enricher, query: dict[str, str], checks: dict[str, Any]
) -> None:
    event = enricher.event(short_pixel_payload(query))
    got = {
        "type": event["type"],
        "identifiers": event["identifiers"],
        "channel": event["enrichment"]["channel"],
        "page_path": event["context"]["page_path"],
    }
    assert {key: got[key] for key in checks} == checks


def test_short_pixel_without_any_identity_is_refused(enricher: Enricher) -> None:
    with pytest.raises(PayloadError) as info:
        enricher.event(short_pixel_payload({"k": "wk", "e": "Email Opened"}))
    assert "userId or anonymousId" in info.value.reason


# --- the GIF --------------------------------------------------------------------------------


def test_transparent_gif_is_a_1x1_gif89a() -> None:
    assert TRANSPARENT_GIF.startswith(b"GIF89a")
    width, height = struct.unpack("<HH", TRANSPARENT_GIF[6:10])
    assert (width, height) == (1, 1)
    assert b"\x21\xf9\x04\x01" in TRANSPARENT_GIF  # graphic control extension, transparency on
    assert TRANSPARENT_GIF.endswith(b";")  # trailer
    assert len(TRANSPARENT_GIF) == 42
