"""Pure enrichment: a validated Segment message -> an ``Event`` dict matching ``event.avsc``.

Everything here is deterministic given the injected clock (``now``) and id factory (``new_id``):
no I/O, no global state besides LRU caches. Decisions, in the order they are applied:

* Auth: the write key comes from the HTTP layer (Basic user name) or the body's ``writeKey``; it is
  mapped to its source *name*, which is all the event keeps.
* Event time: client ``timestamp`` + (receivedAt − sentAt) when both are given (the client clock
  may be wrong, but its intervals are right); the ``timestamp`` alone without ``sentAt``;
  receivedAt without ``timestamp``. A result more than :data:`MAX_FUTURE_MS` after receivedAt or
  before :data:`MIN_EVENT_TIME_MS` is a broken clock, not an event time: it is replaced by
  receivedAt (the raw client value is kept in ``original_timestamp``). Old-but-plausible times are
  kept: mobile SDKs legitimately flush events queued offline for days.
* Identifiers: see :func:`Enricher.identifiers`; values go through the identity normalizer, so a
  blocked or invalid value (``"null"``, a malformed email) links nothing but the event stays.
* User agent: ``context.userAgent``; else the request's ``User-Agent`` header, but only when the
  payload names no ``context.library`` (a pixel or hand-written request: the header is the
  person's browser). An SDK's header is its HTTP client (``analytics-python/2.3``), which says
  nothing about the person's device and would flag every server-side event as a bot.
* Channel: see :func:`.channel.classify_channel`; user agents: :mod:`.ua`. IP: see
  :func:`truncate_ip`.

Speed, measured on the dev box (2 shared cores, one thread, a typical analytics.js ``track`` with
page, campaign and library context): ~45 µs per event when the visitor's UA, ids and IP are
already cached (~22 000 events/s), ~120 µs with a new anonymous id and IP per event
(~8 000 events/s). Uncached costs dominate: crawlerdetect ~300 µs per unseen UA, phonenumbers
~200 µs per unseen phone, hence the LRU caches. Validation (:func:`parse_message`) is about
two thirds of the cached case.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

# Re-exported: these lived here before ua.py / channel.py were split out.
from pipeline.collector.channel import (
    classify_channel,
    host_channel,
    query_params,
    url_parts,
)
from pipeline.collector.deadletter import raw_excerpt
from pipeline.collector.payload import (
    TEXT_LIMITS,
    UTM_KEYS,
    AuthError,
    Message,
    PayloadError,
    clean_text,
    parse_message,
)
from pipeline.collector.ua import NO_USER_AGENT, UserAgentInfo, UserAgentParser
from pipeline.identity.config import ANONYMOUS_ID, EMAIL, PHONE, USER_ID, IdentityConfig
from pipeline.identity.normalize import normalize_identifier

__all__ = [
    "MAX_FUTURE_MS",
    "MIN_EVENT_TIME_MS",
    "Enricher",
    "Rejection",
    "UserAgentInfo",
    "UserAgentParser",
    "classify_channel",
    "event_time_ms",
    "host_channel",
    "truncate_ip",
]

MAX_FUTURE_MS = 5 * 60 * 1000
MIN_EVENT_TIME_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
REJECTION_EXCERPT_BYTES = 512


@dataclass(frozen=True, slots=True)
class Rejection:
    """One batch item that was not accepted. ``field`` is relative to the item."""

    index: int
    reason: str
    field: str | None
    raw_excerpt: str
    code: str = "invalid"  # PayloadError.code: "invalid" or "too_large"


# --- IP -------------------------------------------------------------------------------------


_IPV4_MASK_24 = 0xFFFF_FF00
_IPV6_MASK_48 = ((1 << 48) - 1) << 80


@lru_cache(maxsize=65536)
def truncate_ip(raw: str | None) -> str | None:
    """The client's network, not the client: IPv4 /24 (last octet 0), IPv6 /48. None if invalid.

    IPv4-mapped IPv6 addresses (``::ffff:1.2.3.4``, from dual-stack sockets) are treated as the
    IPv4 address they carry; a /48 of them would erase the address entirely. Cached: the
    ``ipaddress`` round trip costs ~60 µs and a client sends many events from one address.
    """
    if not raw:
        return None
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Masking the integer is 3x faster than building an ip_network and means the same.
    if isinstance(address, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Address(int(address) & _IPV4_MASK_24))
    return str(ipaddress.IPv6Address(int(address) & _IPV6_MASK_48))


# --- the enricher ---------------------------------------------------------------------------


_RANDOM_IDS_PER_READ = 256
_random_lock = threading.Lock()
_random_bytes = b""
_random_offset = 0


def _forget_random_bytes() -> None:
    # A forked child must not hand out the ids its parent has buffered.
    global _random_bytes, _random_offset
    _random_bytes, _random_offset = b"", 0


os.register_at_fork(after_in_child=_forget_random_bytes)


def random_uuid4() -> str:
    """``str(uuid.uuid4())``, the same randomness (``os.urandom``) read 4 KB at a time: a
    ``getrandom`` call and a ``UUID`` object per id were ~5 % of a pixel request."""
    global _random_bytes, _random_offset
    with _random_lock:
        if _random_offset >= len(_random_bytes):
            _random_bytes = os.urandom(16 * _RANDOM_IDS_PER_READ)
            _random_offset = 0
        start = _random_offset
        _random_offset += 16
        chunk = _random_bytes[start : start + 16]
    # RFC 4122 version 4: the version nibble 0100, the variant bits 10 (as uuid.UUID does).
    value = (int.from_bytes(chunk) & _UUID4_CLEAR) | _UUID4_SET
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def _new_message_id() -> str:
    return random_uuid4()


class Enricher:
    """Validated + enriched ``Event`` dicts from Segment payloads (see the module docstring)."""

    def __init__(
        self,
        identity_config: IdentityConfig,
        write_keys: Mapping[str, str],
        now: Callable[[], float],
        *,
        new_id: Callable[[], str] = _new_message_id,
        ua_cache_size: int = 8192,
        id_cache_size: int = 65536,
    ) -> None:
        self._config = identity_config
        self._write_keys = write_keys
        self._now = now
        self._new_id = new_id
        self._user_agents = UserAgentParser(ua_cache_size)
        self._trait_types = (EMAIL, PHONE, *identity_config.custom_types)
        # Returning visitors repeat their ids; a phone costs ~200 µs in phonenumbers.
        self._normalize_cached = lru_cache(maxsize=id_cache_size)(self._normalize_uncached)

    def warm_up(self) -> None:
        """Pay the one-off set-up costs of the parsers now, not in the first requests."""
        self._user_agents.warm_up()

    def source(self, write_key: str | None, payload: Mapping[str, Any]) -> str:
        """The source name for a request; the HTTP write key wins over the body's ``writeKey``."""
        key = write_key or payload.get("writeKey")
        if not key or not isinstance(key, str):
            raise AuthError("missing write key: send it as the HTTP Basic user name")
        source = self._write_keys.get(key)
        if source is None:
            raise AuthError("unknown write key")
        return source

    def event(
        self,
        payload: dict[str, Any],
        *,
        type_hint: str | None = None,
        write_key: str | None = None,
        client_ip: str | None = None,
        user_agent_header: str | None = None,
    ) -> dict[str, Any]:
        """One event from a single-message body (``POST /v1/<type>`` or a pixel)."""
        if not isinstance(payload, dict):
            raise PayloadError("$", "must be a JSON object")
        source = self.source(write_key, payload)
        message = parse_message(payload, type_hint=type_hint)
        return self._build(message, source, self._now_ms(), client_ip, user_agent_header)

    def batch(
        self,
        payload: dict[str, Any],
        *,
        write_key: str | None = None,
        client_ip: str | None = None,
        user_agent_header: str | None = None,
    ) -> tuple[list[dict[str, Any]], list[Rejection]]:
        """Events from a ``POST /v1/batch`` body: the valid items, and why each other one failed.

        The batch's top-level ``context`` and ``sentAt`` apply to every item that lacks its own
        (item context keys win, shallowly), as in Segment's batch API. Auth and the shape of the
        batch itself raise; a bad item only becomes a :class:`Rejection`.
        """
        if not isinstance(payload, dict):
            raise PayloadError("$", "must be a JSON object")
        source = self.source(write_key, payload)
        items = payload.get("batch")
        if not isinstance(items, list):
            raise PayloadError("batch", "must be an array of messages")
        shared_context = payload.get("context")
        if shared_context is not None and not isinstance(shared_context, dict):
            raise PayloadError("context", "must be an object")
        shared_sent_at = payload.get("sentAt")
        received_ms = self._now_ms()
        events: list[dict[str, Any]] = []
        rejections: list[Rejection] = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise PayloadError("$", "batch item must be an object")
                merged = _with_batch_defaults(item, shared_context, shared_sent_at)
                message = parse_message(merged)
                events.append(
                    self._build(message, source, received_ms, client_ip, user_agent_header)
                )
            except PayloadError as exc:
                excerpt, _, _ = raw_excerpt(item, REJECTION_EXCERPT_BYTES)
                rejections.append(Rejection(index, exc.reason, exc.field, excerpt, exc.code))
        return events, rejections

    def identifiers(self, message: Message) -> list[dict[str, str]]:
        """Every identifier of the message, normalized, blocked ones dropped, duplicates removed.

        anonymousId -> anonymous_id, userId -> user_id, previousId -> email when it normalizes as
        one, else anonymous_id (aliasing a cookie to a login is the common case), and from the
        person's traits (``traits`` and ``context.traits``): email, phone and every configured
        custom type (trait key == type name).
        """
        candidates: list[tuple[str, Any]] = []
        if message.anonymous_id is not None:
            candidates.append((ANONYMOUS_ID, message.anonymous_id))
        if message.user_id is not None:
            candidates.append((USER_ID, message.user_id))
        if message.previous_id is not None:
            is_email = self._normalize(EMAIL, message.previous_id) is not None
            candidates.append((EMAIL if is_email else ANONYMOUS_ID, message.previous_id))
        traits = message.traits
        if traits:
            for id_type in self._trait_types:
                raw = traits.get(id_type)
                if raw is not None:
                    candidates.append((id_type, raw))
        # For most messages traits *is* context_traits: read it once.
        traits = message.context_traits
        if traits and traits is not message.traits:
            for id_type in self._trait_types:
                raw = traits.get(id_type)
                if raw is not None:
                    candidates.append((id_type, raw))
        seen: set[tuple[str, str]] = set()
        identifiers: list[dict[str, str]] = []
        cached = self._normalize_cached
        for id_type, raw in candidates:
            # A string (the usual id) goes straight to the cache: what _normalize would do.
            value = cached(id_type, raw) if type(raw) is str else self._normalize(id_type, raw)
            if value is not None and (id_type, value) not in seen:
                seen.add((id_type, value))
                identifiers.append({"type": id_type, "value": value})
        return identifiers

    def _normalize(self, id_type: str, raw: Any) -> str | None:
        # Only str / int ids are worth caching (the rest is rejected by the normalizer); bool is
        # excluded because True == 1 would share a cache slot with the id 1.
        if type(raw) is str or (isinstance(raw, str | int) and not isinstance(raw, bool)):
            return self._normalize_cached(id_type, raw)
        return normalize_identifier(id_type, raw, self._config)

    def _normalize_uncached(self, id_type: str, raw: str | int) -> str | None:
        return normalize_identifier(id_type, raw, self._config)

    def _now_ms(self) -> int:
        return int(self._now() * 1000)

    def _build(
        self,
        message: Message,
        source: str,
        received_ms: int,
        client_ip: str | None,
        user_agent_header: str | None,
    ) -> dict[str, Any]:
        user_agent = message.user_agent
        if user_agent is None and user_agent_header and message.library is None:
            user_agent = clean_text(user_agent_header, TEXT_LIMITS["user_agent"])
        ua = self._user_agents.parse(user_agent) if user_agent else NO_USER_AGENT
        utm = _utm(message)
        page_path = message.page_path or url_parts(message.page_url).path
        return {
            "event_id": message.message_id or self._new_id(),
            "type": message.type,
            "event": message.event,
            "anonymous_id": message.anonymous_id,
            "user_id": message.user_id,
            "previous_id": message.previous_id,
            "group_id": message.group_id,
            "identifiers": self.identifiers(message),
            "timestamp": event_time_ms(message.timestamp_ms, message.sent_at_ms, received_ms),
            "received_at": received_ms,
            "sent_at": message.sent_at_ms,
            "source": source,
            "properties": _json(message.properties, "properties"),
            "traits": _json(message.traits, "traits"),
            "context": {
                "ip": truncate_ip(message.ip) or truncate_ip(client_ip),
                "user_agent": user_agent,
                "page_url": message.page_url,
                "page_path": page_path,
                "page_title": message.page_title,
                "referrer": message.referrer,
                "locale": message.locale,
                "library": message.library,
                **utm,
            },
            "enrichment": {
                "device_type": ua.device_type,
                "os": ua.os,
                "browser": ua.browser,
                "is_bot": ua.is_bot,
                "channel": classify_channel(
                    message.page_url, message.referrer, utm["utm_medium"], utm["utm_source"]
                ),
            },
            "consent": list(message.consent),
            "original_timestamp": message.timestamp_ms,
        }


