"""Dead-letter records for ``cdp.events.invalid``: what was refused, why, and a bounded excerpt.

The topic is internal (operators debug SDK integrations from it), so the excerpt is the raw input
as sent, PII included, but never more than :data:`MAX_RAW_BYTES` bytes of it: a 500 KB garbage
body must not become a 500 KB Kafka message. ``raw_truncated`` and ``raw_bytes`` say how much was
cut. The write key itself is never recorded, only the source name it maps to: a ``writeKey``
inside the raw input is replaced by ``"<redacted>"`` (browser write keys are public in page
source anyway, but server-side ones are secrets and dead letters are read by many).

Record (JSON, one per refused event or request)::

    {"schema": "cdp.deadletter.v1", "reason": "...", "field": "event" | null,
     "source": "web" | null, "received_at": 1714564800000,
     "raw": "<first MAX_RAW_BYTES bytes, UTF-8, invalid bytes replaced>",
     "raw_bytes": 1234, "raw_truncated": false}
"""

from __future__ import annotations

import re
from typing import Any

import orjson

# "writeKey": "..." in JSON text, escaped quotes inside the value included.
_WRITE_KEY = re.compile(rb'("writeKey"\s*:\s*)"(?:[^"\\]|\\.)*"')

SCHEMA_ID = "cdp.deadletter.v1"
MAX_RAW_BYTES = 4096
MAX_REASON_CHARS = 1024


def raw_excerpt(raw: bytes | str | Any, limit: int = MAX_RAW_BYTES) -> tuple[str, bool, int]:
    """``(excerpt, truncated, total_bytes)`` of a raw input; never raises.

    Bytes are decoded as UTF-8 with invalid sequences replaced (the input may be exactly the
    invalid UTF-8 that got it refused); other objects are serialized as JSON first, falling back
    to ``repr`` for what JSON cannot hold (lone surrogates, 65-bit integers, non-string keys).
    """
    if isinstance(raw, bytes):
        data = raw
    elif isinstance(raw, str):
        data = raw.encode("utf-8", "replace")
    else:
        try:
            data = orjson.dumps(raw, option=orjson.OPT_NON_STR_KEYS, default=repr)
        except TypeError:
            data = repr(raw).encode("utf-8", "replace")
    data = _WRITE_KEY.sub(rb'\1"<redacted>"', data)
    truncated = len(data) > limit
    # Cutting mid-character leaves a partial UTF-8 sequence: "replace" turns it into U+FFFD.
    return data[:limit].decode("utf-8", "replace"), truncated, len(data)


def dead_letter_record(
    raw: bytes | str | dict[str, Any],
    reason: str,
    field: str | None,
    source: str | None,
    received_at_ms: int,
) -> bytes:
    """The JSON value of one ``cdp.events.invalid`` message."""
    excerpt, truncated, total = raw_excerpt(raw)
    record = {
        "schema": SCHEMA_ID,
        "reason": reason[:MAX_REASON_CHARS],
        "field": field,
        "source": source,
        "received_at": received_at_ms,
        "raw": excerpt,
        "raw_bytes": total,
        "raw_truncated": truncated,
    }
    try:
        return orjson.dumps(record)
    except TypeError:
        # Only a reason / field / source carrying lone surrogates gets here: scrub and retry.
        for key in ("reason", "field", "source"):
            value = record[key]
            if isinstance(value, str):
                record[key] = value.encode("utf-8", "replace").decode("utf-8")
        return orjson.dumps(record)
