"""Bounded RocksDB memory for the worker's faust tables (issue #4: memory per identifier).

faust opens one RocksDB database per table *partition* (the identity stage's two tables have
one partition each, the profile table ``CDP_TOPIC_PARTITIONS``), and gives each its own
options: a 64 MB write buffer with up to 3 memtables and its own 2 GB block cache. Those are
budgets per database, so they multiply with the partitions, and the index and filter blocks of
every SST file are held outside any cache (growing with the data).

Here every database of one worker shares:

* one LRU **block cache** (``CDP_ROCKSDB_BLOCK_CACHE_MB``) that also holds the index and bloom
  filter blocks (``cache_index_and_filter_blocks``; level-0 ones pinned), so the memory for
  reads is bounded whatever the size of the data;
* one **write buffer manager** (``CDP_ROCKSDB_WRITE_BUFFERS_MB``): when the memtables of all
  databases together exceed it, RocksDB flushes the largest; each memtable is also flushed at
  ``CDP_ROCKSDB_WRITE_BUFFER_MB``, with at most ``CDP_ROCKSDB_MAX_WRITE_BUFFERS`` per database.

``CDP_ROCKSDB_MAX_OPEN_FILES`` bounds the SST files each database keeps open (faust's default is
90 % of the process's file limit, per database).

The options reach faust through the app's ``Table`` class (a documented faust setting):
:func:`bounded_table_class` returns a :class:`faust.Table` whose RocksDB store uses these
options; the ``memory://`` store and every other table behaviour are faust's own. Only the
rocksdict driver (what faust uses when it is installed, as here) can share a cache and a write
buffer manager; with python-rocksdb the same sizes apply per database.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import faust
from faust.stores import rocksdb as faust_rocksdb
from yarl import URL

if TYPE_CHECKING:
    from pipeline.settings import Settings

MB = 1024 * 1024
#: Bits per key of the bloom filters (faust: 3, ~25 % false positives; 10: ~1 %). The filters
#: live in the bounded block cache; an identity lookup of a new identifier is a filter miss.
BLOOM_BITS_PER_KEY = 10


@dataclass
class RocksDBMemory:
    """The memory budget of one worker's RocksDB databases, and the objects they share."""

    block_cache_bytes: int
    write_buffers_bytes: int
    write_buffer_bytes: int
    max_write_buffers: int
    max_open_files: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RocksDBMemory:
        return cls(
            block_cache_bytes=settings.rocksdb_block_cache_mb * MB,
            write_buffers_bytes=settings.rocksdb_write_buffers_mb * MB,
            write_buffer_bytes=settings.rocksdb_write_buffer_mb * MB,
            max_write_buffers=settings.rocksdb_max_write_buffers,
            max_open_files=settings.rocksdb_max_open_files,
        )

    @cached_property
    def cache(self) -> Any:
        """The block cache every database of the worker shares (rocksdict ``Cache``)."""
        import rocksdict

        return rocksdict.Cache(self.block_cache_bytes)

    @cached_property
    def write_buffer_manager(self) -> Any:
        """Bounds the memtables of all databases together (flushes; never stalls writes)."""
        import rocksdict

        return rocksdict.WriteBufferManager(self.write_buffers_bytes, False)

    def rocksdict_options(self) -> Any:
        """rocksdict ``Options`` of one database (raw bytes, as faust's store expects)."""
        import rocksdict

        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(self.max_open_files)
        options.set_write_buffer_size(self.write_buffer_bytes)
        options.set_max_write_buffer_number(self.max_write_buffers)
        options.set_target_file_size_base(faust_rocksdb.DEFAULT_TARGET_FILE_SIZE_BASE)
        options.set_write_buffer_manager(self.write_buffer_manager)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(self.cache)
        table.set_bloom_filter(BLOOM_BITS_PER_KEY, True)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options

    def usage(self) -> dict[str, int]:
        """Bytes in the shared block cache and memtables now (0 before any database opened)."""
        if "cache" not in self.__dict__:
            return {"block_cache": 0, "write_buffers": 0}
        return {
            "block_cache": int(self.cache.get_usage()),
            "write_buffers": int(self.write_buffer_manager.get_usage()),
        }


class BoundedRocksDBOptions(faust_rocksdb.RocksDBOptions):
    """faust's RocksDB options, opened with the worker's shared budget (:class:`RocksDBMemory`)."""

    def __init__(self, memory: RocksDBMemory, **kwargs: Any) -> None:
        super().__init__(
            max_open_files=memory.max_open_files,
            write_buffer_size=memory.write_buffer_bytes,
            max_write_buffer_number=memory.max_write_buffers,
            block_cache_size=memory.block_cache_bytes,  # python-rocksdb: per database
            block_cache_compressed_size=0,
            bloom_filter_size=BLOOM_BITS_PER_KEY,
            **kwargs,
        )
        self.memory = memory

    def open(self, path: Path, *, read_only: bool = False) -> Any:
        if not self.use_rocksdict:
            return super().open(path, read_only=read_only)
        import rocksdict

        access = (
            rocksdict.AccessType.read_write()
            if self.ttl is None
            else rocksdict.AccessType.with_ttl(self.ttl)
        )
        db = rocksdict.Rdict(str(path), options=self.as_options(), access_type=access)
        db.set_read_options(rocksdict.ReadOptions())
        return db

    def as_options(self) -> Any:
        if not self.use_rocksdict:
            return super().as_options()
        return self.memory.rocksdict_options()


class BoundedRocksDBStore(faust_rocksdb.Store):
    """faust's RocksDB table store with :class:`BoundedRocksDBOptions`."""

    def __init__(
        self, url: str | URL, app: Any, table: Any, *, memory: RocksDBMemory, **kwargs: Any
    ) -> None:
        super().__init__(url, app, table, **kwargs)
        # faust built RocksDBOptions(**options) from the table's options (after taking out
        # read_only and driver); the same extra options go to ours.
        self.rocksdb_options = BoundedRocksDBOptions(
            memory, use_rocksdict=self.use_rocksdict, **dict(self.options or {})
        )


class BoundedTable(faust.Table[Any, Any]):
    """A faust Table whose ``rocksdb://`` store shares :attr:`rocksdb_memory` (set per app)."""

    rocksdb_memory: ClassVar[RocksDBMemory]

    def _new_store_by_url(self, url: str | URL) -> Any:
        if URL(str(url)).scheme != "rocksdb":
            return super()._new_store_by_url(url)
        return BoundedRocksDBStore(
            url,
            self.app,
            self,
            memory=self.rocksdb_memory,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )


def bounded_table_class(memory: RocksDBMemory) -> type[BoundedTable]:
    """A :class:`BoundedTable` subclass bound to one worker's budget (faust's ``Table`` setting)."""
    return type("BoundedTable", (BoundedTable,), {"rocksdb_memory": memory})
