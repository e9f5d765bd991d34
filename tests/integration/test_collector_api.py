"""The collector's HTTP API against the real broker: what is answered, and what lands in Kafka."""

from __future__ import annotations

import asyncio
import base64
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import orjson
import pytest
import requests

from pipeline.avro import BATCH_SCHEMA_FINGERPRINT
from pipeline.collector.enrich import Enricher
from pipeline.collector.pixel import TRANSPARENT_GIF
from pipeline.collector.producer import SCHEMA_HEADER, person_key
from pipeline.partitioning import partition_for
from tests.integration.test_collector_support import (
    BASIC,
    FIXED_NOW,
    OTHER_KEY,
    WRITE_KEY,
    collector_settings,
    live_collector,
    make_topics,
    present_records,
    read_dead_letters,
    read_event_records,
    read_events,
)

pytestmark = pytest.mark.integration

UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
CONTEXT = {
    "page": {
        "url": "https://shop.example/p/1?utm_source=news&utm_medium=email",
        "referrer": "https://mail.google.com/",
        "title": "P1",
    },
    "userAgent": UA,
    "ip": "203.0.113.77",
    "locale": "en-US",
    "library": {"name": "analytics.js", "version": "4.1.0"},
    "consent": ["Analytics", "marketing"],
}
MESSAGES: dict[str, dict[str, Any]] = {
    "track": {
        "userId": "u-1",
        "event": "Order Completed",
        "properties": {"order_id": "o-1", "revenue": 12.5, "currency": "USD"},
    },
    "page": {"anonymousId": "a-1", "name": "Product"},
    "screen": {"anonymousId": "a-1", "name": "Home"},
    "identify": {
        "userId": "u-1",
        "traits": {"email": " Ann@Example.COM ", "phone": "+1 202 555 0101"},
    },
    "alias": {"userId": "u-1", "previousId": "a-1"},
    "group": {"userId": "u-1", "groupId": "acme", "traits": {"plan": "pro"}},
}


