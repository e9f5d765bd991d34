"""Cut a list of JSON items into JSON array messages below a size (Kafka's 1 MB default).

Both stage outputs that carry JSON lists (``cdp.identity.changes``, ``cdp.profiles.changes``)
batch many items per message, because faust spends ~200 µs per message sent; a group of
messages on a backlog can produce more than one Kafka message can hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def json_arrays(items: Iterable[bytes], max_bytes: int) -> Iterator[bytes]:
    """``[a,b,...]`` arrays of the encoded ``items``, in order, each below ``max_bytes``
    (an item larger than that on its own becomes an array of one)."""
    chunk: list[bytes] = []
    size = 2
    for item in items:
        if chunk and size + len(item) + 1 > max_bytes:
            yield b"[" + b",".join(chunk) + b"]"
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        yield b"[" + b",".join(chunk) + b"]"
