"""Enrichment (pipeline.collector.enrich): list in, list out for every rule, plus fuzzing."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import hypothesis
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import avro
from pipeline.collector.enrich import (
    MAX_FUTURE_MS,
    Enricher,
    UserAgentParser,
    _utm,
    classify_channel,
    event_time_ms,
    query_params,
    random_uuid4,
    truncate_ip,
)
from pipeline.collector.payload import (
    MESSAGE_TYPES,
    TEXT_LIMITS,
    UTM_KEYS,
    AuthError,
    Message,
    PayloadError,
    clean_text,
    decode_json,
)
from pipeline.identity.config import IdentityConfig

NOW_S = 1_714_564_800.5  # 2024-05-01T12:00:00.5Z
NOW_MS = 1_714_564_800_500
WRITE_KEYS = {"wk-web": "web", "wk-ios": "ios"}
CHROME_WIN = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
CONFIG = IdentityConfig.from_values(custom_types="loyalty_card", blocked_values="blocked@x.io")


def make_enricher() -> Enricher:
    counter = itertools.count(1)
    return Enricher(
        CONFIG, WRITE_KEYS, now=lambda: NOW_S, new_id=lambda: f"generated-{next(counter)}"
    )


@pytest.fixture
def enricher() -> Enricher:
    return make_enricher()


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Clicked", "anonymousId": "anon-1", **fields}


def enrich(enricher: Enricher, payload: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("write_key", "wk-web")
    return enricher.event(payload, **kwargs)


# --- output shape ---------------------------------------------------------------------------


def _field_names(record: dict[str, Any]) -> set[str]:
    return {field["name"] for field in record["fields"]}


def test_output_matches_event_avsc_exactly(enricher: Enricher) -> None:
    event = enrich(enricher, track(context={"userAgent": CHROME_WIN}))
    schema = avro.EVENT_SCHEMA_JSON
    fields = {f["name"]: f for f in schema["fields"]}
    assert set(event) == set(fields)
    assert set(event["context"]) == _field_names(fields["context"]["type"])
    assert set(event["enrichment"]) == _field_names(fields["enrichment"]["type"])
    assert avro.decode_event(avro.encode_event(event)) == event


def test_full_track_event(enricher: Enricher) -> None:
    payload = {
        "type": "track",
        "event": "Order Completed",
        "messageId": "msg-1",
        "anonymousId": "anon-1",
        "userId": "user-1",
        "timestamp": "2024-05-01T11:59:00Z",
        "sentAt": "2024-05-01T11:59:30Z",
        "properties": {"order_id": "o-1", "revenue": 42.5},
        "context": {
            "userAgent": IPHONE,
            "ip": "203.0.113.77",
            "locale": "en-GB",
            "library": {"name": "analytics.js", "version": "4.1.0"},
            "page": {"url": "https://shop.example/thanks", "referrer": "https://www.bing.com/"},
            "traits": {"email": "Ann@Example.COM"},
            "consent": {"categoryPreferences": {"Analytics": True, "Ads": False}},
        },
    }
    assert enrich(enricher, payload) == {
        "event_id": "msg-1",
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
        # 11:59:00 on a client clock 30 s behind... corrected by receivedAt - sentAt
        "timestamp": NOW_MS - 30_000,
        "received_at": NOW_MS,
        "sent_at": 1_714_564_770_000,
        "source": "web",
        "properties": '{"order_id":"o-1","revenue":42.5}',
        "traits": '{"email":"Ann@Example.COM"}',
        "context": {
            "ip": "203.0.113.0",
            "user_agent": IPHONE,
            "page_url": "https://shop.example/thanks",
            "page_path": "/thanks",
            "page_title": None,
            "referrer": "https://www.bing.com/",
            "locale": "en-GB",
            "library": "analytics.js/4.1.0",
            "utm_source": None,
            "utm_medium": None,
            "utm_campaign": None,
            "utm_term": None,
            "utm_content": None,
        },
        "enrichment": {
            "device_type": "mobile",
            "os": "iOS",
            "browser": "Mobile Safari",
            "is_bot": False,
            "channel": "search",
        },
        "consent": ["analytics"],
        "original_timestamp": 1_714_564_740_000,
    }


def test_message_id_is_kept_or_generated(enricher: Enricher) -> None:
    assert enrich(enricher, track(messageId="m-7"))["event_id"] == "m-7"
    assert enrich(enricher, track())["event_id"] == "generated-1"
    assert enrich(enricher, track())["event_id"] == "generated-2"


def test_default_message_ids_are_uuid4() -> None:
    enricher = Enricher(CONFIG, WRITE_KEYS, now=lambda: NOW_S)
    first, second = (enrich(enricher, track())["event_id"] for _ in range(2))
    assert first != second
    assert len(first) == 36 and first[14] == "4"


def test_random_uuid4_is_a_uuid4_and_does_not_repeat() -> None:
    ids = [random_uuid4() for _ in range(2_000)]  # several refills of the random buffer
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_group_traits_stay_out_of_person_traits(enricher: Enricher) -> None:
    event = enrich(
        enricher,
        {
            "type": "group",
            "groupId": "acme",
            "userId": "u1",
            "traits": {"email": "billing@acme.io", "plan": "pro"},
            "context": {"traits": {"email": "ann@acme.io"}},
        },
    )
    assert orjson.loads(event["properties"]) == {"email": "billing@acme.io", "plan": "pro"}
    assert orjson.loads(event["traits"]) == {"email": "ann@acme.io"}
    assert {"type": "email", "value": "billing@acme.io"} not in event["identifiers"]
    assert event["group_id"] == "acme"


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write_key", "body_key", "expected"),
    [
        ("wk-web", None, "web"),
        (None, "wk-ios", "ios"),  # analytics.js may send it in the body
        ("wk-web", "wk-ios", "web"),  # HTTP auth wins
    ],
)
def test_source_is_the_write_keys_name(
    enricher: Enricher, write_key: str | None, body_key: str | None, expected: str
) -> None:
    payload = track(writeKey=body_key) if body_key else track()
    event = enricher.event(payload, write_key=write_key)
    assert event["source"] == expected
    assert b"wk-" not in avro.encode_event(event)  # the key itself is never stored


@pytest.mark.parametrize(
    ("write_key", "body_key", "reason"),
    [
        (None, None, "missing write key"),
        ("", "", "missing write key"),
        ("nope", None, "unknown write key"),
        (None, 123, "missing write key"),
    ],
)
def test_bad_write_keys_raise_auth_error(
    enricher: Enricher, write_key: str | None, body_key: Any, reason: str
) -> None:
    with pytest.raises(AuthError, match=reason) as info:
        enricher.event(track(writeKey=body_key), write_key=write_key)
    assert "nope" not in str(info.value)
    with pytest.raises(AuthError):
        enricher.batch({"batch": [track()], "writeKey": body_key}, write_key=write_key)


# --- event time -----------------------------------------------------------------------------

RECEIVED = 1_000_000_000_000


@pytest.mark.parametrize(
    ("timestamp", "sent_at", "expected"),
    [
        (None, None, RECEIVED),
        (None, RECEIVED - 5_000, RECEIVED),  # sentAt alone says nothing about the event
        (RECEIVED - 60_000, None, RECEIVED - 60_000),
        # client clock one hour behind: event 10 s before sending, received 1 s after sending
        (RECEIVED - 3_600_000 - 10_000, RECEIVED - 3_600_000 - 1_000, RECEIVED - 9_000),
        # client clock one day ahead, same intervals
        (RECEIVED + 86_400_000 - 10_000, RECEIVED + 86_400_000 - 1_000, RECEIVED - 9_000),
        (RECEIVED + MAX_FUTURE_MS, None, RECEIVED + MAX_FUTURE_MS),  # small skew tolerated
        (RECEIVED + MAX_FUTURE_MS + 1, None, RECEIVED),  # absurd future: clamped
        (0, None, RECEIVED),  # 1970: a dead RTC
        (5_000, 10_000, RECEIVED - 5_000),  # 1970 clock, but sentAt corrects it: kept
        (946_684_799_999, None, RECEIVED),  # before 2000-01-01
        (-62_135_596_800_000, 253_402_300_799_000, RECEIVED),  # year 1 vs 9999: no overflow
    ],
)
def test_event_time(timestamp: int | None, sent_at: int | None, expected: int) -> None:
    assert event_time_ms(timestamp, sent_at, RECEIVED) == expected


def test_event_time_is_applied_and_original_kept(enricher: Enricher) -> None:
    event = enrich(enricher, track(timestamp="2030-01-01T00:00:00Z"))
    assert event["timestamp"] == NOW_MS
    assert event["original_timestamp"] == 1_893_456_000_000
    assert event["sent_at"] is None


# --- identifiers ----------------------------------------------------------------------------


def _ids(event: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i["type"], i["value"]) for i in event["identifiers"]]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            track(userId="u1", anonymousId=" a1 "),
            [("anonymous_id", "a1"), ("user_id", "u1")],
        ),
        (  # placeholders link nothing, but the event is kept
            track(userId="null", anonymousId="undefined"),
            [],
        ),
        (
            {"type": "alias", "userId": "u1", "previousId": "cookie-9"},
            [("user_id", "u1"), ("anonymous_id", "cookie-9")],
        ),
        (
            {"type": "alias", "userId": "u1", "previousId": " Old@Mail.io "},
            [("user_id", "u1"), ("email", "old@mail.io")],
        ),
        (
            {
                "type": "identify",
                "userId": "u1",
                "traits": {"email": "a@x.io", "phone": "(415) 555-2671", "loyalty_card": 77},
                "context": {"traits": {"email": "B@x.io", "phone": "+1 415 555 2671"}},
            },
            [
                ("user_id", "u1"),
                ("email", "a@x.io"),
                ("phone", "+14155552671"),
                ("loyalty_card", "77"),
                ("email", "b@x.io"),  # both emails were seen together: both link
            ],
        ),
        (
            track(
                context={
                    "traits": {
                        "email": "not-an-email",
                        "phone": "12",
                        "loyalty_card": {"no": 1},
                        "crm_id": "c1",  # not a configured type
                    }
                }
            ),
            [("anonymous_id", "anon-1")],
        ),
        (track(context={"traits": {"email": "blocked@x.io"}}), [("anonymous_id", "anon-1")]),
        (track(userId=12345), [("anonymous_id", "anon-1"), ("user_id", "12345")]),
        (track(context={"traits": {"loyalty_card": True}}), [("anonymous_id", "anon-1")]),
    ],
)
def test_identifiers(enricher: Enricher, payload: dict[str, Any], expected: list[Any]) -> None:
    assert _ids(enrich(enricher, payload)) == expected


def test_bool_and_int_ids_do_not_share_a_cache_slot(enricher: Enricher) -> None:
    assert _ids(enrich(enricher, track(context={"traits": {"loyalty_card": 1}})))[-1] == (
        "loyalty_card",
        "1",
    )
    assert _ids(enrich(enricher, track(context={"traits": {"loyalty_card": True}}))) == [
        ("anonymous_id", "anon-1")
    ]


# --- user agent -----------------------------------------------------------------------------

UA_CASES = [
    (CHROME_WIN, ("desktop", "Windows", "Chrome", False)),
    (IPHONE, ("mobile", "iOS", "Mobile Safari", False)),
    (
        "Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.0 Mobile/15E148 Safari/604.1",
        ("tablet", "iOS", "Mobile Safari", False),
    ),
    (
        "Mozilla/5.0 (Linux; Android 12; SM-T870) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/110.0.0.0 Safari/537.36",
        ("tablet", "Android", "Chrome", False),
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        ("mobile", "Android", "Chrome Mobile", False),
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.1 Safari/605.1.15",
        ("desktop", "Mac OS X", "Safari", False),
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        ("desktop", "Linux", "Firefox", False),
    ),
    (  # ua_parser's Spider device
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        ("bot", None, "Googlebot", True),
    ),
    (  # crawlerdetect only
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "HeadlessChrome/120.0.0.0 Safari/537.36",
        ("bot", "Linux", "HeadlessChrome", True),
    ),
    ("curl/8.4.0", ("bot", None, "curl", True)),
    (  # Gmail fetches the pixel when the person opens the mail: not a bot
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        ("desktop", "Windows", "GmailImageProxy", False),
    ),
    ("something odd", ("unknown", None, None, False)),
]


@pytest.mark.parametrize(("user_agent", "expected"), UA_CASES)
def test_user_agent_classification(user_agent: str, expected: tuple[Any, ...]) -> None:
    assert tuple(UserAgentParser().parse(user_agent)) == expected


def test_user_agents_are_parsed_once_per_distinct_string() -> None:
    parser = UserAgentParser(cache_size=8)
    for _ in range(5):
        parser.parse(CHROME_WIN)
    info = parser.parse.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses) == (4, 1)


@pytest.mark.parametrize(
    ("context", "header", "expected_ua", "expected_device"),
    [
        ({"userAgent": IPHONE}, CHROME_WIN, IPHONE, "mobile"),  # the payload's own UA wins
        ({}, CHROME_WIN, CHROME_WIN, "desktop"),  # pixel / hand-written request
        # an SDK's header is its HTTP client, not the person's browser
        ({"library": {"name": "analytics-python"}}, "analytics-python/2.3.0", None, "unknown"),
        ({}, None, None, "unknown"),
        ({}, "x" * 5000, "x" * 512, "unknown"),  # bounded
    ],
)
def test_user_agent_source(
    enricher: Enricher,
    context: dict[str, Any],
    header: str | None,
    expected_ua: str | None,
    expected_device: str,
) -> None:
    event = enrich(enricher, track(context=context), user_agent_header=header)
    assert event["context"]["user_agent"] == expected_ua
    assert event["enrichment"]["device_type"] == expected_device


# --- channel --------------------------------------------------------------------------------

SITE = "https://shop.example/landing"


@pytest.mark.parametrize(
    ("page_url", "referrer", "medium", "source", "expected"),
    [
        (SITE, None, None, None, "direct"),
        (SITE, "https://shop.example/cart", None, None, "direct"),  # internal navigation
        (SITE, "https://www.shop.example/", None, None, "direct"),
        (SITE, "https://blog.shop.example/post", None, None, "direct"),
        (None, None, None, None, "direct"),
        (SITE, "https://partner.io/review", None, None, "referral"),
        (SITE, None, "referral", None, "referral"),
        (SITE, None, "qr-poster", "flyer", "referral"),  # tagged, unknown medium
        (SITE, "https://www.google.com/", None, None, "search"),
        (SITE, "https://www.google.co.uk/search?q=x", None, None, "search"),
        (SITE, "https://yandex.ru/search/?text=x", None, None, "search"),
        (SITE, "https://ya.ru/", None, None, "search"),
        (SITE, "https://duckduckgo.com/", None, None, "search"),
        (SITE, "https://www.baidu.com/", None, None, "search"),
        (SITE, "https://search.yahoo.com/", None, None, "search"),
        (SITE, "https://www.ecosia.org/", None, None, "search"),
        (SITE, "https://www.bing.com/", None, None, "search"),
        (SITE, None, "organic", "google", "search"),
        (SITE, "https://l.facebook.com/", None, None, "social"),
        (SITE, "https://www.instagram.com/", None, None, "social"),
        (SITE, "https://t.co/abc", None, None, "social"),
        (SITE, "https://x.com/someone", None, None, "social"),
        (SITE, "https://twitter.com/", None, None, "social"),
        (SITE, "https://www.linkedin.com/feed", None, None, "social"),
        (SITE, "https://vk.com/wall", None, None, "social"),
        (SITE, "https://ok.ru/", None, None, "social"),
        (SITE, "https://www.tiktok.com/", None, None, "social"),
        (SITE, "https://m.youtube.com/", None, None, "social"),
        (SITE, "https://youtu.be/x", None, None, "social"),
        (SITE, "https://www.pinterest.de/", None, None, "social"),
        (SITE, "https://old.reddit.com/", None, None, "social"),
        (SITE, "https://web.telegram.org/", None, None, "social"),
        (SITE, "https://t.me/channel", None, None, "social"),
        (SITE, None, "social", "anything", "social"),
        (SITE, None, "story", "ig", "social"),  # source shorthand
        (SITE, None, None, "facebook", "social"),
        (SITE, "https://mail.google.com/mail/u/0/", None, None, "email"),  # before "google"
        (SITE, "https://e.mail.ru/inbox", None, None, "email"),
        (SITE, "https://outlook.live.com/", None, None, "email"),
        (SITE, None, "email", "newsletter", "email"),
        (SITE, None, "Newsletter", None, "email"),
        (SITE, None, "cpc", "google", "paid"),  # medium beats the source's search engine
        (SITE, "https://www.google.com/", "ppc", None, "paid"),
        (SITE, None, "paid_social", "facebook", "paid"),
        (SITE, None, "display", None, "paid"),
        (SITE + "?gclid=abc", "https://www.google.com/", None, None, "paid"),
        (SITE + "?fbclid=abc", "https://l.facebook.com/", None, None, "paid"),
        (SITE + "?yclid=1", "https://yandex.ru/", None, None, "paid"),
        ("https://[::1/broken", "https://[bad", None, None, "direct"),  # unparsable URLs
        ("not a url", "also not", None, None, "direct"),
    ],
)
def test_channel(
    page_url: str | None,
    referrer: str | None,
    medium: str | None,
    source: str | None,
    expected: str,
) -> None:
    assert classify_channel(page_url, referrer, medium, source) == expected


def test_channel_reads_utm_from_campaign_then_page_url(enricher: Enricher) -> None:
    event = enrich(
        enricher,
        track(
            context={
                "campaign": {"source": "google", "name": "spring"},
                "page": {"url": f"{SITE}?utm_medium=cpc&utm_source=bing&utm_term=shoes"},
            }
        ),
    )
    context = event["context"]
    assert (context["utm_source"], context["utm_medium"], context["utm_term"]) == (
        "google",  # context.campaign wins
        "cpc",  # the URL fills the gap
        "shoes",
    )
    assert context["utm_campaign"] == "spring"
    assert event["enrichment"]["channel"] == "paid"


# --- IP -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("10.0.0.255", "10.0.0.0"),
        (" 198.51.100.1 ", "198.51.100.0"),
        ("2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
        ("::ffff:203.0.113.77", "203.0.113.0"),  # IPv4-mapped: the IPv4 rule
        ("fe80::1%eth0", "fe80::"),
        ("203.0.113", None),
        ("not-an-ip", None),
        ("", None),
        (None, None),
    ],
)
def test_truncate_ip(raw: str | None, expected: str | None) -> None:
    assert truncate_ip(raw) == expected


@pytest.mark.parametrize(
    ("context_ip", "client_ip", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", "203.0.113.0"),  # server-side SDKs forward the user's IP
        (None, "198.51.100.1", "198.51.100.0"),
        ("garbage", "198.51.100.1", "198.51.100.0"),
        (None, None, None),
    ],
)
def test_ip_source(
    enricher: Enricher, context_ip: str | None, client_ip: str | None, expected: str | None
) -> None:
    context = {"ip": context_ip} if context_ip else {}
    event = enrich(enricher, track(context=context), client_ip=client_ip)
    assert event["context"]["ip"] == expected


# --- batch ----------------------------------------------------------------------------------


def test_batch_accepts_valid_items_and_reports_each_rejected_one(enricher: Enricher) -> None:
    big = track(properties={"blob": "x" * 40_000})
    events, rejections = enricher.batch(
        {
            "batch": [
                track(messageId="ok-1"),
                {"type": "track", "anonymousId": "a"},
                "not an object",
                {"event": "no type", "userId": "u"},
                big,
                {"type": "identify", "userId": "u2", "messageId": "ok-2"},
            ]
        },
        write_key="wk-web",
    )
    assert [e["event_id"] for e in events] == ["ok-1", "ok-2"]
    assert [(r.index, r.field, r.code) for r in rejections] == [
        (1, "event", "invalid"),
        (2, "$", "invalid"),
        (3, "type", "invalid"),
        (4, "$", "too_large"),
    ]
    assert rejections[0].reason == "is required for track"
    assert rejections[0].raw_excerpt == '{"type":"track","anonymousId":"a"}'
    assert len(rejections[3].raw_excerpt.encode()) <= 512


def test_batch_context_and_sent_at_apply_to_items(enricher: Enricher) -> None:
    events, rejections = enricher.batch(
        {
            "batch": [
                track(timestamp="2024-05-01T11:00:00Z"),
                track(
                    timestamp="2024-05-01T11:00:00Z",
                    sentAt="2024-05-01T11:00:00Z",
                    context={"locale": "fr-FR"},
                ),
            ],
            "context": {"locale": "de-DE", "library": {"name": "analytics-node"}},
            "sentAt": "2024-05-01T11:30:00Z",
        },
        write_key="wk-web",
    )
    assert rejections == []
    assert [e["context"]["locale"] for e in events] == ["de-DE", "fr-FR"]
    assert [e["context"]["library"] for e in events] == ["analytics-node"] * 2
    assert [e["timestamp"] for e in events] == [NOW_MS - 1_800_000, NOW_MS]
    assert {e["received_at"] for e in events} == {NOW_MS}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "batch"),
        ({"batch": {"type": "track"}}, "batch"),
        ({"batch": [], "context": []}, "context"),
    ],
)
def test_malformed_batches_raise(enricher: Enricher, payload: dict[str, Any], field: str) -> None:
    with pytest.raises(PayloadError) as info:
        enricher.batch(payload, write_key="wk-web")
    assert info.value.field == field


def test_empty_batch_is_fine(enricher: Enricher) -> None:
    assert enricher.batch({"batch": []}, write_key="wk-web") == ([], [])


# --- fuzzing: only PayloadError / AuthError, and whatever is accepted encodes --------------

# Lone surrogates and control characters included: they cannot come out of orjson, but Python
# callers (pixel, CSV import) can hand such strings to the enricher.
any_text = st.text(st.characters(exclude_categories=()), max_size=30)
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | any_text
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)
iso_times = st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
nice_text = st.text(st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=20)
id_values = (
    st.sampled_from(["u1", " x ", "null", "a@b.io", "+1 415 555 2671"])
    | nice_text
    | any_text
    | st.integers(min_value=-(2**70), max_value=2**70)
)
urls = st.sampled_from(
    [
        "https://shop.example/p?utm_source=fb&utm_medium=cpc&gclid=1",
        "https://www.google.com/search?q=x",
        "https://[::1",
        "http://x/" + "%" * 20,
    ]
)
# Well-typed messages with hostile contents: most are accepted, so enrichment and Avro encoding
# of odd-but-valid input get exercised.
hostile_context = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(["203.0.113.7", "::ffff:1.2.3.4", "2001:db8::1"]) | any_text,
        "userAgent": st.sampled_from([CHROME_WIN, IPHONE, "curl/8"]) | any_text,
        "page": st.dictionaries(
            st.sampled_from(["url", "referrer", "title", "path"]), urls | any_text
        ),
        "campaign": st.dictionaries(
            st.sampled_from(["source", "medium", "name", "term", "content"]), any_text
        ),
        "traits": st.dictionaries(
            st.sampled_from(["email", "phone", "loyalty_card", "name"]), id_values | json_values
        ),
        "consent": st.lists(any_text, max_size=3)
        | st.fixed_dictionaries({"categoryPreferences": st.dictionaries(any_text, st.booleans())}),
        "library": st.fixed_dictionaries({"name": any_text}, optional={"version": any_text}),
        "locale": any_text,
    },
)
hostile_messages = st.fixed_dictionaries(
    {
        "type": st.sampled_from(sorted(MESSAGE_TYPES)),
        "anonymousId": id_values,
        "groupId": id_values,
    },
    optional={
        "event": nice_text | st.text(st.characters(exclude_categories=()), max_size=300),
        "name": any_text,
        "userId": id_values,
        "previousId": id_values,
        "messageId": id_values,
        "timestamp": iso_times,
        "sentAt": iso_times,
        "properties": st.dictionaries(any_text, json_values, max_size=3),
        "traits": st.dictionaries(st.sampled_from(["email", "phone", "plan"]), id_values),
        "context": hostile_context,
    },
)
# Anything anywhere: wrong types in every field.
garbage_messages = st.fixed_dictionaries(
    {},
    optional={
        key: json_values
        for key in (
            "type",
            "event",
            "name",
            "userId",
            "anonymousId",
            "previousId",
            "groupId",
            "messageId",
            "timestamp",
            "sentAt",
            "properties",
            "traits",
            "context",
            "writeKey",
        )
    },
)


def _dumpable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


write_keys = st.sampled_from(["wk-web", None, "", "unknown"])
SHARED_ENRICHER = make_enricher()  # one instance, so the caches are exercised too
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_contract_errors(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (PayloadError, AuthError):
        return None


@FUZZ
@given(
    payload=hostile_messages,
    client_ip=st.none() | st.sampled_from(["198.51.100.7", "::1"]) | any_text,
    ua=st.none() | st.sampled_from([CHROME_WIN]) | any_text,
)
def test_fuzz_hostile_but_well_typed_events(
    payload: dict[str, Any], client_ip: str | None, ua: str | None
) -> None:
    try:
        event = SHARED_ENRICHER.event(
            payload, write_key="wk-web", client_ip=client_ip, user_agent_header=ua
        )
    except PayloadError as exc:
        hypothesis.event(f"refused: {exc.field}")
        return
    hypothesis.event("accepted")
    assert avro.decode_event(avro.encode_event(event)) == event


@FUZZ
@given(
    payload=garbage_messages,
    type_hint=st.sampled_from([None, "track", "page", "nope"]),
    write_key=write_keys,
)
def test_fuzz_garbage_events_raise_only_contract_errors(
    payload: dict[str, Any], type_hint: str | None, write_key: str | None
) -> None:
    event = _only_contract_errors(
        lambda: SHARED_ENRICHER.event(payload, type_hint=type_hint, write_key=write_key)
    )
    if event is not None:
        avro.encode_event(event)


@FUZZ
@given(payload=json_values, write_key=write_keys)
def test_fuzz_event_with_arbitrary_json_values(payload: Any, write_key: str | None) -> None:
    event = _only_contract_errors(lambda: SHARED_ENRICHER.event(payload, write_key=write_key))
    if event is not None:
        avro.encode_event(event)


@FUZZ
@given(
    body=st.binary(max_size=400)
    | json_values.filter(_dumpable).map(orjson.dumps)
    | hostile_messages.filter(_dumpable).map(orjson.dumps)
)
def test_fuzz_decode_json_then_event(body: bytes) -> None:
    def call() -> dict[str, Any]:
        return SHARED_ENRICHER.event(decode_json(body), write_key="wk-web")

    event = _only_contract_errors(call)
    if event is not None:
        avro.encode_event(event)


@FUZZ
@given(
    items=st.lists(hostile_messages | garbage_messages | json_values, max_size=4),
    shared_context=st.none() | hostile_context | json_values,
    sent_at=st.none() | iso_times | json_values,
    write_key=write_keys,
)
def test_fuzz_batch_raises_only_contract_errors(
    items: list[Any], shared_context: Any, sent_at: Any, write_key: str | None
) -> None:
    payload = {"batch": items, "context": shared_context, "sentAt": sent_at, "writeKey": "wk-web"}
    result = _only_contract_errors(lambda: SHARED_ENRICHER.batch(payload, write_key=write_key))
    if result is not None:
        events, rejections = result
        hypothesis.event(f"accepted {len(events)} of {len(items)}")
        assert len(events) + len(rejections) == len(items)
        assert [r.index for r in rejections] == sorted({r.index for r in rejections})
        avro.encode_batch(events)


def _utm_per_event(message: Message) -> dict[str, str | None]:
    """The utm rule as it ran per event before url_utm cached the URL's part: the reference."""
    from_url = query_params(message.page_url)
    utm: dict[str, str | None] = {}
    for key in UTM_KEYS:
        value = message.campaign.get(key)
        if value is None and key in from_url:
            value = clean_text(from_url[key], TEXT_LIMITS["utm"])
        utm[key] = value
    return utm


_UTM_URLS = [
    None,
    "",
    "https://shop.example/",
    "https://shop.example/p?utm_source=news&utm_medium=email",
    "https://shop.example/p?utm_source=%20&utm_term=a%00b&utm_source=second",
    "https://shop.example/p?utm_content=" + "x" * 300,
    "https://shop.example/p?gclid=1&other=2",
    "https://[::1/broken?utm_source=x",
]
_CAMPAIGNS: list[dict[str, str]] = [
    {},
    {"utm_source": "google"},
    {"utm_medium": "cpc", "utm_campaign": "spring", "utm_term": "t", "utm_content": "c"},
]


@pytest.mark.parametrize("campaign", _CAMPAIGNS)
@pytest.mark.parametrize("page_url", _UTM_URLS)
def test_utm_with_the_cached_url_part_is_the_per_event_rule(
    page_url: str | None, campaign: dict[str, str]
) -> None:
    message = Message("page", page_url=page_url, campaign=campaign)
    for _ in range(2):  # computed, then cached
        assert _utm(message) == _utm_per_event(message)
