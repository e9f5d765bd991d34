"""Consumer lag on a transactional topic, against the real broker: markers are not lag."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipeline.lag import KafkaOffsetSource, PartitionLag, compute_lag

pytestmark = pytest.mark.integration


async def _transaction(bootstrap: str, topic: str, values: list[bytes], commit: bool) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}-tx")
    await producer.start()
    try:
        await producer.begin_transaction()
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
        if commit:
            await producer.commit_transaction()
        else:
            await producer.abort_transaction()
    finally:
        await producer.stop()


async def _consume_and_commit(bootstrap: str, topic: str, group: str, expect: int) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        got: list[int] = []
        async with asyncio.timeout(30):
            while len(got) < expect:
                records = await consumer.getmany(tp, timeout_ms=200)
                got += [r.offset for r in records.get(tp, [])]
        # What faust and the sink commit: the offset after the last record processed.
        await consumer.commit({tp: got[-1] + 1})
    finally:
        await consumer.stop()


def test_a_caught_up_group_has_no_lag_behind_transaction_markers(
    kafka_broker: str, topic: str, unique: str
) -> None:
    group = f"lag-{unique}"
    source = KafkaOffsetSource(kafka_broker)
    try:

        def lag() -> int:
            lags = compute_lag(source, {group: [topic]})
            return next(x.lag for x in lags if x.partition == 0)

        asyncio.run(_transaction(kafka_broker, topic, [b"a", b"b", b"c"], commit=True))
        asyncio.run(_consume_and_commit(kafka_broker, topic, group, expect=3))
        # Offsets 0-2 records, 3 the commit marker; the group committed 3.
        assert lag() == 0
        # An aborted transaction: its records and marker are never delivered either.
        asyncio.run(_transaction(kafka_broker, topic, [b"x", b"y"], commit=False))
        assert lag() == 0
        # A committed record the group has not read is lag. Reported as end - committed, so
        # the markers and aborted records before it count too while real records wait.
        asyncio.run(_transaction(kafka_broker, topic, [b"d"], commit=True))
        assert lag() == 6  # offsets 3 (marker), 4-5 (aborted), 6 (marker), 7 (d), 8 (marker)
        assert PartitionLag(group, topic, 1, 0) in compute_lag(source, {group: [topic]})
    finally:
        source.close()
