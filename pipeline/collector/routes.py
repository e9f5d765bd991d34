"""The collector's request handlers: HTTP in, enriched events to Kafka, JSON or a GIF out.

Validation and enrichment are the pure modules' job (:mod:`.payload`, :mod:`.enrich`,
:mod:`.pixel`); this module reads requests, maps their errors to statuses, writes dead letters,
counts, and answers only after Kafka acknowledged (:class:`~.producer.KafkaGateway`). The
response shapes are documented in the README ("Collecting events") and in :mod:`.openapi`.

PII: nothing here logs identifiers, bodies or error reasons (a reason can quote a value); logs
carry the error code, the field name and the source.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web

from pipeline.avro import SerializationError
from pipeline.collector.avro_writer import encode_event_fast
from pipeline.collector.batcher import DeliveryError
from pipeline.collector.body import read_body
from pipeline.collector.deadletter import dead_letter_record
from pipeline.collector.enrich import Enricher, Rejection, random_uuid4
from pipeline.collector.middleware import LabelCache, error_response, json_response
from pipeline.collector.payload import (
    MESSAGE_TYPES,
    AuthError,
    PayloadError,
    PayloadTooLargeError,
    decode_json,
)
from pipeline.collector.pixel import (
    GIF_CONTENT_TYPE,
    TRANSPARENT_GIF,
    decode_pixel_data,
    pixel_type,
    short_pixel_payload,
)
from pipeline.collector.producer import KafkaGateway, person_key
from pipeline.metrics import CollectorMetrics
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SUCCESS_BODY = orjson.dumps({"success": True})
GIF_HEADERS = {
    "Content-Type": GIF_CONTENT_TYPE,  # as a header, not content_type=: no parsing per request
    "Cache-Control": "no-cache, no-store, must-revalidate, private, max-age=0",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}
# A cookie we did not set, or that was tampered with, is replaced rather than trusted: an id
# that fails validation would get every later pixel of that browser refused.
_COOKIE_VALUE = re.compile(r"[A-Za-z0-9._-]{1,128}")
UNKNOWN = "unknown"


@lru_cache(maxsize=256)
def basic_user(authorization: str) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header (Segment's write key), or None.

    Cached: a source sends the same header on every request. Anything else (Bearer tokens,
    garbage) is None, and the body's ``writeKey`` is used instead.
    """
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user = decoded.partition(":")[0]
    return user or None


