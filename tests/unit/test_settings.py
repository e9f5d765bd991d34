from __future__ import annotations

import pytest

from pipeline.settings import Settings, load_settings


def test_defaults_are_the_documented_local_ones() -> None:
    s = Settings()
    assert (s.collector_host, s.collector_port) == ("127.0.0.1", 8080)
    assert (s.api_host, s.api_port) == ("127.0.0.1", 8081)
    assert s.write_key_sources == {"local-write-key": "local"}
    assert s.api_token.get_secret_value() == "local-api-token"
    assert s.embedded_clickhouse
    assert s.effective_clickhouse_dsn.startswith("chdb://")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDP_COLLECTOR_PORT", "9999")
    monkeypatch.setenv("CDP_WRITE_KEYS", "k1:web, k2:app")
    monkeypatch.setenv("CDP_CLICKHOUSE_DSN", "http://u:p@ch:8123/cdp")
    s = load_settings()
    assert s.collector_port == 9999
    assert s.write_key_sources == {"k1": "web", "k2": "app"}
    assert not s.embedded_clickhouse


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.collector_port = 1  # type: ignore[misc]


def test_secrets_do_not_print() -> None:
    s = Settings(api_token="very-secret")  # type: ignore[arg-type]
    assert "very-secret" not in repr(s)


def test_production_refuses_local_secrets() -> None:
    with pytest.raises(ValueError, match="CDP_WRITE_KEYS"):
        Settings(env="production").check_production()
    Settings(env="production", write_keys="k:web", api_token="t").check_production()  # type: ignore[arg-type]


def test_rocksdb_memory_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.rocksdb_block_cache_mb, s.rocksdb_write_buffers_mb) == (64, 64)
    assert (s.rocksdb_write_buffer_mb, s.rocksdb_max_write_buffers) == (8, 2)
    assert s.rocksdb_max_open_files == 256
    monkeypatch.setenv("CDP_ROCKSDB_BLOCK_CACHE_MB", "16")
    monkeypatch.setenv("CDP_ROCKSDB_MAX_OPEN_FILES", "-1")
    s = load_settings()
    assert (s.rocksdb_block_cache_mb, s.rocksdb_max_open_files) == (16, -1)
    with pytest.raises(ValueError):
        Settings(rocksdb_max_write_buffers=1)  # type: ignore[arg-type]
    assert Settings(rocksdb_write_buffer_mb=2).child_env({})["CDP_ROCKSDB_WRITE_BUFFER_MB"] == "2"  # type: ignore[arg-type]


def test_worker_roles_default_to_all_and_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().roles == {"identity", "profile", "sink", "api"}
    monkeypatch.setenv("CDP_WORKER_ROLES", " api , identity,api")
    s = load_settings()
    assert s.roles == {"identity", "api"}
    assert s.worker_roles == "identity,api"  # canonical order: what a child process gets
    for bad, message in (("identity,graph", "unknown worker role"), (" , ", "no worker role")):
        with pytest.raises(ValueError, match=message):
            Settings(worker_roles=bad)


def test_kafka_compression_as_the_clients_take_it() -> None:
    assert Settings().producer_compression == "zstd"
    assert Settings(kafka_compression="none").producer_compression is None
    with pytest.raises(ValueError, match="kafka_compression"):
        Settings(kafka_compression="brotli")  # type: ignore[arg-type]
