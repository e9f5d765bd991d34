"""A compiled Avro writer for ``cdp.v1.Event``: the collector's encoding hot path.

fastavro's ``schemaless_writer`` interprets the schema for every record; for the ~40 values of a
typical enriched event that costs ~40-60 µs on the dev box, as much as enrichment itself. This
module turns the parsed ``Event`` schema into straight-line Python once, at import (the same idea
as fastavro's own code generation in other languages' Avro libraries): for a typical event it
writes the *same bytes* in about a third of the time. Byte equality with
:func:`pipeline.avro.encode_batch` is tested on generated events, and a schema using a type this
compiler does not handle makes :data:`COMPILED` false and every call go through fastavro, so a
schema change can slow the collector down but never make it write something else.

Because each event is encoded on its own, the batcher can build an ``EventBatch`` by framing
already-encoded events (:func:`frame_batch`): Avro encodes an array as ``count, items..., 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pipeline.avro import EVENT_SCHEMA, SerializationError, encode_event

# encode_long's memo of large values, read inline by the generated code (see _primitive).
from pipeline.avro_codec import _LARGE as _LARGE_LONGS
from pipeline.avro_codec import SMALL_LONGS as _SMALL
from pipeline.avro_codec import SMALL_LONGS_LIMIT as _SMALL_LIMIT
from pipeline.avro_codec import encode_long

_BOOLEAN = {True: b"\x01", False: b"\x00"}

# Fields whose values repeat across a site's traffic (event names, sources, pages, referrers,
# user agents, enrichment labels): their encoded bytes are memoized by value, which turns the
# encode / length / prefix steps into one dict lookup. Ids, properties and traits are mostly
# unique and are encoded every time. Dotted paths; ``[]`` is an array's items.
REPEATED_STRINGS = frozenset(
    {
        "type",
        "event",
        "source",
        "identifiers[].type",
        "consent[]",
        *(
            f"context.{name}"
            for name in (
                "ip",
                "user_agent",
                "page_url",
                "page_path",
                "page_title",
                "referrer",
                "locale",
                "library",
                "utm_source",
                "utm_medium",
                "utm_campaign",
                "utm_term",
                "utm_content",
            )
        ),
        *(f"enrichment.{name}" for name in ("device_type", "os", "browser", "channel")),
    }
)
_MEMO_LIMIT = 8192  # entries per memo; a full memo is cleared
_MEMO_MAX_BYTES = 1024  # longer values are encoded each time: the memo stays under ~10 MB


def _memo(prefix: bytes) -> tuple[dict[str, bytes], Callable[[str], bytes]]:
    """A memo of ``prefix + encoded string`` by string, and the function that fills it."""
    memo: dict[str, bytes] = {}

    def encode(value: str) -> bytes:
        data = value.encode()  # AttributeError for a non-string: the caller's SerializationError
        size = len(data)
        encoded = prefix + (_SMALL[size] if size < _SMALL_LIMIT else encode_long(size)) + data
        if size <= _MEMO_MAX_BYTES:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[value] = encoded
        return encoded

    return memo, encode


class _Unsupported(Exception):
    """The schema uses a type the compiler does not generate code for."""


class _Compiler:
    """Emits the body of ``write(record, out)`` where ``out`` is ``list.append`` of bytes."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {}
        self.named: dict[str, Any] = {}
        self.memos: dict[bytes, tuple[str, str]] = {}
        self._counter = 0

    def _name(self, prefix: str = "v") -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def _emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def _memos(self, prefix: bytes) -> tuple[str, str]:
        """Names of the memo of strings encoded after ``prefix`` and of its filler (shared)."""
        if prefix not in self.memos:
            memo, encode = _memo(prefix)
            self.memos[prefix] = (self._constant(memo), self._constant(encode))
        return self.memos[prefix]

    def _constant(self, value: Any) -> str:
        name = self._name("C")
        self.constants[name] = value
        return name

    def value(self, schema: Any, expr: str, depth: int, path: str = "") -> None:
        if isinstance(schema, list):
            self._union(schema, expr, depth, path)
            return
        if isinstance(schema, str):
            if schema in self.named:
                schema = self.named[schema]
            else:
                self._primitive(schema, expr, depth, path)
                return
        kind = schema["type"]
        if kind == "record":
            self._record(schema, expr, depth, path)
        elif kind == "array":
            items = self._name()
            item = self._name()
            self._emit(depth, f"{items} = {expr}")
            self._emit(depth, f"if {items}:")
            self._emit(depth + 1, f"out(L(len({items})))")
            self._emit(depth + 1, f"for {item} in {items}:")
            self.value(schema["items"], item, depth + 2, f"{path}[]")
            self._emit(depth, "out(b'\\x00')")
        elif isinstance(kind, str) and "name" not in schema:
            self._primitive(kind, expr, depth, path)  # {"type": "string"} and the like
        else:
            raise _Unsupported(str(kind))

    def _primitive(self, kind: str, expr: str, depth: int, path: str = "") -> None:
        # The small-value table is indexed inline: a function call per value would cost more
        # than the lookup itself.
        if kind == "string" and path in REPEATED_STRINGS:
            # Encoded bytes are never empty (the length comes first), so ``or`` is safe.
            text = self._name()
            self._emit(depth, f"{text} = {expr}")
            memo, encode = self._memos(b"")
            self._emit(depth, f"out({memo}.get({text}) or {encode}({text}))")
        elif kind == "string":
            data, size = self._name(), self._name()
            self._emit(depth, f"{data} = {expr}.encode()")
            self._emit(depth, f"{size} = len({data})")
            self._emit(depth, f"out(S[{size}] if {size} < N else L({size}))")
            self._emit(depth, f"out({data})")
        elif kind in ("long", "int"):
            # Large values (timestamps) look in encode_long's memo inline, ints only (a float
            # equal to a memoized int must still be refused by encode_long).
            number = self._name()
            self._emit(depth, f"{number} = {expr}")
            self._emit(
                depth,
                f"out(S[{number}] if 0 <= {number} < N "
                f"else (type({number}) is int and LM.get({number})) or L({number}))",
            )
        elif kind == "boolean":
            self._emit(depth, f"out(B[{expr}])")
        elif kind == "null":
            self._emit(depth, f"if {expr} is not None:")
            self._emit(depth + 1, "raise TypeError('null field holds a value')")
        else:
            raise _Unsupported(kind)

    def _union(self, branches: list[Any], expr: str, depth: int, path: str = "") -> None:
        # Only the optional-value union (null + one type) is needed by the contract.
        if len(branches) != 2 or "null" not in branches:
            raise _Unsupported(f"union {branches}")
        null_index = branches.index("null")
        other = branches[1 - null_index]
        value = self._name()
        self._emit(depth, f"{value} = {expr}")
        self._emit(depth, f"if {value} is None:")
        self._emit(depth + 1, f"out({encode_long(null_index)!r})")
        self._emit(depth, "else:")
        if other == "string" and path in REPEATED_STRINGS:
            # The branch index is part of the memoized bytes: one lookup for the whole value.
            memo, encode = self._memos(encode_long(1 - null_index))
            self._emit(depth + 1, f"out({memo}.get({value}) or {encode}({value}))")
            return
        self._emit(depth + 1, f"out({encode_long(1 - null_index)!r})")
        self.value(other, value, depth + 1, path)

    def _record(self, schema: dict[str, Any], expr: str, depth: int, path: str = "") -> None:
        if schema["name"] in self.named and self.named[schema["name"]] is not schema:
            raise _Unsupported(f"redefined {schema['name']}")
        self.named[schema["name"]] = schema
        record = self._name()
        self._emit(depth, f"{record} = {expr}")
        for field in schema["fields"]:
            field_path = f"{path}.{field['name']}" if path else field["name"]
            name = field["name"]
            if "default" in field:
                # As fastavro: a missing field takes its default.
                access = f"{record}.get({name!r}, {self._constant(field['default'])})"
            elif isinstance(field["type"], list) and "null" in field["type"]:
                access = f"{record}.get({name!r})"
            else:
                access = f"{record}[{name!r}]"
            self.value(field["type"], access, depth, field_path)


