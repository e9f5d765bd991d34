"""Validation of Segment HTTP Tracking API payloads: bytes -> JSON -> a checked :class:`Message`.

Pure: no clock, no I/O. :mod:`pipeline.collector.enrich` turns a :class:`Message` into an Avro
``Event``; the HTTP layer maps the errors below to status codes (``error.status``).

Rules (the README of the collector repeats them for SDK users):

* ``type`` is one of :data:`MESSAGE_TYPES`. On ``/v1/<type>`` endpoints the path gives the type;
  a payload ``type`` that contradicts it is an error. Batch items must each carry ``type``.
* ``track`` needs ``event``; ``group`` needs ``groupId``; ``alias`` needs ``userId`` and
  ``previousId``; every other type needs ``userId`` or ``anonymousId``. Extension: an email in
  ``traits`` / ``context.traits`` also identifies the sender, because email-open pixels have no
  cookie and no login.
* ``properties``, ``traits``, ``context``, ``integrations`` and the ``context`` sub-objects we
  read must be objects when present (``null`` counts as absent); the ``context`` leaves we read
  must be strings.
* ``timestamp`` / ``originalTimestamp`` / ``sentAt`` are ISO-8601 strings; without an offset they
  are taken as UTC.
* Sizes: one event at most :data:`MAX_EVENT_BYTES` (re-serialized compact JSON), one request body
  at most :data:`MAX_BATCH_BYTES`; both raise :class:`PayloadTooLargeError` (HTTP 413).

Hostile strings, decided per kind of field:

* Identifiers (``userId``, ``anonymousId``, ``previousId``, ``groupId``, ``messageId``) are
  rejected when longer than :data:`MAX_ID_CHARS` or containing control characters: truncating or
  cleaning an id would silently merge different people. Empty / whitespace-only ids count as
  absent (SDKs send ``""`` for "no user yet"). Integer ids become their decimal string.
* Names (``event``, page/screen ``name``) are rejected beyond :data:`MAX_NAME_CHARS`: they are
  analytics keys, and a 10 KB event name is a bug, not a name. Control characters become spaces.
* Descriptive text (URLs, title, referrer, user agent, locale, library, UTM values) has control
  characters replaced by spaces and is truncated to its limit in :data:`TEXT_LIMITS`: losing the
  tail of a 50 KB URL costs nothing, dropping the event would.
* ``properties`` / ``traits`` contents are not altered: they are only bounded by the event size,
  and JSON escaping makes control characters harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

MESSAGE_TYPES = frozenset({"track", "page", "screen", "identify", "alias", "group"})

MAX_EVENT_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_ID_CHARS = 256
MAX_NAME_CHARS = 255
TEXT_LIMITS: Mapping[str, int] = {
    "url": 2048,
    "title": 512,
    "user_agent": 512,
    "locale": 35,  # BCP 47 tags in the wild stay far below this.
    "library": 128,
    "utm": 256,
    "consent": 64,
}
_URL_LIMIT = TEXT_LIMITS["url"]
_TITLE_LIMIT = TEXT_LIMITS["title"]
_UA_LIMIT = TEXT_LIMITS["user_agent"]
_LOCALE_LIMIT = TEXT_LIMITS["locale"]
_LIBRARY_LIMIT = TEXT_LIMITS["library"]
# Longest accepted ISO-8601 string; bounds the work fromisoformat does on hostile input.
_MAX_TIMESTAMP_CHARS = 64

# C0/C1 controls and lone surrogates (which cannot be encoded as UTF-8, so Avro and orjson would
# fail on them later). Bidi and zero-width characters are left to the identity normalizer.
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Parsed timestamps by their text: a batch's sentAt is shared by all of its events, and a
# client's timestamps repeat within a flush. Bounded (cleared when full); only valid ones.
_TIMESTAMPS: dict[str, int] = {}
_TIMESTAMPS_CACHED = 4096
_EMPTY: Mapping[str, Any] = MappingProxyType({})
# context.library by (name, version): an SDK sends the same pair with every event. Bounded.
_LIBRARIES: dict[tuple[str, str | None], str | None] = {}
_LIBRARIES_CACHED = 1024
_MISSING = object()
_ONE_MS = timedelta(milliseconds=1)

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
# Segment's context.campaign names the campaign ``name``; the rest map one to one.
_CAMPAIGN_TO_UTM = {
    "source": "utm_source",
    "medium": "utm_medium",
    "name": "utm_campaign",
    "campaign": "utm_campaign",
    "term": "utm_term",
    "content": "utm_content",
}


class PayloadError(ValueError):
    """The payload breaks the tracking API contract. ``field`` is a dotted path into it."""

    status = 400
    code = "invalid"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PayloadTooLargeError(PayloadError):
    """An event or a request body exceeds its size limit (HTTP 413)."""

    status = 413
    code = "too_large"


class AuthError(Exception):
    """The write key is missing or unknown (HTTP 401). The message never contains the key."""

    status = 401
    code = "unauthorized"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: The default of the mapping fields of a :class:`Message` built by hand (read only, shared).
_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


class Message(NamedTuple):
    """One validated Segment message, strings cleaned, ready for enrichment.

    A named tuple rather than a frozen dataclass: as immutable, and built ~5x faster (a frozen
    dataclass sets each of its 24 fields through ``object.__setattr__``), once per event.
    """

    type: str
    event: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None
    group_id: str | None = None
    message_id: str | None = None
    timestamp_ms: int | None = None
    sent_at_ms: int | None = None
    write_key: str | None = None
    properties: Mapping[str, Any] = _NO_FIELDS
    # The person's traits: context.traits overlaid by top-level traits (not for group, whose
    # top-level traits describe the group and are folded into properties instead).
    traits: Mapping[str, Any] = _NO_FIELDS
    context_traits: Mapping[str, Any] = _NO_FIELDS
    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    page_path: str | None = None
    page_title: str | None = None
    referrer: str | None = None
    locale: str | None = None
    library: str | None = None
    campaign: Mapping[str, str] = _NO_FIELDS
    consent: tuple[str, ...] = ()


# What ``Message(...)`` runs, without the generated Python ``__new__`` in between (a frame with
# 23 arguments per event); parse_message passes every field, so no default is skipped.
_new_message = tuple.__new__


def decode_json(body: bytes, *, max_bytes: int = MAX_BATCH_BYTES) -> dict[str, Any]:
    """Parse a request body: a JSON object, valid UTF-8, at most ``max_bytes``.

    A leading UTF-8 byte-order mark is tolerated (some Windows HTTP clients add one).
    """
    if len(body) > max_bytes:
        raise PayloadTooLargeError("$", f"body is {len(body)} bytes, the limit is {max_bytes}")
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 and lone surrogates itself, with a precise position.
        raise PayloadError("$", f"not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise PayloadError("$", f"must be a JSON object, got {_json_type(value)}")
    return value


def check_event_size(payload: Mapping[str, Any], field: str = "$") -> int:
    """Size of one event as compact JSON; raises when over :data:`MAX_EVENT_BYTES`.

    Re-serializing also proves the event can be written out later (orjson refuses nesting deeper
    than 254 levels, 65-bit integers and non-string keys), so enrichment cannot fail on it.
    """
    try:
        size = len(orjson.dumps(payload))
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise PayloadError(field, f"cannot be serialized as JSON: {exc}") from exc
    if size > MAX_EVENT_BYTES:
        raise PayloadTooLargeError(
            field, f"event is {size} bytes as JSON, the limit is {MAX_EVENT_BYTES}"
        )
    return size


def parse_message(payload: Mapping[str, Any], *, type_hint: str | None = None) -> Message:
    """Validate one Segment message (a single-event body or one batch item).

    The checks run in a fixed order and the first failing one names the field: type, size,
    the objects (context, properties, traits, context.traits, integrations), the event name, the
    identifiers, timestamps, write key, consent, campaign, library, then the page and the other
    context texts. This is the collector's hottest function (once per event): the common cases
    take inline fast paths, the rare ones the general helpers below.
    """
    msg_type = _message_type(payload, type_hint)
    check_event_size(payload)
    get = payload.get
    context = get("context")
    if context is None:
        context = _EMPTY
    elif type(context) is not dict:
        context = _object(payload, "context", "context")
    properties = get("properties")
    if properties is None:
        properties = {}
    elif type(properties) is dict:
        properties = dict(properties)
    else:
        properties = dict(_object(payload, "properties", "properties"))
    top_traits = _object(payload, "traits", "traits")
    context_traits = _object(context, "traits", "context.traits")
    if get("integrations") is not None:
        _object(payload, "integrations", "integrations")  # accepted for SDKs, unused

    if msg_type == "group":
        # Group traits describe the account, not the person: keep them out of person traits.
        properties = {**properties, **top_traits}
        traits: Mapping[str, Any] = context_traits
    else:
        traits = {**context_traits, **top_traits} if top_traits else context_traits

    event = _event_name(payload, msg_type)
    user_id = _identifier(payload, "userId")
    anonymous_id = _identifier(payload, "anonymousId")
    previous_id = _identifier(payload, "previousId") if get("previousId") is not None else None
    group_id = _identifier(payload, "groupId") if get("groupId") is not None else None
    message_id = _identifier(payload, "messageId")
    if get("timestamp") is not None:
        timestamp_ms = _timestamp(payload, "timestamp")
    else:
        timestamp_ms = _timestamp(payload, "originalTimestamp")
    sent_at_ms = _timestamp(payload, "sentAt")
    write_key = _write_key(payload)
    consent = parse_consent(context.get("consent")) if context else ()
    campaign = _campaign(context) if "campaign" in context else {}
    library = _library(context) if "library" in context else None
    page = context.get("page")
    if page is None:
        page = _EMPTY
    elif type(page) is not dict:
        page = _object(context, "page", "context.page")
    url_limit = _URL_LIMIT
    ip = _text(context, "ip", "context.ip", 64)
    user_agent = _text(context, "userAgent", "context.userAgent", _UA_LIMIT)
    locale = _text(context, "locale", "context.locale", _LOCALE_LIMIT)
    page_url = _text(page, "url", "context.page.url", url_limit)
    page_path = _text(page, "path", "context.page.path", url_limit)
    page_title = _text(page, "title", "context.page.title", _TITLE_LIMIT)
    referrer = _text(page, "referrer", "context.page.referrer", url_limit)
    if msg_type == "page" and properties:
        # analytics.js repeats the page fields in a page call's properties; other SDKs send
        # them only there. Properties are free-form: a non-string there is ignored, no error.
        if page_url is None:
            page_url = _optional_text(properties.get("url"), url_limit)
        if page_path is None:
            page_path = _optional_text(properties.get("path"), url_limit)
        if page_title is None:
            page_title = _optional_text(properties.get("title"), _TITLE_LIMIT)
        if referrer is None:
            referrer = _optional_text(properties.get("referrer"), url_limit)

    if (user_id is None and anonymous_id is None) or msg_type in ("alias", "group"):
        _check_required(
            msg_type, user_id, anonymous_id, previous_id, group_id, traits, context_traits
        )
    return _new_message(
        Message,
        (
            msg_type,
            event,
            user_id,
            anonymous_id,
            previous_id,
            group_id,
            message_id,
            timestamp_ms,
            sent_at_ms,
            write_key,
            properties,
            traits,
            context_traits,
            ip,
            user_agent,
            page_url,
            page_path,
            page_title,
            referrer,
            locale,
            library,
            campaign,
            consent,
        ),
    )


def clean_text(value: str, limit: int) -> str | None:
    """Control characters to spaces, trimmed, truncated to ``limit`` characters; None if empty."""
    # isprintable() is false for every character _CONTROL_CHARS matches (categories Cc, Cs):
    # when it holds, the substitution has nothing to do (the usual case, and 5x cheaper).
    if value.isprintable():
        text = value.strip()
        if len(text) > limit:
            text = text[:limit].strip()
    else:
        text = _CONTROL_CHARS.sub(" ", value).strip()[:limit].strip()
    return text or None


def parse_consent(value: Any) -> tuple[str, ...]:
    """Granted categories from ``context.consent``, lower-cased, unique and sorted.

    Accepts a list of category names, Segment's ``{"categoryPreferences": {name: bool}}``, or an
    object with a ``categories`` list. Lower-casing makes "Analytics" and "analytics" one category.
    """
    if value is None:
        return ()
    if isinstance(value, list):
        names = [_consent_name(item, f"context.consent[{i}]") for i, item in enumerate(value)]
    elif isinstance(value, dict):
        prefs = value.get("categoryPreferences")
        categories = value.get("categories")
        names = []
        if prefs is not None:
            if not isinstance(prefs, dict):
                raise PayloadError("context.consent.categoryPreferences", "must be an object")
            for name, granted in prefs.items():
                if not isinstance(granted, bool):
                    raise PayloadError(
                        f"context.consent.categoryPreferences.{name}", "must be true or false"
                    )
                if granted:
                    names.append(_consent_name(name, "context.consent.categoryPreferences"))
        if categories is not None:
            if not isinstance(categories, list):
                raise PayloadError("context.consent.categories", "must be an array of strings")
            names += [
                _consent_name(item, f"context.consent.categories[{i}]")
                for i, item in enumerate(categories)
            ]
    else:
        raise PayloadError(
            "context.consent",
            "must be an array of category names or an object with categoryPreferences",
        )
    return tuple(sorted({name for name in names if name}))


def to_epoch_ms(value: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_MS


def _message_type(payload: Mapping[str, Any], type_hint: str | None) -> str:
    sent = payload.get("type")
    if sent is not None and not isinstance(sent, str):
        raise PayloadError("type", f"must be a string, got {_json_type(sent)}")
    if type_hint is not None:
        if sent is not None and sent != type_hint:
            raise PayloadError(
                "type", f"{_excerpt(sent)!r} does not match the /v1/{type_hint} endpoint"
            )
        sent = type_hint
    if sent is None:
        raise PayloadError("type", "is required")
    if sent not in MESSAGE_TYPES:
        raise PayloadError(
            "type", f"{_excerpt(sent)!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}"
        )
    return sent


def _object(container: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = container.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(path, f"must be an object, got {_json_type(value)}")
    return value


def _identifier(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if type(value) is str:  # the usual case, checked without the general path below
        text = value.strip()
        if not text:
            return None
        if len(text) <= MAX_ID_CHARS and text.isprintable():
            return text
    elif isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise PayloadError(key, f"must be a string, got {_json_type(value)}")
    text = value.strip()
    if len(text) > MAX_ID_CHARS:
        raise PayloadError(key, f"is {len(text)} characters, the limit is {MAX_ID_CHARS}")
    if _CONTROL_CHARS.search(text):
        raise PayloadError(key, "contains control characters")
    return text


def _event_name(payload: Mapping[str, Any], msg_type: str) -> str | None:
    key = "event" if msg_type == "track" else "name"
    if msg_type not in ("track", "page", "screen"):
        return None
    value = payload.get(key)
    if value is None or value == "":
        if msg_type == "track":
            raise PayloadError("event", "is required for track")
        return None
    if not isinstance(value, str):
        raise PayloadError(key, f"must be a string, got {_json_type(value)}")
    if len(value) > MAX_NAME_CHARS:
        raise PayloadError(key, f"is {len(value)} characters, the limit is {MAX_NAME_CHARS}")
    name = clean_text(value, MAX_NAME_CHARS)
    if name is None and msg_type == "track":
        raise PayloadError("event", "must not be blank")
    return name


def _timestamp(payload: Mapping[str, Any], key: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if type(value) is str:
        cached = _TIMESTAMPS.get(value)
        if cached is not None:
            return cached
    if not isinstance(value, str) or len(value) > _MAX_TIMESTAMP_CHARS:
        raise PayloadError(key, "must be an ISO-8601 date-time string, e.g. 2024-05-01T12:00:00Z")
    try:
        millis = to_epoch_ms(datetime.fromisoformat(value))
    except (ValueError, OverflowError) as exc:
        raise PayloadError(
            key, f"{_excerpt(value)!r} is not an ISO-8601 date-time ({exc})"
        ) from exc
    if type(value) is str:
        if len(_TIMESTAMPS) >= _TIMESTAMPS_CACHED:
            _TIMESTAMPS.clear()
        _TIMESTAMPS[value] = millis
    return millis


def _write_key(payload: Mapping[str, Any]) -> str | None:
    value = payload.get("writeKey")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError("writeKey", f"must be a string, got {_json_type(value)}")
    return value


def _text(container: Mapping[str, Any], key: str, path: str, limit: int) -> str | None:
    value = container.get(key)
    if value is None:
        return None
    if type(value) is not str and not isinstance(value, str):
        raise PayloadError(path, f"must be a string, got {_json_type(value)}")
    if len(value) <= limit and value.isprintable():  # clean_text's fast path, inlined
        return value.strip() or None
    return clean_text(value, limit)


def _optional_text(value: Any, limit: int) -> str | None:
    """A free-form value used as text when it is a string (no error otherwise)."""
    return clean_text(value, limit) if isinstance(value, str) else None


def _library(context: Mapping[str, Any]) -> str | None:
    """``name/version`` of ``context.library``; memoized, as every event of an SDK repeats it."""
    library = context.get("library")
    if type(library) is dict:
        name = library.get("name")
        version = library.get("version")
        # Only short strings are memoized (every real SDK name): the memo stays small, and a
        # key of other types could be unhashable or equal across types (1 == True).
        if (
            type(name) is str
            and (version is None or type(version) is str)
            and len(name) <= _LIBRARY_LIMIT
            and (version is None or len(version) <= _LIBRARY_LIMIT)
        ):
            key = (name, version)
            joined = _LIBRARIES.get(key, _MISSING)
            if joined is _MISSING:
                joined = _parse_library(context)
                if len(_LIBRARIES) >= _LIBRARIES_CACHED:
                    _LIBRARIES.clear()
                _LIBRARIES[key] = joined
            return joined  # type: ignore[return-value]
    return _parse_library(context)


def _parse_library(context: Mapping[str, Any]) -> str | None:
    library = _object(context, "library", "context.library")
    name = _text(library, "name", "context.library.name", TEXT_LIMITS["library"])
    version = _text(library, "version", "context.library.version", TEXT_LIMITS["library"])
    if name is None:
        return None
    joined = f"{name}/{version}" if version else name
    return joined[: TEXT_LIMITS["library"]]


def _campaign(context: Mapping[str, Any]) -> dict[str, str]:
    campaign = _object(context, "campaign", "context.campaign")
    utm: dict[str, str] = {}
    for key, target in _CAMPAIGN_TO_UTM.items():
        value = _text(campaign, key, f"context.campaign.{key}", TEXT_LIMITS["utm"])
        if value is not None:
            utm.setdefault(target, value)
    return utm


def _consent_name(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(path, f"consent category must be a string, got {_json_type(value)}")
    return (clean_text(value, TEXT_LIMITS["consent"]) or "").lower()


def _check_required(
    msg_type: str,
    user_id: str | None,
    anonymous_id: str | None,
    previous_id: str | None,
    group_id: str | None,
    traits: Mapping[str, Any],
    context_traits: Mapping[str, Any],
) -> None:
    if msg_type == "alias":
        if user_id is None:
            raise PayloadError("userId", "is required for alias")
        if previous_id is None:
            raise PayloadError("previousId", "is required for alias")
        return
    if msg_type == "group" and group_id is None:
        raise PayloadError("groupId", "is required for group")
    if user_id is None and anonymous_id is None:
        # The person's traits, not the payload's: a group's traits.email is the account's.
        email = traits.get("email") or context_traits.get("email")
        if not (isinstance(email, str) and email.strip()):
            raise PayloadError("userId", "userId or anonymousId is required")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _excerpt(value: str, limit: int = 40) -> str:
    """A short, printable piece of a hostile string for an error message."""
    text = _CONTROL_CHARS.sub("?", value)
    return text if len(text) <= limit else text[:limit] + "…"
