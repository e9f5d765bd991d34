"""Faust agents that write the pipeline's topics into ClickHouse in batches.

Each agent buffers with ``stream.take(max_rows, within=flush_s)``: faust acknowledges the buffered
messages only after the loop body (which flushed the rows) returns, so offsets are committed
only for rows that reached ClickHouse (at-least-once; the tables absorb replays).
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from pipeline import avro
from pipeline import settings as s
from pipeline.metrics import WorkerMetrics
from pipeline.sink.clickhouse import TableSink
from pipeline.sink.rows import (
    EVENT_COLUMNS,
    IDENTITY_COLUMNS,
    MERGE_COLUMNS,
    REFUSAL_COLUMNS,
    change_rows,
    event_row,
)

#: Messages per flush (each message is a batch of events) and the longest a row waits.
TAKE_MESSAGES = 200
FLUSH_WITHIN_S = 0.5


def register_sinks(
    app: faust.App, settings: s.Settings, client: Any, metrics: WorkerMetrics
) -> list[Any]:
    db = settings.clickhouse_database
    resolved = app.topic(
        settings.topic(s.TOPIC_RESOLVED),
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    changes = app.topic(
        settings.topic(s.TOPIC_IDENTITY_CHANGES), value_serializer="raw", partitions=1
    )
    events_sink = TableSink(client, db, "events", EVENT_COLUMNS, metrics)
    identities_sink = TableSink(client, db, "identities", IDENTITY_COLUMNS, metrics)
    merges_sink = TableSink(client, db, "customer_merges", MERGE_COLUMNS, metrics)
    refusals_sink = TableSink(client, db, "identity_refusals", REFUSAL_COLUMNS, metrics)
    e2e = metrics.e2e_latency

    @app.agent(resolved, name="sink-events")
    async def sink_events(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(TAKE_MESSAGES, within=FLUSH_WITHIN_S):
            received: list[int] = []
            for value in values:
                batch = avro.decode_resolved(value)
                for item in batch["events"]:
                    event = item["event"]
                    events_sink.add((event_row(item["customer_id"], event),))
                    received.append(event["received_at"])
            events_sink.flush()
            now_ms = time.time() * 1000
            for at in received:
                e2e.observe(max(0.0, (now_ms - at) / 1000))

    @app.agent(changes, name="sink-identity")
    async def sink_identity(stream: faust.StreamT[bytes]) -> None:
        async for values in stream.take(TAKE_MESSAGES, within=FLUSH_WITHIN_S):
            for value in values:
                identities, merges, refusals = change_rows(orjson.loads(value))
                identities_sink.add(identities)
                merges_sink.add(merges)
                refusals_sink.add(refusals)
            identities_sink.flush()
            merges_sink.flush()
            refusals_sink.flush()

    return [sink_events, sink_identity]
