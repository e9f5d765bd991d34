"""The collector's HTTP server (aiohttp): the ingestion edge.

Routes are added by the collector issue's work; this module owns the process: the Kafka producer
(acks=all, idempotent), ``/healthz`` (Kafka reachable) and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from pipeline.httpd import health_handler, metrics_handler, serve
from pipeline.metrics import BuildMetrics
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def build_collector(settings: Settings, registry: CollectorRegistry) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app["settings"] = settings
    state: dict[str, Any] = {"producer": None}

    def healthy() -> dict[str, object]:
        producer = state["producer"]
        return {"ok": producer is not None, "component": "collector", "kafka": producer is not None}

    async def start_producer(_: web.Application) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            client_id="cdp-collector",
        )
        await producer.start()
        state["producer"] = producer
        app["producer"] = producer

    async def stop_producer(_: web.Application) -> None:
        producer = state["producer"]
        if producer is not None:
            await producer.stop()

    app.on_startup.append(start_producer)
    app.on_cleanup.append(stop_producer)
    app.router.add_get("/healthz", health_handler(healthy))  # type: ignore[arg-type]
    app.router.add_get("/metrics", metrics_handler(registry))  # type: ignore[arg-type]
    return app


async def _run(settings: Settings) -> None:
    registry = CollectorRegistry()
    BuildMetrics.create(registry, "collector")
    runner = await serve(
        build_collector(settings, registry), settings.collector_host, settings.collector_port
    )
    log.info("collector listening on %s", settings.collector_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run_collector(settings: Settings) -> None:
    """Run the collector in the foreground until SIGTERM / SIGINT (used by ``cdp collector``)."""
    settings.check_production()
    asyncio.run(_run(settings))
