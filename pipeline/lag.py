"""Consumer lag of the worker's consumer groups, exported as ``cdp_consumer_lag``.

Lag per partition = end offset - the group's committed offset, read from the broker every
``interval_s``. Reading it from Kafka instead of counting inside the consumers means a stuck,
crashed or never-started consumer still shows lag that grows (the alert "consumer lag growing"
relies on that), and the faust agents and the plain sink consumer are measured the same way.

A partition of a watched topic on which the group has committed nothing yet counts from the
earliest offset (the consumers start there, ``auto_offset_reset="earliest"``). Committed offsets
of topics not listed (faust's internal topics) are reported too.

Transactions: the worker's outputs are written in Kafka transactions, and each commit or abort
puts a *control record* (marker) into every partition it wrote. A marker takes an offset but is
never delivered, so a consumer that has read everything commits the offset of the last data
record + 1 and stays one or more offsets short of the end: a caught-up group would show a lag
of 1-5 for ever. The end is therefore read as a ``read_committed`` consumer sees it (the last
stable offset), and a small gap (at most :data:`MARKER_SLACK` offsets) is checked by reading it:
if it holds no committed data record, the lag is 0.

The Kafka calls are blocking (kafka-python), so each computation runs in a thread; the clock is
injected so tests can check the "updated" timestamp without the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from mode import Service
from prometheus_client import CollectorRegistry

from pipeline import settings as s
from pipeline.metrics import LagMetrics

log = logging.getLogger(__name__)

#: Seconds between two computations in the worker. Prometheus scrapes every 15 s, so a fresher
#: figure would never be seen; tests lower it (read at call time by worker_lag_monitor).
DEFAULT_INTERVAL_S = 10.0
REQUEST_TIMEOUT_MS = 10_000
MARKER_SLACK = 64
"""Largest gap between the committed and the end offset that is read to tell markers from data
(a caught-up group's gap is one marker per transaction since its last record)."""
GAP_READ_S = 2.0
"""Longest time spent reading one gap; when it runs out the lag is reported as it is."""


class OffsetSource(Protocol):
    """What the lag computation needs from Kafka (a fake in unit tests)."""

    def committed(self, group: str) -> dict[TopicPartition, int]: ...

    def partitions(self, topic: str) -> set[int]: ...

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    def beginning_offsets(
        self, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]: ...

    def holds_records(self, partition: TopicPartition, start: int, end: int) -> bool:
        """Whether offsets ``start`` .. ``end - 1`` hold a committed data record (not only
        transaction markers or aborted records)."""
        ...

    def close(self) -> None: ...


class KafkaOffsetSource:
    """Offsets from the broker: an admin client for committed offsets, a group-less
    ``read_committed`` consumer (it joins no group and commits nothing) for partition metadata,
    end offsets (the last stable offset) and reading the gaps of :meth:`holds_records`."""

    def __init__(self, bootstrap: str, client_id: str = "cdp-lag") -> None:
        # Short timeouts: a computation blocks a thread, and a stopping worker waits for it.
        self._admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=REQUEST_TIMEOUT_MS
        )
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
        )

    def committed(self, group: str) -> dict[TopicPartition, int]:
        admin: Any = self._admin
        # kafka-python 3 renamed the call; the project allows 2.x too.
        if hasattr(admin, "list_group_offsets"):
            offsets = admin.list_group_offsets({group: None}).get(group, {})
        else:
            offsets = admin.list_consumer_group_offsets(group)
        # -1 means "no offset committed for this partition".
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    def partitions(self, topic: str) -> set[int]:
        return set(self._consumer.partitions_for_topic(topic) or ())

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(self._consumer.end_offsets(list(partitions)))

    def beginning_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(self._consumer.beginning_offsets(list(partitions)))

    def holds_records(self, partition: TopicPartition, start: int, end: int) -> bool:
        consumer = self._consumer
        consumer.assign([partition])
        consumer.seek(partition, start)
        deadline = time.monotonic() + GAP_READ_S
        try:
            while time.monotonic() < deadline:
                if consumer.poll(timeout_ms=100, max_records=1).get(partition):
                    return True
                # read_committed skips markers and aborted records, moving the position on.
                if consumer.position(partition) >= end:
                    return False
            return True  # could not tell in time: keep the lag as it is
        finally:
            consumer.unsubscribe()

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    lag: int


