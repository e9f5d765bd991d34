"""Shared fixtures: the real local Kafka broker and an embedded ClickHouse (chDB).

The broker is the same Apache Kafka the local stack runs (jars from Maven Central), started once
per test session on free ports in a temporary folder and stopped at the end. Each test gets its
own topic names, consumer group and ClickHouse database, named with a uuid, so tests never see
each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TZ", "UTC")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real single-node KRaft broker, shared by the session."""
    from pipeline.localstack.kafka import LocalKafka, free_port
    from pipeline.settings import load_settings

    settings = load_settings()
    broker = LocalKafka(
        run_dir=tmp_path_factory.mktemp("kafka"),
        libs_dir=settings.kafka_libs_dir,
        port=free_port(),
        controller_port=free_port(),
        heap="384m",
    )
    broker.start(timeout_s=120)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and database names of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def topic(kafka_broker: str, unique: str) -> str:
    """A fresh 4-partition topic on the session broker."""
    from pipeline.kafka_admin import TopicSpec, ensure_topics

    name = f"test.{unique}"
    ensure_topics(kafka_broker, [TopicSpec(name, partitions=4)])
    return name


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB opens one data path per process, so the whole session shares one; tests are kept
    # apart by database instead.
    return tmp_path_factory.mktemp("chdb") / "clickhouse"


@pytest.fixture
def clickhouse(chdb_path: Path, unique: str) -> Iterator[tuple[object, str]]:
    """(client, database): the embedded engine with a fresh database for this test."""
    from pipeline.storage.clickhouse import connect

    client = connect(f"chdb://{chdb_path}")
    database = f"test_{unique}"
    client.command(f"CREATE DATABASE {database}")
    try:
        yield client, database
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
