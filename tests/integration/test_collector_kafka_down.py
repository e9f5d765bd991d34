"""No 2xx for an event Kafka may not have: 503 with Retry-After when it is down or refuses."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests

from pipeline import avro
from pipeline.localstack.kafka import LocalKafka, free_port
from pipeline.settings import load_settings
from tests.integration.test_collector_support import (
    BASIC,
    collector_settings,
    live_collector,
    make_topics,
    present_records,
)

pytestmark = pytest.mark.integration


def test_unreachable_kafka_gives_503_with_retry_after(kafka_broker: str, unique: str) -> None:
    topics = make_topics(kafka_broker, unique)
    # A port nothing listens on: the producer never connects.
    settings = collector_settings(f"127.0.0.1:{free_port()}", collector_delivery_timeout_s=2)
    with live_collector(settings, topics, wait_healthy=False) as collector:
        track = requests.post(
            f"{collector.url}/v1/track", json={"userId": "u", "event": "E"}, auth=BASIC, timeout=10
        )
        pixel = requests.get(
            f"{collector.url}/i", params={"k": "test-write-key", "u": "https://x"}, timeout=10
        )
        health = requests.get(f"{collector.url}/healthz", timeout=10)
        # Bad input is still bad input: a 4xx, never a 5xx, whatever Kafka's state; and an
        # empty batch has nothing to wait for.
        bad = requests.post(f"{collector.url}/v1/track", data=b"{", auth=BASIC, timeout=10)
        empty = requests.post(
            f"{collector.url}/v1/batch", json={"batch": []}, auth=BASIC, timeout=10
        )
        unavailable = collector.metric("cdp_events_rejected_total", {"reason": "unavailable"})
    for response in (track, pixel):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert response.json()["code"] == "unavailable"
    assert health.status_code == 503 and health.json()["kafka"] is False
    assert bad.status_code == 400
    assert empty.json() == {"success": True, "accepted": 0, "rejected": []}
    assert unavailable == 2


def test_a_frozen_broker_gives_503_after_the_delivery_timeout_then_recovers(
    tmp_path: Path, unique: str
) -> None:
    """A broker that stops answering (its JVM paused with SIGSTOP: connections stay open, no
    acknowledgement comes) is the slow-Kafka case; SIGCONT brings it back. The broker is this
    test's own, so the session broker is never touched."""
    broker = LocalKafka(
        run_dir=tmp_path / "kafka",
        libs_dir=load_settings().kafka_libs_dir,
        port=free_port(),
        controller_port=free_port(),
        heap="256m",
    )
    broker.start(timeout_s=120)
    try:
        topics = make_topics(broker.bootstrap, unique)
        settings = collector_settings(broker.bootstrap, collector_delivery_timeout_s=1)
        with live_collector(settings, topics) as collector:
            url = f"{collector.url}/v1/track"
            before = requests.post(
                url, json={"userId": "u", "event": "Before"}, auth=BASIC, timeout=10
            )
            pid = broker.pid()
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                frozen = requests.post(
                    url, json={"userId": "u", "event": "Frozen"}, auth=BASIC, timeout=10
                )
                elapsed = time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while True:  # the client's retry, as an SDK would after Retry-After
                after = requests.post(
                    url, json={"userId": "u", "event": "After"}, auth=BASIC, timeout=10
                )
                if after.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            errors = collector.metric("cdp_kafka_produce_errors_total")
            names = _event_names_until(broker.bootstrap, topics.raw, "After")
    finally:
        broker.stop()
    assert before.status_code == 200
    assert frozen.status_code == 503
    assert frozen.headers["Retry-After"] == "1"
    assert "did not acknowledge" in frozen.json()["message"]
    assert 1.0 <= elapsed < 5.0
    assert errors >= 1
    assert after.status_code == 200
    # At least once: the 503'd event may have reached Kafka too; the acknowledged ones did.
    assert names in (["Before", "After"], ["Before", "Frozen", "After"])


def _event_names_until(bootstrap: str, topic: str, last: str) -> list[str]:
    deadline = time.monotonic() + 20
    while True:
        names = [
            event["event"]
            for record in present_records(bootstrap, topic, wait_ms=500)
            for event in avro.decode_batch(record.value)
        ]
        if last in names or time.monotonic() > deadline:
            return names
