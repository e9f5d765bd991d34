"""A read cache and a per-message write buffer in front of a faust table.

Why: a faust ``Table`` read goes through the sensor hooks, the serializer registry for the key,
the store (a RocksDB ``get`` per assigned partition) and the value codec. That is 20-90 µs per
read on this box, against ~4 µs for the whole identity decision on a dict; a write is a
changelog record through faust's producer buffer (~100-250 µs). The identity engine reads ~2.5
keys per event and writes the same customer record several times in one message.

:class:`BufferedTable` is the Mapping the pure stages see:

* reads hit a bounded in-memory cache first (two generations: when the young one is full, it
  becomes the old one and the old one is dropped, an LRU approximation that costs one dict
  operation per read), including *negative* entries for keys the table does not hold, because
  unknown identifiers (new cookies) are the most common miss;
* writes go to a buffer; :meth:`flush` writes each dirty key to the table once (one changelog
  record per key per message, not per write), then moves it into the cache;
* :meth:`discard` drops the buffer and the cache after a failed message, so the failed message
  leaves no half-applied state behind (cached values may have been mutated in place).

The cache is only correct while this process is the only writer of the table's keys, which holds
for a faust table: each partition is written by the one agent it is assigned to. On a rebalance
the assignment may change and the table may be rebuilt from its changelog, so the processor
calls :meth:`invalidate` then.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any, Final, Generic, TypeVar

V = TypeVar("V")

_ABSENT: Final[Any] = object()
"""Cached "the table has no such key", and the buffered form of a deletion."""
_MISS: Final[Any] = object()


class RecentCache(Generic[V]):
    """A bounded cache keeping roughly the most recently used entries, at dict speed.

    Two generations: when the young one holds ``generation_size`` entries it becomes the old one
    and the previous old one is dropped; a hit in the old generation moves the entry back to the
    young one. At most ``2 * generation_size`` entries are held.
    """

    __slots__ = ("_generation_size", "_old", "_young")

    def __init__(self, generation_size: int) -> None:
        if generation_size < 1:
            raise ValueError("generation_size must be at least 1")
        self._generation_size = generation_size
        self._young: dict[str, V] = {}
        self._old: dict[str, V] = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def lookup(self, key: str, default: Any) -> Any:
        """The cached value, or ``default`` when ``key`` is not cached."""
        young = self._young
        if key in young:
            return young[key]
        old = self._old
        if key in old:
            value = old.pop(key)
            self.put(key, value)
            return value
        return default

    def put(self, key: str, value: V) -> None:
        young = self._young
        if key not in young and len(young) >= self._generation_size:
            self._old = young
            young = self._young = {}
        self._old.pop(key, None)
        young[key] = value

    def clear(self) -> None:
        self._young = {}
        self._old = {}


class BufferedTable(MutableMapping[str, V], Generic[V]):
    """See the module docstring. ``table`` is any MutableMapping (a faust Table, or a dict)."""

    __slots__ = ("_cache", "_dirty", "_table")

    def __init__(self, table: MutableMapping[str, V], generation_size: int = 100_000) -> None:
        self._table = table
        self._cache: RecentCache[Any] = RecentCache(generation_size)
        self._dirty: dict[str, Any] = {}

    # ------------------------------------------------------------------ reads

    def _lookup(self, key: str) -> Any:
        dirty = self._dirty
        if key in dirty:
            return dirty[key]
        value = self._cache.lookup(key, _MISS)
        if value is _MISS:
            # A true miss: read the table once and remember the answer, absent included.
            value = self._table.get(key, _ABSENT)
            self._cache.put(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._lookup(key)
        return default if value is _ABSENT else value

    def __getitem__(self, key: str) -> V:
        value = self._lookup(key)
        if value is _ABSENT:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._lookup(key) is not _ABSENT

    # ------------------------------------------------------------------ writes

    def __setitem__(self, key: str, value: V) -> None:
        self._dirty[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._dirty[key] = _ABSENT

    @property
    def pending(self) -> int:
        """Keys written since the last flush."""
        return len(self._dirty)

    def flush(self) -> int:
        """Write every dirty key to the table once; returns how many were written."""
        dirty, self._dirty = self._dirty, {}
        table = self._table
        for key, value in dirty.items():
            if value is _ABSENT:
                table.pop(key, None)
            else:
                table[key] = value
            self._cache.put(key, value)
        return len(dirty)

    def discard(self) -> None:
        """Forget the unflushed writes and the cache (after a message failed half-way)."""
        self._dirty.clear()
        self.invalidate()

    def invalidate(self) -> None:
        """Drop the cache: the next reads go to the table (after a rebalance)."""
        self._cache.clear()

    # ------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[str]:
        # Rarely used (tools, tests): the table's view, which is complete after a flush.
        if self._dirty:
            raise RuntimeError("iterate a BufferedTable only after flush()")
        return iter(self._table)

    def __len__(self) -> int:
        if self._dirty:
            raise RuntimeError("len() of a BufferedTable only after flush()")
        return len(self._table)
