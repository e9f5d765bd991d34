"""The lag computation over a fake offset source: committed vs end offsets, per group."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry

from pipeline.lag import LagMonitor, PartitionLag, compute_lag
from pipeline.metrics import LagMetrics


class FakeOffsets:
    def __init__(
        self,
        partitions: dict[str, int],
        ends: dict[TopicPartition, int],
        committed: dict[str, dict[TopicPartition, int]],
        starts: dict[TopicPartition, int] | None = None,
    ) -> None:
        self._partitions = partitions
        self.ends = ends
        self.commits = committed
        self.starts = starts or {}
        self.closed = False
        self.fail = False
        #: offsets holding committed data records; None: every offset does (no transactions).
        self.records: dict[TopicPartition, set[int]] | None = None
        self.gap_reads: list[tuple[TopicPartition, int, int]] = []

    def committed(self, group: str) -> dict[TopicPartition, int]:
        if self.fail:
            raise ConnectionError("broker away")
        return dict(self.commits.get(group, {}))

    def partitions(self, topic: str) -> set[int]:
        return set(range(self._partitions.get(topic, 0)))

    def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in partitions if tp in self.ends}

    def beginning_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.starts.get(tp, 0) for tp in partitions}

    def holds_records(self, partition: TopicPartition, start: int, end: int) -> bool:
        self.gap_reads.append((partition, start, end))
        if self.records is None:
            return True
        return any(start <= o < end for o in self.records.get(partition, ()))

    def close(self) -> None:
        self.closed = True


A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


def test_lag_is_end_minus_committed_and_uncommitted_counts_from_earliest() -> None:
    source = FakeOffsets(
        {"a": 2},
        ends={A0: 10, A1: 7, B0: 5},
        committed={"g": {A0: 4, B0: 5}},  # b is not watched but committed: reported too
        starts={A1: 2},  # retention removed offsets 0-1
    )
    assert compute_lag(source, {"g": ["a"]}) == [
        PartitionLag("g", "a", 0, 6),
        PartitionLag("g", "a", 1, 5),
        PartitionLag("g", "b", 0, 0),
    ]


def test_lag_never_negative_and_deleted_topics_skipped() -> None:
    source = FakeOffsets({"a": 2}, ends={A0: 3}, committed={"g": {A0: 5}})
    assert compute_lag(source, {"g": ["a"]}) == [PartitionLag("g", "a", 0, 0)]


def test_groups_are_independent() -> None:
    source = FakeOffsets({"a": 1}, ends={A0: 10}, committed={"fast": {A0: 10}, "slow": {A0: 1}})
    lags = {
        (lag.group, lag.partition): lag.lag
        for lag in compute_lag(source, {"fast": ["a"], "slow": ["a"]})
    }
    assert lags == {("fast", 0): 0, ("slow", 0): 9}


def _monitor(source: FakeOffsets, registry: CollectorRegistry) -> LagMonitor:
    return LagMonitor(
        {"g": ["a"]}, LagMetrics.create(registry), lambda: source, interval_s=0.01, now=lambda: 42.0
    )


def test_update_sets_gauges_with_the_injected_clock_and_drops_gone_series() -> None:
    registry = CollectorRegistry()
    source = FakeOffsets({"a": 2}, ends={A0: 10, A1: 3}, committed={"g": {A0: 8, A1: 3}})
    monitor = _monitor(source, registry)
    monitor.update()

    def lag(partition: str) -> float | None:
        labels = {"topic": "a", "partition": partition, "group": "g"}
        return registry.get_sample_value("cdp_consumer_lag", labels)

    assert (lag("0"), lag("1")) == (2.0, 0.0)
    assert registry.get_sample_value("cdp_consumer_lag_updated_timestamp_seconds") == 42.0
    source.commits["g"][A0] = 10
    source._partitions = {"a": 1}
    del source.commits["g"][A1]
    monitor.update()
    assert (lag("0"), lag("1")) == (0.0, None)


def test_background_loop_survives_errors_and_counts_them() -> None:
    registry = CollectorRegistry()
    source = FakeOffsets({"a": 1}, ends={A0: 4}, committed={"g": {A0: 1}})
    source.fail = True
    monitor = _monitor(source, registry)

    async def scenario() -> None:
        await monitor.start()
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while (registry.get_sample_value("cdp_consumer_lag_errors_total") or 0) < 2:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
            assert source.closed  # a failed source is replaced
            source.fail = False
            labels = {"topic": "a", "partition": "0", "group": "g"}
            while registry.get_sample_value("cdp_consumer_lag", labels) != 3.0:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
        finally:
            await monitor.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("interval", [None, 0.5])
def test_worker_monitor_watches_faust_and_sink_groups(interval: float | None) -> None:
    from pipeline.lag import DEFAULT_INTERVAL_S, worker_lag_monitor
    from pipeline.settings import Settings

    settings = Settings(worker_id="w1", topic_prefix="p.")
    monitor = worker_lag_monitor(settings, CollectorRegistry(), interval_s=interval)
    assert set(monitor._groups) == {"w1", "w1-sink"}
    assert "p.cdp.events.raw" in monitor._groups["w1"]
    assert "p.cdp.profiles.changes" in monitor._groups["w1-sink"]
    assert monitor._interval_s == (interval or DEFAULT_INTERVAL_S)


def test_a_gap_of_transaction_markers_only_is_no_lag() -> None:
    # a/0: records 0-3, then markers at 4 and 5; the group read everything (committed 4).
    # a/1: records up to 9 with a marker at 10; the group is one record behind (committed 9).
    source = FakeOffsets({"a": 2}, ends={A0: 6, A1: 11}, committed={"g": {A0: 4, A1: 9}})
    source.records = {A0: {0, 1, 2, 3}, A1: set(range(10))}
    assert compute_lag(source, {"g": ["a"]}) == [
        PartitionLag("g", "a", 0, 0),
        PartitionLag("g", "a", 1, 2),
    ]
    assert source.gap_reads == [(A0, 4, 6), (A1, 9, 11)]


def test_only_small_gaps_are_read() -> None:
    from pipeline.lag import MARKER_SLACK

    big = MARKER_SLACK + 1
    source = FakeOffsets({"a": 2}, ends={A0: big, A1: 3}, committed={"g": {A0: 0, A1: 3}})
    source.records = {}
    lags = compute_lag(source, {"g": ["a"]})
    assert lags == [PartitionLag("g", "a", 0, big), PartitionLag("g", "a", 1, 0)]
    assert source.gap_reads == []  # a big gap is reported as is; no gap, nothing to read


@pytest.mark.parametrize(
    ("roles", "groups"),
    [
        ("identity", {"w1": ["cdp.events.raw"]}),
        ("profile,sink", {"w1": ["cdp.events.resolved"], "w1-sink": ["cdp.events.resolved"]}),
        ("api", {}),
    ],
)
def test_a_worker_watches_the_groups_of_its_roles(roles: str, groups: dict[str, list[str]]) -> None:
    from pipeline.lag import worker_groups
    from pipeline.settings import Settings

    watched = worker_groups(Settings(worker_id="w1", worker_roles=roles))
    assert set(watched) == set(groups)
    for group, topics in groups.items():
        assert set(topics) <= set(watched[group])
