from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pipeline.localstack import kafka


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 encodes as "-" first in url-safe base64: the first candidate must be refused.
    candidates = iter([bytes([0xF8]) + bytes(15), bytes(16)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: type("U", (), {"bytes": next(candidates)}))
    cluster_id = kafka._kafka_uuid()
    assert not cluster_id.startswith("-")
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_free_ports_avoid_the_ephemeral_range() -> None:
    # Outgoing connections take their local port from that range: a port chosen there could be
    # taken by a client before the server binds it.
    from pipeline.localstack.kafka import _ephemeral_range, free_port, free_port_pair

    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(20)] + [free_port_pair() for _ in range(5)]
    if low > 11_000:
        assert all(10_000 <= p < low for p in ports)


def test_a_dead_brokers_error_carries_its_fatal_lines(tmp_path: Path) -> None:
    # From the broker that died in CI: the reason must reach the test's output.
    log = tmp_path / "server.log"
    log.write_text(
        "[2026-11-23 01:21:41,646] INFO Starting the log cleaner (LogCleaner)\n"
        "[2026-11-23 01:21:41,779] ERROR Encountered fatal fault: Error starting LogManager\n"
        "java.lang.OutOfMemoryError: Java heap space\n"
        "\tat java.base/java.nio.HeapByteBuffer.<init>(HeapByteBuffer.java:64)\n"
    )
    text = kafka._fatal_lines(log)
    assert "Error starting LogManager" in text and "OutOfMemoryError" in text
    assert "HeapByteBuffer" not in text and "INFO" not in text
    assert kafka._fatal_lines(tmp_path / "missing.log") == ""


def test_the_cleaner_buffer_fits_the_smallest_heap_the_tests_use() -> None:
    # Kafka's 128 MiB default, allocated in one piece, killed a 256 MiB broker at start-up.
    text = (kafka.KAFKA_DEPLOY_DIR / "server.properties").read_text()
    size = int(text.split("log.cleaner.dedupe.buffer.size=")[1].split()[0])
    assert size <= 256 * 2**20 // 8
