"""The profile processor: a thin faust agent around :func:`process_batch`.

Reads ``cdp.events.resolved`` (``settings.topic_partitions`` partitions; every customer named in
a message hashes to its partition), keeps one stored value per customer in the changelog-backed
faust table ``cdp-profiles`` (co-partitioned with the topic, so a customer's value lives in the
changelog partition of its own input partition), and writes

* ``cdp.events.resolved`` itself, with an explicit partition: folds of merged customers and items
  forwarded along a chain of merges (header ``cdp-origin: profile``; they carry no new events
  for the events sink beyond rare forwards, see the stage module);
* ``cdp.profiles.changes``: the latest profile row of every customer a group of input messages
  touched, several rows per message, on the input's partition (format in
  :mod:`pipeline.profile.stage`);
* ``cdp.events.invalid``: messages that cannot be decoded or applied, with the reason.

Delivery: faust flushes the producer (outputs and table changelog) before it commits an input
offset (at_least_once), or commits all three in one transaction (exactly_once). After a crash in
at-least-once mode a message may be applied again: duplicate events are absorbed by the state's
event-id window, replayed merges and folds are recognised by ``merged_from`` (see the stage), and
the ``profiles`` table keeps one row per version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import faust
from faust.types import EventT

from pipeline import avro, avro_reader
from pipeline import settings as s
from pipeline.metrics import WorkerMetrics
from pipeline.profile.stage import (
    VERSION_INDEX_BITS,
    Record,
    ResolvedBatch,
    encode_changes,
    process_batch,
)
from pipeline.worker.buffered import BufferedTable, RecentCache
from pipeline.worker.txsend import (
    DeadLetters,
    EagerCommit,
    SourceTransactionSender,
    as_current_event,
    commit_gate,
    drain_producer_buffer,
)

log = logging.getLogger(__name__)
AGENT: Final = "profile"
TABLE: Final = "cdp-profiles"
#: Marks the messages this stage sends to ``cdp.events.resolved`` (forwards and folds).
ORIGIN_HEADER: Final = [("cdp-origin", b"profile")]


def register_profiles(app: faust.App, settings: s.Settings, metrics: WorkerMetrics) -> Any:
    partitions = settings.topic_partitions
    resolved = app.topic(
        settings.topic(s.TOPIC_RESOLVED), value_serializer="raw", partitions=partitions
    )
    changes = app.topic(
        settings.topic(s.TOPIC_PROFILE_CHANGES),
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )
    invalid = app.topic(settings.topic(s.TOPIC_INVALID), value_serializer="raw", partitions=1)
    # value_type=bytes makes faust store and log the stage's bytes as they are ("raw" codec,
    # chosen from the type for the store and the changelog alike).
    table = app.Table(TABLE, partitions=partitions, key_type=str, value_type=bytes)
    # A faust Table is a Mapping: the pure stage reads it as it would a dict, through a read
    # cache (pipeline/worker/buffered.py); only this agent writes it, once per customer per
    # message (each write becomes a changelog record in the input message's partition).
    store = BufferedTable(cast(MutableMapping[str, bytes], table), settings.table_cache_entries)
    app.profile_table = table  # type: ignore[attr-defined]  # the profile API may read it

    # Decoded records of recently updated customers: parsing a stored state is the largest
    # cost of a small update (see process_batch).
    decoded: RecentCache[Record] = RecentCache(settings.profile_cache_entries)

    async def forget_cache(*_: Any, **__: Any) -> None:
        store.invalidate()  # a rebalance may move partitions or rebuild them from changelogs
        decoded.clear()

    app.on_partitions_revoked.connect(forget_cache)
    app.on_partitions_assigned.connect(forget_cache)
    seconds = metrics.processing_seconds.labels(AGENT)
    age = metrics.event_age.labels(AGENT)
    events_counter = metrics.events_processed.labels(AGENT)
    messages_counter = metrics.messages_processed.labels(AGENT)
    errors = metrics.processing_errors.labels(AGENT)

    tx = SourceTransactionSender(app)
    gate = commit_gate(app)
    eager = EagerCommit(app, resolved.get_topic_name(), enabled=settings.eager_commit)
    group_messages = settings.worker_batch_messages
    group_within_s = settings.worker_batch_within_ms / 1000
    invalid_topic = invalid.get_topic_name()
    resolved_topic = resolved.get_topic_name()
    changes_topic = changes.get_topic_name()

    dead_letters = DeadLetters(tx, invalid_topic, metrics, AGENT)

    async def dead_letter(source: Any, raw_value: bytes, reason: str) -> None:
        errors.inc()
        await dead_letters.send(source, raw_value, reason)

    def apply_partition(group: Sequence[EventT[bytes]]) -> PartitionOutput:
        """Apply one partition's messages of a group, in offset order; buffer the writes."""
        out = PartitionOutput()
        for event in group:
            message = event.message
            try:
                batch = avro_reader.decode_resolved_fast(event.value)
            except avro.SerializationError as exc:
                out.dead.append((event.value, f"undecodable resolved message: {exc}"))
                continue
            if batch["events"]:
                first = batch["events"][0]["event"]["received_at"]
                out.oldest_ms = first if out.oldest_ms is None else min(out.oldest_ms, first)
            try:
                result = process_batch(
                    batch,
                    store,
                    message.partition,
                    partitions,
                    version_base=message.offset << VERSION_INDEX_BITS,
                    decoded=decoded,
                )
            except Exception as exc:  # a bug or corrupt state must not stop the agent
                decoded.clear()  # records taken from it may be half-changed
                log.exception(
                    "profile failed on partition %s offset %s", message.partition, message.offset
                )
                out.dead.append((event.value, f"profile error: {type(exc).__name__}: {exc}"))
                continue
            # The next message of the group reads these through the store's write buffer.
            store.update(result.writes)
            for customer_id, record in result.touched.items():
                decoded.put(customer_id, record)
            for row in result.rows:  # a customer's later row (higher version) replaces its own
                out.rows[row["customer_id"]] = row
            out.forwards.extend(result.forwards.items())
            out.events += result.events_applied  # a forwarded event counts where applied
            out.updates += len(result.writes)
        return out

    @app.agent(resolved, name=AGENT)
    async def profiles(stream: faust.StreamT[bytes]) -> None:
        # Messages are taken in groups (see the identity agent): each stored profile is written
        # (one changelog record) and each profile row is sent once per group, not per message.
        # take_events acks the group only after this body returned.
        groups = stream.take_events(group_messages, within=group_within_s)  # type: ignore[attr-defined]
        async for group in groups:
            started = time.perf_counter()
            oldest_ms: int | None = None
            async with gate.group():  # a commit never splits a group (see txsend.CommitGate)
                by_partition: dict[int, list[EventT[bytes]]] = {}
                for event in group:
                    by_partition.setdefault(event.message.partition, []).append(event)
                for partition, events in by_partition.items():
                    last = events[-1]  # the source partition's event the outputs travel with
                    with as_current_event(last):  # table writes go to this partition's changelog
                        out = apply_partition(events)
                        store.flush()
                    for destination, body in out.forwards:
                        await tx.send(
                            last,
                            resolved_topic,
                            avro.encode_resolved(body),
                            partition=destination,
                            headers=ORIGIN_HEADER,
                        )
                    for key, value in encode_changes(
                        out.rows.values(), partition, last.message.offset
                    ):
                        await tx.send(last, changes_topic, value, key=key, partition=partition)
                    for raw_value, reason in out.dead:
                        await dead_letter(last, raw_value, reason)
                    events_counter.inc(out.events)
                    messages_counter.inc(len(events))
                    metrics.profile_updates.inc(out.updates)
                    if out.oldest_ms is not None:
                        oldest_ms = min(oldest_ms or out.oldest_ms, out.oldest_ms)
                # Back-pressure: this group's changelog records are on their way before the next.
                await drain_producer_buffer(app)
            if oldest_ms is not None:
                age.observe(max(0.0, time.time() - oldest_ms / 1000))
            seconds.observe(time.perf_counter() - started)
            if len(group) < group_messages:
                # Caught up (the group did not fill within its wait): make this burst's
                # outputs visible now rather than at the next commit tick. On a backlog
                # (full groups) the timer alone commits, so throughput pays nothing.
                eager.request()

    return profiles


@dataclass
class PartitionOutput:
    """What one partition's messages of a group produced."""

    #: customer_id -> its latest profile row in the group.
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    forwards: list[tuple[int, ResolvedBatch]] = field(default_factory=list)
    dead: list[tuple[bytes, str]] = field(default_factory=list)
    events: int = 0
    updates: int = 0
    #: receipt time (ms) of the oldest message's first event, None without events
    oldest_ms: int | None = None
