"""The collector's one middleware: JSON errors, CORS headers and the HTTP metrics.

One middleware rather than three, because each layer costs a coroutine frame per request on the
hot path. It turns aiohttp's own exceptions (404, 405, 413 ...) into the JSON error shape of the
API, adds CORS headers for browsers (the request's ``Origin`` echoed, credentials allowed: the
pixel's cookie only travels on credentialed requests), and counts requests and their duration by
route *template* (never the raw path, which a client chooses: unbounded label values).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import Counter, Histogram

from pipeline.collector.enrich import truncate_ip
from pipeline.metrics import CollectorMetrics

log = logging.getLogger(__name__)


class _WithoutPersonalData(logging.Filter):
    """aiohttp logs a request it cannot parse with the client's address and a traceback whose
    message may quote the raw request line (a query string with an email in it): keep the
    network (/24, /48) and the exception's type only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                truncate_ip(arg) or "an unknown address" if isinstance(arg, str) else arg
                for arg in record.args
            )
        if record.exc_info and record.exc_info[0] is not None:
            record.msg = f"{record.msg} ({record.exc_info[0].__name__})"
            record.exc_info = None
            record.exc_text = None
        return True


#: The logger given to aiohttp's request handler (``handler_args``), filtered as above.
HTTP_LOG = logging.getLogger("pipeline.collector.http")
HTTP_LOG.addFilter(_WithoutPersonalData())

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ERROR_CODES = {
    400: "invalid",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    503: "unavailable",
}
# Preflight: what browsers may send us. Headers are echoed when the preflight names them
# (analytics.js and custom SDKs add their own); this list answers a preflight that names none.
ALLOW_METHODS = "GET, POST, OPTIONS"
DEFAULT_ALLOW_HEADERS = "Authorization, Content-Type"
PREFLIGHT_MAX_AGE_S = "86400"
_MAX_ECHOED_HEADERS_CHARS = 1024


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """The JSON error shape of every non-2xx answer.

    ``code`` and ``message`` are the keys Segment's libraries read from an error response.
    """
    return orjson.dumps({"success": False, "code": code, "message": message, **extra})


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=body, status=status, headers=headers, content_type="application/json")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return json_response(error_body(code, message, **extra), status, headers)


class LabelCache:
    """Cached children of a labelled metric: ``labels()`` costs a lock and a tuple per call."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


def edge_middleware(metrics: CollectorMetrics) -> Middleware:
    requests = LabelCache(metrics.http_requests)
    durations = LabelCache(metrics.http_request_seconds)

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            # aiohttp's own answers (unknown path, wrong method, body over client_max_size).
            code = _ERROR_CODES.get(exc.status, "error")
            response = error_response(exc.status, code, exc.reason)
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            # A bug, not bad input: bad input is refused by the handlers with a 4xx.
            log.exception("unhandled error on %s %s", request.method, _route(request))
            response = error_response(500, "internal", "internal error")
        origin = request.headers.get("Origin")
        if origin is not None:
            headers = response.headers
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
            headers["Access-Control-Expose-Headers"] = "Retry-After"
            headers["Vary"] = "Origin"
        route = _route(request)
        requests(route, str(response.status)).inc()
        durations(route).observe(time.perf_counter() - started)
        return response

    return edge


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def preflight(request: web.Request) -> web.Response:
    """``OPTIONS`` on any API path: what a browser may send (the middleware adds the origin)."""
    asked = request.headers.get("Access-Control-Request-Headers", "")
    allowed = asked if 0 < len(asked) <= _MAX_ECHOED_HEADERS_CHARS else DEFAULT_ALLOW_HEADERS
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": allowed,
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE_S,
        },
    )
