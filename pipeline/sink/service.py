"""The ClickHouse sink: a plain Kafka consumer that batches rows and commits after each insert.

Why not a faust agent: the sink needs no tables or exactly-once processing, only "insert, then
commit". A bare aiokafka consumer reads hundreds of thousands of messages per second where a
faust agent handles a few thousand, and keeping the sink out of faust's transactions lets the
stream processors run exactly-once while the sink stays at-least-once into idempotent tables
(ReplacingMergeTree: a replayed row replaces its twin). It reads with ``read_committed``, so it
only ever sees the outputs of committed transactions.

The tables are flushed in :class:`FlushGroup` s, each with the topics that feed it; a group's
flush commits exactly its own topics' offsets, after every one of its inserts succeeded. A group
is flushed when ``max_rows`` are buffered in it, when its ``interval_s`` has passed, or - for a
group with ``eager_topics`` - as soon as the consumer has caught up (a fetch of ``idle_ms``
brought nothing more) while records of those topics wait.

Flushing once caught up matters for what the profile API reads: the stages upstream commit
transactions on a timer, so their records become visible in bursts, and waiting out the
interval after a burst added up to 0.5 s to the time from an event's acknowledgement to its
profile. Under a steady stream a fetch is never empty, so batches still fill up to the interval
or ``max_rows``. The other side of it is cost: every insert makes a new part in each table (a
directory of files) that background merges then rewrite: 10-27 ms of CPU per insert in chDB
whatever its size (README, "The sink is not a faust agent"). So a table nothing waits for
(the events timeline) gets a group of its own with a longer interval, and the lookups' group
flushes when the profile rows have caught up, not for identity rows alone: a profile lookup
needs both, and identity's rows always come first (the profile stage is downstream of them).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
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
    #: A fetch that waited this long for more records and got none means "caught up": flush.
    idle_ms: int = 20
    #: Records carrying this (header, value) are skipped: the profile processor re-sends events
    #: addressed to a merged-away customer to the survivor's partition, and those events were
    #: already written under their first customer (the timeline follows merges).
    skip_header: tuple[str, bytes] | None = ("cdp-origin", b"profile")


@dataclass
class FlushGroup:
    """Tables flushed together, and the topics whose records feed them (only them)."""

    name: str
    #: topic -> what turns one of its records into rows of this group's sinks
    handlers: Mapping[str, Handler]
    #: inserted in this order (what a reader waits for first)
    sinks: Sequence[TableSink]
    interval_s: float = 0.5
    #: once the consumer has caught up while records of these topics wait: flush at once
    eager_topics: frozenset[str] = frozenset()
    on_flushed: Callable[[], None] | None = None
    #: topics with records handled since the last flush
    pending: set[str] = field(default_factory=set)
    last_flush: float = field(default_factory=time.monotonic)

    def buffered(self) -> int:
        return sum(len(sink) for sink in self.sinks)

    def flush_now(self, now: float, caught_up: bool, max_rows: int) -> bool:
        """Whether this group's buffered rows go to ClickHouse now (see the module docstring)."""
        if not self.pending:
            return False
        return (
            now - self.last_flush >= self.interval_s
            or (caught_up and not self.pending.isdisjoint(self.eager_topics))
            or self.buffered() >= max_rows
        )

    def wait_s(self, now: float, idle_s: float) -> float:
        """How long the next fetch may wait before this group has to be looked at again."""
        left = self.interval_s - (now - self.last_flush)
        if not self.pending.isdisjoint(self.eager_topics):  # rows wait: look for more briefly
            left = min(left, idle_s)
        return left


class SinkService(Service):
    """Consumes the groups' topics, feeds their sinks, flushes a group, then commits its topics."""

    def __init__(self, config: SinkConfig, groups: Sequence[FlushGroup], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._config = config
        self._groups = list(groups)
        self._group_of: dict[str, FlushGroup] = {}
        self._handlers: dict[str, Handler] = {}
        for group in self._groups:
            for topic, handler in group.handlers.items():
                if topic in self._group_of:
                    raise ValueError(f"topic {topic!r} feeds two flush groups")
                self._group_of[topic] = group
                self._handlers[topic] = handler
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def groups(self) -> list[FlushGroup]:
        return list(self._groups)

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

    async def _flush(self, consumer: AIOKafkaConsumer, group: FlushGroup) -> None:
        """Insert the group's rows, then commit its topics' positions (every record handled)."""
        # The inserts run in a thread: chDB does its work in C++ without the GIL (and the HTTP
        # client waits on a socket), so the stream processors keep the event loop meanwhile.
        # clickhouse-connect's chDB backend serialises queries with a lock, so the profile
        # API's reads from the loop thread simply wait their turn. Nothing adds rows while this
        # awaits: only the sink's loop does.
        await asyncio.to_thread(_flush_all, group.sinks)
        await consumer.commit(await _positions(consumer, group.handlers))
        if group.on_flushed is not None:
            group.on_flushed()
        group.pending.clear()
        group.last_flush = time.monotonic()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        skip = self._config.skip_header
        idle_s = self._config.idle_ms / 1000
        while not self.should_stop:
            now = time.monotonic()
            wait_s = min(group.wait_s(now, idle_s) for group in self._groups)
            try:
                batch = await consumer.getmany(timeout_ms=max(1, int(1000 * wait_s)))
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
                if messages:
                    self._group_of[tp.topic].pending.add(tp.topic)
            now = time.monotonic()
            caught_up = not batch
            for group in self._groups:
                if group.flush_now(now, caught_up, self._config.max_rows):
                    await self._flush(consumer, group)
                elif not group.pending and now - group.last_flush >= group.interval_s:
                    group.last_flush = now  # nothing waited: the next interval starts now


def _flush_all(sinks: Sequence[TableSink]) -> None:
    for sink in sinks:
        sink.flush()


async def _positions(
    consumer: AIOKafkaConsumer, topics: Collection[str]
) -> dict[TopicPartition, int]:
    """The consumer's position in each assigned partition of ``topics``: every record before it
    has been handled (``getmany`` returned it and the loop mapped it), and the position is past
    the transaction markers, so a committed group shows no lag."""
    return {tp: await consumer.position(tp) for tp in consumer.assignment() if tp.topic in topics}
