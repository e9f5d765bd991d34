"""Migrations on the real embedded engine: applied in order, once, changes detected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.storage.migrate import MigrationError, discover, migrate


def test_project_migrations_apply_idempotently(clickhouse: tuple[Any, str]) -> None:
    client, db = clickhouse
    first = migrate(client, db)
    assert first == [m.name for m in discover()]
    assert migrate(client, db) == []
    tables = {row[0] for row in client.query(f"SHOW TABLES FROM {db}").result_rows}
    assert {"events", "identities", "customer_merges", "schema_migrations"} <= tables


def test_changed_migration_is_refused(clickhouse: tuple[Any, str], tmp_path: Path) -> None:
    client, db = clickhouse
    (tmp_path / "0001_t.sql").write_text("CREATE TABLE {db}.t (a UInt8) ENGINE = Memory;")
    assert migrate(client, db, tmp_path) == ["0001_t.sql"]
    (tmp_path / "0001_t.sql").write_text("CREATE TABLE {db}.t (a UInt16) ENGINE = Memory;")
    with pytest.raises(MigrationError, match="changed"):
        migrate(client, db, tmp_path)


def test_bad_names_and_bad_sql_are_reported(clickhouse: tuple[Any, str], tmp_path: Path) -> None:
    client, db = clickhouse
    (tmp_path / "1_x.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match=r"NNNN_name"):
        migrate(client, db, tmp_path)
    (tmp_path / "1_x.sql").unlink()
    (tmp_path / "0002_broken.sql").write_text("CREATE TABLE nonsense(;")
    with pytest.raises(MigrationError, match=r"0002_broken\.sql"):
        migrate(client, db, tmp_path)
