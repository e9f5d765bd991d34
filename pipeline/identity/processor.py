"""The identity processor: a thin faust agent around :func:`resolve_batch`.

Reads ``cdp.events.raw`` (one partition: identity is a single writer, see the README), keeps the
identity graph in two changelog-backed faust tables, and writes

* ``cdp.events.resolved``: one ``ResolvedBatch`` per customer partition per group of input
  messages (see the agent),
* ``cdp.identity.changes``: identifiers, merges and refused links (JSON list per group),
* ``cdp.events.invalid``: events no identifier could be resolved for, with the reason.

Delivery: the agent takes messages in groups and faust acks a group only after its outputs were
handed to the producer. Under exactly-once (the default) the outputs go through the *source*
partition's transaction (``pipeline/worker/txsend.py``), together with the table changelog and
the offsets; under at-least-once a message processed again after a crash resolves to the same
customers (the engine is idempotent for identifiers it already holds) and downstream
deduplicates by ``event_id``.

Duplicate sends (an SDK retrying, a page sending twice) are dropped here, within a window of the
most recent event ids (:mod:`pipeline.identity.dedup`): identity sees every event in order, which
the per-customer windows of the profile stage do not when the copies resolve to two customers
around a merge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import faust
import orjson
from faust.types import EventT

from pipeline import avro, avro_reader
from pipeline import settings as s
from pipeline.identity.dedup import EventIdWindow
from pipeline.identity.engine import IdentityEngine
from pipeline.identity.stage import StageOutput, resolve_batch
from pipeline.identity.state import CustomerRecord, IdentityState
from pipeline.jsonchunks import json_arrays
from pipeline.metrics import WorkerMetrics
from pipeline.worker.buffered import BufferedTable
from pipeline.worker.txsend import (
    DeadLetters,
    SourceTransactionSender,
    as_current_event,
    commit_gate,
    drain_producer_buffer,
)

log = logging.getLogger(__name__)
AGENT = "identity"
#: "No event yet" for the oldest receipt time of a group (later than any real one).
NO_EVENT_MS: Final = 2**62
MAX_RESOLVED_BYTES: Final = 512 * 1024
"""Events per resolved message are cut below this (Kafka's default max message is 1 MB)."""
MAX_CHANGES_BYTES: Final = 512 * 1024
"""Identity changes per message are cut below this: a group of 64 messages of new identifiers
made 1.3 MB, over the producer's 1 MB request limit, and the send failed."""


def register_identity(app: faust.App, settings: s.Settings, metrics: WorkerMetrics) -> Any:
    partitions = settings.topic_partitions
    raw = app.topic(
        settings.topic(s.TOPIC_RAW), value_serializer="raw", key_serializer="raw", partitions=1
    )
    resolved = app.topic(
        settings.topic(s.TOPIC_RESOLVED), value_serializer="raw", partitions=partitions
    )
    changes = app.topic(
        settings.topic(s.TOPIC_IDENTITY_CHANGES), value_serializer="raw", partitions=1
    )
    invalid = app.topic(settings.topic(s.TOPIC_INVALID), value_serializer="raw", partitions=1)
    identifiers_table = app.Table("cdp-identity-identifiers", partitions=1, key_type=str)
    customers_table = app.Table("cdp-identity-customers", partitions=1, key_type=str)
    # The ids of the most recent events, to drop duplicate sends (pipeline/identity/dedup.py).
    recent_table = app.Table(
        "cdp-identity-recent-events", partitions=1, key_type=str, value_type=bytes
    )
    # Faust tables are MutableMappings; the pure engine reads and writes them as it would dicts
    # through a read cache and a write buffer (pipeline/worker/buffered.py): a message's writes
    # reach the table, one changelog record per key, only once the whole message resolved.
    identifiers = BufferedTable(
        cast(MutableMapping[str, str], identifiers_table), settings.table_cache_entries
    )
    customers = BufferedTable(
        cast(MutableMapping[str, CustomerRecord], customers_table), settings.table_cache_entries
    )
    state = IdentityState(identifiers=identifiers, customers=customers)
    recent = EventIdWindow(cast(MutableMapping[str, bytes], recent_table))

    async def forget_cache(*_: Any, **__: Any) -> None:
        # A rebalance may rebuild the tables from their changelogs.
        identifiers.invalidate()
        customers.invalidate()
        recent.invalidate()

    app.on_partitions_revoked.connect(forget_cache)
    app.on_partitions_assigned.connect(forget_cache)
    engine = IdentityEngine(settings.identity_config, state)
    app.identity_engine = engine  # type: ignore[attr-defined]  # profile API lookups
    seconds = metrics.processing_seconds.labels(AGENT)
    age = metrics.event_age.labels(AGENT)
    events_counter = metrics.events_processed.labels(AGENT)
    messages_counter = metrics.messages_processed.labels(AGENT)

    tx = SourceTransactionSender(app)
    gate = commit_gate(app)
    group_messages = settings.worker_batch_messages
    group_within_s = settings.worker_batch_within_ms / 1000
    invalid_topic = invalid.get_topic_name()
    resolved_topic = resolved.get_topic_name()
    changes_topic = changes.get_topic_name()

    dead_letter = DeadLetters(tx, invalid_topic, metrics, AGENT).send

    def resolve_group(group: Sequence[EventT[bytes]]) -> GroupOutput:
        """Resolve every message of ``group`` in order; nothing is sent or written to Kafka."""
        out = GroupOutput()
        for event in group:
            raw = event.value
            try:
                batch, spans = avro_reader.decode_batch_spans(raw)
            except avro.SerializationError as exc:
                out.dead.append((raw, f"undecodable raw message: {exc}"))
                out.errors += 1
                continue
            out.events += len(batch)
            if batch:
                out.oldest_ms = min(out.oldest_ms, batch[0]["received_at"])
            kept = [i for i, item in enumerate(batch) if recent.admit(item["event_id"])]
            if len(kept) < len(batch):  # a duplicate send of an event already resolved
                out.duplicates += len(batch) - len(kept)
                batch, spans = [batch[i] for i in kept], [spans[i] for i in kept]
            result = resolve_batch(
                engine, batch, partitions, version_base=event.message.offset << 16
            )
            out.add(result, raw, spans)
        return out

    def commit_group() -> None:
        identifiers.flush()
        customers.flush()
        recent.commit()

    def discard_group() -> None:
        identifiers.discard()
        customers.discard()
        recent.discard()

    def resolve_one_by_one(group: Sequence[EventT[bytes]]) -> GroupOutput:
        """After a failed group: again message by message, dead-lettering the failing ones."""
        out = GroupOutput()
        for event in group:
            try:
                part = resolve_group([event])
                commit_group()
            except Exception as exc:  # a bug must not stop the agent; the message is kept
                discard_group()
                log.exception("identity failed on offset %s", event.message.offset)
                out.errors += 1
                out.dead.append((event.value, f"identity error: {type(exc).__name__}: {exc}"))
                continue
            out.extend(part)
        return out

    @app.agent(raw, name=AGENT)
    async def identity(stream: faust.StreamT[bytes]) -> None:
        # Messages are taken in groups (up to worker_batch_messages, or what arrived within
        # worker_batch_within_ms): one resolved message per customer partition and one table
        # write per key per *group*, so the profile processor gets fewer, larger messages.
        # take_events acks the group's offsets only after this body returned, i.e. after every
        # output was handed to the producer (and, under exactly-once, the transaction).
        groups = stream.take_events(group_messages, within=group_within_s)  # type: ignore[attr-defined]
        async for group in groups:
            started = time.perf_counter()
            async with gate.group():  # a commit never splits a group's writes and sends
                last = group[-1]  # one source partition: any event of the group names it
                with as_current_event(last):  # table writes go to the changelog partition of it
                    try:
                        out = resolve_group(group)
                        commit_group()
                    except Exception:
                        discard_group()
                        out = resolve_one_by_one(group)
                for partition in sorted(out.frames.keys() | out.merges.keys() | out.folds.keys()):
                    frames = out.frames.get(partition, [])
                    merges, folds = out.merges.get(partition, []), out.folds.get(partition, [])
                    for value in frame_chunks(frames, merges, folds):
                        await tx.send(last, resolved_topic, value, partition=partition)
                changes = (orjson.dumps(change) for change in out.changes)
                for value in json_arrays(changes, MAX_CHANGES_BYTES):
                    await tx.send(last, changes_topic, value, partition=0)
                for bad, reason in out.dead:
                    await dead_letter(last, bad, reason)
                # Back-pressure: this group's changelog records are on their way before the next.
                await drain_producer_buffer(app)
            if out.errors:
                metrics.processing_errors.labels(AGENT).inc(out.errors)
            events_counter.inc(out.events)
            messages_counter.inc(len(group))
            if out.merges_count:
                metrics.identity_merges.inc(out.merges_count)
            for rule, count in out.refusals.items():
                metrics.identity_refused.labels(rule).inc(count)
            if out.new_identifiers:
                metrics.identity_identifiers.inc(out.new_identifiers)
            if out.duplicates:
                metrics.identity_duplicates.inc(out.duplicates)
            if out.oldest_ms < NO_EVENT_MS:
                age.observe(max(0.0, time.time() - out.oldest_ms / 1000))
            seconds.observe(time.perf_counter() - started)

    return identity


@dataclass
class GroupOutput:
    """What a group of raw messages produced, per customer partition, ready to frame."""

    #: partition -> (customer_id, the event's original Avro bytes), in input order.
    frames: dict[int, list[tuple[str, bytes]]] = field(default_factory=dict)
    merges: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    folds: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    #: (raw message or event, reason) for cdp.events.invalid.
    dead: list[tuple[Any, str]] = field(default_factory=list)
    events: int = 0
    duplicates: int = 0  # events dropped as a duplicate send (see pipeline/identity/dedup.py)
    errors: int = 0  # messages that could not be decoded or resolved
    #: receipt time (ms) of the oldest message's first event; NO_EVENT_MS without events
    oldest_ms: int = NO_EVENT_MS
    merges_count: int = 0
    new_identifiers: int = 0
    refusals: dict[str, int] = field(default_factory=dict)

    def add(self, result: StageOutput, raw: bytes, spans: Sequence[tuple[int, int]]) -> None:
        for partition, body in result.resolved.items():
            positions = result.positions.get(partition, ())
            # The raw batch is written with the current Event schema (decoding just read it),
            # so each event's own bytes can be framed with its customer, not encoded again.
            self.frames.setdefault(partition, []).extend(
                (item["customer_id"], raw[spans[i][0] : spans[i][1]])
                for item, i in zip(body["events"], positions, strict=True)
            )
            if body["merges"]:
                self.merges.setdefault(partition, []).extend(body["merges"])
            if body["folds"]:
                self.folds.setdefault(partition, []).extend(body["folds"])
        self.changes.extend(result.changes)
        self.dead.extend((bad, reason) for bad, reason in result.unresolved)
        self.merges_count += result.merges
        self.new_identifiers += result.new_identifiers
        for rule, count in result.refusals.items():
            self.refusals[rule] = self.refusals.get(rule, 0) + count

    def extend(self, other: GroupOutput) -> None:
        for partition, frames in other.frames.items():
            self.frames.setdefault(partition, []).extend(frames)
        for partition, merges in other.merges.items():
            self.merges.setdefault(partition, []).extend(merges)
        for partition, folds in other.folds.items():
            self.folds.setdefault(partition, []).extend(folds)
        self.changes.extend(other.changes)
        self.dead.extend(other.dead)
        self.events += other.events
        self.duplicates += other.duplicates
        self.errors += other.errors
        self.merges_count += other.merges_count
        self.new_identifiers += other.new_identifiers
        self.oldest_ms = min(self.oldest_ms, other.oldest_ms)
        for rule, count in other.refusals.items():
            self.refusals[rule] = self.refusals.get(rule, 0) + count


def frame_chunks(
    frames: Sequence[tuple[str, bytes]],
    merges: Sequence[dict[str, Any]],
    folds: Sequence[dict[str, Any]],
    max_bytes: int = MAX_RESOLVED_BYTES,
) -> Iterator[bytes]:
    """``ResolvedBatch`` messages for one partition, each below ``max_bytes`` of events.

    Merges and folds go with the last chunk: the profile processor applies a message's events
    before its merges, and every event of the group comes before the group's merges in order.
    """
    start, size = 0, 0
    for index, (customer_id, event) in enumerate(frames):
        item = len(customer_id) + len(event) + 2
        if index > start and size + item > max_bytes:
            yield avro_reader.frame_resolved(frames[start:index], (), ())
            start, size = index, 0
        size += item
    yield avro_reader.frame_resolved(frames[start:], merges, folds)
