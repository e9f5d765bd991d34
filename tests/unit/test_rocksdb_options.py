"""The worker's RocksDB stores share one bounded block cache and memtable budget."""

from __future__ import annotations

from pathlib import Path

from faust.stores import memory as faust_memory

from pipeline.settings import Settings
from pipeline.worker.app import create_faust_app
from pipeline.worker.rocksdb_options import (
    MB,
    BoundedRocksDBOptions,
    BoundedRocksDBStore,
    BoundedTable,
    RocksDBMemory,
)


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, worker_id="cdp-test-rocksdb", **overrides)  # type: ignore[arg-type]


def test_budget_comes_from_the_settings(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        rocksdb_block_cache_mb=3,
        rocksdb_write_buffers_mb=5,
        rocksdb_write_buffer_mb=1,
        rocksdb_max_write_buffers=4,
        rocksdb_max_open_files=50,
    )
    memory = RocksDBMemory.from_settings(settings)
    assert memory.block_cache_bytes == 3 * MB
    assert memory.write_buffers_bytes == 5 * MB
    assert memory.write_buffer_bytes == 1 * MB
    assert memory.max_write_buffers == 4
    assert memory.max_open_files == 50
    assert memory.usage() == {"block_cache": 0, "write_buffers": 0}  # nothing opened yet


def test_the_app_tables_use_the_bounded_store(tmp_path: Path) -> None:
    app = create_faust_app(_settings(tmp_path, faust_store="rocksdb://"))
    table = app.Table("t-bounded", partitions=2, key_type=str, value_type=bytes)
    assert isinstance(table, BoundedTable)
    store = table.data
    assert isinstance(store, BoundedRocksDBStore)
    assert isinstance(store.rocksdb_options, BoundedRocksDBOptions)
    assert store.rocksdb_options.memory is app.rocksdb_memory  # type: ignore[attr-defined]
    assert store.rocksdb_options.write_buffer_size == 8 * MB  # the settings' default


def test_the_memory_store_is_unchanged(tmp_path: Path) -> None:
    app = create_faust_app(_settings(tmp_path, faust_store="memory://"))
    table = app.Table("t-memory", partitions=1, key_type=str)
    assert isinstance(table.data, faust_memory.Store)


def test_databases_share_the_cache_and_the_write_buffer_budget(tmp_path: Path) -> None:
    memory = RocksDBMemory(
        block_cache_bytes=8 * MB,
        write_buffers_bytes=4 * MB,
        write_buffer_bytes=1 * MB,
        max_write_buffers=2,
        max_open_files=64,
    )
    options = BoundedRocksDBOptions(memory, use_rocksdict=True)
    dbs = [options.open(tmp_path / f"p{i}.db") for i in range(3)]
    try:
        for n, db in enumerate(dbs):
            for i in range(2_000):
                db[f"key-{n}-{i}".encode()] = b"v" * 100
        # One write buffer manager counts the memtables of all three databases.
        assert memory.usage()["write_buffers"] >= 3 * 2_000 * 100
        for db in dbs:
            db.flush()
        for n, db in enumerate(dbs):
            assert db[f"key-{n}-7".encode()] == b"v" * 100
        # Reads after the flush go through the one shared block cache, which stays bounded.
        usage = memory.usage()
        assert 0 < usage["block_cache"] <= memory.block_cache_bytes
    finally:
        for db in dbs:
            db.close()


def test_reopening_keeps_the_data(tmp_path: Path) -> None:
    memory = RocksDBMemory(MB, MB, MB, 2, -1)
    options = BoundedRocksDBOptions(memory, use_rocksdict=True)
    db = options.open(tmp_path / "p.db")
    db[b"k"] = b"v"
    db.close()
    db = options.open(tmp_path / "p.db")
    try:
        assert db[b"k"] == b"v"
    finally:
        db.close()
