"""Avro's binary primitives shared by the compiled writer and reader.

:mod:`pipeline.collector.avro_writer` (the collector's Event encoder) and
:mod:`pipeline.avro_reader` (the worker's decoders and ``ResolvedBatch`` framing) both need the
zig-zag varint of the Avro spec: ``long`` and ``int`` values, string and bytes lengths, array
block counts. They live here so that the worker does not import the collector package.
"""

from __future__ import annotations

LONG_MIN, LONG_MAX = -(1 << 63), (1 << 63) - 1


def zigzag_varint(value: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 varint, least significant group first."""
    if not LONG_MIN <= value <= LONG_MAX:
        raise ValueError(f"{value} does not fit an Avro long")
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: Lengths and counts are small: a table lookup instead of the loop for the common ones.
SMALL_LONGS = tuple(zigzag_varint(i) for i in range(8192))
SMALL_LONGS_LIMIT = len(SMALL_LONGS)

# Large values repeat too: received_at and sentAt are shared by a whole batch, and a client's
# timestamps cluster. A bounded memo (cleared when full) keeps the varint loop off most of them.
_LARGE: dict[int, bytes] = {}
_LARGE_LIMIT = 4096


def encode_long(value: int) -> bytes:
    """Avro ``long`` (and ``int``): zig-zag, then base-128 varint."""
    if 0 <= value < SMALL_LONGS_LIMIT:
        return SMALL_LONGS[value]  # a float here fails: tuple indexes must be integers
    if not isinstance(value, int):  # before the memo: 1.5e12 == 1500000000000 would hit it
        raise TypeError(f"expected an int, got {type(value).__name__}")
    encoded = _LARGE.get(value)
    if encoded is None:
        encoded = zigzag_varint(value)
        if len(_LARGE) >= _LARGE_LIMIT:
            _LARGE.clear()
        _LARGE[value] = encoded
    return encoded


def encode_string(value: str) -> bytes:
    """Avro ``string``: the length of its UTF-8 as a ``long``, then the UTF-8."""
    data = value.encode()
    size = len(data)
    return (SMALL_LONGS[size] if size < SMALL_LONGS_LIMIT else encode_long(size)) + data
