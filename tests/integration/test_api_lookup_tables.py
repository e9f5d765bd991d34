"""The profile API's key-value lookup tables (0007) on the real embedded engine: kept current by
their views whatever order versions arrive in, backfilled from rows older than the migration,
and read in one query per lookup."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from pipeline.api import documents
from pipeline.api.queries import ProfileQueries
from pipeline.storage.migrate import MIGRATIONS_DIR, discover, migrate
from tests.integration.api_support import (
    insert_identities,
    insert_merges,
    insert_profiles,
    profile,
    refresh_scores,
)


def _traits(found: Any) -> str:
    assert found is not None
    _, stored = found
    return str(documents.profile_row(stored.doc)["traits"])


def test_older_versions_arriving_later_change_nothing(clickhouse: tuple[Client, str]) -> None:
    """RocksDB keeps the last write; the views only write a key when its version is newer."""
    client, db = clickhouse
    migrate(client, db)
    insert_profiles(client, db, [profile("c1", version=5, traits='{"v": 5}')])
    insert_profiles(client, db, [profile("c1", version=3, traits='{"v": 3}')])  # a late replay
    insert_profiles(
        client,
        db,
        [profile("c2", version=2, traits='{"v": 2}'), profile("c2", version=1, traits="{}")],
    )
    insert_identities(client, db, [("email", "a@example.com", "c1", 7)])
    insert_identities(client, db, [("email", "a@example.com", "c2", 6)])  # older owner, later
    queries = ProfileQueries(client, db)
    assert _traits(queries.find("c1")) == '{"v": 5}'
    assert _traits(queries.find("c2")) == '{"v": 2}'
    owner, found = queries.find_by_identifier("email", "a@example.com")
    assert owner == "c1" and found is not None and found[0] == "c1"

    # The same version again replaces (ReplacingMergeTree keeps the last insert too).
    insert_profiles(client, db, [profile("c1", version=5, traits='{"v": "5b"}')])
    assert _traits(queries.find("c1")) == '{"v": "5b"}'


def test_deletion_and_merge_chains(clickhouse: tuple[Client, str]) -> None:
    client, db = clickhouse
    migrate(client, db)
    insert_profiles(
        client,
        db,
        [
            profile("a", version=1),
            profile("a", version=2, is_deleted=1),  # merged into b
            profile("b", version=1),
            profile("b", version=2, is_deleted=1),  # merged into c
            profile("c", version=1, traits='{"final": true}'),
            profile("gone", version=1),
        ],
    )
    insert_profiles(client, db, [profile("gone", version=2, is_deleted=1)])  # erased later
    insert_merges(client, db, [("a", "b"), ("b", "c"), ("x1", "x2"), ("x2", "x1")])
    queries = ProfileQueries(client, db)
    for start in ("a", "b", "c"):
        found = queries.find(start)
        assert found is not None and found[0] == "c"
    assert queries.find("gone") is None
    assert queries.find("nobody") is None
    assert queries.find("x1") is None  # a corrupt cycle ends, unanswered
    assert queries.find_by_identifier("email", "nobody@example.com") == (None, None)


def test_rows_written_before_the_migration_are_backfilled(
    clickhouse: tuple[Client, str], tmp_path: Path
) -> None:
    client, db = clickhouse
    before = [m for m in discover() if m.name < "0007"]
    for migration in before:
        shutil.copy(MIGRATIONS_DIR / migration.name, tmp_path / migration.name)
    assert migrate(client, db, tmp_path) == [m.name for m in before]
    insert_profiles(
        client, db, [profile("old", version=1), profile("new", version=4, traits='{"n": 1}')]
    )
    insert_profiles(client, db, [profile("old", version=2, is_deleted=1)])
    insert_merges(client, db, [("old", "new")])
    insert_identities(client, db, [("email", "o@example.com", "old", 1)])
    applied = migrate(client, db)
    assert applied[0] == "0007_lookup_tables.sql"
    refresh_scores(client, db)
    queries = ProfileQueries(client, db)
    owner, found = queries.find_by_identifier("email", "o@example.com")
    assert owner == "old" and found is not None and found[0] == "new"
    assert _traits(found) == '{"n": 1}'
    tables = {row[0] for row in client.query(f"SHOW TABLES FROM {db}").result_rows}
    assert "profile_documents" not in tables  # replaced by profile_lookup (0008)
