"""Kill the worker with SIGKILL mid-stream, restart it, and compare with an uninterrupted run.

Delivery guarantee under test: exactly-once inside Kafka (faust ``exactly_once``: table
changelogs, outputs and input offsets commit in one transaction; readers use ``read_committed``).
At-least-once is not enough here: a crash between a table write reaching its changelog and the
matching output reaching its topic would lose the output for good, because the replayed event
finds the identifier already known and emits nothing. What must hold: every event is resolved
(nothing lost), every event's final customer and every identifier's customer equal those of the
uninterrupted run (the pure engine over the same log), and no customer is split or duplicated.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline import avro
from pipeline.identity.engine import IdentityEngine
from pipeline.localstack.kafka import stop_process
from pipeline.settings import TOPIC_IDENTITY_CHANGES, TOPIC_RESOLVED, Settings
from tests.integration.worker_harness import (
    event,
    produce_batches,
    start_worker_process,
    wait_until,
    worker_settings,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,  # about two minutes: two worker start-ups and a table rebuild
]


def synthetic_log(seed: int, people: int, events: int) -> list[dict[str, Any]]:
    """People with 1–3 cookies, most of whom log in and some give an email, in random order."""
    rng = random.Random(seed)
    persons = []
    for p in range(people):
        ids: list[tuple[str, str]] = [
            ("anonymous_id", f"c{p}-{k}") for k in range(rng.randint(1, 3))
        ]
        if rng.random() < 0.7:
            ids.append(("user_id", f"u{p}"))
        if rng.random() < 0.4:
            ids.append(("email", f"p{p}@example.com"))
        persons.append(ids)
    log = []
    for i in range(events):
        ids = persons[rng.randrange(people)]
        cookie = rng.choice([x for x in ids if x[0] == "anonymous_id"])
        known = [x for x in ids if x[0] != "anonymous_id"]
        extra = [rng.choice(known)] if known and rng.random() < 0.3 else []
        log.append(event(f"e{i:06d}", 1_700_000_000_000 + i * 1000, [cookie, *extra]))
    return log


class Observed:
    """What the worker wrote: resolved events and identity changes, read from Kafka."""

    def __init__(self) -> None:
        self.event_customers: dict[str, set[str]] = defaultdict(set)
        self.identifiers: dict[str, tuple[int, str]] = {}  # key → (version, customer)
        self.merges: dict[str, str] = {}

    def add(self, topic: str, value: bytes) -> None:
        if topic.endswith(TOPIC_RESOLVED):
            for item in avro.decode_resolved(value)["events"]:
                self.event_customers[item["event"]["event_id"]].add(item["customer_id"])
            return
        for change in orjson.loads(value):
            if change["kind"] == "identifier":
                key = f"{change['id_type']}:{change['id_value']}"
                version = change["version"]
                if key not in self.identifiers or self.identifiers[key][0] <= version:
                    self.identifiers[key] = (version, change["customer_id"])
            elif change["kind"] == "merge":
                self.merges[change["loser"]] = change["survivor"]

    def final(self, customer: str) -> str:
        seen = 0
        while customer in self.merges and seen < 1000:
            customer, seen = self.merges[customer], seen + 1
        return customer


async def observe(settings: Settings, sink: Observed, stop: asyncio.Event) -> None:
    """Read both output topics until ``stop`` is set, then drain them to their end offsets."""
    consumer = AIOKafkaConsumer(
        settings.topic(TOPIC_RESOLVED),
        settings.topic(TOPIC_IDENTITY_CHANGES),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        drained = False
        while not drained:
            if stop.is_set():
                # The worker has stopped: read up to the last stable offsets, then finish.
                ends = await consumer.end_offsets(list(consumer.assignment()))
                positions = {tp: await consumer.position(tp) for tp in ends}
                drained = all(positions[tp] >= end for tp, end in ends.items())
            records = await consumer.getmany(timeout_ms=200)
            for tp, messages in records.items():
                for message in messages:
                    # Skip the profile processor's re-addressed copies: only identity's
                    # outputs are under test.
                    if ("cdp-origin", b"profile") not in (message.headers or ()):
                        sink.add(tp.topic, message.value)
    finally:
        await consumer.stop()


async def paced(batches: list[list[dict[str, Any]]], per_s: float) -> AsyncIterator[Any]:
    """The batches at ``per_s`` a second (a steady input stream, not a pause for syncing)."""
    for i, batch in enumerate(batches):
        if i:
            await asyncio.sleep(1 / per_s)
        yield batch


def test_sigkill_mid_stream_then_restart_equals_an_uninterrupted_run(
    kafka_broker: str, unique: str, tmp_path: Path
) -> None:
    settings = worker_settings(
        kafka_broker,
        unique,
        tmp_path / "run",
        faust_store="rocksdb://",  # the production store: RocksDB plus changelog
        clickhouse_dsn=f"chdb://{tmp_path / 'worker-clickhouse'}",
    )
    log = synthetic_log(seed=7, people=300, events=5_000)
    batches = [log[i : i + 10] for i in range(0, len(log), 10)]

    reference = IdentityEngine(settings.identity_config)
    expected_customer = {}
    for e in log:
        expected_customer[e["event_id"]] = reference.resolve(
            [(i["type"], i["value"]) for i in e["identifiers"]], e["timestamp"]
        ).customer_id
    expected_final = {eid: reference.resolve_customer(c) for eid, c in expected_customer.items()}

    observed = Observed()
    kills = 0

    async def scenario() -> None:
        nonlocal kills
        stop = asyncio.Event()
        watcher = asyncio.create_task(observe(settings, observed, stop))
        # An eighth up front; the rest as a steady stream (~500 events/s) once the worker has
        # resolved some, so the kill (at a quarter) lands mid-stream however fast the worker
        # is: with everything up front it could resolve the whole log before the kill.
        head = len(batches) // 8
        await produce_batches(settings, batches[:head])
        worker = start_worker_process(settings, tmp_path / "worker-1.log")
        try:
            await wait_until(
                lambda: len(observed.event_customers) >= len(log) // 16,
                120,
                "some resolved",
                worker,
            )
            rest = asyncio.create_task(produce_batches(settings, paced(batches[head:], per_s=50)))
            await wait_until(
                lambda: len(observed.event_customers) >= len(log) // 4,
                120,
                "a quarter resolved",
                worker,
            )
            os.killpg(worker.pid, signal.SIGKILL)  # abrupt: no commit, no flush
            worker.wait(timeout=30)
            kills += 1
            assert len(observed.event_customers) < len(log), "finished before the kill"
            worker = start_worker_process(settings, tmp_path / "worker-2.log")
            await asyncio.wait_for(rest, 120)  # the whole log is in the raw topic
            try:
                await wait_until(
                    lambda: len(observed.event_customers) == len(log),
                    180,
                    "every event resolved",
                    worker,
                )
            except AssertionError as exc:  # say which events, for the next diagnosis
                missing = sorted(set(expected_final) - set(observed.event_customers))
                raise AssertionError(
                    f"{exc}: {len(missing)} of {len(log)} never seen, e.g. {missing[:5]}"
                ) from exc
        finally:
            stop_process(worker.pid, 30)  # SIGTERM: the last transaction commits
            stop.set()
            await asyncio.wait_for(watcher, 60)

    asyncio.run(scenario())
    assert kills == 1

    # Nothing lost, and every event ends with the customer the uninterrupted run gives it.
    assert set(observed.event_customers) == set(expected_final)
    wrong = {
        eid: (sorted(cs), expected_final[eid])
        for eid, cs in observed.event_customers.items()
        if {observed.final(c) for c in cs} != {expected_final[eid]}
    }
    assert not wrong, f"{len(wrong)} events on another customer, e.g. {next(iter(wrong.items()))}"
    # The identity graph: every identifier on the same customer, no split or duplicate.
    expected_ids = {
        key: reference.resolve_customer(cid) for key, cid in reference.state.identifiers.items()
    }
    observed_ids = {key: observed.final(cid) for key, (_, cid) in observed.identifiers.items()}
    assert observed_ids == expected_ids
    assert len(set(observed_ids.values())) == len(set(expected_ids.values()))
