"""The collector: the ingestion edge. Segment payloads in, validated and enriched events out.

The pure parts live here (no HTTP, no Kafka), one module per step:

* :mod:`.payload`    bytes -> JSON -> a validated :class:`Message`; the error classes
* :mod:`.enrich`     :class:`Enricher`: a message -> an ``Event`` dict matching ``event.avsc``
* :mod:`.pixel`      pixel query strings -> Segment payloads; the 1x1 GIF
* :mod:`.deadletter` records for ``cdp.events.invalid``

The HTTP server (:mod:`.server`) calls them; :mod:`pipeline.avro` encodes what they produce.
"""

from pipeline.collector.deadletter import dead_letter_record
from pipeline.collector.enrich import Enricher, Rejection, classify_channel, truncate_ip
from pipeline.collector.payload import (
    MAX_BATCH_BYTES,
    MAX_EVENT_BYTES,
    AuthError,
    Message,
    PayloadError,
    PayloadTooLargeError,
    decode_json,
    parse_message,
)
from pipeline.collector.pixel import (
    TRANSPARENT_GIF,
    decode_pixel_data,
    pixel_type,
    short_pixel_payload,
)

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_EVENT_BYTES",
    "TRANSPARENT_GIF",
    "AuthError",
    "Enricher",
    "Message",
    "PayloadError",
    "PayloadTooLargeError",
    "Rejection",
    "classify_channel",
    "dead_letter_record",
    "decode_json",
    "decode_pixel_data",
    "parse_message",
    "pixel_type",
    "short_pixel_payload",
    "truncate_ip",
]
