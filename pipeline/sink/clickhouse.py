"""A batched ClickHouse writer: ``add()`` rows, ``flush()`` them in one insert.

The agents that own a sink flush it before their input messages are acknowledged (faust's
``take()`` acks a buffer only after the body that flushed it returns), so a crash re-delivers
rows rather than losing them. Re-inserted rows are harmless: every table written here is a
ReplacingMergeTree keyed so that a replayed row replaces its twin.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class SinkError(RuntimeError):
    """An insert kept failing until the sink gave up (only when ``max_attempts`` is set)."""


class TableSink:
    def __init__(
        self,
        client: Any,
        database: str,
        table: str,
        columns: Sequence[str],
        metrics: WorkerMetrics | None = None,
        *,
        max_attempts: int | None = None,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self.table = table
        self._target = f"{database}.{table}"
        self._columns = list(columns)
        self._rows: list[Sequence[Any]] = []
        self._metrics = metrics
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._sleep = sleep

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, rows: Iterable[Sequence[Any]]) -> None:
        self._rows.extend(rows)

    def flush(self) -> int:
        """Insert the buffered rows; retry with backoff (forever unless max_attempts is set).

        Retrying in place holds the agent, so its consumer lag grows and alerts fire, instead of
        dropping rows whose offsets would then be committed.
        """
        if not self._rows:
            return 0
        rows = self._rows
        attempt = 0
        delay = self._backoff_s
        try:
            while True:
                attempt += 1
                started = time.perf_counter()
                try:
                    self._client.insert(self._target, rows, column_names=self._columns)
                except Exception as exc:  # driver errors have many types; all are retried
                    if self._metrics:
                        self._metrics.sink_failures.labels(self.table).inc()
                    if self._max_attempts is not None and attempt >= self._max_attempts:
                        raise SinkError(f"insert into {self._target} failed: {exc}") from exc
                    log.warning(
                        "insert into %s failed (attempt %d): %s", self._target, attempt, exc
                    )
                    self._sleep(delay)
                    delay = min(delay * 2, self._max_backoff_s)
                    continue
                if self._metrics:
                    self._metrics.sink_flush_seconds.labels(self.table).observe(
                        time.perf_counter() - started
                    )
                    self._metrics.sink_rows.labels(self.table).inc(len(rows))
                    self._metrics.sink_batches.labels(self.table).inc()
                return len(rows)
        finally:
            # The batch is done either way: inserted, or given up on with an error raised.
            self._rows = []
