"""Pure mappings from pipeline records to ClickHouse rows (column lists are explicit)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

EVENT_COLUMNS = (
    "event_id", "customer_id", "type", "event", "timestamp", "received_at", "anonymous_id",
    "user_id", "source", "properties", "traits", "page_url", "page_path", "referrer",
    "utm_source", "utm_medium", "utm_campaign", "device_type", "os", "browser", "channel",
    "is_bot", "consent", "ip",
)  # fmt: skip

IDENTITY_COLUMNS = ("id_type", "id_value", "customer_id", "first_seen", "version")
MERGE_COLUMNS = ("loser", "survivor", "reason", "merged_at")
REFUSAL_COLUMNS = ("id_type", "id_value", "kept_by", "refused_for", "rule", "at")


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def event_row(customer_id: str, event: dict[str, Any]) -> tuple[Any, ...]:
    ctx = event.get("context") or {}
    enr = event.get("enrichment") or {}
    return (
        event["event_id"],
        customer_id,
        event["type"],
        event.get("event") or "",
        # DateTime64(3) columns take the epoch milliseconds as they are (clickhouse-connect
        # writes an int as the column's ticks): no datetime built and taken apart per row.
        event["timestamp"],
        event["received_at"],
        event.get("anonymous_id") or "",
        event.get("user_id") or "",
        event.get("source") or "",
        event.get("properties") or "{}",
        event.get("traits") or "{}",
        ctx.get("page_url") or "",
        ctx.get("page_path") or "",
        ctx.get("referrer") or "",
        ctx.get("utm_source") or "",
        ctx.get("utm_medium") or "",
        ctx.get("utm_campaign") or "",
        enr.get("device_type") or "unknown",
        enr.get("os") or "",
        enr.get("browser") or "",
        enr.get("channel") or "direct",
        bool(enr.get("is_bot")),
        list(event.get("consent") or ()),
        ctx.get("ip") or "",
    )


def change_rows(
    changes: list[dict[str, Any]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """identity.changes records → (identities, customer_merges, identity_refusals) rows."""
    identities: list[tuple[Any, ...]] = []
    merges: list[tuple[Any, ...]] = []
    refusals: list[tuple[Any, ...]] = []
    for c in changes:
        kind = c.get("kind")
        if kind == "identifier":
            identities.append(
                (
                    c["id_type"],
                    c["id_value"],
                    c["customer_id"],
                    ms_to_datetime(c["at"]),
                    c["version"],
                )
            )
        elif kind == "merge":
            merges.append((c["loser"], c["survivor"], c["reason"], ms_to_datetime(c["at"])))
        elif kind == "refusal":
            refusals.append(
                (c["id_type"], c["id_value"], c["kept_by"], c["refused_for"], c["rule"],
                 ms_to_datetime(c["at"]))
            )  # fmt: skip
    return identities, merges, refusals
