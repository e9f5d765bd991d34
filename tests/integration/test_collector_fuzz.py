"""Fuzzing: no input makes the collector answer 5xx (Kafka is up, so only a bug could).

Two generators, both derandomized (the same examples on every run) and bounded in count:

* schemathesis reads the OpenAPI document the collector serves and generates requests from it,
  valid ones (which reach Kafka) and invalid ones (wrong types, missing fields, bad query);
* hypothesis sends hostile raw bodies, headers and query strings that no schema describes:
  arbitrary bytes, broken gzip, odd content types, garbage ``Authorization`` headers.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.integration.test_collector_support import (
    WRITE_KEY,
    LiveCollector,
    collector_settings,
    live_collector,
    make_topics,
)

pytestmark = pytest.mark.integration

GOOD_AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture
def collector(kafka_broker: str, unique: str) -> Iterator[LiveCollector]:
    topics = make_topics(kafka_broker, unique)
    # A short delivery timeout: a bug that hangs a request would show as a 503, not a stall.
    with live_collector(
        collector_settings(kafka_broker, collector_delivery_timeout_s=2), topics
    ) as live:
        yield live


def _no_server_error(response: requests.Response, what: str) -> None:
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.text[:300]}"
    if response.status_code >= 400 and response.status_code != 405:
        assert response.json()["success"] is False, what


def test_requests_generated_from_the_served_openapi_spec(collector: LiveCollector) -> None:
    schema = schemathesis.openapi.from_url(f"{collector.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    strategies = [
        operation.as_strategy(generation_mode=mode)
        for operation in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if operation.path not in ("/metrics", "/openapi.json")
    ]
    session = requests.Session()

    @fuzz_settings(max_examples=150)
    @given(case=st.one_of(strategies), authorized=st.booleans())
    def check(case: Any, authorized: bool) -> None:
        headers = {"Authorization": GOOD_AUTH} if authorized else None
        response = case.call(base_url=collector.url, session=session, headers=headers, timeout=10)
        _no_server_error(response, f"{case.method} {case.formatted_path}")

    check()


_PATHS = ["/v1/track", "/v1/page", "/v1/identify", "/v1/alias", "/v1/group", "/v1/batch"]
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
_message = st.fixed_dictionaries(
    {},
    optional={
        key: _json_values
        for key in (
            "type",
            "userId",
            "anonymousId",
            "event",
            "name",
            "timestamp",
            "sentAt",
            "context",
            "properties",
            "traits",
            "writeKey",
            "messageId",
        )
    },
)


@st.composite
def _hostile_body(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["bytes", "json", "batch", "gzip", "broken gzip"]))
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", "x/y"]))}
    if kind == "bytes":
        body = draw(st.binary(max_size=300))
    elif kind == "json":
        body = orjson.dumps(draw(_message), option=orjson.OPT_NON_STR_KEYS)
    elif kind == "batch":
        items = draw(st.lists(_message | _json_values, max_size=5))
        body = orjson.dumps({"batch": items, "context": draw(_json_values)})
    elif kind == "gzip":
        body = gzip.compress(draw(st.binary(max_size=200)))
        headers["Content-Encoding"] = "gzip"
    else:
        body = draw(st.binary(max_size=100))
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "deflate", "br", "zstd"]))
    return body, headers


_header_text = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)


def test_hostile_bodies_headers_and_query_strings(collector: LiveCollector) -> None:
    session = requests.Session()

    @fuzz_settings(max_examples=150)
    @given(
        path=st.sampled_from(_PATHS),
        body=_hostile_body(),
        authorization=st.none() | st.just(GOOD_AUTH) | _header_text.map(lambda t: "Basic " + t),
        user_agent=_header_text,
        cookie=st.none() | _header_text.map(lambda t: "cdp_aid=" + t),
        query=st.dictionaries(st.text(max_size=8), st.text(max_size=40), max_size=6),
    )
    def check(
        path: str,
        body: tuple[bytes, dict[str, str]],
        authorization: str | None,
        user_agent: str,
        cookie: str | None,
        query: dict[str, str],
    ) -> None:
        data, headers = body
        headers = {**headers, "User-Agent": user_agent}
        if authorization is not None:
            headers["Authorization"] = authorization
        response = session.post(collector.url + path, data=data, headers=headers, timeout=10)
        _no_server_error(response, f"POST {path} {data[:80]!r} {headers}")
        if cookie is not None:
            headers["Cookie"] = cookie
        pixel_query = {**query, "k": WRITE_KEY} if authorization else query
        for pixel_path in ("/i", "/v1/pixel/track"):
            response = session.get(
                collector.url + pixel_path, params=pixel_query, headers=headers, timeout=10
            )
            _no_server_error(response, f"GET {pixel_path} {pixel_query}")

    check()
