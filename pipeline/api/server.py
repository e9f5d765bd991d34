"""Profile API HTTP server (aiohttp): bearer-token auth, JSON errors, ``/healthz``, ``/metrics``."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from pipeline.httpd import health_handler, metrics_handler
from pipeline.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/metrics"})


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def bearer_auth(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.path.startswith("/openapi"):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        # Constant-time comparison: the token is the only thing guarding personal data.
        if not hmac.compare_digest(given, expected):
            return json_error(
                401, "missing or invalid bearer token", hint="Authorization: Bearer <token>"
            )
        return await handler(request)

    return middleware


def build_api(
    settings: Settings,
    *,
    client: Any,
    registry: CollectorRegistry,
    health: Callable[[], dict[str, object]],
) -> web.Application:
    app = web.Application(middlewares=[bearer_auth(settings.api_token.get_secret_value())])
    app.router.add_get("/healthz", health_handler(health))  # type: ignore[arg-type]
    app.router.add_get("/metrics", metrics_handler(registry))  # type: ignore[arg-type]
    app["clickhouse"] = client
    app["settings"] = settings
    return app
