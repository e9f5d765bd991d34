"""Pure helpers of the collector's HTTP edge: auth header, body decoding, cookie, spec, keys."""

from __future__ import annotations

import base64
import gc
import gzip
import logging
import zlib

import pytest

from pipeline.collector.body import decode_content
from pipeline.collector.middleware import HTTP_LOG
from pipeline.collector.openapi import openapi_spec
from pipeline.collector.payload import MESSAGE_TYPES, PayloadError, PayloadTooLargeError
from pipeline.collector.producer import person_key
from pipeline.collector.routes import basic_user, cookie_attributes, first_values
from pipeline.collector.server import check_cookie_settings
from pipeline.gctune import GC_YOUNG_THRESHOLD, tune_gc
from pipeline.settings import Settings


def _basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("header", "user"),
    [
        (_basic("key:"), "key"),
        (_basic("key"), "key"),
        (_basic("key:secret:x"), "key"),
        ("basic " + base64.b64encode(b"k:").decode(), "k"),
        (_basic(":"), None),
        ("Bearer token", None),
        ("Basic not*base64", None),
        ("Basic " + base64.b64encode(b"\xff\xfe:").decode(), None),
        ("", None),
    ],
)
def test_write_key_is_the_basic_user_name(header: str, user: str | None) -> None:
    assert basic_user(header) == user


def test_gzip_and_both_deflate_forms_are_decoded() -> None:
    body = b'{"batch": []}'
    assert decode_content(gzip.compress(body), "gzip") == body
    assert decode_content(gzip.compress(body), "x-gzip") == body
    assert decode_content(zlib.compress(body), "deflate") == body
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    assert decode_content(raw.compress(body) + raw.flush(), "deflate") == body


@pytest.mark.parametrize(
    ("data", "encoding", "message"),
    [
        (b"not gzip", "gzip", "not valid gzip"),
        (gzip.compress(b"{}" * 100)[:-9], "gzip", "cut short"),
        (zlib.compress(b"{}")[:-3], "deflate", "cut short"),
        (b"", "gzip", "cut short"),
        (b"x", "br", "not supported"),
        (b"x", "gzip, gzip", "not supported"),
    ],
)
def test_broken_or_unknown_encodings_are_400(data: bytes, encoding: str, message: str) -> None:
    with pytest.raises(PayloadError, match=message) as refused:
        decode_content(data, encoding)
    assert refused.value.status == 400


def test_decompression_stops_at_the_limit() -> None:
    bomb = gzip.compress(b" " * 10_000_000)  # ~10 KB that would inflate to 10 MB
    with pytest.raises(PayloadTooLargeError):
        decode_content(bomb, "gzip", limit=1000)


def test_first_value_of_each_query_parameter() -> None:
    assert first_values([("e", "a"), ("u", "x"), ("e", "b")]) == {"e": "a", "u": "x"}


def test_cookie_attributes_follow_the_settings() -> None:
    assert cookie_attributes(Settings()) == "; Max-Age=31536000; Path=/; HttpOnly; SameSite=Lax"
    custom = Settings(  # type: ignore[call-arg]
        collector_cookie_domain=".shop.example",
        collector_cookie_max_age_s=60,
        collector_cookie_samesite="None",
        collector_cookie_secure=True,
    )
    assert cookie_attributes(custom) == (
        "; Max-Age=60; Path=/; Domain=.shop.example; Secure; HttpOnly; SameSite=None"
    )
    check_cookie_settings(custom)


def test_samesite_none_without_secure_is_refused() -> None:
    with pytest.raises(ValueError, match="SECURE"):
        check_cookie_settings(Settings(collector_cookie_samesite="None"))  # type: ignore[call-arg]


def test_person_key_prefers_the_user_id() -> None:
    base = {"event_id": "e", "identifiers": []}
    assert person_key({**base, "user_id": "u", "anonymous_id": "a"}) == "u"
    assert person_key({**base, "user_id": None, "anonymous_id": "a"}) == "a"
    with_email = {**base, "identifiers": [{"type": "email", "value": "ann@example.com"}]}
    assert person_key({**with_email, "user_id": None, "anonymous_id": None}) == "ann@example.com"
    assert person_key({**base, "user_id": None, "anonymous_id": None}) == "e"


def test_the_spec_describes_every_endpoint_and_resolves() -> None:
    spec = openapi_spec()
    assert spec["openapi"].startswith("3.")
    expected = {f"/v1/{t}" for t in MESSAGE_TYPES} | {"/v1/batch", "/v1/pixel/{kind}", "/i"}
    assert expected <= set(spec["paths"])
    refs = [part for part in repr(spec).split("'$ref': '")[1:]]
    for ref in refs:
        name = ref.split("'")[0].rsplit("/", 1)[-1]
        assert name in spec["components"]["schemas"], name


def test_aiohttp_error_logs_keep_neither_the_address_nor_the_request_text() -> None:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    HTTP_LOG.addHandler(handler)
    try:
        try:
            raise ValueError("Invalid method: b'GET /i?em=ann@example.com'")
        except ValueError:
            HTTP_LOG.exception("Error handling request from %s", "203.0.113.9")
    finally:
        HTTP_LOG.removeHandler(handler)
    [record] = records
    assert record.getMessage() == "Error handling request from 203.0.113.0 (ValueError)"
    assert record.exc_info is None and record.exc_text is None


def test_tune_gc_raises_the_young_threshold_and_freezes_the_startup_heap() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
