"""A compiled Avro reader for the worker's messages: ``EventBatch`` and ``ResolvedBatch``.

fastavro's ``schemaless_reader`` interprets the schema for every value: ~37 µs for a typical
enriched event on the dev box, and the worker decodes every event three times (identity reads the
``EventBatch`` of ``cdp.events.raw``; profile and sink read the ``ResolvedBatch`` of
``cdp.events.resolved``) and identity re-encodes it once. As :mod:`pipeline.collector.avro_writer`
does for writing, this module turns the parsed schemas into straight-line Python once, at import:
one function per message type with every nested record, array and union inlined; 1-byte varints
(lengths, counts, union indexes) as table lookups and longer ones (timestamps) unrolled inline; a
union's index byte folded into its branch's position update; strings sliced from a Latin-1 view
of the message, decoded as UTF-8 only when the slice is not ASCII; helpers and constants as
default arguments (fast locals).

Measured with ``python -m pipeline.avro_reader`` (both readers in the same run, CPU time of the
thread, the 476-byte event of :mod:`pipeline.avro`'s benchmark, batches of 100): ``decode_batch``
2.3x fastavro, ``decode_resolved`` 2.4-3x, and the identity path (:func:`decode_batch_spans` +
:func:`frame_resolved` instead of decoding and encoding again) 4.7x. Valgrind counts 107 000
instructions per event against fastavro's 227 000; what remains is mostly what any Python reader
pays: an int object per position past 256, generic ``bytes`` indexing, and the dicts and strings
of the result.

The contract is fastavro's: the compiled reader returns the same Python values for the same
bytes (``int`` timestamps, as :mod:`pipeline.avro` strips the logical types; any non-zero
boolean byte is ``True``; a negative union index counts from the end, as fastavro's list indexing
does), and whatever it cannot read raises :class:`~pipeline.avro.SerializationError`: truncated
data, trailing bytes, invalid UTF-8, a negative length, an out-of-range union index, a varint
longer than the 10 bytes of a 64-bit long (fastavro returns an undefined value there). A schema
using a construct the compiler does not handle (map, enum, fixed, a recursive record, an array
of zero-byte items) makes :data:`COMPILED` false and every function here go through fastavro, so
a schema change can slow the worker down but never make it read something else.

Because the reader knows where each event starts and ends, :func:`decode_batch_spans` returns
those offsets too, and :func:`frame_resolved` builds a ``ResolvedBatch`` from the events' original
bytes: the identity processor forwards events without encoding them again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from pipeline.avro import (
    BATCH_SCHEMA_NAME,
    EVENT_SCHEMA_NAME,
    RESOLVED_SCHEMA_NAME,
    SCHEMAS,
    SerializationError,
    decode_batch,
    decode_event,
    decode_resolved,
    encode_event,
    encode_resolved,
)
from pipeline.avro_codec import SMALL_LONGS, SMALL_LONGS_LIMIT, encode_long

Reader = Callable[[bytes], Any]

_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_MIN_SIZE = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8}
_MASK64 = (1 << 64) - 1
_DISPLAY_ITEMS = 15

# One-byte varints (the high bit clear), zig-zag decoded: every length below 64, every small
# count and index.
_ZIGZAG = tuple((b >> 1) ^ -(b & 1) for b in range(128))
# The first byte of a string or bytes length -> the length, or -1 when it takes the slow path.
_LENGTHS = tuple(b >> 1 if b < 128 and not b & 1 else -1 for b in range(256))


def _union_table(branches: int) -> tuple[int, ...]:
    """First byte of a union index -> the branch, or -1 for "ask :func:`_union_index`"."""
    table = []
    for byte in range(256):
        index = _ZIGZAG[byte] if byte < 128 else branches  # multi-byte: the slow path
        table.append(index % branches if -branches <= index < branches else -1)
    return tuple(table)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The zig-zag varint at ``pos`` (any length up to 10 bytes) and the position after it."""
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            _too_long()
    n &= _MASK64
    return (n >> 1) ^ -(n & 1), pos


