"""Where a probe's end-to-end latency goes: its records as Kafka shows them on the way.

A latency probe (``bench_e2e``) is one ``identify`` with a unique email. On its way to the
profile API it becomes a record in ``cdp.events.resolved`` (written by identity) and a row in
``cdp.profiles.changes`` (written by the profile stage). Each such record carries the time its
producer created it (Kafka's ``CreateTime``, the worker's wall clock), and a ``read_committed``
consumer sees it only once the writer's transaction has committed. Watching both topics from the
bench (one plain aiokafka consumer, no group) splits each probe's latency into hops without
touching the worker:

* ``identity``: the collector's acknowledgement → identity wrote the resolved record
  (the raw topic, identity's queue and its group);
* ``identity_commit``: → that record was committed (identity's commit timer);
* ``profile``: → the profile stage wrote the probe's profile row (its fetch, queue and group);
* ``profile_commit``: → that row was committed (the rest of the group and its commit);
* ``sink_api``: → the API returned the profile (the sink's fetch and ClickHouse inserts, the
  bench's polling).

All on one host, so the wall clocks agree; a probe is timed only when all five points were seen.
The watcher reads every record of both topics (compressed batches of a few hundred events), a
small share of the bench process's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

log = logging.getLogger(__name__)

#: (name, what it covers) in path order; see the module docstring.
HOPS: Final = (
    ("identity", "acknowledged → identity wrote the resolved record"),
    ("identity_commit", "→ identity's transaction committed it"),
    ("profile", "→ the profile stage wrote the profile row"),
    ("profile_commit", "→ the profile stage's transaction committed it"),
    ("sink_api", "→ the API returned the profile (sink inserts, polling)"),
)


@dataclass
class Sighting:
    created: float  # the record's CreateTime (producer's wall clock), s
    seen: float  # when the read_committed watcher got it (bench's wall clock), s


@dataclass
class ProbeTrace:
    """First sightings of each probe's records, by probe number."""

    tag: str
    resolved: dict[int, Sighting] = field(default_factory=dict)
    profile: dict[int, Sighting] = field(default_factory=dict)
    acked: dict[int, float] = field(default_factory=dict)  # wall clock of the collector's 200
    found: dict[int, float] = field(default_factory=dict)  # wall clock of the API's 200

    def __post_init__(self) -> None:
        self._pattern = re.compile(rb"probe-" + re.escape(self.tag.encode()) + rb"-(\d+)@")

    def see(self, into: dict[int, Sighting], value: bytes, created_ms: int, now: float) -> None:
        for match in self._pattern.finditer(value):
            into.setdefault(int(match.group(1)), Sighting(created_ms / 1000, now))

    def hops(self) -> list[tuple[float, ...]]:
        """Per fully seen probe: the seconds of each hop of :data:`HOPS`, in order."""
        out = []
        for n, acked in self.acked.items():
            resolved, profile, found = self.resolved.get(n), self.profile.get(n), self.found.get(n)
            if resolved is None or profile is None or found is None:
                continue
            points = (acked, resolved.created, resolved.seen, profile.created, profile.seen, found)
            out.append(tuple(b - a for a, b in itertools.pairwise(points)))
        return out


def summarize(hops: Sequence[tuple[float, ...]]) -> dict[str, Any]:
    """p50 / p90 / p99 / mean in ms of each hop, and how many probes were timed."""
    out: dict[str, Any] = {"probes_traced": len(hops)}
    if not hops:
        return out
    for i, (name, _) in enumerate(HOPS):
        values = sorted(h[i] for h in hops)
        out[name] = {
            "p50_ms": _quantile(values, 0.5) * 1000,
            "p90_ms": _quantile(values, 0.9) * 1000,
            "p99_ms": _quantile(values, 0.99) * 1000,
            "mean_ms": sum(values) / len(values) * 1000,
        }
    return out


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class ProbeWatcher:
    """Reads the resolved and profile-change topics from their ends into a :class:`ProbeTrace`."""

    def __init__(
        self, bootstrap: str, resolved_topic: str, changes_topic: str, partitions: int
    ) -> None:
        self._bootstrap = bootstrap
        self._topics = (resolved_topic, changes_topic)
        self._partitions = partitions  # of each topic (CDP_TOPIC_PARTITIONS)
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    async def start(self, trace: ProbeTrace) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = [
            TopicPartition(topic, p) for topic in self._topics for p in range(self._partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        self._task = asyncio.create_task(self._run(consumer, trace))

    async def _run(self, consumer: Any, trace: ProbeTrace) -> None:
        resolved_topic = self._topics[0]
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            now = time.time()
            for tp, records in batch.items():
                into = trace.resolved if tp.topic == resolved_topic else trace.profile
                for record in records:
                    if record.value:
                        trace.see(into, record.value, record.timestamp, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            if self._task.done() and not self._task.cancelled() and self._task.exception():
                log.warning("probe watcher failed: %s", self._task.exception())
        if self._consumer is not None:
            await self._consumer.stop()
