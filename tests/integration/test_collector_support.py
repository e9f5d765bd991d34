"""Helpers of the collector's integration tests (a module without tests of its own).

The collector runs in-process on a real port, served from a background thread's event loop, so
that blocking clients (requests, the Segment library, schemathesis) and asyncio clients can both
talk to it; it produces to the session's real broker, on topics named for the test. Messages are
read back with a plain consumer and decoded with the project's Avro module.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import requests
from aiohttp import web
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import CollectorRegistry

from pipeline import avro
from pipeline.collector.server import build_collector
from pipeline.kafka_admin import TopicSpec, ensure_topics
from pipeline.localstack.kafka import free_port
from pipeline.settings import Settings, load_settings

WRITE_KEY = "test-write-key"
OTHER_KEY = "other-write-key"
FIXED_NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z: received_at is predictable
BASIC = requests.auth.HTTPBasicAuth(WRITE_KEY, "")


def collector_settings(bootstrap: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "write_keys": f"{WRITE_KEY}:web,{OTHER_KEY}:app",
        "collector_linger_ms": 5,
        "collector_delivery_timeout_s": 5,
        **extra,
    }
    return load_settings(**values)


@dataclass
class Topics:
    raw: str
    invalid: str


def make_topics(bootstrap: str, unique: str, raw_partitions: int = 1, **raw_config: str) -> Topics:
    topics = Topics(f"test.{unique}.raw", f"test.{unique}.invalid")
    ensure_topics(
        bootstrap,
        [TopicSpec(topics.raw, raw_partitions, config=raw_config), TopicSpec(topics.invalid, 1)],
    )
    return topics


class LiveCollector:
    """``build_collector`` served on 127.0.0.1:<free port> by a thread running its own loop."""

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        *,
        now: Callable[[], float] = lambda: FIXED_NOW,
    ) -> None:
        self.registry = CollectorRegistry()
        self.app = build_collector(
            settings, self.registry, raw_topic=topics.raw, invalid_topic=topics.invalid, now=now
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="collector", daemon=True)
        self._error: BaseException | None = None

    def _serve(self) -> None:
        async def main() -> None:
            runner = web.AppRunner(self.app, access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, "127.0.0.1", self.port).start()
                self._stop = asyncio.Event()
                self._ready.set()
                await self._stop.wait()
            finally:
                await runner.cleanup()

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start()/stop()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    def start(self, *, wait_healthy: bool = True, timeout_s: float = 30.0) -> LiveCollector:
        self._thread.start()
        self._ready.wait(timeout_s)
        if self._error is not None:
            raise self._error
        if wait_healthy:
            deadline = time.monotonic() + timeout_s
            while requests.get(self.url + "/healthz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "collector did not connect to Kafka"
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error is not None:
            raise self._error

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0


@contextmanager
def live_collector(
    settings: Settings, topics: Topics, *, wait_healthy: bool = True, **kwargs: Any
) -> Iterator[LiveCollector]:
    collector = LiveCollector(settings, topics, **kwargs).start(wait_healthy=wait_healthy)
    try:
        yield collector
    finally:
        collector.stop()


def read_records(
    bootstrap: str, topic: str, count: int, timeout_s: float = 20.0
) -> list[ConsumerRecord]:
    """The first ``count`` records of ``topic`` (all partitions), or fail at the deadline."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=200,
    )
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count:
            assert time.monotonic() < deadline, f"{len(records)} of {count} records on {topic}"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def read_event_records(
    bootstrap: str, topic: str, count: int, timeout_s: float = 20.0
) -> list[tuple[ConsumerRecord, list[Any]]]:
    """EventBatch records with their decoded events, until ``count`` events were read."""
    out: list[tuple[ConsumerRecord, list[Any]]] = []
    seen = 0
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while seen < count:
            assert time.monotonic() < deadline, f"{seen} of {count} events on {topic}"
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    events = avro.decode_batch(record.value)
                    out.append((record, events))
                    seen += len(events)
    finally:
        consumer.close()
    return out


def read_events(bootstrap: str, topic: str, count: int, timeout_s: float = 20.0) -> list[Any]:
    """The first ``count`` events of ``topic`` (in partition order)."""
    records = read_event_records(bootstrap, topic, count, timeout_s)
    return [event for _, events in records for event in events]


def present_records(bootstrap: str, topic: str, wait_ms: int = 1000) -> list[ConsumerRecord]:
    """Every record there is now: for checking that nothing (else) was written."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    try:
        return [r for batch in consumer.poll(timeout_ms=wait_ms).values() for r in batch]
    finally:
        consumer.close()


def read_dead_letters(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_records(bootstrap, topic, count)]
