from __future__ import annotations

import base64

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