def compute_lag(source: OffsetSource, groups: Mapping[str, Iterable[str]]) -> list[PartitionLag]:
    """Lag of every (group, partition) the group consumes: its watched topics and its commits."""
    wanted: dict[str, dict[TopicPartition, int | None]] = {}
    for group, topics in groups.items():
        positions: dict[TopicPartition, int | None] = {
            TopicPartition(topic, p): None for topic in topics for p in source.partitions(topic)
        }
        positions.update(source.committed(group))
        wanted[group] = positions
    every = sorted({tp for positions in wanted.values() for tp in positions})
    if not every:
        return []
    ends = source.end_offsets(every)
    uncommitted = sorted({tp for pos in wanted.values() for tp, o in pos.items() if o is None})
    starts = source.beginning_offsets(uncommitted) if uncommitted else {}
    out: list[PartitionLag] = []
    for group, positions in wanted.items():
        for tp, committed in sorted(positions.items()):
            end = ends.get(tp)
            if end is None:
                continue  # the topic was deleted between the calls
            position = committed if committed is not None else starts.get(tp, 0)
            # A committed offset can pass the end offset seen a moment earlier: never negative.
            lag = max(0, end - position)
            if 0 < lag <= MARKER_SLACK and not source.holds_records(tp, position, end):
                lag = 0  # only transaction markers (or aborted records) between: caught up
            out.append(PartitionLag(group, tp.topic, tp.partition, lag))
    return out


class LagMonitor(Service):
    """Recomputes the lag gauges every ``interval_s`` (a child service of the faust app)."""

    def __init__(
        self,
        groups: Mapping[str, Iterable[str]],
        metrics: LagMetrics,
        source_factory: Callable[[], OffsetSource],
        *,
        interval_s: float = 10.0,
        now: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._groups = {group: list(topics) for group, topics in groups.items()}
        self._metrics = metrics
        self._source_factory = source_factory
        self._source: OffsetSource | None = None
        self._interval_s = interval_s
        self._now = now
        self._reported: set[tuple[str, str, str]] = set()
        # The computation runs in a thread; closing the clients must wait for it to finish.
        self._lock = threading.Lock()

    def update(self) -> list[PartitionLag]:
        """One computation (blocking): set the gauges, drop series of partitions gone."""
        with self._lock:
            if self._source is None:
                self._source = self._source_factory()
            lags = compute_lag(self._source, self._groups)
        gauge = self._metrics.consumer_lag
        current: set[tuple[str, str, str]] = set()
        for lag in lags:
            labels = (lag.topic, str(lag.partition), lag.group)
            gauge.labels(*labels).set(lag.lag)
            current.add(labels)
        for labels in self._reported - current:
            gauge.remove(*labels)
        self._reported = current
        self._metrics.updated.set(self._now())
        return lags

    def _reset_source(self) -> None:
        # After an error the clients may be in any state: start from new ones next time.
        with self._lock:
            if self._source is not None:
                try:
                    self._source.close()
                except Exception:  # closing a broken client must not hide the original error
                    log.debug("closing the lag offset source failed", exc_info=True)
                self._source = None

    async def on_start(self) -> None:
        self.add_future(self._run())

    async def on_stop(self) -> None:
        await asyncio.to_thread(self._reset_source)

    async def _run(self) -> None:
        while not self.should_stop:
            try:
                await asyncio.to_thread(self.update)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker may be away for a while; keep trying, count it
                self._metrics.errors.inc()
                log.warning("consumer lag computation failed", exc_info=True)
                await asyncio.to_thread(self._reset_source)
            await self.sleep(self._interval_s)


def worker_groups(settings: s.Settings) -> dict[str, list[str]]:
    """The consumer groups (and their input topics) of the roles of this worker process."""
    roles = settings.roles
    groups: dict[str, list[str]] = {}
    # faust's consumer group is the app id; it also commits its internal topics' offsets.
    stream = [
        settings.topic(topic)
        for role, topic in (("identity", s.TOPIC_RAW), ("profile", s.TOPIC_RESOLVED))
        if role in roles
    ]
    if stream:
        groups[settings.worker_id] = stream
    if "sink" in roles:
        groups[f"{settings.worker_id}-sink"] = [
            settings.topic(s.TOPIC_RESOLVED),
            settings.topic(s.TOPIC_IDENTITY_CHANGES),
            settings.topic(s.TOPIC_PROFILE_CHANGES),
        ]
    return groups


def worker_lag_monitor(
    settings: s.Settings, registry: CollectorRegistry, *, interval_s: float | None = None
) -> LagMonitor:
    """The monitor of one worker process: the groups of its roles (:func:`worker_groups`)."""
    return LagMonitor(
        worker_groups(settings),
        LagMetrics.create(registry),
        lambda: KafkaOffsetSource(settings.kafka_bootstrap, client_id=f"{settings.worker_id}-lag"),
        interval_s=DEFAULT_INTERVAL_S if interval_s is None else interval_s,
    )
