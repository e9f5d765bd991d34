"""Small helpers shared by the HTTP edges (collector, profile API): health, metrics, serving."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], object]:
    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return metrics


def health_handler(check: Callable[[], dict[str, object]]) -> Callable[[web.Request], object]:
    """``/healthz``: 200 with the check's details when healthy, 503 otherwise."""

    async def healthz(_: web.Request) -> web.Response:
        details = check()
        status = 200 if details.get("ok", False) else 503
        return web.json_response(details, status=status)

    return healthz


def status_app(
    registry: CollectorRegistry, health: Callable[[], dict[str, object]]
) -> web.Application:
    """``/metrics`` and ``/healthz`` only: a worker process without the profile API."""
    app = web.Application()
    app.router.add_get("/healthz", health_handler(health))  # type: ignore[arg-type]
    app.router.add_get("/metrics", metrics_handler(registry))  # type: ignore[arg-type]
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on host:port in the running loop; the caller cleans up the runner."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner


def openapi_ref(name: str) -> dict[str, str]:
    """An OpenAPI reference to ``#/components/schemas/<name>``."""
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_json_response(description: str, schema: str) -> dict[str, object]:
    """An OpenAPI response whose JSON body is the component schema ``schema``."""
    return {
        "description": description,
        "content": {"application/json": {"schema": openapi_ref(schema)}},
    }
