"""The worker process: the faust app, its agents, and (locally) the profile API and ``/metrics``.

Stages register their agents on the app in :func:`create_app`. ``CDP_WORKER_ROLES`` says which
parts one process runs (default: all): the stream stages ``identity`` and ``profile`` (faust
agents), the ClickHouse ``sink`` and the profile ``api``. chDB lets one process open a data path,
so locally the process with the sink or the API owns the ClickHouse client both use; a process
without stream stages runs no faust app (:func:`create_edge`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
import mode
from aiohttp import web
from mode import Service
from prometheus_client import CollectorRegistry

from pipeline.gctune import tune_gc
from pipeline.httpd import serve, status_app
from pipeline.settings import STREAM_ROLES, Settings
from pipeline.worker.loopstall import LoopStallMonitor
from pipeline.worker.malloc import MallocTrimmer, limit_malloc_arenas

if TYPE_CHECKING:
    from pipeline.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class HttpService(Service):
    """Runs an aiohttp application as a child service of the faust app (same event loop)."""

    def __init__(self, app: web.Application, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._web_app = app
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        self._runner = await serve(self._web_app, self._host, self._port)
        log.info("HTTP listening on http://%s:%s", self._host, self._port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def create_faust_app(settings: Settings) -> faust.App:
    from pipeline.worker.recovery import resume_streams_last
    from pipeline.worker.rocksdb_options import RocksDBMemory, bounded_table_class
    from pipeline.worker.txsend import (
        commit_after_running_commit,
        commit_every_processed_run,
        commit_transactions_concurrently,
        guard_transaction_commits,
    )

    guard_transaction_commits()
    commit_transactions_concurrently()
    commit_after_running_commit()
    commit_every_processed_run()
    resume_streams_last()
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    rocksdb_memory = RocksDBMemory.from_settings(settings)
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.faust_store,
        # Tables whose RocksDB stores (one per table partition) share one block cache and one
        # memtable budget (CDP_ROCKSDB_*; pipeline/worker/rocksdb_options.py).
        Table=bounded_table_class(rocksdb_memory),
        datadir=str(settings.data_dir / "faust"),
        web_enabled=False,  # our own aiohttp server serves /metrics and the API
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_compression_type=settings.producer_compression,
        processing_guarantee=settings.processing_guarantee,
        broker_commit_interval=settings.commit_interval_s,
        # A killed worker's consumer stays in the group until this times out, and its
        # replacement waits that long to get the partitions (faust's default is 60 s).
        broker_session_timeout=15.0,
    )
    app.rocksdb_memory = rocksdb_memory  # type: ignore[attr-defined]  # usage(), for tests
    return app


def edge_services(
    settings: Settings,
    registry: CollectorRegistry,
    metrics: WorkerMetrics,
    health: Callable[[], dict[str, object]],
) -> list[Service]:
    """The services beside the stream stages: the ClickHouse sink and the profile API when the
    roles have them, always the HTTP server (``/metrics``, ``/healthz``), the lag monitor and
    the heap trimmer (pipeline/worker/malloc.py)."""
    from pipeline.api.server import build_api
    from pipeline.lag import worker_lag_monitor
    from pipeline.sink.wiring import build_sink_service
    from pipeline.storage.clickhouse import client_from_settings
    from pipeline.storage.migrate import migrate

    roles = settings.roles
    services: list[Service] = []
    client = None
    if roles & {"sink", "api"}:
        # chDB opens one data path per process: locally the sink and the API share this client.
        client = client_from_settings(settings)
        applied = migrate(client, settings.clickhouse_database)
        if applied:
            log.info("ClickHouse migrations applied: %s", ", ".join(applied))
    if "sink" in roles:
        # A plain consumer beside faust's agents (see pipeline/sink/service.py).
        services.append(build_sink_service(settings, client, metrics))
    if "api" in roles:
        web_app = build_api(settings, client=client, registry=registry, health=health)
    else:
        web_app = status_app(registry, health)
    services.append(HttpService(web_app, settings.api_host, settings.api_port))
    services.append(worker_lag_monitor(settings, registry))
    services.append(LoopStallMonitor(metrics.loop_lag))
    if settings.malloc_trim_interval_s > 0:
        services.append(MallocTrimmer(settings.malloc_trim_interval_s))
    return services


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    """The worker's faust app with the stream stages of its roles and the edge services."""
    from pipeline.identity.processor import register_identity
    from pipeline.metrics import BuildMetrics, WorkerMetrics, faust_sensor
    from pipeline.profile.processor import register_profiles

    roles = settings.roles
    if not roles & STREAM_ROLES:
        raise ValueError(f"roles {settings.worker_roles} have no stream stage: use create_edge")
    registry = registry or CollectorRegistry()
    BuildMetrics.create(registry, "worker")
    metrics = WorkerMetrics.create(registry)
    app = create_faust_app(settings)
    # faust's own sensor: rebalances, commit latency, table operations (names cdp_faust_*).
    app.monitor = faust_sensor(registry)
    if "identity" in roles:
        register_identity(app, settings, metrics)
    if "profile" in roles:
        register_profiles(app, settings, metrics)

    def healthy() -> dict[str, object]:
        return {
            "ok": True,
            "component": "worker",
            "roles": settings.worker_roles,
            "faust_started": bool(app.started),
        }

    for service in edge_services(settings, registry, metrics, healthy):
        app.add_dependency(service)
    return app


