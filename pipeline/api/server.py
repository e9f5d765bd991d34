"""Profile API HTTP server (aiohttp): bearer-token auth, JSON errors, profiles, timeline,
``/openapi.json``, ``/healthz``, ``/metrics``.

Middlewares, outermost first: metrics (every request is counted, 401s included), bearer auth
(everything but the public paths), errors (bad input → 400, unknown route → 404, a failing store
→ 503, always JSON).

On start-up the app freezes the garbage collector's view of everything allocated so far
(:func:`freeze_gc`): the modules, the app, chDB's and faust's objects, ~77k tracked objects. A full
(generation 2) collection walks every tracked object and pauses whichever request is running: it
measured 95-240 ms with them on the shared 2-core bench box, and ~0 ms once they are frozen
(frozen objects are never walked again; they live for the whole process anyway).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry

from pipeline.api.metrics import ApiMetrics
from pipeline.api.openapi import build_openapi
from pipeline.api.params import BadRequest
from pipeline.api.queries import ProfileQueries
from pipeline.api.routes import ProfileRoutes, json_response
from pipeline.gctune import tune_gc
from pipeline.httpd import health_handler, metrics_handler
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json"})
SETTINGS_KEY = web.AppKey("settings", Settings)


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": message, **extra}, status=status)


def bearer_auth(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS:
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        # Constant-time comparison: the token is the only thing guarding personal data.
        if not hmac.compare_digest(given, expected):
            response = json_error(
                401, "missing or invalid bearer token", hint="Authorization: Bearer <token>"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="cdp"'
            return response
        return await handler(request)

    return middleware


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:  # 404 unknown route, 405 wrong method: JSON like the rest
            return json_error(exc.status, exc.reason)
        raise
    except Exception:
        # The store failed (ClickHouse down, a query error): say so without leaking details.
        log.exception("profile API request failed: %s %s", request.method, request.path)
        return json_error(503, "profile store unavailable, retry later")


def request_metrics(metrics: ApiMetrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        # The route template, not the path: customer ids would explode the label set.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.requests.labels(route, str(response.status)).inc()
        metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        return response

    return middleware


async def freeze_gc(_: web.Application) -> None:
    """Collect once, then move every surviving object to the permanent generation (the
    process's start-up state, never garbage), so later full collections skip them; collect
    young garbage less often (:func:`pipeline.gctune.tune_gc`)."""
    tune_gc()


def build_api(
    settings: Settings,
    *,
    client: Any,
    registry: CollectorRegistry,
    health: Callable[[], dict[str, object]],
) -> web.Application:
    """The profile API on ``client`` (a clickhouse-connect client) and ``settings``' database."""
    metrics = ApiMetrics.create(registry)
    app = web.Application(
        middlewares=[
            request_metrics(metrics),
            bearer_auth(settings.api_token.get_secret_value()),
            json_errors,
        ]
    )
    spec = build_openapi(settings.identity_config)

    async def openapi(_: web.Request) -> web.Response:
        return json_response(spec)

    app.router.add_get("/healthz", health_handler(health))  # type: ignore[arg-type]
    app.router.add_get("/metrics", metrics_handler(registry))  # type: ignore[arg-type]
    app.router.add_get("/openapi.json", openapi)
    queries = ProfileQueries(client, settings.clickhouse_database)
    ProfileRoutes(queries, settings.identity_config).register(app.router)
    app[SETTINGS_KEY] = settings
    app.on_startup.append(freeze_gc)
    return app
