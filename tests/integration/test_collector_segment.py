"""The Segment Python library, unmodified, pointed at the collector: SDK compatibility."""

from __future__ import annotations

from typing import Any

import pytest
import segment.analytics as analytics
from segment.analytics.client import Client

from tests.integration.test_collector_support import (
    WRITE_KEY,
    collector_settings,
    live_collector,
    make_topics,
    read_events,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "usage", ["module, queued, flush", "client, sync_mode, gzip"], ids=["module", "client"]
)
def test_segment_python_library_works_unmodified(
    kafka_broker: str, unique: str, usage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique)
    errors: list[Any] = []
    with live_collector(settings, topics) as collector:
        if usage.startswith("module"):
            # The documented way: configure the module, let its thread send batches, flush.
            monkeypatch.setattr(analytics, "default_client", None)
            monkeypatch.setattr(analytics, "write_key", WRITE_KEY)
            monkeypatch.setattr(analytics, "host", collector.url)
            monkeypatch.setattr(analytics, "on_error", lambda error, batch: errors.append(error))
            client: Any = analytics
        else:
            client = Client(
                WRITE_KEY,
                host=collector.url,
                sync_mode=True,
                gzip=True,
                on_error=lambda error, batch: errors.append(error),
            )
        client.identify("u-1", {"email": "Ann@Example.com", "name": "Ann"})
        client.track("u-1", "Order Completed", {"order_id": "o-1", "revenue": 9.5})
        client.page("u-1", category="Docs", name="Install", properties={"url": "https://x/d"})
        client.screen("u-1", name="Home")
        client.group("u-1", "acme", {"plan": "pro"})
        client.alias("a-1", "u-1")
        client.track(anonymous_id="a-2", event="Viewed")
        client.flush()
        if client is analytics:
            analytics.shutdown()
        events = read_events(kafka_broker, topics.raw, 7)
    assert errors == []
    assert [e["type"] for e in events] == [
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
        "track",
    ]
    assert all(e["source"] == "web" for e in events)
    assert all(e["context"]["library"].startswith("analytics-python/") for e in events)
    assert {"type": "email", "value": "ann@example.com"} in events[0]["identifiers"]
    assert events[1]["event"] == "Order Completed"
    assert (events[5]["user_id"], events[5]["previous_id"]) == ("u-1", "a-1")
    assert events[6]["anonymous_id"] == "a-2"
    # The SDK's messageId and timestamp travel through.
    assert all(len(e["event_id"]) == 36 for e in events)
    assert all(e["original_timestamp"] is not None for e in events)
