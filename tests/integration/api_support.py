"""Helpers shared by the profile API and analytics view tests: schema set-up and row builders.

Rows go straight into the ClickHouse tables (no Kafka): these tests are about what the views and
the API make of the stored data, whatever wrote it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from pipeline.sink.rows import EVENT_COLUMNS, IDENTITY_COLUMNS, MERGE_COLUMNS
from pipeline.storage.migrate import migrate

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def setup_schema(client: Client, database: str) -> None:
    """Every migration: the tables of 0001-0003, the views and documents of 0004-0006 and the
    API's lookup tables of 0007-0008."""
    migrate(client, database)


def _default(ctype: str) -> Any:
    if ctype.startswith("Nullable"):
        return None
    if ctype.startswith("Map"):
        return {}
    if ctype.startswith("Array"):
        return []
    if ctype.startswith(("UInt", "Int")):
        return 0
    if ctype.startswith("Decimal"):
        return Decimal(0)
    return ""


def profile(customer_id: str, **values: Any) -> dict[str, Any]:
    """A ``profiles`` row: the given values (money as Decimal); other columns take defaults."""
    row: dict[str, Any] = {"customer_id": customer_id, "traits": "{}", "currency": "USD"}
    row["version"] = 1
    for key in ("revenue", "gross_revenue", "avg_order_value", "refunded_amount"):
        if key in values and not isinstance(values[key], Decimal):
            values[key] = Decimal(str(values[key]))
    row.update(values)
    return row


def insert_profiles(client: Client, database: str, rows: list[dict[str, Any]]) -> None:
    """Insert full rows: the table's own columns (0003 may have more than PROFILE_COLUMNS)."""
    columns = client.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} "
        "AND table = 'profiles' ORDER BY position",
        parameters={"db": database},
    ).result_rows
    names = [str(name) for name, _ in columns]
    unknown = {key for row in rows for key in row} - set(names)
    assert not unknown, f"not columns of profiles: {unknown}"
    data = [[row.get(name, _default(str(ctype))) for name, ctype in columns] for row in rows]
    client.insert(f"{database}.profiles", data, column_names=names)


def insert_identities(client: Client, database: str, rows: list[tuple[str, str, str, int]]) -> None:
    """(id_type, id_value, customer_id, version) rows."""
    client.insert(
        f"{database}.identities",
        [(t, v, c, T0, version) for t, v, c, version in rows],
        column_names=list(IDENTITY_COLUMNS),
    )


def insert_merges(client: Client, database: str, pairs: list[tuple[str, str]]) -> None:
    """(loser, survivor) rows."""
    client.insert(
        f"{database}.customer_merges",
        [(loser, survivor, "email:x", T0) for loser, survivor in pairs],
        column_names=list(MERGE_COLUMNS),
    )


def event(
    event_id: str,
    customer_id: str,
    at: datetime,
    name: str = "Page Viewed",
    *,
    kind: str = "track",
    properties: dict[str, Any] | None = None,
    is_bot: bool = False,
) -> tuple[Any, ...]:
    """One ``events`` row in :data:`EVENT_COLUMNS` order."""
    values: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": customer_id,
        "type": kind,
        "event": name,
        "timestamp": at,
        "received_at": at,
        "anonymous_id": "",
        "user_id": "",
        "source": "test",
        "properties": orjson.dumps(properties or {}).decode(),
        "traits": "{}",
        "page_url": "",
        "page_path": "/p" if kind == "page" else "",
        "referrer": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
        "device_type": "desktop",
        "os": "Linux",
        "browser": "Firefox",
        "channel": "direct",
        "is_bot": is_bot,
        "consent": [],
        "ip": "",
    }
    return tuple(values[name] for name in EVENT_COLUMNS)


def insert_events(client: Client, database: str, rows: list[tuple[Any, ...]]) -> None:
    client.insert(f"{database}.events", rows, column_names=list(EVENT_COLUMNS))


def refresh_scores(client: Client, database: str) -> None:
    """Run the scores' refreshable views now and wait for them (instead of waiting a minute):
    the scores, then their copy in the API's lookup table (0007), which a manual refresh of
    the first does not start."""
    for view in ("customer_scores_refresh", "score_lookup_refresh"):
        client.command(f"SYSTEM REFRESH VIEW {database}.{view}")
        client.command(f"SYSTEM WAIT VIEW {database}.{view}")