def event_time_ms(timestamp_ms: int | None, sent_at_ms: int | None, received_ms: int) -> int:
    """Skew-corrected, clamped event time (rules in the module docstring)."""
    if timestamp_ms is None:
        return received_ms
    event_ms = timestamp_ms if sent_at_ms is None else timestamp_ms + (received_ms - sent_at_ms)
    if event_ms > received_ms + MAX_FUTURE_MS or event_ms < MIN_EVENT_TIME_MS:
        return received_ms
    return event_ms


def _with_batch_defaults(
    item: dict[str, Any], shared_context: dict[str, Any] | None, shared_sent_at: Any
) -> dict[str, Any]:
    if not shared_context and shared_sent_at is None:
        return item
    merged = dict(item)
    if shared_context:
        own_context = item.get("context")
        if own_context is None:
            merged["context"] = shared_context
        elif isinstance(own_context, dict):
            merged["context"] = {**shared_context, **own_context}
        # a non-object own context is left for parse_message to reject with its field name
    if shared_sent_at is not None and item.get("sentAt") is None:
        merged["sentAt"] = shared_sent_at
    return merged


_NO_UTM: dict[str, str | None] = dict.fromkeys(UTM_KEYS)


def _utm(message: Message) -> dict[str, str | None]:
    """context.campaign first; utm_* query parameters of the page URL fill the gaps."""
    from_url = url_utm(message.page_url)
    campaign = message.campaign
    if not campaign:
        return from_url  # read only: the caller copies it into the event's context
    utm: dict[str, str | None] = {}
    for key in UTM_KEYS:
        value = campaign.get(key)
        utm[key] = from_url[key] if value is None else value
    return utm


@lru_cache(maxsize=16384)
def url_utm(page_url: str | None) -> dict[str, str | None]:
    """The cleaned utm_* query parameters of a page URL, None for each one missing.

    Cached (and so shared, read only): landing pages repeat, and this was a loop over the
    parameters with a text clean-up per event.
    """
    from_url = query_params(page_url)
    if not from_url:
        return _NO_UTM
    limit = TEXT_LIMITS["utm"]
    return {key: clean_text(from_url[key], limit) if key in from_url else None for key in UTM_KEYS}


def _json(value: Mapping[str, Any], field: str) -> str:
    if not value:
        return "{}"
    try:
        return orjson.dumps(value if type(value) is dict else dict(value)).decode()
    except TypeError as exc:  # already proven serializable by the size check; belt and braces
        raise PayloadError(field, f"cannot be serialized as JSON: {exc}") from exc
