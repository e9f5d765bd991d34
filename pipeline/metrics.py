"""Prometheus metrics, grouped in objects built from a registry (as faust's sensor does).

Each process builds its metrics from its own registry, so tests can use a fresh
``CollectorRegistry()`` and read values back without global state leaking between them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from pipeline import __version__

if TYPE_CHECKING:
    from faust.sensors.prometheus import PrometheusMonitor


@dataclass(frozen=True)
class BuildMetrics:
    info: Info

    @classmethod
    def create(cls, registry: CollectorRegistry, component: str) -> BuildMetrics:
        info = Info("cdp_build", "Build and runtime information.", registry=registry)
        info.info(
            {"version": __version__, "component": component, "python": platform.python_version()}
        )
        return cls(info)


# Seconds-scale latencies: the e2e path crosses two Kafka hops and a batched sink.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Event age at a stage: from the collector's receipt, tens of ms on an idle stack to seconds on a
# backlog (the 0.75/1.5/3 s bounds resolve the commit-interval steps of exactly-once).
AGE_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
# Event-loop lag: well under a millisecond when idle; a stage's group in one synchronous piece
# holds the loop for tens to hundreds of milliseconds.
LOOP_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Per-message processing of a batch of events takes micro- to milliseconds.
PROCESSING_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass(frozen=True)
class WorkerMetrics:
    """Metrics of the stream processors and the sink (one object per worker process)."""

    events_processed: Counter
    messages_processed: Counter
    processing_seconds: Histogram
    processing_errors: Counter
    dead_letters: Counter
    identity_merges: Counter
    identity_refused: Counter
    identity_identifiers: Counter
    identity_duplicates: Counter
    profile_updates: Counter
    sink_rows: Counter
    sink_batches: Counter
    sink_flush_seconds: Histogram
    sink_failures: Counter
    e2e_latency: Histogram
    event_age: Histogram
    loop_lag: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        r = registry
        return cls(
            events_processed=Counter(
                "cdp_agent_events", "Events processed, by agent.", ["agent"], registry=r
            ),
            messages_processed=Counter(
                "cdp_agent_messages", "Kafka messages processed, by agent.", ["agent"], registry=r
            ),
            processing_seconds=Histogram(
                "cdp_agent_processing_seconds",
                "Time to process one Kafka message (a batch of events), by agent.",
                ["agent"],
                buckets=PROCESSING_BUCKETS_S,
                registry=r,
            ),
            processing_errors=Counter(
                "cdp_agent_errors",
                "Messages that failed processing, by agent.",
                ["agent"],
                registry=r,
            ),
            dead_letters=Counter(
                "cdp_dead_letters",
                "Records written to cdp.events.invalid, by stage and reason.",
                ["stage", "reason"],
                registry=r,
            ),
            identity_merges=Counter(
                "cdp_identity_merges", "Customers merged into another.", registry=r
            ),
            identity_refused=Counter(
                "cdp_identity_refused_links",
                "Links refused by a limit, by rule.",
                ["rule"],
                registry=r,
            ),
            identity_identifiers=Counter(
                "cdp_identity_identifiers_new",
                "Identifiers seen for the first time.",
                registry=r,
            ),
            identity_duplicates=Counter(
                "cdp_identity_duplicate_events",
                "Events dropped as a resend of an event id seen within the dedup window.",
                registry=r,
            ),
            profile_updates=Counter(
                "cdp_profile_updates", "Profile state updates written.", registry=r
            ),
            sink_rows=Counter(
                "cdp_sink_rows", "Rows written to ClickHouse, by table.", ["table"], registry=r
            ),
            sink_batches=Counter(
                "cdp_sink_batches", "Inserts into ClickHouse, by table.", ["table"], registry=r
            ),
            sink_flush_seconds=Histogram(
                "cdp_sink_flush_seconds",
                "Duration of one ClickHouse insert, by table.",
                ["table"],
                buckets=PROCESSING_BUCKETS_S,
                registry=r,
            ),
            sink_failures=Counter(
                "cdp_sink_failures",
                "Failed ClickHouse inserts (retried), by table.",
                ["table"],
                registry=r,
            ),
            e2e_latency=Histogram(
                "cdp_e2e_latency_seconds",
                "Collector acknowledgement to the event's row written in ClickHouse.",
                buckets=LATENCY_BUCKETS_S,
                registry=r,
            ),
            event_age=Histogram(
                "cdp_stage_event_age_seconds",
                "Age (since the collector's receipt) of the oldest event of a group of input "
                "messages when a stage has processed the group and handed its outputs to Kafka, "
                "by stage: where an end-to-end delay builds up.",
                ["stage"],
                buckets=AGE_BUCKETS_S,
                registry=r,
            ),
            loop_lag=Histogram(
                "cdp_event_loop_lag_seconds",
                "How much later than asked the worker's event loop woke a sleeping task: the "
                "time synchronous work (a stage's group, an API query) held the loop.",
                buckets=LOOP_LAG_BUCKETS_S,
                registry=r,
            ),
        )


# Request latency of the collector: a Kafka acknowledgement (acks=all) takes milliseconds.
REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class CollectorMetrics:
    """Metrics of the collector (one object per collector process).

    ``received`` = ``accepted`` + ``rejected`` for every request: an event refused because Kafka
    was unavailable counts as rejected with reason ``unavailable``.
    """

    events_received: Counter
    events_accepted: Counter
    events_rejected: Counter
    bots: Counter
    kafka_produce_seconds: Histogram
    kafka_produce_errors: Counter
    dead_letters_dropped: Counter
    http_requests: Counter
    http_request_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> CollectorMetrics:
        r = registry
        return cls(
            events_received=Counter(
                "cdp_events_received",
                "Events received, by source and type (unknown when unreadable).",
                ["source", "type"],
                registry=r,
            ),
            events_accepted=Counter(
                "cdp_events_accepted",
                "Events acknowledged by Kafka, by source and type.",
                ["source", "type"],
                registry=r,
            ),
            events_rejected=Counter(
                "cdp_events_rejected",
                "Events refused, by reason: malformed, invalid, too_large, unauthorized, "
                "unavailable, overloaded.",
                ["reason"],
                registry=r,
            ),
            bots=Counter("cdp_bots", "Accepted events flagged as sent by a bot.", registry=r),
            kafka_produce_seconds=Histogram(
                "cdp_kafka_produce_seconds",
                "Time from handing one EventBatch to the producer to Kafka's acknowledgement.",
                buckets=REQUEST_BUCKETS_S,
                registry=r,
            ),
            kafka_produce_errors=Counter(
                "cdp_kafka_produce_errors",
                "Kafka messages (event batches and dead letters) that failed or timed out.",
                registry=r,
            ),
            dead_letters_dropped=Counter(
                "cdp_dead_letters_dropped",
                "Dead letters not written because the queue towards Kafka was full.",
                registry=r,
            ),
            http_requests=Counter(
                "cdp_http_requests",
                "HTTP requests, by route template and status.",
                ["route", "status"],
                registry=r,
            ),
            http_request_seconds=Histogram(
                "cdp_http_request_seconds",
                "HTTP request duration, by route template.",
                ["route"],
                buckets=REQUEST_BUCKETS_S,
                registry=r,
            ),
        )


@dataclass(frozen=True)
class LagMetrics:
    """Consumer lag of the worker's consumer groups, computed by :mod:`pipeline.lag`.

    Lag is a gauge set from Kafka's committed and end offsets (not counted in the consumer), so
    it also shows a consumer that is stuck or not running at all. Every worker of a group
    reports the same figures: aggregate with ``max by (group, topic, partition)``, never sum.
    """

    consumer_lag: Gauge
    updated: Gauge
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> LagMetrics:
        r = registry
        return cls(
            consumer_lag=Gauge(
                "cdp_consumer_lag",
                "Messages not yet committed by a consumer group: end offset - committed offset.",
                ["topic", "partition", "group"],
                registry=r,
            ),
            updated=Gauge(
                "cdp_consumer_lag_updated_timestamp_seconds",
                "Unix time of the last successful lag computation (stale lag looks like zero).",
                registry=r,
            ),
            errors=Counter(
                "cdp_consumer_lag_errors",
                "Lag computations that failed (broker unreachable, group coordinator moving).",
                registry=r,
            ),
        )


def faust_sensor(registry: CollectorRegistry, prefix: str = "cdp_faust") -> PrometheusMonitor:
    """faust's own Prometheus sensor on our registry, for ``app.monitor = faust_sensor(r)``.

    It adds what our metrics do not cover (rebalances, commit and producer latency, table
    operations, per-topic receive counts) without re-writing it. Its names are faust's: latencies
    are in milliseconds, not base units, so dashboards label them as such.
    """
    # Imported here: the collector uses this module too and has no use for faust.
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    return PrometheusMonitor(metrics=FaustMetrics.create(registry, prefix))
