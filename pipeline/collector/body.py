"""Reading a request body: size limits and our own Content-Encoding decoding.

The collector turns aiohttp's automatic decompression off (``auto_decompress=False``) and
decodes here, for two reasons:

* aiohttp 3.14 deadlocks on a gzip / deflate body that is cut short: the decoder fails at the
  end of the message, aiohttp queues a 400 *after* the current request, whose body never
  completes, so the client waits for its own timeout (found by the fuzz test);
* the decompressed size is bounded while decompressing (a 500 KB zip bomb stops at the limit
  instead of inflating first), and every failure is a 400 / 413 in the API's JSON shape.

Segment's libraries send gzip (analytics-python with ``gzip=True``); deflate is accepted in
both of its wild forms (zlib-wrapped and raw).
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from pipeline.collector.payload import MAX_BATCH_BYTES, PayloadError, PayloadTooLargeError

#: Longest wait for a request body: a 500 KB batch over a slow mobile link takes seconds.
BODY_TIMEOUT_S = 30.0
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS


async def read_body(request: web.Request, limit: int = MAX_BATCH_BYTES) -> bytes:
    """The body, decoded, at most ``limit`` bytes before and after decoding."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLargeError("$", f"body is {length} bytes, the limit is {limit}")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError as exc:
        # A client trickling its body (or a slowloris) must not hold a handler for ever.
        raise PayloadError("$", f"body not received within {BODY_TIMEOUT_S:g} s") from exc
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLargeError("$", f"body is over the limit of {limit} bytes") from exc
    except (HttpProcessingError, RequestPayloadError) as exc:  # e.g. a broken chunked body
        raise PayloadError("$", f"body could not be read: {exc}") from exc
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    return decode_content(raw, encoding, limit)


def decode_content(raw: bytes, encoding: str, limit: int = MAX_BATCH_BYTES) -> bytes:
    """``raw`` decoded per ``Content-Encoding``; 400 when broken, 413 when it inflates too far."""
    if encoding in ("gzip", "x-gzip"):
        return _inflate(raw, _GZIP_WBITS, "gzip", limit)
    if encoding == "deflate":
        # RFC 9110 says zlib-wrapped; some clients send raw deflate. The first byte tells.
        wbits = _ZLIB_WBITS if raw[:1] and (raw[0] & 0x0F) == 8 else _RAW_DEFLATE_WBITS
        return _inflate(raw, wbits, "deflate", limit)
    raise PayloadError(
        "Content-Encoding", f"{encoding[:40]!r} is not supported: send gzip, deflate or none"
    )


def _inflate(raw: bytes, wbits: int, name: str, limit: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    try:
        data = decoder.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise PayloadError("$", f"body is not valid {name}: {exc}") from exc
    if len(data) > limit:
        raise PayloadTooLargeError("$", f"body is over {limit} bytes once decompressed")
    if not decoder.eof:
        raise PayloadError("$", f"body is not valid {name}: the stream is cut short")
    return data
