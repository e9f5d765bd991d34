"""Event rows as the sink builds them land in ClickHouse with exact values (real chDB)."""

from __future__ import annotations

from typing import Any

from pipeline.sink.clickhouse import TableSink
from pipeline.sink.rows import EVENT_COLUMNS, event_row
from pipeline.storage.migrate import migrate


def test_event_rows_keep_millisecond_timestamps(clickhouse: tuple[Any, str]) -> None:
    client, db = clickhouse
    migrate(client, db)
    event = {
        "event_id": "e-1",
        "type": "track",
        "event": "Order Completed",
        "timestamp": 1_700_000_000_123,  # 2023-11-14T22:13:20.123Z
        "received_at": 1_700_000_001_999,
        "identifiers": [],
        "context": {"page_url": "https://shop.example/", "ip": "1.2.3.0"},
        "enrichment": {"device_type": "desktop", "is_bot": False},
        "consent": ["analytics"],
    }
    sink = TableSink(client, db, "events", EVENT_COLUMNS)
    sink.add([event_row("c-1", event)])
    assert sink.flush() == 1
    row = client.query(
        f"SELECT toUnixTimestamp64Milli(timestamp), toUnixTimestamp64Milli(received_at), "
        f"toString(timestamp), customer_id, page_url, consent FROM {db}.events"
    ).result_rows
    assert row == [
        (
            1_700_000_000_123,
            1_700_000_001_999,
            "2023-11-14 22:13:20.123",
            "c-1",
            "https://shop.example/",
            ["analytics"],
        )
    ]