def first_values(query: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A query string's parameters, the first value of each (as the pixel documents)."""
    values: dict[str, str] = {}
    for key, value in query:
        values.setdefault(key, value)
    return values


def _identifies_person(payload: Mapping[str, Any]) -> bool:
    if payload.get("userId") or payload.get("anonymousId"):
        return True
    for container in (payload, payload.get("context")):
        traits = container.get("traits") if isinstance(container, dict) else None
        if isinstance(traits, dict) and traits.get("email"):
            return True
    return False


class CollectorRoutes:
    """Handlers of one collector: they share the enricher, the Kafka gateway and the metrics."""

    def __init__(
        self,
        settings: Settings,
        enricher: Enricher,
        gateway: KafkaGateway,
        metrics: CollectorMetrics,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._enricher = enricher
        self._gateway = gateway
        self._metrics = metrics
        self._now = now
        self._received = LabelCache(metrics.events_received)
        self._accepted = LabelCache(metrics.events_accepted)
        self._rejected = LabelCache(metrics.events_rejected)
        retry_after = str(max(1, round(settings.collector_delivery_timeout_s)))
        self._retry_headers = {"Retry-After": retry_after}
        self._cookie_name = settings.collector_cookie_name
        self._cookie_tail = cookie_attributes(settings)

    def add_to(self, router: web.UrlDispatcher) -> None:
        for msg_type in sorted(MESSAGE_TYPES):
            router.add_post(f"/v1/{msg_type}", self._single_handler(msg_type))
        router.add_post("/v1/batch", self.batch)
        # No HEAD: link checkers and previewers send it, and it must not count as a hit.
        router.add_get("/v1/pixel/{kind}", self.pixel, allow_head=False)
        router.add_get("/i", self.short_pixel, allow_head=False)

    # --- handlers -----------------------------------------------------------------------------

    def _single_handler(self, msg_type: str) -> Callable[[web.Request], Any]:
        async def single(request: web.Request) -> web.Response:
            return await self.single(request, msg_type)

        return single

    async def single(self, request: web.Request, msg_type: str) -> web.Response:
        """``POST /v1/<type>``: one Segment message."""
        write_key = self._write_key(request)
        body = b""
        payload: dict[str, Any] | None = None
        try:
            body = await self._read_body(request)
            payload = decode_json(body)
            event = self._enricher.event(
                payload,
                type_hint=msg_type,
                write_key=write_key,
                client_ip=self._client_ip(request),
                user_agent_header=request.headers.get("User-Agent"),
            )
        except (PayloadError, AuthError) as exc:
            self._received(self._source_or_unknown(write_key, payload), msg_type).inc()
            raw = payload if payload is not None else body
            return self._refuse(exc, raw, write_key, payload)
        self._received(event["source"], msg_type).inc()
        return await self._deliver_one(event, lambda: json_response(SUCCESS_BODY))

    async def batch(self, request: web.Request) -> web.Response:
        """``POST /v1/batch``: many messages; valid ones accepted, each bad one reported."""
        write_key = self._write_key(request)
        body = b""
        payload: dict[str, Any] | None = None
        try:
            body = await self._read_body(request)
            payload = decode_json(body)
            source = self._enricher.source(write_key, payload)
        except (PayloadError, AuthError) as exc:
            self._count_batch_received(self._source_or_unknown(write_key, payload), payload)
            raw = payload if payload is not None else body
            return self._refuse(exc, raw, write_key, payload, self._batch_size(payload))
        self._count_batch_received(source, payload)
        try:
            events, rejections = self._enricher.batch(
                payload,
                write_key=write_key,
                client_ip=self._client_ip(request),
                user_agent_header=request.headers.get("User-Agent"),
            )
        except PayloadError as exc:  # the envelope itself: ``batch`` not an array, bad context
            return self._refuse(exc, payload, write_key, payload, self._batch_size(payload))
        items, events, rejections = self._encode_batch(events, rejections)
        if rejections:
            self._dead_letter_items(payload, rejections, source)
        rejected = [
            {"index": r.index, "code": r.code, "field": r.field, "reason": r.reason}
            for r in rejections
        ]
        if not events and rejections:
            too_large = all(r.code == "too_large" for r in rejections)
            status, code = (413, "too_large") if too_large else (400, "invalid")
            message = f"none of the {len(rejections)} messages is valid; see rejected"
            return error_response(status, code, message, accepted=0, rejected=rejected)
        try:
            await self._publish(items, events)
        except DeliveryError as exc:
            return self._unavailable(exc, len(events))
        return json_response(
            orjson.dumps({"success": True, "accepted": len(events), "rejected": rejected})
        )

    async def pixel(self, request: web.Request) -> web.Response:
        """``GET /v1/pixel/{track,page,identify}?data=<base64 JSON>``: the Segment pixel API."""
        write_key = self._write_key(request)
        payload: dict[str, Any] | None = None
        kind = request.match_info["kind"]
        msg_type = kind if kind in MESSAGE_TYPES else UNKNOWN
        try:
            msg_type = pixel_type(kind)
            payload = decode_pixel_data(request.query.get("data"))
            new_cookie = self._pixel_identity(request, payload)
            event = self._enricher.event(
                payload,
                type_hint=msg_type,
                write_key=write_key,
                client_ip=self._client_ip(request),
                user_agent_header=request.headers.get("User-Agent"),
            )
        except (PayloadError, AuthError) as exc:
            self._received(self._source_or_unknown(write_key, payload), msg_type).inc()
            raw = payload if payload is not None else request.query_string
            return self._refuse(exc, raw, write_key, payload)
        self._received(event["source"], msg_type).inc()
        return await self._deliver_one(event, lambda: self._gif(new_cookie))

    async def short_pixel(self, request: web.Request) -> web.Response:
        """``GET /i?...``: the short pixel for hand-written ``<img>`` tags (see :mod:`.pixel`)."""
        write_key = self._write_key(request)
        payload: dict[str, Any] | None = None
        try:
            payload = short_pixel_payload(first_values(request.query.items()))
            new_cookie = self._pixel_identity(request, payload)
            event = self._enricher.event(
                payload,
                write_key=write_key,
                client_ip=self._client_ip(request),
                user_agent_header=request.headers.get("User-Agent"),
            )
        except (PayloadError, AuthError) as exc:
            msg_type = str(payload["type"]) if payload is not None else UNKNOWN
            self._received(self._source_or_unknown(write_key, payload), msg_type).inc()
            return self._refuse(exc, request.query_string, write_key, payload)
        self._received(event["source"], event["type"]).inc()
        return await self._deliver_one(event, lambda: self._gif(new_cookie))

    # --- delivery -----------------------------------------------------------------------------

    async def _deliver_one(
        self, event: dict[str, Any], respond: Callable[[], web.Response]
    ) -> web.Response:
        try:
            item = (person_key(event), encode_event_fast(event))
        except SerializationError as exc:
            # Not reachable with events from the enricher; if it ever is, it is bad input.
            return self._refuse(PayloadError("$", f"cannot be encoded: {exc}"), b"", None)
        try:
            await self._publish([item], [event])
        except DeliveryError as exc:
            return self._unavailable(exc, 1)
        return respond()

    async def _publish(self, items: list[tuple[str, bytes]], events: list[dict[str, Any]]) -> None:
        await self._gateway.publish(items)
        # Counter and sum over lists count in C: a Python loop per event cost ~2 % of a batch.
        counts = Counter([(event["source"], event["type"]) for event in events])
        bots = sum([event["enrichment"]["is_bot"] for event in events])
        for labels, count in counts.items():
            self._accepted(*labels).inc(count)
        if bots:
            self._metrics.bots.inc(bots)

    def _encode_batch(
        self, events: list[dict[str, Any]], rejections: list[Rejection]
    ) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]], list[Rejection]]:
        """Encode accepted events; one that does not fit the Avro schema becomes a rejection."""
        items: list[tuple[str, bytes]] = []
        kept: list[dict[str, Any]] = []
        failed: list[int] = []
        for position, event in enumerate(events):
            try:
                items.append((person_key(event), encode_event_fast(event)))
                kept.append(event)
            except SerializationError:
                failed.append(position)
        if not failed:
            return items, kept, rejections
        # Map positions among accepted events back to indexes in the batch.
        rejected_indexes = {r.index for r in rejections}
        accepted_indexes = [
            i for i in range(len(events) + len(rejections)) if i not in rejected_indexes
        ]
        extra = [
            Rejection(accepted_indexes[p], "cannot be encoded as Avro", None, "") for p in failed
        ]
        return items, kept, sorted([*rejections, *extra], key=lambda r: r.index)

    # --- refusals -----------------------------------------------------------------------------

    def _refuse(
        self,
        exc: PayloadError | AuthError,
        raw: bytes | str | dict[str, Any],
        write_key: str | None,
        payload: dict[str, Any] | None = None,
        count: int = 1,
    ) -> web.Response:
        """The 4xx answer to bad input, its dead letter and its counts (``count`` events)."""
        source = self._source_or_none(write_key, payload)
        field = exc.field if isinstance(exc, PayloadError) else None
        reason = (
            "malformed" if field == "$" and not isinstance(exc, PayloadTooLargeError) else exc.code
        )
        self._rejected(reason).inc(count)
        log.debug("refused %s (%s, field %s, source %s)", reason, exc.status, field, source)
        self._gateway.dead_letter(
            dead_letter_record(raw, str(exc), field, source, int(self._now() * 1000))
        )
        if field is None:
            return error_response(exc.status, exc.code, str(exc))
        return error_response(exc.status, exc.code, str(exc), field=field)

    def _dead_letter_items(
        self, payload: dict[str, Any], rejections: list[Rejection], source: str
    ) -> None:
        items = payload.get("batch")
        received_ms = int(self._now() * 1000)
        by_reason: Counter[str] = Counter()
        for rejection in rejections:
            by_reason[rejection.code] += 1
            raw = items[rejection.index] if isinstance(items, list) else rejection.raw_excerpt
            field = rejection.field
            reason = f"{field}: {rejection.reason}" if field else rejection.reason
            self._gateway.dead_letter(dead_letter_record(raw, reason, field, source, received_ms))
        for code, count in by_reason.items():
            self._rejected(code).inc(count)

    def _unavailable(self, exc: DeliveryError, count: int) -> web.Response:
        self._rejected(exc.code).inc(count)
        return error_response(503, exc.code, exc.message, headers=self._retry_headers)

    # --- request details ----------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> bytes:
        return await read_body(request)

    def _write_key(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        return basic_user(header) if header else None

    def _client_ip(self, request: web.Request) -> str | None:
        if self._settings.collector_forwarded_for:
            forwarded = request.headers.get("X-Forwarded-For")
            if forwarded:
                return forwarded.split(",", 1)[0].strip()
        return request.remote

    def _source_or_none(self, write_key: str | None, payload: dict[str, Any] | None) -> str | None:
        try:
            return self._enricher.source(write_key, payload or {})
        except AuthError:
            return None

    def _source_or_unknown(self, write_key: str | None, payload: dict[str, Any] | None) -> str:
        return self._source_or_none(write_key, payload) or UNKNOWN

    def _count_batch_received(self, source: str, payload: dict[str, Any] | None) -> None:
        items = payload.get("batch") if payload is not None else None
        if not isinstance(items, list):
            self._received(source, UNKNOWN).inc()
            return
        sent = [item.get("type") if isinstance(item, dict) else None for item in items]
        # isinstance first: a list is unhashable (``in`` on a set would raise). Counter over a
        # list counts in C.
        types = Counter([t if isinstance(t, str) and t in MESSAGE_TYPES else UNKNOWN for t in sent])
        for msg_type, count in types.items():
            self._received(source, msg_type).inc(count)

    @staticmethod
    def _batch_size(payload: dict[str, Any] | None) -> int:
        # The same count as _count_batch_received, so received = accepted + rejected holds.
        items = payload.get("batch") if payload is not None else None
        return len(items) if isinstance(items, list) else 1

    # --- pixel --------------------------------------------------------------------------------

    def _pixel_identity(self, request: web.Request, payload: dict[str, Any]) -> str | None:
        """Fill ``anonymousId`` from the first-party cookie; the cookie to set, if any.

        A new id goes into the event only when nothing else identifies the sender: an email
        open fetched by an image proxy (which keeps no cookies) would otherwise add a fresh
        anonymous id to the person at every open.
        """
        cookie = self._request_cookie(request)
        if cookie is not None and _COOKIE_VALUE.fullmatch(cookie):
            if not payload.get("anonymousId"):
                payload["anonymousId"] = cookie
            return None
        sent = payload.get("anonymousId")
        if isinstance(sent, str) and _COOKIE_VALUE.fullmatch(sent):
            return sent  # keep the browser's cookie and the sender's id the same
        minted = random_uuid4()
        if not _identifies_person(payload):
            payload["anonymousId"] = minted
        return minted

    def _request_cookie(self, request: web.Request) -> str | None:
        # Parsing every Cookie header costs more than this check on a busy pixel.
        header = request.headers.get("Cookie")
        if not header or self._cookie_name not in header:
            return None
        return request.cookies.get(self._cookie_name)

    def _gif(self, new_cookie: str | None) -> web.Response:
        response = web.Response(body=TRANSPARENT_GIF, headers=GIF_HEADERS)
        if new_cookie is not None:
            # The value is a uuid or matched _COOKIE_VALUE: nothing to quote, so the header is
            # written directly instead of through http.cookies.
            response.headers["Set-Cookie"] = f"{self._cookie_name}={new_cookie}{self._cookie_tail}"
        return response


def cookie_attributes(settings: Settings) -> str:
    """The attributes after ``name=value`` in the pixel's ``Set-Cookie`` header."""
    parts = [f"Max-Age={settings.collector_cookie_max_age_s}", "Path=/"]
    if settings.collector_cookie_domain:
        parts.append(f"Domain={settings.collector_cookie_domain}")
    if settings.collector_cookie_secure:
        parts.append("Secure")
    parts += ["HttpOnly", f"SameSite={settings.collector_cookie_samesite}"]
    return "".join(f"; {part}" for part in parts)