def _compile(schema: Any) -> Callable[[dict[str, Any], Callable[[bytes], None]], None] | None:
    compiler = _Compiler()
    try:
        compiler.value(schema, "record", 1)
    except _Unsupported:
        return None
    source = "def write(record, out):\n" + "\n".join(compiler.lines) + "\n"
    namespace: dict[str, Any] = {
        "L": encode_long,
        "LM": _LARGE_LONGS,
        "S": _SMALL,
        "N": _SMALL_LIMIT,
        "B": _BOOLEAN,
        **compiler.constants,
    }
    # The source is generated from our own schema file, never from input.
    exec(compile(source, "<avro_writer:Event>", "exec"), namespace)  # noqa: S102
    return namespace["write"]  # type: ignore[no-any-return]


_WRITE_EVENT = _compile(EVENT_SCHEMA)
#: False when the Event schema uses a type the compiler does not handle (fastavro is used then).
COMPILED = _WRITE_EVENT is not None


def encode_event_fast(event: dict[str, Any]) -> bytes:
    """One ``Event`` as schemaless Avro, the same bytes as :func:`pipeline.avro.encode_event`."""
    if _WRITE_EVENT is None:
        return encode_event(event)
    parts: list[bytes] = []
    try:
        _WRITE_EVENT(event, parts.append)
    except Exception as exc:
        # Same contract as pipeline.avro: whatever broke, the record does not fit the schema.
        raise SerializationError(f"{type(exc).__name__}: {exc}") from exc
    return b"".join(parts)


def frame_batch(encoded_events: Sequence[bytes]) -> bytes:
    """An ``EventBatch`` from events encoded by :func:`encode_event_fast` (one array block)."""
    if not encoded_events:
        return b"\x00"
    return b"".join((encode_long(len(encoded_events)), *encoded_events, b"\x00"))
