"""Fixtures for tests that run the worker in-process on the session broker and chDB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.settings import Settings
from tests.integration.worker_harness import worker_settings


@pytest.fixture
def local_worker_settings(
    kafka_broker: str,
    unique: str,
    clickhouse: tuple[Any, str],
    chdb_path: Path,
    tmp_path: Path,
) -> Callable[..., Settings]:
    """Settings of a worker with its own topics and group, writing to this test's database."""
    _, db = clickhouse

    def make(**extra: Any) -> Settings:
        return worker_settings(
            kafka_broker,
            unique,
            tmp_path,
            clickhouse_dsn=f"chdb://{chdb_path}",
            clickhouse_database=db,
            **extra,
        )

    return make
