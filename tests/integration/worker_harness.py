"""Helpers to run the worker against the session broker, in-process or as a subprocess."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline import avro
from pipeline.kafka_admin import ensure_topics, pipeline_topics
from pipeline.localstack.kafka import free_port
from pipeline.settings import TOPIC_RAW, Settings

_CONTEXT = next(f for f in avro.load_schema_json("event")["fields"] if f["name"] == "context")
CONTEXT_FIELDS = tuple(f["name"] for f in _CONTEXT["type"]["fields"])


def worker_settings(bootstrap: str, unique: str, data_dir: Path, **extra: Any) -> Settings:
    """Settings of an isolated worker: own topics, consumer group, data dir and API port."""
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"t{unique}.",
        "worker_id": f"cdp-worker-{unique}",
        "data_dir": data_dir,
        "api_port": free_port(),
        "topic_partitions": 4,
        "faust_store": "memory://",
        **extra,
    }
    settings = Settings(**values)
    ensure_topics(bootstrap, pipeline_topics(settings))
    return settings


def env_of(settings: Settings) -> dict[str, str]:
    """The CDP_* environment that reproduces ``settings`` in a child process."""
    return settings.child_env()


def event(
    eid: str,
    ts: int,
    ids: Iterable[tuple[str, str]],
    *,
    type_: str = "track",
    name: str | None = "Page Viewed",
    properties: str = "{}",
    received_at: int | None = None,
) -> dict[str, Any]:
    """A minimal valid Event record (as the collector would produce it)."""
    ids = list(ids)
    by_type = dict(ids)
    return {
        "event_id": eid,
        "type": type_,
        "event": name,
        "anonymous_id": by_type.get("anonymous_id"),
        "user_id": by_type.get("user_id"),
        "previous_id": None,
        "group_id": None,
        "identifiers": [{"type": t, "value": v} for t, v in ids],
        "timestamp": ts,
        "original_timestamp": None,
        "received_at": received_at if received_at is not None else int(time.time() * 1000),
        "sent_at": None,
        "source": "test",
        "properties": properties,
        "traits": "{}",
        "context": dict.fromkeys(CONTEXT_FIELDS),
        "enrichment": {
            "device_type": "desktop",
            "os": None,
            "browser": None,
            "is_bot": False,
            "channel": "direct",
        },
        "consent": [],
    }


async def produce_batches(
    settings: Settings,
    batches: Iterable[list[dict[str, Any]]] | AsyncIterable[list[dict[str, Any]]],
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    topic = settings.topic(TOPIC_RAW)
    try:
        if isinstance(batches, AsyncIterable):
            async for batch in batches:
                await producer.send(topic, avro.encode_batch(batch))
        else:
            for batch in batches:
                await producer.send(topic, avro.encode_batch(batch))
        await producer.flush()
    finally:
        await producer.stop()


async def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll ``predicate`` with a deadline; fail naming ``what`` (no sleeps as synchronisation).

    With ``process``, fail at once if it exits instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited ({process.returncode}) waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


def start_worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker"],
            env=env_of(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def new_id() -> str:
    return uuid.uuid4().hex
