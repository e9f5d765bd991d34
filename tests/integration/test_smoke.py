"""Smoke test of the foundation: real broker → faust agent → embedded ClickHouse → read back."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaProducer

pytestmark = pytest.mark.integration


async def _wait_for(predicate: Any, timeout_s: float) -> None:
    """Poll ``predicate`` until true or fail at the deadline (no bare sleeps as sync)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.05)


def test_messages_flow_through_a_faust_agent_into_clickhouse(
    kafka_broker: str, topic: str, unique: str, clickhouse: tuple[Any, str], tmp_path: Any
) -> None:
    client, db = clickhouse
    client.command(f"CREATE TABLE {db}.smoke (n UInt32, body String) ENGINE = MergeTree ORDER BY n")
    sent = 200

    app = faust.App(
        f"smoke-{unique}",
        broker=f"kafka://{kafka_broker}",
        store="memory://",
        web_enabled=False,
        datadir=str(tmp_path / "faust"),
        topic_partitions=4,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(topic, value_serializer="raw")
    received: list[bytes] = []

    @app.agent(source)
    async def collect(stream: Any) -> None:
        async for batch in stream.take(50, within=0.2):
            rows = [[int(v.split(b":")[0]), v.decode()] for v in batch]
            client.insert(f"{db}.smoke", rows, column_names=["n", "body"])
            received.extend(batch)

    async def scenario() -> None:
        await app.start()
        try:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_broker, acks="all")
            await producer.start()
            try:
                for i in range(sent):
                    await producer.send(topic, f"{i}:hello".encode(), key=str(i).encode())
                await producer.flush()
            finally:
                await producer.stop()
            await _wait_for(lambda: len(received) >= sent, timeout_s=60)
        finally:
            await app.stop()

    asyncio.run(scenario())

    count, distinct, total = client.query(
        f"SELECT count(), uniqExact(n), sum(n) FROM {db}.smoke WHERE body LIKE {{suffix:String}}",
        parameters={"suffix": "%:hello"},
    ).result_rows[0]
    assert count == sent
    assert distinct == sent
    assert total == sum(range(sent))
