"""Which topics the ClickHouse sink reads, and into which tables their records go."""

from __future__ import annotations

import time
from typing import Any

import orjson

from pipeline import settings as s
from pipeline.avro_reader import decode_resolved_fast
from pipeline.metrics import WorkerMetrics
from pipeline.profile.stage import PROFILE_SINK_COLUMNS, profile_change_rows
from pipeline.sink.clickhouse import TableSink
from pipeline.sink.rows import (
    EVENT_COLUMNS,
    IDENTITY_COLUMNS,
    MERGE_COLUMNS,
    REFUSAL_COLUMNS,
    change_rows,
    event_row,
)
from pipeline.sink.service import FlushGroup, SinkConfig, SinkService

#: Longest wait of the lookup tables' rows (identities, merges, profiles) for their insert.
LOOKUPS_FLUSH_INTERVAL_S = 0.5


def build_sink_service(settings: s.Settings, client: Any, metrics: WorkerMetrics) -> SinkService:
    db = settings.clickhouse_database
    events = TableSink(client, db, "events", EVENT_COLUMNS, metrics)
    identities = TableSink(client, db, "identities", IDENTITY_COLUMNS, metrics)
    merges = TableSink(client, db, "customer_merges", MERGE_COLUMNS, metrics)
    refusals = TableSink(client, db, "identity_refusals", REFUSAL_COLUMNS, metrics)
    profiles = TableSink(client, db, "profiles", PROFILE_SINK_COLUMNS, metrics)
    received: list[int] = []

    def on_resolved(value: bytes) -> None:
        batch = decode_resolved_fast(value)
        rows = []
        for item in batch["events"]:
            event = item["event"]
            rows.append(event_row(item["customer_id"], event))
            received.append(event["received_at"])
        events.add(rows)

    def on_changes(value: bytes) -> None:
        identity_rows, merge_rows, refusal_rows = change_rows(orjson.loads(value))
        identities.add(identity_rows)
        merges.add(merge_rows)
        refusals.add(refusal_rows)

    def on_flushed() -> None:
        # End-to-end latency: the collector's receipt (≈ its acknowledgement) to the row in
        # ClickHouse, observed once the insert has returned.
        now_ms = time.time() * 1000
        observe = metrics.e2e_latency.observe
        for at in received:
            observe(max(0.0, (now_ms - at) / 1000))
        received.clear()

    changes_topic = settings.topic(s.TOPIC_PROFILE_CHANGES)
    lookups = FlushGroup(
        "lookups",
        handlers={
            settings.topic(s.TOPIC_IDENTITY_CHANGES): on_changes,
            # Rows of several customers per message; the table's version makes replays harmless.
            changes_topic: lambda value: profiles.add(profile_change_rows(value)),
        },
        # What a lookup by email reads (an identifier's customer, merges, the profile; kept by
        # materialized views on these three), inserted before the refusals nobody waits for.
        sinks=[identities, merges, profiles, refusals],
        interval_s=LOOKUPS_FLUSH_INTERVAL_S,
        # Flushed as soon as the profile rows have caught up: identity's rows for the same
        # events come before them, and a profile is only found once both are in.
        eager_topics=frozenset({changes_topic}),
    )
    timeline = FlushGroup(
        "events",
        handlers={settings.topic(s.TOPIC_RESOLVED): on_resolved},
        sinks=[events],
        interval_s=settings.sink_events_flush_s,
        on_flushed=on_flushed,
    )
    config = SinkConfig(bootstrap=settings.kafka_bootstrap, group_id=f"{settings.worker_id}-sink")
    return SinkService(config, [lookups, timeline])
