"""The ClickHouse sink: a plain Kafka consumer that batches rows and commits after each insert.

Why not a faust agent: the sink needs no tables or exactly-once processing, only "insert, then
commit". A bare aiokafka consumer reads hundreds of thousands of messages per second where a
faust agent handles a few thousand, and keeping the sink out of faust's transactions lets the
stream processors run exactly-once while the sink stays at-least-once into idempotent tables
(ReplacingMergeTree: a replayed row replaces its twin). It reads with ``read_committed``, so it
only ever sees the outputs of committed transactions.

Rows are flushed when ``max_rows`` are buffered, when ``flush_interval_s`` has passed, or as soon
as the consumer has caught up (a fetch of ``idle_ms`` brought nothing more), whichever comes
first; offsets are committed only after every table's insert succeeded. Flushing once caught up
matters because the stages upstream commit transactions on a timer: their records become
visible in bursts, and waiting out the interval after a burst added up to 0.5 s to the time
from an event's acknowledgement to its profile. Under a steady stream a fetch is never empty,
so batches still fill up to the interval or ``max_rows``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from mode import Service

from pipeline.sink.clickhouse import TableSink

log = logging.getLogger(__name__)

#: Turns one Kafka message value into rows, added to the sinks it names.
Handler = Callable[[bytes], None]


@dataclass(frozen=True)
class SinkConfig:
    bootstrap: str
    group_id: str
    max_rows: int = 20_000
    flush_interval_s: float = 0.5
    #: A fetch that waited this long for more records and got none means "caught up": flush.
    idle_ms: int = 20
    #: Records carrying this (header, value) are skipped: the profile processor re-sends events
    #: addressed to a merged-away customer to the survivor's partition, and those events were
    #: already written under their first customer (the timeline follows merges).
    skip_header: tuple[str, bytes] | None = ("cdp-origin", b"profile")


class SinkService(Service):
    """Consumes ``handlers``' topics, feeds ``sinks``, flushes, then commits."""

    def __init__(
        self,
        config: SinkConfig,
        handlers: Mapping[str, Handler],
        sinks: Sequence[TableSink],
        on_flushed: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._config = config
        self._handlers = dict(handlers)
        self._sinks = list(sinks)
        self._on_flushed = on_flushed
        self._consumer: AIOKafkaConsumer | None = None

    async def on_start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self._handlers,
            bootstrap_servers=self._config.bootstrap,
            group_id=self._config.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        self.add_future(self._run())

    async def on_stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def _flush_sinks(self) -> None:
        for sink in self._sinks:
            sink.flush()

    def _buffered(self) -> int:
        return sum(len(sink) for sink in self._sinks)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        last_flush = time.monotonic()
        pending = False
        skip = self._config.skip_header
        while not self.should_stop:
            remaining_ms = int(
                1000 * (self._config.flush_interval_s - (time.monotonic() - last_flush))
            )
            if pending:  # rows wait: look for more only briefly
                remaining_ms = min(remaining_ms, self._config.idle_ms)
            try:
                batch = await consumer.getmany(timeout_ms=max(1, remaining_ms))
            except asyncio.CancelledError:
                raise
            except Exception:  # a broker hiccup: retry the fetch, nothing was consumed
                log.exception("sink fetch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for tp, messages in batch.items():
                handle = self._handlers[tp.topic]
                for message in messages:
                    if skip is not None and skip in (message.headers or ()):
                        continue
                    try:
                        handle(message.value)
                    except Exception:  # a bad record must not stop the sink; it is logged
                        log.exception("sink could not map %s@%s", tp, message.offset)
                pending = pending or bool(messages)
            due = time.monotonic() - last_flush >= self._config.flush_interval_s
            caught_up = not batch
            if pending and (due or caught_up or self._buffered() >= self._config.max_rows):
                # The inserts run in a thread: chDB does its work in C++ without the GIL (and
                # the HTTP client waits on a socket), so the stream processors keep the event
                # loop meanwhile. clickhouse-connect's chDB backend serialises queries with a
                # lock, so the profile API's reads from the loop thread simply wait their turn.
                # Nothing adds rows while this awaits: only this loop does.
                await asyncio.to_thread(self._flush_sinks)
                await consumer.commit()
                if self._on_flushed is not None:
                    self._on_flushed()
                pending = False
                last_flush = time.monotonic()
            elif due:
                last_flush = time.monotonic()
