"""The collector's side of Kafka: the idempotent producer, partition choice and dead letters.

:class:`KafkaGateway` owns one ``AIOKafkaProducer`` (acks=all, idempotent) and connects it in
the background, retrying while Kafka is down, so the collector starts (and answers 503 with
``Retry-After``) without Kafka instead of crash-looping. Accepted events go through a
:class:`~pipeline.collector.batcher.Batcher`; dead letters go to the invalid topic as plain JSON
messages, best effort (the client already got the reason in its response): they are queued
without waiting for an acknowledgement, and dropped (and counted) when the queue is full or Kafka
is unreachable, so a flood of bad input cannot hold memory or slow good input down.

Partition choice: ``crc32(person key) % partitions`` of the raw topic (the count read from the
cluster's metadata and refreshed), where the person key is the user id, else the anonymous id,
so one person's events keep their order. Each Kafka message is an ``EventBatch`` of events bound
for one partition; it has no key (it holds many people) and a ``cdp-schema-fingerprint`` header
with the CRC-64-AVRO fingerprint of the schema it was written with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.avro import BATCH_SCHEMA_FINGERPRINT
from pipeline.collector.batcher import Batcher, BatchLimits, DeliveryError
from pipeline.metrics import CollectorMetrics
from pipeline.partitioning import partition_for
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SCHEMA_HEADER = "cdp-schema-fingerprint"
MAX_QUEUED_DEAD_LETTERS = 10_000
# Kafka's own limit on one request (and the broker's default message.max.bytes is just above):
# a producer-side record batch may hold several of our EventBatch messages up to this size.
_PRODUCER_BATCH_BYTES = 1_000_000
_PARTITIONS_REFRESH_S = 30.0
_RECONNECT_MAX_S = 5.0


def person_key(event: dict[str, Any]) -> str:
    """Whose event this is, for partitioning: user id, else anonymous id, else any identifier.

    Events without any identifier cannot belong to anybody's ordered history; their own id
    spreads them.
    """
    key = event.get("user_id") or event.get("anonymous_id")
    if key:
        return str(key)
    identifiers = event.get("identifiers") or ()
    if identifiers:
        return str(identifiers[0]["value"])
    return str(event["event_id"])


class KafkaGateway:
    """Producer lifecycle, the event batcher and the dead-letter queue of one collector."""

    def __init__(
        self,
        settings: Settings,
        *,
        raw_topic: str,
        invalid_topic: str,
        metrics: CollectorMetrics,
        client_id: str = "cdp-collector",
    ) -> None:
        self._settings = settings
        self.raw_topic = raw_topic
        self.invalid_topic = invalid_topic
        self._metrics = metrics
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 0
        self._headers = [(SCHEMA_HEADER, BATCH_SCHEMA_FINGERPRINT.encode())]
        self.delivery_timeout_s = settings.collector_delivery_timeout_s
        self.batcher = Batcher(
            self._send_batch,
            BatchLimits(
                linger_s=settings.collector_linger_ms / 1000,
                max_events=settings.collector_batch_max_events,
                max_bytes=settings.collector_batch_max_bytes,
                max_pending_bytes=settings.collector_max_pending_mb * 1024 * 1024,
                delivery_timeout_s=settings.collector_delivery_timeout_s,
            ),
            on_acknowledged=self._acknowledged,
            on_failed=self._failed,
        )
        #: Whether the latest batch was acknowledged (shown by /healthz; not part of "ok", which
        #: a load balancer would otherwise never see recover once it stopped sending traffic).
        self.last_delivery_ok: bool | None = None
        self._dead_letters: deque[bytes] = deque()
        self._dead_letter_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        """Connected, and the raw topic's partitions are known."""
        return self._producer is not None and self._partitions > 0

    @property
    def partitions(self) -> int:
        return self._partitions

    async def start(self) -> None:
        """Start connecting in the background; requests get 503 until :attr:`ready`."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._connect_and_watch()),
            loop.create_task(self._dead_letter_loop()),
        ]

    async def stop(self) -> None:
        """Flush what is pending, then close the producer; each step bounded by the delivery
        timeout (an event not acknowledged by then has had its 503 already)."""
        timeout_s = self.delivery_timeout_s
        await self.batcher.close(timeout_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._producer is not None:
            producer, self._producer = self._producer, None
            # stop() flushes; an unreachable Kafka would make it wait for ever.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), timeout_s)

    async def publish(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write ``(person key, Avro event)`` items; return once Kafka acknowledged all.

        Raises :class:`DeliveryError` (HTTP 503) when Kafka is not connected, too much is
        already waiting, or the acknowledgement fails or does not come within the timeout.
        """
        if not items:
            return  # e.g. an empty batch: nothing to wait for, whatever Kafka's state
        if not self.ready:
            raise DeliveryError("unavailable", "Kafka is not reachable; retry later")
        partitions = self._partitions
        if partitions == 1:
            futures = self.batcher.add(0, [data for _, data in items])
        else:
            by_partition: dict[int, list[bytes]] = {}
            for key, data in items:
                by_partition.setdefault(partition_for(key, partitions), []).append(data)
            futures = []
            for partition, events in by_partition.items():
                futures += self.batcher.add(partition, events)
        await self.batcher.wait(futures)

    def dead_letter(self, record: bytes) -> None:
        """Queue one ``cdp.events.invalid`` record (from ``dead_letter_record``); never blocks."""
        if not self.ready or len(self._dead_letters) >= MAX_QUEUED_DEAD_LETTERS:
            self._metrics.dead_letters_dropped.inc()
            return
        self._dead_letters.append(record)
        self._dead_letter_wakeup.set()

    # --- internals ----------------------------------------------------------------------------

    def _acknowledged(self, seconds: float, _events: int) -> None:
        self._metrics.kafka_produce_seconds.observe(seconds)
        self.last_delivery_ok = True

    def _failed(self, _error: BaseException, _events: int) -> None:
        self._metrics.kafka_produce_errors.inc()
        self.last_delivery_ok = False

    def _new_producer(self) -> AIOKafkaProducer:
        settings = self._settings
        return AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            client_id=self._client_id,
            acks="all",
            enable_idempotence=True,
            compression_type=settings.producer_compression,
            # The batcher lingers already; while one request per partition is in flight (the
            # idempotent producer keeps order that way) the next messages pile up in one
            # record batch, so no extra linger is needed here.
            linger_ms=0,
            max_batch_size=_PRODUCER_BATCH_BYTES,
            max_request_size=_PRODUCER_BATCH_BYTES + 48_576,
            request_timeout_ms=max(1000, int(settings.collector_delivery_timeout_s * 1000)),
            metadata_max_age_ms=int(_PARTITIONS_REFRESH_S * 1000),
        )

    async def _connect_and_watch(self) -> None:
        delay = 0.25
        while self._producer is None:
            producer = self._new_producer()
            try:
                await producer.start()
                partitions = await producer.partitions_for(self.raw_topic)
            except Exception as exc:
                log.warning(
                    "Kafka at %s not usable yet (%s); retrying in %.1f s",
                    self._settings.kafka_bootstrap,
                    type(exc).__name__,
                    delay,
                )
                with contextlib.suppress(Exception):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)
                continue
            self._partitions = len(partitions)
            self._producer = producer
            self.batcher.start()
            log.info(
                "producing to %s (%d partitions) on %s",
                self.raw_topic,
                self._partitions,
                self._settings.kafka_bootstrap,
            )
        # Partitions can be added to a topic; new events follow the new count (Kafka offers no
        # ordering across such a change anyway).
        while True:
            await asyncio.sleep(_PARTITIONS_REFRESH_S)
            with contextlib.suppress(Exception):
                self._partitions = len(await self._producer.partitions_for(self.raw_topic))

    async def _send_batch(self, partition: int, value: bytes) -> asyncio.Future[Any]:
        producer = self._producer
        if producer is None:
            raise DeliveryError("unavailable", "Kafka is not connected")
        future: asyncio.Future[Any] = await producer.send(
            self.raw_topic, value, partition=partition, headers=self._headers
        )
        return future

    async def _dead_letter_loop(self) -> None:
        while True:
            if not self._dead_letters or self._producer is None:
                self._dead_letter_wakeup.clear()
                await self._dead_letter_wakeup.wait()
                continue
            record = self._dead_letters.popleft()
            try:
                future = await self._producer.send(self.invalid_topic, record)
            except Exception as exc:
                log.warning("writing a dead letter failed: %s", type(exc).__name__)
                self._metrics.kafka_produce_errors.inc()
                continue
            future.add_done_callback(self._dead_letter_sent)

    def _dead_letter_sent(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._metrics.kafka_produce_errors.inc()
