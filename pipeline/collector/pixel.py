"""Pure decoding for the tracking pixel: GET query strings -> Segment-shaped payload dicts.

Two forms:

``GET /v1/pixel/{track,page,identify}?data=<base64 JSON>``
    The Segment pixel API: ``data`` is a whole Segment message (``writeKey`` inside it), base64
    in the standard or URL-safe alphabet, padding optional. A ``+`` that arrives as a space (the
    query string was form-decoded) is repaired. The HTTP layer passes the path's type as
    ``type_hint`` to :meth:`Enricher.event`.

``GET /i?...``, for hand-written ``<img>`` tags (email opens, no-JS pages)
    =========== =========================================================================
    ``e``       event name: a ``track`` with that name; without ``e`` a ``page`` view
    ``u``       page URL (``context.page.url``; also ``properties.url`` of a page view)
    ``r``       referrer (``context.page.referrer``)
    ``t``       page title (``context.page.title``)
    ``uid``     userId
    ``aid``     anonymousId
    ``em``      email, sent as ``context.traits.email`` (identifies an email open on its own)
    ``k``       write key (``writeKey``), when not sent as HTTP Basic auth
    ``utm_*``   ``context.campaign`` (``utm_campaign`` becomes ``campaign.name``)
    other       string properties of the event, at most :data:`MAX_EXTRA_PARAMS`
    =========== =========================================================================

    Example: ``<img src="https://cdp.example/i?k=KEY&e=Email%20Opened&em=ann%40example.com
    &campaign_id=spring24">``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from pipeline.collector.payload import MAX_EVENT_BYTES, PayloadError, decode_json

PIXEL_TYPES = frozenset({"track", "page", "identify"})

# The classic 42-byte 1x1 transparent GIF89a (one-colour palette, transparency extension).
TRANSPARENT_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
GIF_CONTENT_TYPE = "image/gif"

# base64 of a maximal event, plus slack for padding and stray whitespace.
MAX_DATA_CHARS = MAX_EVENT_BYTES * 4 // 3 + 8
MAX_EXTRA_PARAMS = 50

_SHORT_KNOWN = frozenset({"e", "u", "r", "t", "uid", "aid", "em", "k"})
_UTM_TO_CAMPAIGN = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "name",
    "utm_term": "term",
    "utm_content": "content",
}
_URLSAFE_TO_STANDARD = str.maketrans({"-": "+", "_": "/", " ": "+"})


def decode_pixel_data(data: str | None) -> dict[str, Any]:
    """The Segment message inside a pixel's ``data`` parameter."""
    if not data:
        raise PayloadError("data", "is required: base64-encoded JSON of the message")
    if len(data) > MAX_DATA_CHARS:
        raise PayloadError("data", f"is {len(data)} characters, the limit is {MAX_DATA_CHARS}")
    text = data.strip().translate(_URLSAFE_TO_STANDARD)
    text += "=" * (-len(text) % 4)
    try:
        body = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError("data", f"is not valid base64: {exc}") from exc
    try:
        return decode_json(body, max_bytes=MAX_EVENT_BYTES)
    except PayloadError as exc:
        raise type(exc)("data", exc.reason) from exc


def pixel_type(kind: str) -> str:
    """The message type of ``/v1/pixel/<kind>``; raises for kinds the pixel does not serve."""
    if kind not in PIXEL_TYPES:
        raise PayloadError("type", f"pixel serves {', '.join(sorted(PIXEL_TYPES))}, not {kind!r}")
    return kind


def short_pixel_payload(query: Mapping[str, str]) -> dict[str, Any]:
    """A Segment message from the short pixel's query parameters (table in the module doc)."""
    url, referrer, title = query.get("u"), query.get("r"), query.get("t")
    page = {k: v for k, v in (("url", url), ("referrer", referrer), ("title", title)) if v}
    campaign = {
        field: query[param] for param, field in _UTM_TO_CAMPAIGN.items() if query.get(param)
    }
    extra = [
        (key, value)
        for key, value in query.items()
        if key not in _SHORT_KNOWN and key not in _UTM_TO_CAMPAIGN
    ]
    if len(extra) > MAX_EXTRA_PARAMS:
        raise PayloadError("$", f"{len(extra)} extra parameters, the limit is {MAX_EXTRA_PARAMS}")

    context: dict[str, Any] = {}
    if page:
        context["page"] = page
    if campaign:
        context["campaign"] = campaign
    if query.get("em"):
        context["traits"] = {"email": query["em"]}

    event = query.get("e")
    payload: dict[str, Any] = {"type": "track", "event": event} if event else {"type": "page"}
    properties = dict(extra)
    if not event:
        # A page view repeats the page fields in its properties, as analytics.js does.
        properties = {**page, **properties}
    payload["properties"] = properties
    payload["context"] = context
    for param, key in (("uid", "userId"), ("aid", "anonymousId"), ("k", "writeKey")):
        if query.get(param):
            payload[key] = query[param]
    return payload
