"""Apply the plain SQL files under ``schemas/clickhouse/`` in order, once each.

Each file is named ``NNNN_description.sql`` and may hold several statements separated by ``;``
on a line end. ``{db}`` in a file stands for the configured database name (the only
substitution: it is a name from our own settings, never user input). Applied files are recorded
in ``<db>.schema_migrations`` with their checksum; a changed file that was already applied is an
error rather than a silent skip, because ClickHouse DDL is not transactional.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

from pipeline.settings import PROJECT_ROOT

MIGRATIONS_DIR = PROJECT_ROOT / "schemas" / "clickhouse"
_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class MigrationError(RuntimeError):
    """A migration file is malformed, changed after being applied, or failed."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        text = self.sql.replace("{db}", database)
        # Drop comment-only lines so a trailing comment is not sent as an empty statement.
        parts = re.split(r";\s*(?:\n|$)", text)
        out = []
        for part in parts:
            body = "\n".join(
                line for line in part.splitlines() if not line.strip().startswith("--")
            ).strip()
            if body:
                out.append(body)
        return out


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    files = sorted(directory.glob("*.sql"))
    bad = [f.name for f in files if not _NAME.match(f.name)]
    if bad:
        raise MigrationError(f"migration files must be named NNNN_name.sql: {bad}")
    return [Migration(f.name, f.read_text()) for f in files]


def applied(client: Client, database: str) -> dict[str, str]:
    rows = client.query(
        f"SELECT name, checksum FROM {database}.schema_migrations FINAL"  # noqa: S608 - our name
    ).result_rows
    return {str(name): str(checksum) for name, checksum in rows}


def migrate(
    client: Client,
    database: str,
    directory: Path = MIGRATIONS_DIR,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply pending migrations; return the names applied by this call."""
    if not _DB_NAME.match(database):
        raise MigrationError(f"invalid database name {database!r}")
    client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = applied(client, database)
    newly: list[str] = []
    for migration in discover(directory):
        previous = done.get(migration.name)
        if previous is not None:
            if previous != migration.checksum:
                raise MigrationError(
                    f"{migration.name} changed after it was applied; add a new migration instead"
                )
            continue
        for statement in migration.statements(database):
            try:
                client.command(statement)
            except Exception as exc:  # the driver raises several types; name the file
                raise MigrationError(f"{migration.name}: {exc}") from exc
        client.insert(
            f"{database}.schema_migrations",
            [[migration.name, migration.checksum]],
            column_names=["name", "checksum"],
        )
        newly.append(migration.name)
        if progress:
            progress(migration.name)
    return newly
