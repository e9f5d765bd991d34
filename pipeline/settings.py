"""One frozen settings object, read from ``CDP_*`` environment variables.

Every process (collector, worker, CLI, tests) builds its configuration here and nowhere else, so
the README's settings table, ``docker-compose.yml`` and the code cannot drift apart: a test checks
that every ``CDP_*`` name the compose file sets is a field of :class:`Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.identity.config import IdentityConfig

#: The repository root (settings default paths are relative to it in a source checkout).
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Topic names are part of the interface between stages, documented in the README.
TOPIC_RAW = "cdp.events.raw"
TOPIC_INVALID = "cdp.events.invalid"
TOPIC_RESOLVED = "cdp.events.resolved"
TOPIC_IDENTITY_CHANGES = "cdp.identity.changes"
TOPIC_PROFILE_CHANGES = "cdp.profiles.changes"

#: What a worker process can run (``CDP_WORKER_ROLES``): the two stream stages (faust agents and
#: their tables), the ClickHouse sink, and the profile API.
WORKER_ROLES = ("identity", "profile", "sink", "api")
#: The roles that are faust agents; a process without them runs no faust app.
STREAM_ROLES = frozenset({"identity", "profile"})


class Settings(BaseSettings):
    """All runtime settings. Field ``foo_bar`` is read from ``CDP_FOO_BAR``."""

    model_config = SettingsConfigDict(env_prefix="CDP_", frozen=True, extra="ignore")

    env: Literal["local", "production"] = Field(
        "local", description="`production` refuses the local default secrets."
    )
    data_dir: Path = Field(
        PROJECT_ROOT / ".run", description="Local state: Kafka data, chDB files, logs, pid files."
    )

    # Kafka
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_heap: str = Field("512m", description="Max heap of the local Kafka JVM.")
    kafka_compression: Literal["none", "zstd", "lz4", "gzip"] = Field(
        "zstd",
        description="Compression of the record batches the collector and the worker produce "
        "(see README, compressed record batches).",
    )
    kafka_libs_dir: Path = Field(
        PROJECT_ROOT / ".cache" / "kafka" / "libs",
        description="Where `make setup` copies the Kafka jars from Maven Central.",
    )
    faust_store: Literal["memory://", "rocksdb://"] = Field(
        "rocksdb://",
        description="Faust table store: RocksDB (via rocksdict) or memory; both changelog-backed.",
    )
    rocksdb_block_cache_mb: int = Field(
        64,
        ge=1,
        description="RocksDB block cache shared by all the worker's table stores (one RocksDB "
        "per table partition): data, index and bloom filter blocks.",
    )
    rocksdb_write_buffers_mb: int = Field(
        64,
        ge=1,
        description="All memtables of the worker's RocksDB stores together: beyond it the "
        "largest is flushed to disk (a shared write buffer manager).",
    )
    rocksdb_write_buffer_mb: int = Field(
        8,
        ge=1,
        description="Memtable size of one RocksDB store (table partition) at which it is flushed "
        "(faust's default: 64).",
    )
    rocksdb_max_write_buffers: int = Field(
        2,
        ge=2,
        description="Memtables per RocksDB store at most, the one written and those being "
        "flushed (faust's default: 3).",
    )
    rocksdb_max_open_files: int = Field(
        256,
        ge=-1,
        description="SST files each RocksDB store keeps open (-1: no limit; faust's default is "
        "90 % of the process's file limit per store).",
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="Faust processing guarantee. exactly_once commits state changelogs, outputs "
        "and input offsets in one Kafka transaction (see README, delivery guarantees).",
    )
    commit_interval_s: float = Field(
        0.5, gt=0, description="How often the worker commits (a transaction under exactly_once)."
    )
    eager_commit: bool = Field(
        True,
        description="Exactly-once: the profile stage commits as soon as it has caught up with "
        "a burst of input instead of at the next commit tick (see README, latency).",
    )
    topic_prefix: str = Field(
        "", description="Prefix of every topic name (isolates tests or tenants on one cluster)."
    )
    worker_id: str = Field(
        "cdp-worker", description="Faust app id: consumer group and changelog topic prefix."
    )
    worker_roles: str = Field(
        ",".join(WORKER_ROLES),
        description="What this worker process runs, comma-separated: `identity`, `profile` "
        "(stream stages), `sink` (Kafka → ClickHouse), `api` (profile API); see README, "
        "scaling out.",
    )
    topic_partitions: int = Field(8, ge=1, description="Partitions of the per-customer topics.")
    topic_replication: int = Field(1, ge=1, description="Replication factor of created topics.")
    worker_batch_messages: int = Field(
        64,
        ge=1,
        description="Input messages a stream processor takes at once (one output message per "
        "partition and one table write per key per group).",
    )
    worker_batch_within_ms: int = Field(
        50,
        ge=1,
        description="Longest wait for a group of input messages to fill up (latency bound).",
    )
    sink_events_flush_s: float = Field(
        2.0,
        gt=0,
        description="How often the sink inserts the events timeline into ClickHouse (each "
        "insert is a new part to merge; the profile lookups' tables flush as soon as the "
        "profile rows have caught up).",
    )
    malloc_trim_interval_s: float = Field(
        10.0,
        ge=0,
        description="How often a worker process hands glibc's free heap memory back to the "
        "system (malloc_trim); 0: never.",
    )
    table_cache_entries: int = Field(
        20_000,
        ge=1,
        description="Entries per generation of the in-memory read cache in front of each "
        "worker table (up to twice this many are cached; bounds the worker's memory).",
    )
    profile_cache_entries: int = Field(
        5_000,
        ge=1,
        description="Entries per generation of the profile processor's cache of decoded "
        "profiles (a few KB each in memory; up to twice this many are held).",
    )

    # ClickHouse
    clickhouse_dsn: str = Field(
        "",
        description="Empty: embedded chDB in data_dir; else e.g. http://user:pw@host:8123/cdp",
    )
    clickhouse_database: str = Field("cdp", description="ClickHouse database of the tables.")

    # HTTP edges
    collector_host: str = Field("127.0.0.1", description="Collector bind address.")
    collector_port: int = Field(8080, description="Collector port (tracking API, pixel).")
    api_host: str = Field("127.0.0.1", description="Profile API bind address.")
    api_port: int = Field(8081, description="Profile API port.")

    # Collector: micro-batching towards Kafka, and the pixel's first-party cookie
    collector_linger_ms: float = Field(
        5.0,
        ge=0,
        description="How long events from concurrent requests wait to share one Kafka message.",
    )
    collector_batch_max_events: int = Field(
        500, ge=1, description="Events per Kafka message (EventBatch) at most."
    )
    collector_batch_max_bytes: int = Field(
        256 * 1024,
        ge=32 * 1024,
        le=960 * 1024,
        description="Avro bytes per Kafka message at most (below the broker's message.max.bytes).",
    )
    collector_delivery_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest wait for Kafka's acknowledgement before a request gets 503.",
    )
    collector_max_pending_mb: int = Field(
        64,
        ge=1,
        description="Events waiting for Kafka, in MB of Avro, beyond which requests get 503.",
    )
    collector_forwarded_for: bool = Field(
        False,
        description="Take the client IP from X-Forwarded-For (only behind a trusted proxy).",
    )
    collector_cookie_name: str = Field(
        "cdp_aid", description="Pixel cookie holding the first-party anonymous id."
    )
    collector_cookie_domain: str = Field(
        "", description="Domain of the pixel cookie; empty: the collector's host only."
    )
    collector_cookie_max_age_s: int = Field(
        365 * 86400, ge=0, description="Lifetime of the pixel cookie in seconds."
    )
    collector_cookie_samesite: Literal["Lax", "Strict", "None"] = Field(
        "Lax", description="SameSite of the pixel cookie (`None` requires Secure)."
    )
    collector_cookie_secure: bool = Field(
        False, description="Mark the pixel cookie Secure (HTTPS only); required for SameSite=None."
    )

    # Secrets: the local defaults are refused when env=production.
    write_keys: SecretStr = Field(
        SecretStr("local-write-key:local"),
        description="Comma-separated `key:source` pairs accepted as Segment write keys.",
    )
    api_token: SecretStr = Field(
        SecretStr("local-api-token"), description="Bearer token of the profile API."
    )

    # Identity
    default_phone_region: str = Field("US", description="Region for phones without +country.")
    identity_custom_types: str = Field(
        "", description="Comma-separated extra identifier types (e.g. loyalty_card,crm_id)."
    )
    identity_blocked_values: str = Field(
        "", description="Comma-separated extra identifier values that never link anything."
    )
    identity_blocked_regex: str = Field("", description="Regex of values that never link.")
    identity_limits: str = Field(
        "",
        description="Per-type limits overriding the defaults, e.g. `email=3,loyalty_card=1` "
        "(defaults: user_id=1, email=5, phone=5, anonymous_id=200, custom types 5).",
    )

    log_level: Literal["debug", "info", "warn", "error"] = Field(
        "info", description="Log level of the Python processes."
    )

    @property
    def producer_compression(self) -> str | None:
        """``kafka_compression`` as the Kafka clients take it (None: uncompressed)."""
        return None if self.kafka_compression == "none" else self.kafka_compression

    @field_validator("worker_roles")
    @classmethod
    def _known_roles(cls, value: str) -> str:
        roles = {item.strip() for item in value.split(",") if item.strip()}
        if unknown := roles - set(WORKER_ROLES):
            raise ValueError(
                f"unknown worker role(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(WORKER_ROLES)}"
            )
        if not roles:
            raise ValueError(f"no worker role given; known: {', '.join(WORKER_ROLES)}")
        return ",".join(role for role in WORKER_ROLES if role in roles)

    @property
    def roles(self) -> frozenset[str]:
        """The roles of ``worker_roles`` (validated, in a canonical order there)."""
        return frozenset(self.worker_roles.split(","))

    @field_validator("default_phone_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.upper()

    def check_production(self) -> None:
        """Refuse to run in production with the well-known local secrets."""
        if self.env != "production":
            return
        if "local-write-key" in self.write_keys.get_secret_value():
            raise ValueError("CDP_WRITE_KEYS must be set in production (local default refused)")
        if self.api_token.get_secret_value() == "local-api-token":
            raise ValueError("CDP_API_TOKEN must be set in production (local default refused)")

    @cached_property
    def write_key_sources(self) -> dict[str, str]:
        """Write key → source name. The source name, never the key, travels with events."""
        mapping: dict[str, str] = {}
        for item in self.write_keys.get_secret_value().split(","):
            item = item.strip()
            if not item:
                continue
            key, _, source = item.partition(":")
            mapping[key] = source or "default"
        return mapping

    def topic(self, name: str) -> str:
        """The full name of one of the pipeline's topics (``TOPIC_*``)."""
        return self.topic_prefix + name

    def child_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the ``CDP_*`` variables that
        reproduce these settings in a child process (secrets included, as their values)."""
        env = dict(os.environ if base is None else base)
        for name in type(self).model_fields:
            value = getattr(self, name)
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[f"CDP_{name.upper()}"] = str(value)
        return env

    @cached_property
    def identity_config(self) -> IdentityConfig:
        limits: dict[str, int] = {}
        for item in self.identity_limits.split(","):
            name, sep, value = item.partition("=")
            if sep:
                limits[name.strip()] = int(value)
        return IdentityConfig.from_values(
            limits=limits,
            custom_types=self.identity_custom_types,
            default_phone_region=self.default_phone_region,
            blocked_values=self.identity_blocked_values,
            blocked_regex=self.identity_blocked_regex or None,
        )

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def effective_clickhouse_dsn(self) -> str:
        return self.clickhouse_dsn or f"chdb://{self.chdb_path}"

    @property
    def embedded_clickhouse(self) -> bool:
        return self.effective_clickhouse_dsn.startswith("chdb:")

    @property
    def collector_url(self) -> str:
        return f"http://{self.collector_host}:{self.collector_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; keyword overrides win (used by tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
