"""JSON documents from ClickHouse (``profile_lookup.doc``, ``customer_scores.doc``) → rows.

The documents are ``formatRowNoNewline(…)`` of the typed columns: the API reads one column
instead of sixty. A profile is a JSON array of the values of :data:`PROFILE_FIELDS`
(``JSONCompactEachRow``, 0007: a third of the size without the key names), a score document an
object (``JSONEachRow``, 0005); the objects of 0006's ``profile_documents`` read the same. This
module turns a document back into the row :mod:`pipeline.api.render` expects, undoing
ClickHouse's JSON value formats: times as ``"2024-05-01 12:00:00.000"`` (or ISO / epoch under
other output settings), money as numbers, 64-bit integers possibly quoted
(``output_format_json_quote_64bit_integers``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

import orjson

#: profiles columns rendered into ``profile_lookup.doc`` (0007 lists the same, in this order).
PROFILE_FIELDS: Final = (
    "customer_id", "identities", "traits", "traits_updated_at", "events", "page_views",
    "screen_views", "sessions", "time_on_site_s", "first_seen", "last_seen", "cart_adds",
    "checkouts", "product_views", "orders", "currency", "revenue", "gross_revenue",
    "refunded_amount", "refunds", "avg_order_value", "first_order_at", "last_order_at",
    "products_bought", "categories_bought", "devices", "browsers", "os",
    "first_touch_channel", "first_touch_source", "first_touch_medium", "first_touch_campaign",
    "first_touch_referrer", "first_touch_at", "last_touch_channel", "last_touch_source",
    "last_touch_medium", "last_touch_campaign", "last_touch_referrer", "last_touch_at",
    "email_opens", "email_clicks", "form_submits", "reviews", "app_opens", "nps_promoters",
    "nps_passives", "nps_detractors", "nps_last_score", "nps_last_at", "subscriptions",
    "consent", "consent_updated_at", "last_pages", "bot_events", "merged_from", "is_deleted",
)  # fmt: skip

PROFILE_TIMES: Final = frozenset(
    {
        "first_seen", "last_seen", "first_order_at", "last_order_at", "first_touch_at",
        "last_touch_at", "nps_last_at", "consent_updated_at",
    }
)  # fmt: skip
PROFILE_MONEY: Final = frozenset({"revenue", "gross_revenue", "refunded_amount", "avg_order_value"})
PROFILE_INTS: Final = frozenset(
    {
        "events", "page_views", "screen_views", "sessions", "time_on_site_s", "cart_adds",
        "checkouts", "product_views", "orders", "refunds", "email_opens", "email_clicks",
        "form_submits", "reviews", "app_opens", "nps_promoters", "nps_passives",
        "nps_detractors", "nps_last_score", "bot_events", "is_deleted",
    }
)  # fmt: skip
_COUNT_MAPS: Final = ("products_bought", "categories_bought", "devices", "browsers", "os")
SCORE_MONEY: Final = frozenset({"monetary", "historical_ltv", "avg_order_value"})
SCORE_INTS: Final = frozenset(
    {"recency_days", "frequency", "r_score", "f_score", "m_score", "orders_in_window",
     "expected_remaining_years"}
)  # fmt: skip


class DocumentError(ValueError):
    """A stored document is not the JSON object the migrations write."""


def parse_time(value: Any) -> datetime | None:
    """A DateTime64 as ClickHouse writes it in JSON, as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, int | float):  # date_time_output_format = 'unix_timestamp'
        return datetime.fromtimestamp(value, tz=UTC)
    parsed = datetime.fromisoformat(str(value))  # "2024-05-01 12:00:00.000", ISO, or "…Z"
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _money(value: Any) -> Decimal | None:
    # Through str: Decimal(0.1) would carry the float's binary noise.
    return None if value is None else Decimal(str(value))


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _load(text: str, fields: tuple[str, ...] = ()) -> dict[str, Any]:
    """The object ``text`` holds; with ``fields``, also an array of exactly their values."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise DocumentError(f"stored document is not JSON: {exc}") from exc
    if fields and isinstance(doc, list):
        if len(doc) != len(fields):
            raise DocumentError(f"stored document has {len(doc)} values, not {len(fields)}")
        return dict(zip(fields, doc, strict=True))
    if not isinstance(doc, dict):
        raise DocumentError("stored document is not a JSON object")
    return doc


def profile_row(text: str) -> dict[str, Any]:
    """A ``profile_lookup.doc`` (or an object with the same names) as the typed ``profiles``
    row it was rendered from."""
    row = _load(text, PROFILE_FIELDS)
    for name in PROFILE_TIMES:
        row[name] = parse_time(row.get(name))
    for name in PROFILE_MONEY:
        row[name] = _money(row.get(name)) or Decimal(0)
    for name in PROFILE_INTS:
        row[name] = _int(row.get(name))
    for name in _COUNT_MAPS:
        row[name] = {key: int(count) for key, count in (row.get(name) or {}).items()}
    row["traits_updated_at"] = {
        name: parse_time(at) for name, at in (row.get("traits_updated_at") or {}).items()
    }
    return row


def score_row(text: str) -> dict[str, Any] | None:
    """A ``customer_scores.doc``; None for the empty string (no scores row yet)."""
    if not text:
        return None
    row = _load(text)
    row["as_of"] = date.fromisoformat(row["as_of"]) if row.get("as_of") else None
    row["refreshed_at"] = parse_time(row.get("refreshed_at"))
    for name in SCORE_MONEY:
        row[name] = _money(row.get(name))
    for name in SCORE_INTS:
        row[name] = _int(row.get(name))
    return row