def _union_index(data: bytes, pos: int, branches: int) -> tuple[int, int]:
    """A union index that is not a 1-byte varint (or out of range), as fastavro indexes."""
    index, pos = _varint(data, pos)
    if not -branches <= index < branches:
        raise SerializationError(f"union index {index} out of range for {branches} branches")
    return index % branches, pos


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A string or bytes length that is not a 1-byte varint, or a negative one (refused)."""
    size, pos = _varint(data, pos)
    if size < 0:
        _negative(size)
    return size, pos


def _too_long() -> None:
    raise SerializationError("varint longer than the 10 bytes of an Avro long")


def _negative(size: int) -> None:
    raise SerializationError(f"negative length {size}")


def _array_too_long(count: int, left: int) -> None:
    raise SerializationError(f"array block of {count} items in the last {left} bytes")


def _end(pos: int, size: int) -> None:
    if pos > size:
        raise SerializationError(f"truncated: {pos - size} bytes missing")
    raise SerializationError(f"{size - pos} trailing bytes after the record")


def _at(skip: int) -> str:
    """The expression of the position ``skip`` bytes after ``pos``."""
    return f"pos + {skip}" if skip else "pos"


class _Unsupported(Exception):
    """The schema uses a construct the compiler does not generate code for."""


def collect_named(schemas: Iterable[Any]) -> dict[str, Any]:
    """Every named type defined anywhere in parsed ``schemas``, by full name."""
    named: dict[str, Any] = {}

    def walk(schema: Any) -> None:
        if isinstance(schema, list):
            for branch in schema:
                walk(branch)
        elif isinstance(schema, dict):
            if "name" in schema and schema.get("type") in ("record", "error", "enum", "fixed"):
                named.setdefault(schema["name"], schema)
            for field in schema.get("fields", ()):
                walk(field["type"])
            for key in ("items", "values"):
                if key in schema:
                    walk(schema[key])

    for schema in schemas:
        walk(schema)
    return named


class _Compiler:
    """Emits the body of ``read(data)``: locals ``data``, ``pos``, ``size`` (its length) and
    ``text`` (``data`` decoded as Latin-1)."""

    def __init__(self, named: dict[str, Any], spans_for: str | None) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.named = named
        self.spans_for = spans_for
        self._active: list[str] = []
        self._counter = 0

    def _name(self, prefix: str = "v") -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def _emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def _resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in self.named:
                raise _Unsupported(f"unknown type {schema}")
            return self.named[schema]
        if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES:
            return schema["type"]  # {"type": "string"} and the like
        return schema

    def min_size(self, schema: Any, seen: tuple[str, ...] = ()) -> int:
        """The fewest bytes a value of ``schema`` takes (bounds an array block's count)."""
        schema = self._resolve(schema)
        if isinstance(schema, list):
            return 1
        if isinstance(schema, str):
            return _MIN_SIZE.get(schema, 1)
        if schema["type"] == "record":
            if schema["name"] in seen:
                raise _Unsupported(f"recursive {schema['name']}")
            inner = (*seen, schema["name"])
            return sum(self.min_size(field["type"], inner) for field in schema["fields"])
        return 1

    def value(self, schema: Any, target: str, depth: int, skip: int = 0) -> None:
        """Code that reads one value of ``schema`` at ``pos + skip`` into the local ``target``
        and leaves ``pos`` after it. (A union's branch starts after its 1-byte index: adding
        that byte into the branch's own position update saves an addition and an int.)"""
        schema = self._resolve(schema)
        if isinstance(schema, str):
            self._primitive(schema, target, depth, skip)
            return
        if skip:
            self._emit(depth, f"pos += {skip}")
        if isinstance(schema, list):
            self._union(schema, target, depth)
        elif schema["type"] == "record":
            self._record(schema, target, depth)
        elif schema["type"] == "array":
            self._array(schema, target, depth)
        else:
            raise _Unsupported(str(schema["type"]))

    def _long(self, target: str, depth: int, skip: int = 0, *, unrolled: bool = True) -> None:
        # The 1-byte case is a table lookup. The others are unrolled inline, one test per byte
        # (a call costs ~10 % more for the 5-6 bytes of a timestamp); array counts, rarely
        # longer, call VARINT instead, keeping the code short. Unrolled, each byte is added
        # whole, its continuation bit included, and the sum of those bits is taken off at the
        # end. The 10th byte is masked to 64 bits, as fastavro's uint64 does; an 11th is refused.
        emit = self._emit
        emit(depth, f"{target} = data[{_at(skip)}]")
        emit(depth, f"if {target} < 128:")
        emit(depth + 1, f"{target} = ZZ[{target}]")
        emit(depth + 1, f"pos += {skip + 1}")
        emit(depth, "else:")
        if not unrolled:
            emit(depth + 1, f"{target}, pos = VARINT(data, {_at(skip)})")
            return
        emit(depth + 1, f"n = {target}")
        level = depth + 1
        for index in range(1, 10):
            emit(level, f"{target} = data[{_at(skip + index)}]")
            emit(level, f"if {target} < 128:")
            continuation_bits = sum(128 << (7 * i) for i in range(index))
            emit(level + 1, f"n += ({target} << {7 * index}) - {continuation_bits}")
            if index == 9:
                emit(level + 1, "n &= M64")
            emit(level + 1, f"pos += {skip + index + 1}")
            emit(level, "else:")
            if index == 9:
                emit(level + 1, "TOO_LONG()")
            else:
                emit(level + 1, f"n += {target} << {7 * index}")
            level += 1
        emit(depth + 1, f"{target} = (n >> 1) ^ -(n & 1)")

    def _primitive(self, kind: str, target: str, depth: int, skip: int = 0) -> None:
        emit = self._emit
        if kind in ("long", "int"):  # fastavro reads an int as a long, without a 32-bit check
            self._long(target, depth, skip)
        elif kind in ("string", "bytes"):
            # A length below 64 is one even byte under 0x80: LN gives it, and -1 for the others
            # (longer, or negative and refused) that LENGTH reads.
            length = self._name("n")
            emit(depth, f"{length} = LN[data[{_at(skip)}]]")
            emit(depth, f"if {length} < 0:")
            emit(depth + 1, f"{length}, pos = LENGTH(data, {_at(skip)})")
            emit(depth, "else:")
            emit(depth + 1, f"pos += {skip + 1}")
            if kind == "bytes":
                emit(depth, f"{target} = data[pos:pos + {length}]")
                emit(depth, f"pos += {length}")
                return
            # ``text`` is ``data`` decoded as Latin-1, one code point per byte: an ASCII slice of
            # it is the string, without the bytes copy and the UTF-8 decoder. Anything else is
            # decoded from the bytes.
            end = self._name("e")
            emit(depth, f"{end} = pos + {length}")
            emit(depth, f"{target} = text[pos:{end}]")
            emit(depth, f"if not {target}.isascii():")
            emit(depth + 1, f"{target} = data[pos:{end}].decode()")
            emit(depth, f"pos = {end}")
        elif kind == "boolean":
            emit(depth, f"{target} = data[{_at(skip)}] != 0")  # fastavro: any non-zero is True
            emit(depth, f"pos += {skip + 1}")
        elif kind in ("double", "float"):
            emit(depth, f"{target} = {kind.upper()}(data, {_at(skip)})[0]")
            emit(depth, f"pos += {skip + _MIN_SIZE[kind]}")
        elif kind == "null":
            emit(depth, f"{target} = None")
            if skip:
                emit(depth, f"pos += {skip}")
        else:
            raise _Unsupported(kind)

    def _union(self, branches: list[Any], target: str, depth: int) -> None:
        count = len(branches)
        if not count:
            raise _Unsupported("empty union")
        index = self._name("i")
        # Test the non-null branches first; the last one tested is a plain ``else``.
        order = sorted(range(count), key=lambda i: self._resolve(branches[i]) == "null")
        if count <= 64 and all(isinstance(self._resolve(b), str) for b in branches):
            # Unions of primitives (the optional values): the first byte is the index as every
            # writer encodes it (2 * index); anything else, a negative index or a longer
            # varint, is normalized by UNION_INDEX and dispatched again. That copy of the
            # branches' code is why records and arrays take the table below instead.
            for position, branch in enumerate(order):
                keyword = "if" if position == 0 else "elif"
                self._emit(depth, f"{keyword} data[pos] == {2 * branch}:")
                self.value(branches[branch], target, depth + 1, skip=1)
            self._emit(depth, "else:")
            self._emit(depth + 1, f"{index}, pos = UNION_INDEX(data, pos, {count})")
            self._dispatch(branches, order, index, target, depth + 1)
            return
        table = f"U{count}"
        self.constants[table] = _union_table(count)
        self._emit(depth, f"{index} = {table}[data[pos]]")
        self._emit(depth, f"if {index} < 0:")
        self._emit(depth + 1, f"{index}, pos = UNION_INDEX(data, pos, {count})")
        self._emit(depth, "else:")
        self._emit(depth + 1, "pos += 1")
        self._dispatch(branches, order, index, target, depth)

    def _dispatch(
        self, branches: list[Any], order: list[int], index: str, target: str, depth: int
    ) -> None:
        """Code reading the branch numbered ``index`` (normalized: 0 to count - 1)."""
        if len(order) == 1:
            self.value(branches[0], target, depth)
            return
        for position, branch in enumerate(order):
            if position == 0:
                test = f"if {index}:" if order == [1, 0] else f"if {index} == {branch}:"
            elif position < len(order) - 1:
                test = f"elif {index} == {branch}:"
            else:
                test = "else:"
            self._emit(depth, test)
            self.value(branches[branch], target, depth + 1)

    def _record(self, schema: dict[str, Any], target: str, depth: int) -> None:
        name = schema["name"]
        if name in self._active:
            raise _Unsupported(f"recursive {name}")
        self._active.append(name)
        start = None
        if name == self.spans_for:
            start = self._name("start")
            self._emit(depth, f"{start} = pos")
        items = []
        for field in schema["fields"]:
            local = self._name()
            self.value(field["type"], local, depth)
            items.append((field["name"], local))
        # CPython builds a dict display of up to 15 items presized, a longer one item by item
        # (resizing as it grows): the items after the 15th are stored into the built dict.
        head = ", ".join(f"{name!r}: {local}" for name, local in items[:_DISPLAY_ITEMS])
        self._emit(depth, f"{target} = {{{head}}}")
        for name, local in items[_DISPLAY_ITEMS:]:
            self._emit(depth, f"{target}[{name!r}] = {local}")
        if start is not None:
            self._emit(depth, f"SPAN(({start}, pos))")
        self._active.pop()

    def _array(self, schema: dict[str, Any], target: str, depth: int) -> None:
        # Blocks of ``count, items...`` ending with a 0 count; a negative count is followed by
        # the block's size in bytes. Every item takes a byte at least, so a count beyond the
        # bytes left is refused before looping over it.
        if self.min_size(schema["items"]) < 1:
            raise _Unsupported("array of zero-byte items")
        count, item = self._name("c"), self._name()
        self._emit(depth, f"{target} = []")
        self._long(count, depth, unrolled=False)
        self._emit(depth, f"while {count}:")
        self._emit(depth + 1, f"if {count} < 0:")
        self._emit(depth + 2, f"{count} = -{count}")
        self._long(self._name("blocksize"), depth + 2, unrolled=False)
        self._emit(depth + 1, f"if {count} > size - pos:")
        self._emit(depth + 2, f"ARRAY_TOO_LONG({count}, size - pos)")
        self._emit(depth + 1, f"for _ in range({count}):")
        self.value(schema["items"], item, depth + 2)
        self._emit(depth + 2, f"{target}.append({item})")
        self._long(count, depth + 1, unrolled=False)


def _guarded(read: Reader, label: str) -> Reader:
    """``read`` with every failure as a SerializationError (the generated code only indexes,
    slices, decodes and unpacks, so anything it raises means bytes that do not fit)."""

    def guarded(data: bytes) -> Any:
        if type(data) is not bytes:  # bytearray, memoryview: "bytes" values must be bytes
            data = bytes(data)
        try:
            return read(data)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"cannot read {label}: {type(exc).__name__}: {exc}") from exc

    return guarded


