"""The profile processor through the real broker into the embedded ClickHouse ``profiles``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from pipeline.partitioning import partition_for
from pipeline.settings import TOPIC_RESOLVED, Settings
from tests.integration.worker_harness import event, produce_batches, wait_until

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
COOKIE_A = ("anonymous_id", "cookie-a")  # the laptop: anonymous browsing first
COOKIE_B = ("anonymous_id", "cookie-b")  # the phone: where alice logs in
ALICE = ("user_id", "alice")
EMAIL = ("email", "alice@example.com")
ORDER = orjson.dumps({"order_id": "o-1", "revenue": 25.0, "currency": "USD"}).decode()


def page(eid: str, at_s: int, *ids: tuple[str, str]) -> dict[str, Any]:
    return event(eid, T0 + at_s * 1000, ids, type_="page", name="Home")


def order(eid: str, at_s: int) -> dict[str, Any]:
    return event(eid, T0 + at_s * 1000, [COOKIE_B, ALICE], name="Order Completed", properties=ORDER)


async def send_garbage(settings: Settings, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(TOPIC_RESOLVED), b"\x00not avro", partition=partition
        )
    finally:
        await producer.stop()


def live_profiles(client: Any, db: str) -> list[tuple[Any, ...]]:
    return client.query(
        f"SELECT customer_id, page_views, orders, revenue, first_seen, emails, user_ids, "
        f"merged_from FROM {db}.profiles FINAL"
    ).result_rows


def test_merge_folds_anonymous_history_orders_count_once_late_event_lands(
    local_worker_settings: Callable[..., Settings],
    clickhouse: tuple[Any, str],
) -> None:
    from pipeline.worker.app import create_app

    client, db = clickhouse
    settings = local_worker_settings(
        topic_partitions=4,
        faust_store="rocksdb://",  # the production store: values go through the serializers
    )
    batches = [
        # Anonymous page views on the laptop.
        [page("p1", 1, COOKIE_A), page("p2", 2, COOKIE_A), page("p3", 3, COOKIE_A)],
        # Alice logs in on her phone (a customer of its own) and orders; the SDK resends the
        # order as a new message.
        [
            event("i1", T0 + 100_000, [COOKIE_B, ALICE, EMAIL], type_="identify", name=None),
            order("o1", 110),
            order("o1-resent", 111),
        ],
        # She logs in on the laptop: the two customers merge; the laptop's, seen first, survives.
        [event("i2", T0 + 200_000, [COOKIE_A, ALICE], type_="identify", name=None)],
        # Last to arrive: a page view from the phone, older than everything, and a redelivery of
        # the first order message.
        [page("p0", -50, COOKIE_B), order("o1", 110)],
    ]
    registry = CollectorRegistry()
    app = create_app(settings, registry)

    def settled() -> bool:
        # The survivor's own page views arrive without the fold: wait for the fold too (orders
        # and merged_from come only from the loser).
        rows = live_profiles(client, db)
        return len(rows) == 1 and rows[0][1] == 4 and rows[0][2] == 1 and bool(rows[0][7])

    async def scenario() -> None:
        await app.start()
        try:
            await send_garbage(settings, partition=3)  # ahead of the survivor's updates
            await produce_batches(settings, batches)
            await wait_until(settled, 45, "one live profile with the loser folded in")
        finally:
            await app.stop()

    asyncio.run(scenario())

    merges = client.query(f"SELECT loser, survivor FROM {db}.customer_merges").result_rows
    assert len(merges) == 1
    loser, survivor = merges[0]
    # The ids are deterministic (uuid5): the fold crossed partitions through Kafka.
    assert partition_for(loser, 4) != partition_for(survivor, 4) == 3
    [(customer_id, page_views, orders, revenue, first_seen, emails, user_ids, merged_from)] = (
        live_profiles(client, db)
    )
    assert customer_id == survivor
    assert (page_views, orders, float(revenue)) == (4, 1, 25.0)
    assert first_seen.replace(tzinfo=UTC) == datetime.fromtimestamp((T0 - 50_000) / 1000, UTC)
    assert (emails, user_ids, merged_from) == (["alice@example.com"], ["alice"], [loser])
    latest = dict(
        client.query(
            f"SELECT customer_id, argMax(is_deleted, version) FROM {db}.profiles "
            f"GROUP BY customer_id"
        ).result_rows
    )
    assert latest == {survivor: 0, loser: 1}
    # The undecodable message was dead-lettered and the agent carried on.
    labels = {"stage": "profile", "reason": "undecodable resolved message"}
    assert registry.get_sample_value("cdp_dead_letters_total", labels) == 1
