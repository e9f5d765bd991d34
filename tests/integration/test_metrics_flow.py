"""Metrics move with real traffic: collector → Kafka → worker (in-process) → chDB.

The collector runs in-process on a real port (tests/integration/test_collector_support.py) and
produces to the worker's raw topic on the session broker; the worker is ``create_app`` with a
registry of the test's own, so every figure is read back from the registries the ``/metrics``
endpoints serve. The lag monitor runs at a short interval so "lag back to zero" is seen quickly.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry

from pipeline.settings import TOPIC_INVALID, TOPIC_RAW
from tests.integration.test_collector_support import (
    BASIC,
    Topics,
    collector_settings,
    live_collector,
)
from tests.integration.worker_harness import wait_until, worker_settings

pytestmark = pytest.mark.integration

USERS = 5
EVENTS_PER_USER = 4
SENT = USERS * EVENTS_PER_USER


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _lags(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["group"], s.labels["topic"], s.labels["partition"]): s.value
        for metric in registry.collect()
        if metric.name == "cdp_consumer_lag"
        for s in metric.samples
    }


def _batch() -> dict[str, Any]:
    """SENT valid events (distinct users: no merges, so each event is applied once) + 1 bad."""
    messages: list[dict[str, Any]] = [
        {
            "type": "track",
            "userId": f"user-{u}",
            "event": "Order Completed" if e == 0 else "Product Viewed",
            "properties": {"order_id": f"o-{u}", "revenue": 10 * (u + 1)} if e == 0 else {},
            "messageId": f"m-{u}-{e}",
        }
        for u in range(USERS)
        for e in range(EVENTS_PER_USER)
    ]
    messages.append({"type": "track", "userId": "user-x"})  # no event name: invalid
    return {"batch": messages}


def test_metrics_follow_traffic_through_collector_and_worker(
    kafka_broker: str,
    unique: str,
    clickhouse: tuple[Any, str],
    chdb_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.lag
    from pipeline.worker.app import create_app

    monkeypatch.setattr(pipeline.lag, "DEFAULT_INTERVAL_S", 0.3)
    client, db = clickhouse
    settings = worker_settings(
        kafka_broker,
        unique,
        tmp_path,
        clickhouse_dsn=f"chdb://{chdb_path}",
        clickhouse_database=db,
    )
    worker = CollectorRegistry()
    app = create_app(settings, worker)  # with faust's own sensor beside ours
    topics = Topics(settings.topic(TOPIC_RAW), settings.topic(TOPIC_INVALID))
    sink_group = f"{settings.worker_id}-sink"

    def events_in_clickhouse() -> int:
        sql = f"SELECT count() FROM {db}.events"
        return int(client.query(sql).result_rows[0][0])

    async def scenario() -> None:
        await app.start()
        try:
            with live_collector(collector_settings(kafka_broker), topics, now=time.time) as edge:
                # Before any traffic: the monitor reports the sink's partitions, all at zero.
                await wait_until(
                    lambda: any(g == sink_group for g, _, _ in _lags(worker)),
                    30,
                    "lag gauges of the sink's group",
                )
                answer = await asyncio.to_thread(
                    requests.post, edge.url + "/v1/batch", json=_batch(), auth=BASIC, timeout=30
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["accepted"] == SENT
                malformed = await asyncio.to_thread(
                    requests.post,
                    edge.url + "/v1/track",
                    data=b"{not json",
                    headers={"Content-Type": "application/json"},
                    auth=BASIC,
                    timeout=30,
                )
                assert malformed.status_code == 400

                accepted = sum(
                    _value(edge.registry, "cdp_events_accepted_total", source="web", type=t)
                    for t in ("track",)
                )
                assert accepted == SENT
                assert _value(edge.registry, "cdp_events_rejected_total", reason="invalid") == 1
                assert _value(edge.registry, "cdp_events_rejected_total", reason="malformed") == 1

            # A message no stage can read, straight onto the raw topic: a worker dead letter.
            await _produce_raw(settings, b"\x00 not avro")

            await wait_until(lambda: events_in_clickhouse() == SENT, 45, "events in ClickHouse")
            await wait_until(
                lambda: _value(worker, "cdp_sink_rows_total", table="events") == SENT,
                15,
                "sink rows of the events table",
            )
            await wait_until(
                lambda: _value(worker, "cdp_agent_events_total", agent="profile") == SENT,
                15,
                "events applied by the profile agent",
            )
            await wait_until(
                lambda: (
                    _value(
                        worker,
                        "cdp_dead_letters_total",
                        stage="identity",
                        reason="undecodable raw message",
                    )
                    == 1
                ),
                15,
                "the identity dead letter",
            )
            # Lag back to zero for every partition of both groups, once everything committed.
            await wait_until(
                lambda: (lags := _lags(worker)) != {} and all(v == 0 for v in lags.values()),
                30,
                "consumer lag back to zero",
            )
        finally:
            await app.stop()

    asyncio.run(scenario())

    assert _value(worker, "cdp_agent_events_total", agent="identity") == SENT
    assert _value(worker, "cdp_agent_events_total", agent="profile") == SENT
    assert _value(worker, "cdp_e2e_latency_seconds_count") >= SENT
    assert _value(worker, "cdp_sink_failures_total", table="events") == 0
    # Seconds-scale end to end: the acknowledgement to the row took well under the 10 s alert.
    assert _value(worker, "cdp_e2e_latency_seconds_bucket", le="10.0") == _value(
        worker, "cdp_e2e_latency_seconds_count"
    )
    lags = _lags(worker)
    groups = {group for group, _, _ in lags}
    assert groups == {settings.worker_id, sink_group}
    assert (settings.worker_id, topics.raw, "0") in lags
    assert (sink_group, settings.topic("cdp.events.resolved"), "0") in lags
    assert _value(worker, "cdp_consumer_lag_updated_timestamp_seconds") > 0
    assert _value(worker, "cdp_consumer_lag_errors_total") == 0
    assert _value(worker, "cdp_event_loop_lag_seconds_count") >= 1
    # faust counts Kafka messages (batches), at least the one the collector wrote and the bad one.
    assert _value(worker, "cdp_faust_messages_received_total") >= 2


async def _produce_raw(settings: Any, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(TOPIC_RAW), value)
    finally:
        await producer.stop()