def compile_reader(
    schema: Any, named: dict[str, Any] | None = None, *, spans_for: str | None = None
) -> Reader | None:
    """A function reading one schemaless record of parsed ``schema`` from a whole ``bytes``.

    ``named`` holds the named types ``schema`` refers to (:func:`collect_named`). With
    ``spans_for`` (a record's full name) the function returns ``(value, spans)``, the
    ``(start, end)`` offsets of every record of that type in reading order. None when the schema
    uses a construct the compiler does not handle.
    """
    compiler = _Compiler(collect_named([schema]) | (named or {}), spans_for)
    try:
        compiler.value(schema, "record", 1)
    except _Unsupported:
        return None
    prologue = ["    size = len(data)", "    pos = 0", "    text = data.decode('latin-1')"]
    result = "record"
    if spans_for is not None:
        prologue += ["    spans = []", "    SPAN = spans.append"]
        result = "record, spans"
    epilogue = ["    if pos != size:", "        END(pos, size)", f"    return {result}"]
    namespace: dict[str, Any] = {
        "ZZ": _ZIGZAG,
        "M64": _MASK64,
        "DOUBLE": struct.Struct("<d").unpack_from,
        "FLOAT": struct.Struct("<f").unpack_from,
        "TOO_LONG": _too_long,
        "LN": _LENGTHS,
        "VARINT": _varint,
        "LENGTH": _length,
        "range": range,
        "ARRAY_TOO_LONG": _array_too_long,
        "UNION_INDEX": _union_index,
        "END": _end,
        **compiler.constants,
    }
    # Constants and helpers as default arguments: locals, faster to load than globals.
    signature = ", ".join(["data", *(f"{name}={name}" for name in namespace)])
    body = "\n".join(prologue + compiler.lines + epilogue)
    source = f"def read({signature}):\n{body}\n"
    label = schema.get("name", "record") if isinstance(schema, dict) else str(schema)
    # The source is generated from our own schema files, never from input.
    exec(compile(source, f"<avro_reader:{label}>", "exec"), namespace)  # noqa: S102
    return _guarded(namespace["read"], label)