def expected_event(settings: Any, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """What the collector must write: the same enrichment, the same clock."""
    enricher = Enricher(settings.identity_config, settings.write_key_sources, lambda: FIXED_NOW)
    return enricher.event(dict(payload), client_ip="127.0.0.1", **kwargs)


def test_every_message_type_is_acknowledged_and_written_enriched(
    kafka_broker: str, unique: str
) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    sent = []
    with live_collector(settings, topics) as collector:
        for n, (msg_type, message) in enumerate(MESSAGES.items()):
            payload = {
                **message,
                "messageId": f"m-{n}",
                "context": CONTEXT,
                "timestamp": "2025-12-31T23:59:00Z",
                "sentAt": "2025-12-31T23:59:30Z",
            }
            response = requests.post(
                f"{collector.url}/v1/{msg_type}",
                json=payload,
                auth=BASIC,
                headers={"User-Agent": "test-client/1"},
                timeout=10,
            )
            assert (response.status_code, response.json()) == (200, {"success": True})
            sent.append(
                expected_event(
                    settings,
                    payload,
                    type_hint=msg_type,
                    write_key=WRITE_KEY,
                    user_agent_header="test-client/1",
                )
            )
        events = read_events(kafka_broker, topics.raw, len(sent))
    assert events == sent
    track = events[0]
    # Spot checks of the enrichment (the enricher's own tests cover it in depth).
    assert track["received_at"] == FIXED_NOW * 1000
    assert track["timestamp"] == track["received_at"] - 30_000  # skew-corrected by sentAt
    assert track["context"]["ip"] == "203.0.113.0"
    assert track["enrichment"]["channel"] == "email"
    assert track["consent"] == ["analytics", "marketing"]
    identify = events[3]
    assert {"type": "email", "value": "ann@example.com"} in identify["identifiers"]
    assert {"type": "phone", "value": "+12025550101"} in identify["identifiers"]


def test_write_key_in_the_body_and_its_source(kafka_broker: str, unique: str) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    with live_collector(settings, topics) as collector:
        body = {"writeKey": OTHER_KEY, "anonymousId": "a-9", "event": "Clicked"}
        response = requests.post(f"{collector.url}/v1/track", json=body, timeout=10)
        assert response.status_code == 200
        [event] = read_events(kafka_broker, topics.raw, 1)
        dead = present_records(kafka_broker, topics.invalid)
    assert event["source"] == "app"
    assert dead == []


def test_batch_accepts_the_valid_events_and_reports_each_rejected_one(
    kafka_broker: str, unique: str
) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    batch = [
        {"type": "track", "userId": "u-1", "event": "First", "messageId": "b-0"},
        {"type": "track", "userId": "u-1", "messageId": "b-1"},  # no event name
        "not an object",
        {"type": "page", "anonymousId": "a-1", "messageId": "b-3"},
        {"type": "identify", "userId": {"id": 1}, "messageId": "b-4"},
        {"type": "track", "userId": "u-1", "event": "Big", "properties": {"x": "y" * 40_000}},
    ]
    with live_collector(settings, topics) as collector:
        response = requests.post(
            f"{collector.url}/v1/batch",
            json={"batch": batch, "writeKey": WRITE_KEY, "context": {"locale": "de-DE"}},
            timeout=10,
        )
        events = read_events(kafka_broker, topics.raw, 2)
        dead = read_dead_letters(kafka_broker, topics.invalid, 4)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["accepted"] == 2
    assert [(r["index"], r["code"], r["field"]) for r in body["rejected"]] == [
        (1, "invalid", "event"),
        (2, "invalid", "$"),
        (4, "invalid", "userId"),
        (5, "too_large", "$"),
    ]
    assert all(r["reason"] for r in body["rejected"])
    assert [e["event_id"] for e in events] == ["b-0", "b-3"]  # in batch order
    assert all(e["context"]["locale"] == "de-DE" for e in events)  # batch context applies
    assert [(d["field"], d["source"]) for d in dead] == [
        ("event", "web"),
        ("$", "web"),
        ("userId", "web"),
        ("$", "web"),
    ]
    assert "is required for track" in dead[0]["reason"]
    assert dead[3]["raw_truncated"] is True


def test_batch_without_a_valid_event_is_a_400_with_the_reasons(
    kafka_broker: str, unique: str
) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    with live_collector(settings, topics) as collector:
        response = requests.post(
            f"{collector.url}/v1/batch",
            json={"batch": [{"type": "track", "userId": "u"}]},
            auth=BASIC,
            timeout=10,
        )
    assert response.status_code == 400
    body = response.json()
    assert (body["success"], body["code"], body["accepted"]) == (False, "invalid", 0)
    assert body["rejected"][0]["field"] == "event"


BAD_REQUESTS = [
    # (name, path, body bytes, auth, status, code, field)
    ("malformed JSON", "/v1/track", b'{"event": ', BASIC, 400, "invalid", "$"),
    ("invalid UTF-8", "/v1/track", b'{"event": "\xff\xfe"}', BASIC, 400, "invalid", "$"),
    ("not an object", "/v1/track", b"[1, 2]", BASIC, 400, "invalid", "$"),
    ("wrong type", "/v1/track", b'{"event": 5, "userId": "u"}', BASIC, 400, "invalid", "event"),
    ("no person", "/v1/page", b'{"name": "Home"}', BASIC, 400, "invalid", "userId"),
    (
        "type mismatch",
        "/v1/track",
        b'{"type": "page", "userId": "u"}',
        BASIC,
        400,
        "invalid",
        "type",
    ),
    (
        "unknown key",
        "/v1/track",
        b'{"event": "E", "userId": "u"}',
        ("nope", ""),
        401,
        "unauthorized",
        None,
    ),
    ("missing key", "/v1/track", b'{"event": "E", "userId": "u"}', None, 401, "unauthorized", None),
    (
        "event too large",
        "/v1/track",
        orjson.dumps({"event": "E", "userId": "u", "properties": {"x": "y" * 33_000}}),
        BASIC,
        413,
        "too_large",
        "$",
    ),
    ("body too large", "/v1/batch", b" " * 600_000, BASIC, 413, "too_large", "$"),
    ("batch not a list", "/v1/batch", b'{"batch": {}}', BASIC, 400, "invalid", "batch"),
]


def test_bad_input_gets_a_clear_4xx_and_a_dead_letter(kafka_broker: str, unique: str) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    answers = []
    with live_collector(settings, topics) as collector:
        for name, path, body, auth, *_ in BAD_REQUESTS:
            response = requests.post(
                collector.url + path,
                data=body,
                auth=auth,
                headers={"Content-Type": "application/json"},
                timeout=10,
            )
            answers.append((name, response.status_code, response.json()))
        dead = read_dead_letters(kafka_broker, topics.invalid, len(BAD_REQUESTS))
        rejected = {
            reason: collector.metric("cdp_events_rejected_total", {"reason": reason})
            for reason in ("malformed", "invalid", "too_large", "unauthorized")
        }
    for (name, _, _, _, status, code, field), (_, got_status, body) in zip(
        BAD_REQUESTS, answers, strict=True
    ):
        assert (got_status, body["code"], body.get("field")) == (status, code, field), name
        assert body["success"] is False and body["message"], name
    assert len(dead) == len(BAD_REQUESTS)
    assert dead[0]["raw"] == '{"event": '
    assert "not valid UTF-8 JSON" in dead[1]["reason"]
    assert dead[6]["source"] is None and dead[6]["reason"] == "unknown write key"
    assert rejected == {"malformed": 3, "invalid": 4, "too_large": 2, "unauthorized": 2}
    assert present_records(kafka_broker, topics.raw) == []  # nothing accepted


def _pixel_data(message: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(message)).decode().rstrip("=")


def test_pixel_sets_a_first_party_cookie_and_reuses_it(kafka_broker: str, unique: str) -> None:
    settings = collector_settings(kafka_broker, collector_cookie_domain="shop.example")
    topics = make_topics(kafka_broker, unique)
    data = _pixel_data({"writeKey": WRITE_KEY, "name": "Home", "properties": {"path": "/"}})
    with live_collector(settings, topics) as collector:
        first = requests.get(f"{collector.url}/v1/pixel/page", params={"data": data}, timeout=10)
        # Not from requests' jar: it refuses a Domain=shop.example cookie from 127.0.0.1.
        cookie = SimpleCookie(first.headers["Set-Cookie"])["cdp_aid"].value
        again = requests.get(
            f"{collector.url}/v1/pixel/page",
            params={"data": data},
            cookies={"cdp_aid": cookie},
            timeout=10,
        )
        events = read_events(kafka_broker, topics.raw, 2)
    assert first.status_code == again.status_code == 200
    assert first.content == TRANSPARENT_GIF and first.headers["Content-Type"] == "image/gif"
    assert "no-store" in first.headers["Cache-Control"]
    set_cookie = first.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Lax", "Max-Age=31536000", "Domain=shop.example"):
        assert attribute in set_cookie
    assert cookie and "Set-Cookie" not in again.headers
    assert [e["anonymous_id"] for e in events] == [cookie, cookie]
    assert [e["type"] for e in events] == ["page", "page"]


def test_short_pixel_for_img_tags(kafka_broker: str, unique: str) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    with live_collector(settings, topics) as collector:
        opened = requests.get(
            f"{collector.url}/i",
            params={"k": WRITE_KEY, "e": "Email Opened", "em": "Ann@Example.com", "cid": "s24"},
            headers={"User-Agent": UA},
            timeout=10,
        )
        viewed = requests.get(
            f"{collector.url}/i",
            params={"k": WRITE_KEY, "u": "https://shop.example/?utm_source=google&utm_medium=cpc"},
            timeout=10,
        )
        refused = requests.get(f"{collector.url}/i", params={"u": "https://x"}, timeout=10)
        head = requests.head(f"{collector.url}/i", params={"k": WRITE_KEY}, timeout=10)
        email_open, page_view = read_events(kafka_broker, topics.raw, 2)
    assert opened.status_code == viewed.status_code == 200
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
    assert head.status_code == 405  # a link checker's HEAD is not a page view
    # Identified by the email: the fresh cookie is offered but not put into the event (image
    # proxies keep no cookies; every open would add an anonymous id to the person).
    assert "cdp_aid=" in opened.headers["Set-Cookie"]
    assert email_open["anonymous_id"] is None
    assert (email_open["type"], email_open["event"]) == ("track", "Email Opened")
    assert email_open["identifiers"] == [{"type": "email", "value": "ann@example.com"}]
    assert orjson.loads(email_open["properties"]) == {"cid": "s24"}
    assert email_open["enrichment"]["browser"] == "Chrome"
    assert page_view["type"] == "page"
    assert page_view["anonymous_id"] == viewed.cookies.get("cdp_aid")
    assert page_view["enrichment"]["channel"] == "paid"


def test_cors_preflight_and_origin_echo(kafka_broker: str, unique: str) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    origin = "https://shop.example"
    with live_collector(settings, topics) as collector:
        preflight = requests.options(
            f"{collector.url}/v1/batch",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
            timeout=10,
        )
        pixel = requests.get(
            f"{collector.url}/i", params={"k": WRITE_KEY}, headers={"Origin": origin}, timeout=10
        )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "content-type, authorization"
    assert pixel.headers["Access-Control-Allow-Origin"] == origin
    assert pixel.headers["Access-Control-Allow-Credentials"] == "true"


def test_messages_carry_the_schema_and_keep_each_persons_partition_and_order(
    kafka_broker: str, unique: str
) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique, raw_partitions=4)
    people = [f"person-{n}" for n in range(12)]
    batch = [
        {
            "type": "track",
            "userId": person,
            "event": f"Step {step}",
            "messageId": f"{person}/{step}",
        }
        for step in range(3)
        for person in people
    ]
    with live_collector(settings, topics) as collector:
        response = requests.post(
            f"{collector.url}/v1/batch", json={"batch": batch}, auth=BASIC, timeout=10
        )
        assert response.json()["accepted"] == len(batch)
        records = read_event_records(kafka_broker, topics.raw, len(batch))
    seen: dict[str, list[str]] = {}
    partitions_used = set()
    for record, events in records:
        assert dict(record.headers)[SCHEMA_HEADER] == BATCH_SCHEMA_FINGERPRINT.encode()
        assert record.key is None
        for event in events:
            assert record.partition == partition_for(person_key(event), 4)
            partitions_used.add(record.partition)
            seen.setdefault(event["user_id"], []).append(event["event"])
    assert sum(len(v) for v in seen.values()) == len(batch)
    assert all(steps == ["Step 0", "Step 1", "Step 2"] for steps in seen.values())
    assert len(partitions_used) > 1


