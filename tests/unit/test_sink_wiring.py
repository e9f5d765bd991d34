"""The sink's flush groups: what the profile API reads goes to ClickHouse as soon as the profile
rows have caught up; the events timeline on its own, slower, clock."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from pipeline import settings as s
from pipeline.metrics import WorkerMetrics
from pipeline.settings import Settings
from pipeline.sink.service import FlushGroup, SinkConfig, SinkService
from pipeline.sink.wiring import build_sink_service


class _Rows:
    """A stand-in for a TableSink: only its row count matters to the flush decision."""

    def __init__(self, rows: int = 0) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return self.rows


def _service(**overrides: object) -> tuple[Settings, SinkService]:
    settings = Settings(**overrides)  # type: ignore[arg-type]
    service = build_sink_service(
        settings, client=None, metrics=WorkerMetrics.create(CollectorRegistry())
    )
    return settings, service


def test_the_lookup_tables_flush_apart_from_the_events() -> None:
    settings, service = _service(sink_events_flush_s=3.0)
    lookups, timeline = service.groups
    # A lookup by email reads identity_lookup, merge_lookup and profile_lookup (kept by
    # materialized views on these three): inserted first, and not held by the events.
    assert [sink.table for sink in lookups.sinks][:3] == [
        "identities",
        "customer_merges",
        "profiles",
    ]
    assert [sink.table for sink in timeline.sinks] == ["events"]
    # Each group commits its own topics' offsets: a topic feeds one group only.
    assert set(lookups.handlers) == {
        settings.topic(s.TOPIC_IDENTITY_CHANGES),
        settings.topic(s.TOPIC_PROFILE_CHANGES),
    }
    assert set(timeline.handlers) == {settings.topic(s.TOPIC_RESOLVED)}
    assert lookups.eager_topics == {settings.topic(s.TOPIC_PROFILE_CHANGES)}
    assert timeline.eager_topics == frozenset() and timeline.interval_s == 3.0
    assert timeline.on_flushed is not None  # the e2e latency is observed on the events insert


def test_a_topic_cannot_feed_two_groups() -> None:
    one = FlushGroup("a", handlers={"t": lambda _: None}, sinks=[])
    two = FlushGroup("b", handlers={"t": lambda _: None}, sinks=[])
    with pytest.raises(ValueError, match="two flush groups"):
        SinkService(SinkConfig(bootstrap="x", group_id="g"), [one, two])


def _group(rows: int = 1, **kwargs: object) -> FlushGroup:
    return FlushGroup("g", handlers={}, sinks=[_Rows(rows)], last_flush=100.0, **kwargs)  # type: ignore[list-item,arg-type]


def test_identity_rows_alone_wait_for_the_profile_rows_or_the_interval() -> None:
    group = _group(interval_s=0.5, eager_topics=frozenset({"changes"}))
    group.pending = {"identity"}
    assert not group.flush_now(100.1, caught_up=True, max_rows=1000)
    assert group.flush_now(100.5, caught_up=False, max_rows=1000)  # the interval
    group.pending = {"identity", "changes"}
    assert group.flush_now(100.1, caught_up=True, max_rows=1000)  # profile rows caught up
    assert not group.flush_now(100.1, caught_up=False, max_rows=1000)  # more are coming


def test_a_group_flushes_at_max_rows_and_never_without_records() -> None:
    full = _group(rows=20_000, interval_s=2.0)
    full.pending = {"resolved"}
    assert full.flush_now(100.0, caught_up=False, max_rows=20_000)
    idle = _group(rows=0, interval_s=2.0)
    assert not idle.flush_now(200.0, caught_up=True, max_rows=20_000)


def test_the_fetch_waits_briefly_only_while_eager_rows_wait() -> None:
    group = _group(interval_s=2.0, eager_topics=frozenset({"changes"}))
    assert group.wait_s(100.5, idle_s=0.02) == pytest.approx(1.5)
    group.pending = {"changes"}
    assert group.wait_s(100.5, idle_s=0.02) == pytest.approx(0.02)
