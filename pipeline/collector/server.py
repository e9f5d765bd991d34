"""The collector's HTTP server (aiohttp): the ingestion edge, assembled.

:func:`build_collector` wires the pieces: the :class:`~.enrich.Enricher` (pure), the
:class:`~.producer.KafkaGateway` (producer, micro-batcher, dead letters), the handlers of
:mod:`.routes`, the middleware of :mod:`.middleware`, ``/healthz``, ``/metrics`` and
``/openapi.json``. Topic names are parameters so that tests give each collector its own.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline.collector.enrich import Enricher
from pipeline.collector.middleware import HTTP_LOG, edge_middleware, json_response, preflight
from pipeline.collector.openapi import openapi_spec
from pipeline.collector.payload import MAX_BATCH_BYTES
from pipeline.collector.producer import KafkaGateway
from pipeline.collector.routes import CollectorRoutes
from pipeline.gctune import tune_gc
from pipeline.httpd import health_handler, metrics_handler, serve
from pipeline.metrics import BuildMetrics, CollectorMetrics
from pipeline.settings import TOPIC_INVALID, TOPIC_RAW, Settings

log = logging.getLogger(__name__)


def check_cookie_settings(settings: Settings) -> None:
    """Browsers drop a SameSite=None cookie that is not Secure: refuse that configuration."""
    if settings.collector_cookie_samesite == "None" and not settings.collector_cookie_secure:
        raise ValueError(
            "CDP_COLLECTOR_COOKIE_SAMESITE=None needs CDP_COLLECTOR_COOKIE_SECURE=true"
        )


def build_collector(
    settings: Settings,
    registry: CollectorRegistry,
    *,
    raw_topic: str | None = None,
    invalid_topic: str | None = None,
    now: Callable[[], float] = time.time,
) -> web.Application:
    """The collector app; Kafka connects in the background on startup and closes on cleanup."""
    check_cookie_settings(settings)
    metrics = CollectorMetrics.create(registry)
    gateway = KafkaGateway(
        settings,
        raw_topic=raw_topic or settings.topic(TOPIC_RAW),
        invalid_topic=invalid_topic or settings.topic(TOPIC_INVALID),
        metrics=metrics,
    )
    enricher = Enricher(settings.identity_config, settings.write_key_sources, now)
    routes = CollectorRoutes(settings, enricher, gateway, metrics, now=now)

    # +1: aiohttp refuses a body of exactly client_max_size; the limit itself is allowed.
    app = web.Application(
        client_max_size=MAX_BATCH_BYTES + 1,
        middlewares=[edge_middleware(metrics)],
        # Content-Encoding is decoded by .body (bounded, and without aiohttp's deadlock on a
        # truncated gzip body): whoever runs this app, aiohttp must not decode it first.
        # Its own logger keeps client addresses and raw request lines out of the logs.
        handler_args={"auto_decompress": False, "logger": HTTP_LOG},
    )

    def healthy() -> dict[str, object]:
        return {
            "ok": gateway.ready,
            "component": "collector",
            "kafka": gateway.ready,
            "raw_topic": gateway.raw_topic,
            "partitions": gateway.partitions,
            "pending_bytes": gateway.batcher.pending_bytes,
            "last_delivery_ok": gateway.last_delivery_ok,
        }

    async def start_kafka(_: web.Application) -> None:
        await gateway.start()  # connects in the background
        enricher.warm_up()  # before the listening socket opens: no request waits for it

    async def stop_kafka(_: web.Application) -> None:
        await gateway.stop()

    spec = orjson.dumps(openapi_spec())

    async def openapi(_: web.Request) -> web.Response:
        return json_response(spec)

    app.on_startup.append(start_kafka)
    app.on_cleanup.append(stop_kafka)
    routes.add_to(app.router)
    for path in ("/v1/{tail:.*}", "/i"):
        app.router.add_route("OPTIONS", path, preflight)
    app.router.add_get("/healthz", health_handler(healthy))  # type: ignore[arg-type]
    app.router.add_get("/metrics", metrics_handler(registry))  # type: ignore[arg-type]
    app.router.add_get("/openapi.json", openapi)
    return app


async def _run(settings: Settings) -> None:
    registry = CollectorRegistry()
    BuildMetrics.create(registry, "collector")
    runner = await serve(
        build_collector(settings, registry), settings.collector_host, settings.collector_port
    )
    tune_gc()
    log.info("collector listening on %s", settings.collector_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def event_loop_runner() -> Callable[[Coroutine[Any, Any, None]], None]:
    """``uvloop.run`` when uvloop is installed (a dependency on Linux and macOS), else
    ``asyncio.run``. uvloop's loop and transports are C (libuv): it saves the collector ~10 %
    of its CPU per request, most of it in socket writes and callback scheduling."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows, where uvloop does not exist
        return asyncio.run
    return uvloop.run


def run_collector(settings: Settings) -> None:
    """Run the collector in the foreground until SIGTERM / SIGINT (used by ``cdp collector``)."""
    settings.check_production()
    event_loop_runner()(_run(settings))
