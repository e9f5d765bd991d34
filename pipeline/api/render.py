"""ClickHouse rows → the profile API's JSON (pure functions, no I/O).

The profile keeps the keys of :func:`pipeline.profile.view.profile_json` (what the stream
computes from a state), so a client sees one shape whichever side built it. The stored row is
flatter than the state, so a few details the row does not keep come back as null: ``utm_term`` /
``utm_content`` of the touches, the time and title of ``last_pages``, the time a subscription
changed, and ``revenue_by_currency`` holds only the profile's main currency.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from pipeline.profile.view import TOP_N

COUNTERS: Final = (
    "events", "page_views", "screen_views", "cart_adds", "checkouts", "product_views",
    "email_opens", "email_clicks", "form_submits", "reviews", "app_opens", "nps_promoters",
    "nps_passives", "nps_detractors", "bot_events",
)  # fmt: skip

#: How the predicted LTV is computed (0004_analytics_views.sql, customer_ltv).
LTV_MODEL: Final = "historical + avg_order_value * orders_per_year * expected_remaining_years"


def iso(value: datetime | None) -> str | None:
    """ISO 8601 UTC with milliseconds and ``Z``; naive datetimes are UTC (ClickHouse 'UTC')."""
    if value is None:
        return None
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def money(value: Decimal | float | int | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _json_object(text: str) -> Any:
    """A JSON column's value; a corrupt one is shown as its text rather than failing the call."""
    if not text:
        return {}
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"_raw": text}


def _top(counts: Mapping[str, int]) -> dict[str, int]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:TOP_N])


def _touch(row: Mapping[str, Any], prefix: str) -> dict[str, Any] | None:
    at = row[f"{prefix}_at"]
    channel = row[f"{prefix}_channel"]
    if at is None and not channel:
        return None
    return {
        "at": iso(at),
        "channel": channel or None,
        "utm_source": row[f"{prefix}_source"] or None,
        "utm_medium": row[f"{prefix}_medium"] or None,
        "utm_campaign": row[f"{prefix}_campaign"] or None,
        "utm_term": None,
        "utm_content": None,
        "referrer": row[f"{prefix}_referrer"] or None,
    }


def stats(row: Mapping[str, Any]) -> dict[str, Any]:
    """The ``stats`` object (issue 5 point 1 names) from a ``profiles`` row."""
    out: dict[str, Any] = {name: int(row[name]) for name in COUNTERS}
    currency = row["currency"]
    has_money = row["orders"] > 0 or row["refunds"] > 0
    consent = list(row["consent"])
    out.update(
        sessions=int(row["sessions"]),
        time_on_site_s=int(row["time_on_site_s"]),
        first_seen=iso(row["first_seen"]),
        last_seen=iso(row["last_seen"]),
        orders=int(row["orders"]),
        currency=currency,
        revenue=money(row["revenue"]),
        gross_revenue=money(row["gross_revenue"]),
        refunded_amount=money(row["refunded_amount"]),
        revenue_by_currency={currency: money(row["revenue"])} if has_money else {},
        refunds=int(row["refunds"]),
        avg_order_value=money(row["avg_order_value"]),
        first_order_at=iso(row["first_order_at"]),
        last_order_at=iso(row["last_order_at"]),
        products=_top(row["products_bought"]),
        categories=_top(row["categories_bought"]),
        devices=_top(row["devices"]),
        browsers=_top(row["browsers"]),
        os=_top(row["os"]),
        first_touch=_touch(row, "first_touch"),
        last_touch=_touch(row, "last_touch"),
        nps_last_score=row["nps_last_score"],
        nps_last_at=iso(row["nps_last_at"]),
        subscriptions={
            name: {"active": True, "updated_at": None} for name in sorted(row["subscriptions"])
        },
        consent=(
            {"categories": consent, "updated_at": iso(row["consent_updated_at"])}
            if consent or row["consent_updated_at"] is not None
            else None
        ),
        last_pages=[{"at": None, "path": path, "title": None} for path in row["last_pages"]],
    )
    return out


def _day(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def scores(row: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``scores`` object from a ``customer_scores`` row; all null before the first refresh."""
    if row is None:
        return {
            "rfm": None,
            "abc": None,
            "xyz": None,
            "ltv": None,
            "as_of": None,
            "refreshed_at": None,
        }
    rfm = None
    if row["rfm_segment"] is not None:
        rfm = {
            "recency_days": row["recency_days"],
            "frequency": row["frequency"],
            "monetary": money(row["monetary"]),
            "r": row["r_score"],
            "f": row["f_score"],
            "m": row["m_score"],
            "cell": row["rfm_cell"],
            "segment": row["rfm_segment"],
        }
    abc = None
    if row["abc_class"] is not None:
        abc = {
            "class": row["abc_class"],
            "revenue_share": _ratio(row["revenue_share"]),
            "cumulative_share": _ratio(row["cumulative_share"]),
        }
    xyz = None
    if row["xyz_class"] is not None:
        xyz = {
            "class": row["xyz_class"],
            "cv_orders": _ratio(row["cv_orders"]),
            "cv_revenue": _ratio(row["cv_revenue"]),
            "orders_in_window": row["orders_in_window"],
            "months": 12,
        }
    ltv = {
        "currency": row["currency"],
        "historical": money(row["historical_ltv"]),
        "predicted": money(row["predicted_ltv"]),
        "avg_order_value": money(row["avg_order_value"]),
        "orders_per_year": _ratio(row["orders_per_year"]),
        "expected_remaining_years": row["expected_remaining_years"],
        "model": LTV_MODEL,
    }
    return {
        "rfm": rfm,
        "abc": abc,
        "xyz": xyz,
        "ltv": ltv,
        "as_of": _day(row["as_of"]),
        "refreshed_at": iso(row["refreshed_at"]),
    }


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def profile(
    row: Mapping[str, Any], score_row: Mapping[str, Any] | None, customer_id: str
) -> dict[str, Any]:
    """``GET /v1/profiles/…``: the profile of ``customer_id`` (the survivor) as JSON."""
    updated = row["traits_updated_at"]
    return {
        "customer_id": customer_id,
        "identities": {
            id_type: list(values) for id_type, values in sorted(row["identities"].items())
        },
        "traits": _json_object(row["traits"]),
        "traits_updated_at": {name: iso(updated[name]) for name in sorted(updated)},
        "stats": stats(row),
        "scores": scores(score_row),
        "merged_from": list(row["merged_from"]),
    }


def event(row: Mapping[str, Any]) -> dict[str, Any]:
    """One timeline entry. The client IP stays out: the timeline is for marketers."""
    return {
        "event_id": row["event_id"],
        "customer_id": row["customer_id"],
        "type": row["type"],
        "event": row["event"] or None,
        "timestamp": iso(row["timestamp"]),
        "received_at": iso(row["received_at"]),
        "source": row["source"] or None,
        "anonymous_id": row["anonymous_id"] or None,
        "user_id": row["user_id"] or None,
        "properties": _json_object(row["properties"]),
        "traits": _json_object(row["traits"]),
        "context": {
            "page_url": row["page_url"] or None,
            "page_path": row["page_path"] or None,
            "referrer": row["referrer"] or None,
            "utm_source": row["utm_source"] or None,
            "utm_medium": row["utm_medium"] or None,
            "utm_campaign": row["utm_campaign"] or None,
        },
        "device": {
            "type": row["device_type"] or None,
            "os": row["os"] or None,
            "browser": row["browser"] or None,
        },
        "channel": row["channel"] or None,
        "is_bot": bool(row["is_bot"]),
        "consent": list(row["consent"]),
    }
