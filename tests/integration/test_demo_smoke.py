"""The load generator against an in-process collector on the session broker.

Checks the harness end to end at the edge: every simulated message is acknowledged, lands in
Kafka once per send (duplicates twice, with one messageId), the ground truth file names exactly the
messages in Kafka, and the collector flags the same events as bots as the simulation.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.loadgen.model import ModelConfig
from pipeline.loadgen.run import run_loadgen
from pipeline.loadgen.send import SendOptions
from pipeline.loadgen.truth import read_truth
from tests.integration.test_collector_support import (
    WRITE_KEY,
    collector_settings,
    live_collector,
    make_topics,
    read_events,
)

pytestmark = pytest.mark.integration
EVENTS = 400


def test_loadgen_through_the_collector(kafka_broker: str, unique: str, tmp_path: Path) -> None:
    settings = collector_settings(kafka_broker)
    topics = make_topics(kafka_broker, unique, raw_partitions=2)
    # The real clock: simulated event times end now, so none is clamped as "in the future".
    config = ModelConfig(customers=40, events=EVENTS, seed=3, end_ms=int(time.time() * 1000))
    truth_path = tmp_path / "truth.jsonl"
    with live_collector(settings, topics, now=time.time) as collector:
        options = SendOptions(
            collector_url=collector.url, write_key=WRITE_KEY, batch_size=50, concurrency=3
        )
        result = run_loadgen(config, options, truth_path, progress=False)
        accepted_metric = sum(
            collector.metric("cdp_events_accepted_total", {"source": "web", "type": kind})
            for kind in ("track", "page", "identify")
        )
        events = read_events(kafka_broker, topics.raw, EVENTS, timeout_s=20)

    stats = result.stats
    assert (stats.accepted, stats.rejected, stats.failed) == (EVENTS, 0, 0)
    assert stats.pixel > 0 and accepted_metric == EVENTS

    truth = list(read_truth(truth_path))
    truth_events = {r["message_id"]: r for r in truth if r["kind"] == "event"}
    sent = Counter(e["event_id"] for e in events)
    assert set(sent) == set(truth_events)
    assert sum(sent.values()) - len(sent) == EVENTS - len(truth_events)  # the duplicates
    flagged = {e["event_id"] for e in events if e["enrichment"]["is_bot"]}
    assert flagged == {m for m, r in truth_events.items() if r["bot"]}
    people = [r for r in truth if r["kind"] == "person"]
    assert len(people) == config.customers
    assert {r["person"] for r in truth_events.values() if not r["bot"]} <= {
        p["person"] for p in people
    }