class EdgeWorker(Service):
    """A worker process without stream stages (roles ``sink`` and/or ``api``): no faust app,
    only the edge services, run by mode's worker."""

    def __init__(self, services: list[Service], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for service in services:
            self.add_dependency(service)


def create_edge(settings: Settings, registry: CollectorRegistry | None = None) -> EdgeWorker:
    """The worker of roles without a stream stage (e.g. ``sink,api`` beside stream workers)."""
    from pipeline.metrics import BuildMetrics, WorkerMetrics

    registry = registry or CollectorRegistry()
    BuildMetrics.create(registry, "worker")
    metrics = WorkerMetrics.create(registry)

    def healthy() -> dict[str, object]:
        return {"ok": True, "component": "worker", "roles": settings.worker_roles}

    return EdgeWorker(edge_services(settings, registry, metrics, healthy))


def run_worker(settings: Settings) -> None:
    """Run the worker in the foreground until SIGTERM / SIGINT (used by ``cdp worker``).

    Under exactly-once, a RocksDB table store may hold writes of a transaction that was aborted
    when the previous worker died (RocksDB is written at once, the transaction commits later).
    A marker file tells a clean stop from a crash; after a crash the local stores are discarded
    and the tables recover from their changelogs, which hold committed writes only.
    """
    settings.check_production()
    # Before RocksDB, the Kafka clients or chDB start threads (pipeline/worker/malloc.py).
    limit_malloc_arenas()
    use_uvloop()
    if not settings.roles & STREAM_ROLES:
        edge = create_edge(settings)
        tune_gc()
        mode.Worker(edge, loglevel=settings.log_level, quiet=True).execute_from_commandline()
        return
    app = create_app(settings)
    # Groups of decoded events stay alive while their outputs are sent, and the table caches
    # hold tens of thousands of entries: with CPython's default threshold an e2e run spent
    # 1.85 s of 25 s of worker CPU in collections (21 full ones), 0.42 s with this
    # (pipeline/gctune.py).
    tune_gc()
    tabledir = Path(app.conf.tabledir)
    marker = settings.data_dir / "faust" / f"{settings.worker_id}.running"
    if marker.exists():
        log.warning("the last worker run did not stop cleanly: rebuilding tables from changelogs")
        shutil.rmtree(tabledir, ignore_errors=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    declare_changelogs(app, settings)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    clean = False
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        clean = exc.code in (0, None)
        raise
    finally:
        if clean:
            marker.unlink(missing_ok=True)


def declare_changelogs(app: faust.App, settings: Settings) -> list[str]:
    """Create the tables' changelog topics before faust starts (see
    :func:`pipeline.kafka_admin.changelog_topics`); the names created.

    Best effort: with the broker not reachable within a few seconds faust declares them itself
    once it is (it waits for the broker anyway).
    """
    from kafka.errors import KafkaError

    from pipeline.kafka_admin import changelog_topics, ensure_topics

    try:
        created = ensure_topics(
            settings.kafka_bootstrap, changelog_topics(app), connect_timeout_s=5.0
        )
    except KafkaError as exc:
        log.warning("changelog topics not created ahead (%r); faust will declare them", exc)
        return []
    if created:
        log.info("created changelog topics: %s", ", ".join(created))
    return created


def use_uvloop() -> None:
    """Run the worker on uvloop when it is installed (a dependency on Linux and macOS).

    Its loop and transports are C (libuv): the aiokafka consumers and producers of the agents
    and the sink spend less time in the event loop. faust creates its loop from the policy.
    """
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the standard asyncio loop
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