def test_concurrent_requests_share_kafka_messages(kafka_broker: str, unique: str) -> None:
    settings = collector_settings(kafka_broker, collector_linger_ms=20)
    topics = make_topics(kafka_broker, unique)
    requests_sent = 60

    async def send_all(url: str) -> list[int]:
        auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
        async with aiohttp.ClientSession(headers=auth) as http:

            async def one(n: int) -> int:
                body = {"anonymousId": f"a-{n}", "event": "Tick", "messageId": f"c-{n}"}
                async with http.post(f"{url}/v1/track", json=body) as response:
                    return response.status

            return await asyncio.gather(*(one(n) for n in range(requests_sent)))

    with live_collector(settings, topics) as collector:
        statuses = asyncio.run(send_all(collector.url))
        events = read_events(kafka_broker, topics.raw, requests_sent)
        messages = collector.metric("cdp_kafka_produce_seconds_count")
    assert statuses == [200] * requests_sent
    assert sorted(e["event_id"] for e in events) == sorted(f"c-{n}" for n in range(requests_sent))
    assert messages < requests_sent / 3  # micro-batched: far fewer messages than requests


def test_health_metrics_and_openapi(kafka_broker: str, unique: str) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    with live_collector(settings, topics) as collector:
        url = collector.url
        requests.post(f"{url}/v1/track", json={"userId": "u", "event": "E"}, auth=BASIC, timeout=10)
        requests.post(f"{url}/v1/track", json={"userId": "u"}, auth=BASIC, timeout=10)
        requests.post(
            f"{url}/v1/batch",
            json={"batch": [{"type": "page", "userId": "u"}, {"type": "bogus"}]},
            auth=BASIC,
            timeout=10,
        )
        health = requests.get(f"{url}/healthz", timeout=10)
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        spec = requests.get(f"{url}/openapi.json", timeout=10).json()
        received = sum(
            collector.metric("cdp_events_received_total", {"source": "web", "type": t})
            for t in ("track", "page", "unknown")
        )
        accepted = sum(
            collector.metric("cdp_events_accepted_total", {"source": "web", "type": t})
            for t in ("track", "page")
        )
        rejected = collector.metric("cdp_events_rejected_total", {"reason": "invalid"})
    assert health.status_code == 200 and health.json()["kafka"] is True
    assert (received, accepted, rejected) == (4, 2, 2)
    for name in (
        "cdp_events_received_total",
        "cdp_events_accepted_total",
        "cdp_events_rejected_total",
        "cdp_kafka_produce_seconds_bucket",
        'cdp_http_requests_total{route="/v1/track",status="200"}',
        'cdp_http_request_seconds_bucket{le="0.001",route="/v1/batch"}',
    ):
        assert name in metrics
    assert "cdp_bots_total" in metrics and "cdp_kafka_produce_errors_total" in metrics
    assert {"/v1/track", "/v1/batch", "/v1/pixel/{kind}", "/i"} <= set(spec["paths"])