_NAMED = collect_named(SCHEMAS.values())
_READ_BATCH = compile_reader(SCHEMAS[BATCH_SCHEMA_NAME], _NAMED)
_READ_BATCH_SPANS = compile_reader(SCHEMAS[BATCH_SCHEMA_NAME], _NAMED, spans_for=EVENT_SCHEMA_NAME)
_READ_RESOLVED = compile_reader(SCHEMAS[RESOLVED_SCHEMA_NAME], _NAMED)

#: False when a schema uses a construct the compiler does not handle (fastavro is used then).
COMPILED = None not in (_READ_BATCH, _READ_BATCH_SPANS, _READ_RESOLVED)


def _framable(resolved: Any, named: dict[str, Any]) -> bool:
    """Whether ``ResolvedBatch`` starts with ``events: [{customer_id: string, event: Event}]``,
    the layout :func:`frame_resolved` writes by hand."""
    fields = resolved.get("fields", [])
    if not fields or fields[0]["name"] != "events" or "default" not in fields[0]:
        return False
    array = fields[0]["type"]
    if not isinstance(array, dict) or array.get("type") != "array":
        return False
    item = array["items"]
    item = named.get(item, item) if isinstance(item, str) else item
    if not isinstance(item, dict) or item.get("type") != "record":
        return False
    layout = [(f["name"], f["type"]) for f in item["fields"]]
    return layout == [("customer_id", "string"), ("event", EVENT_SCHEMA_NAME)]


