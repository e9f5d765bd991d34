"""The identity processor: a thin faust agent around :func:`resolve_batch`.

Reads ``cdp.events.raw`` (one partition: identity is a single writer, see the README), keeps the
identity graph in two changelog-backed faust tables, and writes

* ``cdp.events.resolved``: one ``ResolvedBatch`` per customer partition per input message,
* ``cdp.identity.changes``: identifiers, merges and refused links (JSON list per message),
* ``cdp.events.invalid``: events no identifier could be resolved for, with the reason.

Delivery is at-least-once: faust flushes the producer (outputs and table changelogs) before it
commits an input offset. A message processed again after a crash resolves to the same customers
(the engine is idempotent for identifiers it already holds), and downstream deduplicates by
``event_id``, so the end state equals an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from typing import Any, cast

import faust
import orjson

from pipeline import avro, avro_reader
from pipeline import settings as s
from pipeline.identity.engine import IdentityEngine
from pipeline.identity.stage import resolve_batch
from pipeline.identity.state import CustomerRecord, IdentityState
from pipeline.metrics import WorkerMetrics
from pipeline.worker.buffered import BufferedTable
from pipeline.worker.txsend import DeadLetters, SourceTransactionSender

log = logging.getLogger(__name__)
AGENT = "identity"


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

    async def forget_cache(*_: Any, **__: Any) -> None:
        # A rebalance may rebuild the tables from their changelogs.
        identifiers.invalidate()
        customers.invalidate()

    app.on_partitions_revoked.connect(forget_cache)
    app.on_partitions_assigned.connect(forget_cache)
    engine = IdentityEngine(settings.identity_config, state)
    app.identity_engine = engine  # type: ignore[attr-defined]  # profile API lookups
    seconds = metrics.processing_seconds.labels(AGENT)
    events_counter = metrics.events_processed.labels(AGENT)
    messages_counter = metrics.messages_processed.labels(AGENT)

    tx = SourceTransactionSender(app)
    invalid_topic = invalid.get_topic_name()
    resolved_topic = resolved.get_topic_name()
    changes_topic = changes.get_topic_name()

    dead_letter = DeadLetters(tx, invalid_topic, metrics, AGENT).send

    @app.agent(raw, name=AGENT)
    async def identity(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            message = event.message
            raw = event.value
            try:
                batch, spans = avro_reader.decode_batch_spans(raw)
            except avro.SerializationError as exc:
                metrics.processing_errors.labels(AGENT).inc()
                await dead_letter(event, event.value, f"undecodable raw message: {exc}")
                continue
            try:
                out = resolve_batch(engine, batch, partitions, version_base=message.offset << 16)
                identifiers.flush()
                customers.flush()
            except Exception as exc:  # a bug must not stop the agent; the batch is kept
                identifiers.discard()
                customers.discard()
                log.exception("identity failed on offset %s", message.offset)
                metrics.processing_errors.labels(AGENT).inc()
                await dead_letter(
                    event, event.value, f"identity error: {type(exc).__name__}: {exc}"
                )
                continue
            for partition, body in out.resolved.items():
                # Each event's own bytes from the raw message, framed with its customer: the
                # raw batch is written with the current Event schema (decoding just read it).
                framed = [
                    (item["customer_id"], raw[spans[i][0] : spans[i][1]])
                    for item, i in zip(
                        body["events"], out.positions.get(partition, ()), strict=True
                    )
                ]
                value = avro_reader.frame_resolved(framed, body["merges"], body["folds"])
                await tx.send(event, resolved_topic, value, partition=partition)
            if out.changes:
                await tx.send(event, changes_topic, orjson.dumps(out.changes), partition=0)
            for bad, reason in out.unresolved:
                await dead_letter(event, bad, reason)
            events_counter.inc(len(batch))
            messages_counter.inc()
            if out.merges:
                metrics.identity_merges.inc(out.merges)
            for rule, count in out.refusals.items():
                metrics.identity_refused.labels(rule).inc(count)
            if out.new_identifiers:
                metrics.identity_identifiers.inc(out.new_identifiers)
            seconds.observe(time.perf_counter() - started)

    return identity
