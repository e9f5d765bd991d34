"""The whole pipeline in one test process, for the end-to-end tests (a module without tests).

* the worker (``create_app``: identity, profile, ClickHouse sink, profile API) on its own event
  loop in a background thread, writing to a database of the session's chDB path;
* the collector (:class:`LiveCollector`) on the worker's raw and dead-letter topics, with the
  real clock (event times are checked against ``receivedAt``);
* a :class:`Ledger` of every order the tests sent, from which the analytics views are recomputed
  independently of the pipeline.

chDB clients are cached per path and shared by everything in the process, and the worker uses
its client from its own thread: the tests' ClickHouse queries therefore run on the worker's
thread too (:meth:`WorkerThread.call`), never concurrently with the sink or the API.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from prometheus_client import CollectorRegistry

from pipeline.settings import TOPIC_INVALID, TOPIC_RAW, Settings
from pipeline.storage.clickhouse import connect
from tests.integration.test_collector_support import (
    BASIC,
    WRITE_KEY,
    LiveCollector,
    Topics,
    collector_settings,
)
from tests.integration.worker_harness import worker_settings

__all__ = ["WRITE_KEY", "E2eStack", "Ledger", "e2e_stack", "eventually", "iso"]

TOKEN = "e2e-api-token"
T = TypeVar("T")


def iso(at: datetime) -> str:
    """The API's (and Segment's) time format: ISO 8601 UTC, milliseconds, ``Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def eventually(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll ``probe`` until it returns something other than None; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


class WorkerThread:
    """The worker's faust app, started on a fresh event loop in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="e2e-worker", daemon=True)

    def _run(self) -> None:
        from pipeline.worker.app import create_app

        loop = self._loop
        asyncio.set_event_loop(loop)
        app = None
        try:
            app = create_app(self.settings, self.registry)
            loop.run_until_complete(app.start())
            self._ready.set()
            loop.run_forever()
        except BaseException as exc:  # surfaced by start() / stop()
            self._error = exc
        finally:
            self._ready.set()
            if app is not None:
                loop.run_until_complete(app.stop())
            loop.close()

    def start(self, timeout_s: float = 120.0) -> WorkerThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise AssertionError(f"the worker did not start within {timeout_s}s")
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Callable[[], T], timeout_s: float = 60.0) -> T:
        """Run ``fn`` on the worker's thread (between its tasks) and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def stop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(60)
        if self._error is not None:
            raise self._error


@dataclass
class Ledger:
    """Every order the tests sent, by person, as the documented rules count them.

    A person is the identifier the tests look them up by (``("user_id", "u-1")``); an order is
    its ``order_id`` with the time and amount of its earliest report (resends count once).
    """

    orders: dict[tuple[str, str], dict[str, tuple[datetime, Decimal]]] = field(default_factory=dict)

    def order(self, person: tuple[str, str], order_id: str, at: datetime, revenue: str) -> None:
        known = self.orders.setdefault(person, {})
        report = (at, Decimal(revenue))
        if order_id not in known or report[0] < known[order_id][0]:
            known[order_id] = report

    def figures(self, person: tuple[str, str]) -> dict[str, Any]:
        """orders, revenue and last_order_at as the profile (and the views) should show them."""
        orders = self.orders.get(person, {})
        return {
            "orders": len(orders),
            "revenue": sum((amount for _, amount in orders.values()), Decimal(0)),
            "last_order_at": max((at for at, _ in orders.values()), default=None),
        }


@dataclass
class E2eStack:
    settings: Settings
    worker: WorkerThread
    collector: LiveCollector
    ledger: Ledger

    @property
    def database(self) -> str:
        return self.settings.clickhouse_database

    # --- the collector ----------------------------------------------------------------------

    def send(self, *messages: dict[str, Any]) -> None:
        """One ``/v1/batch`` request (no ``sentAt``: each ``timestamp`` is the event time)."""
        response = requests.post(
            self.collector.url + "/v1/batch",
            json={"batch": list(messages)},
            auth=BASIC,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["accepted"] == len(messages) and body["rejected"] == [], body

    # --- the profile API --------------------------------------------------------------------

    def api(self, path: str) -> tuple[int, Any]:
        response = requests.get(
            self.settings.api_url + path,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        return response.status_code, response.json()

    def lookup(self, id_type: str, value: str) -> tuple[int, Any]:
        return self.api(f"/v1/profiles?{id_type}={quote(value, safe='')}")

    def profile_when(
        self,
        id_type: str,
        value: str,
        ready: Callable[[dict[str, Any]], bool],
        what: str,
        timeout_s: float = 90.0,
    ) -> dict[str, Any]:
        """The profile found by an identifier once ``ready(profile)`` holds (else fail)."""
        seen: list[Any] = [None]

        def probe() -> dict[str, Any] | None:
            status, body = self.lookup(id_type, value)
            seen[0] = (status, body)
            return body if status == 200 and ready(body) else None

        try:
            return eventually(probe, timeout_s, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {seen[0]}") from None

    def timeline_when(
        self,
        customer_id: str,
        ready: Callable[[dict[str, Any]], bool],
        what: str,
        timeout_s: float = 90.0,
    ) -> dict[str, Any]:
        seen: list[Any] = [None]

        def probe() -> dict[str, Any] | None:
            status, body = self.api(f"/v1/profiles/{customer_id}/events?limit=1000")
            seen[0] = (status, body)
            return body if status == 200 and ready(body) else None

        try:
            return eventually(probe, timeout_s, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last answer: {seen[0]}") from None

    # --- ClickHouse (on the worker's thread) ------------------------------------------------

    def query(self, sql: str, **parameters: Any) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts; ``{db}`` stands for the stack's database, values travel as
        ClickHouse parameters (``{name:Type}``)."""
        client = connect(self.settings.effective_clickhouse_dsn)
        text = sql.replace("{db}", self.database)

        def run() -> list[dict[str, Any]]:
            result = client.query(text, parameters=parameters)
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

        return self.worker.call(run)


@contextmanager
def e2e_stack(bootstrap: str, chdb_path: Path, data_dir: Path, unique: str) -> Iterator[E2eStack]:
    """Worker + collector on fresh topics and a fresh database; stopped and dropped after."""
    dsn = f"chdb://{chdb_path}"
    database = f"test_e2e_{unique}"
    client = connect(dsn)
    client.command(f"CREATE DATABASE {database}")
    try:
        settings = worker_settings(
            bootstrap,
            unique,
            data_dir,
            clickhouse_dsn=dsn,
            clickhouse_database=database,
            api_token=TOKEN,
        )
        worker = WorkerThread(settings).start()
        try:
            collector = LiveCollector(
                collector_settings(bootstrap),
                Topics(settings.topic(TOPIC_RAW), settings.topic(TOPIC_INVALID)),
                now=time.time,
            ).start()
            try:
                yield E2eStack(settings, worker, collector, Ledger())
            finally:
                collector.stop()
        finally:
            worker.stop()
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