#: False when resolved_batch.avsc no longer has the layout frame_resolved writes (it then
#: decodes the events and encodes the whole batch with fastavro).
FRAMABLE = _framable(SCHEMAS[RESOLVED_SCHEMA_NAME], _NAMED)


def decode_batch_fast(data: bytes) -> list[dict[str, Any]]:
    """The events of one ``EventBatch`` message: :func:`pipeline.avro.decode_batch`, faster."""
    if not COMPILED or _READ_BATCH is None:
        return decode_batch(data)
    return cast(list[dict[str, Any]], _READ_BATCH(data)["events"])


def decode_batch_spans(data: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The events of one ``EventBatch`` and where each is encoded: ``data[start:end]`` is the
    event's own Avro record, reusable by :func:`frame_resolved` without encoding it again."""
    if not COMPILED or _READ_BATCH_SPANS is None:
        return _spans_by_reencoding(data)
    batch, spans = _READ_BATCH_SPANS(data)
    return batch["events"], spans


def _spans_by_reencoding(data: bytes) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The fallback: fastavro decodes, then encodes each event again to learn its length. That
    locates the events only in a batch written as fastavro writes it (one array block, shortest
    varints), which every writer of this project does; another layout is refused."""
    events = decode_batch(data)
    encoded = [encode_event(event) for event in events]
    head = encode_long(len(encoded)) if encoded else b""
    if data != b"".join((head, *encoded, b"\x00")):
        raise SerializationError("batch not in canonical Avro encoding: cannot locate events")
    spans = []
    pos = len(head)
    for record in encoded:
        spans.append((pos, pos + len(record)))
        pos += len(record)
    return events, spans


def decode_resolved_fast(data: bytes) -> dict[str, Any]:
    """One ``ResolvedBatch``: :func:`pipeline.avro.decode_resolved`, faster."""
    if not COMPILED or _READ_RESOLVED is None:
        return decode_resolved(data)
    return cast(dict[str, Any], _READ_RESOLVED(data))


_NO_MERGES_NOR_FOLDS = encode_resolved({"events": [], "merges": [], "folds": []})[1:]


def frame_resolved(
    events: Sequence[tuple[str, bytes]],
    merges: Sequence[dict[str, Any]],
    folds: Sequence[dict[str, Any]],
) -> bytes:
    """A ``ResolvedBatch`` from ``(customer_id, encoded Event)`` pairs, merges and folds.

    The bytes are those of :func:`pipeline.avro.encode_resolved` with the events decoded; the
    encoded events are copied as they are (from :func:`decode_batch_spans` or
    :func:`pipeline.collector.avro_writer.encode_event_fast`), not checked. Merges and folds are
    rare and go through fastavro (an empty ``events`` array is the single byte 0, so the rest of
    the message is what fastavro writes after it).
    """
    if not FRAMABLE:
        return encode_resolved(
            {
                "events": [{"customer_id": c, "event": decode_event(e)} for c, e in events],
                "merges": list(merges),
                "folds": list(folds),
            }
        )
    tail = (
        encode_resolved({"events": [], "merges": list(merges), "folds": list(folds)})[1:]
        if merges or folds
        else _NO_MERGES_NOR_FOLDS
    )
    if not events:
        return b"\x00" + tail
    parts = [encode_long(len(events))]
    out = parts.append
    try:
        for customer_id, event in events:
            encoded = customer_id.encode()
            length = len(encoded)
            out(SMALL_LONGS[length] if length < SMALL_LONGS_LIMIT else encode_long(length))
            out(encoded)
            out(event)
        out(b"\x00")
        out(tail)
        return b"".join(parts)
    except (AttributeError, TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise SerializationError(
            f"cannot frame resolved batch: {type(exc).__name__}: {exc}"
        ) from exc


def _benchmark(batches: int = 100, batch_size: int = 100, rounds: int = 7) -> None:
    """Events/s of fastavro and of the compiled reader, interleaved in the same run.

    Timed in CPU time of this thread (``time.thread_time``), best of ``rounds``: on the shared
    2-core box, wall-clock time mostly measures the other processes.
    """
    import time

    from pipeline.avro import benchmark_event, encode_batch

    event = benchmark_event()
    events = [event] * batch_size
    data = encode_batch(events)
    resolved = encode_resolved(
        {"events": [{"customer_id": "c-1", "event": e} for e in events], "merges": [], "folds": []}
    )
    assert decode_batch_fast(data) == decode_batch(data)
    assert decode_resolved_fast(resolved) == decode_resolved(resolved)

    def fastavro_forward(data: bytes) -> bytes:
        decoded = decode_batch(data)
        return encode_resolved(
            {
                "events": [{"customer_id": "c-1", "event": e} for e in decoded],
                "merges": [],
                "folds": [],
            }
        )

    def compiled_forward(data: bytes) -> bytes:
        _events, spans = decode_batch_spans(data)
        return frame_resolved([("c-1", data[s:e]) for s, e in spans], [], [])

    assert compiled_forward(data) == fastavro_forward(data) == resolved
    cases: list[tuple[str, Callable[[bytes], Any], Callable[[bytes], Any], bytes]] = [
        ("decode_batch", decode_batch, decode_batch_fast, data),
        ("decode_resolved", decode_resolved, decode_resolved_fast, resolved),
        ("spans+frame", fastavro_forward, compiled_forward, data),
    ]
    print(f"{len(data) / batch_size:.0f} bytes/event, batches of {batch_size}, COMPILED={COMPILED}")
    total = batches * batch_size
    for label, slow, fast, message in cases:
        best = {"fastavro": 0.0, "compiled": 0.0}
        for _ in range(rounds):  # interleaved: both see the same load on a shared box
            for name, function in (("fastavro", slow), ("compiled", fast)):
                started = time.thread_time()
                for _ in range(batches):
                    function(message)
                best[name] = max(best[name], total / (time.thread_time() - started))
        print(
            f"{label:16} fastavro {best['fastavro']:>10,.0f} events/s   "
            f"compiled {best['compiled']:>10,.0f} events/s   "
            f"x{best['compiled'] / best['fastavro']:.1f}"
        )


if __name__ == "__main__":
    _benchmark()
