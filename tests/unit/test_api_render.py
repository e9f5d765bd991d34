"""Rendering ClickHouse rows as API JSON: the same shape as the stream's ``profile_json``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson

from pipeline.api import render
from pipeline.profile import ProfileState, apply_all, profile_json, profile_row

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MIN = 60_000


def _event(n: int, kind: str, name: str | None, at: int, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"ev-{n}",
        "customer_id": "cust-1",
        "type": kind,
        "event": name,
        "anonymous_id": "anon-1",
        "user_id": None,
        "identifiers": extra.get("identifiers", [{"type": "anonymous_id", "value": "anon-1"}]),
        "timestamp": T0 + at,
        "received_at": T0 + at,
        "source": "web",
        "properties": orjson.dumps(extra.get("props", {})).decode(),
        "traits": orjson.dumps(extra.get("traits", {})).decode(),
        "context": {
            "page_path": extra.get("path"),
            "page_title": None,
            "referrer": None,
            "utm_source": extra.get("utm_source"),
        },
        "enrichment": {
            "device_type": "desktop",
            "browser": "Chrome",
            "os": "macOS",
            "is_bot": False,
            "channel": extra.get("channel", "direct"),
        },
        "consent": extra.get("consent", []),
    }


def _state() -> ProfileState:
    events = [
        _event(1, "page", None, 0, path="/", channel="search", utm_source="google"),
        _event(
            2,
            "identify",
            None,
            MIN,
            traits={"name": "Ann", "email": "ann@example.com"},
            identifiers=[
                {"type": "anonymous_id", "value": "anon-1"},
                {"type": "email", "value": "ann@example.com"},
            ],
            consent=["analytics"],
        ),
        _event(3, "track", "Product Added", 2 * MIN, props={"product_id": "p1"}),
        _event(
            4,
            "track",
            "Order Completed",
            3 * MIN,
            props={
                "order_id": "o1",
                "revenue": 30,
                "currency": "EUR",
                "products": [{"product_id": "p1", "quantity": 2, "category": "shoes"}],
            },
        ),
        _event(5, "track", "Order Refunded", 4 * MIN, props={"order_id": "o1", "revenue": 5}),
        _event(6, "track", "NPS Answered", 5 * MIN, props={"score": 9}),
        _event(7, "track", "Subscribed", 6 * MIN, props={"list": "news"}),
        _event(8, "page", None, 7 * MIN, path="/shoes", channel="email"),
    ]
    return apply_all(events)


def _stored(row: dict[str, Any], merged_from: list[str]) -> dict[str, Any]:
    """The row as clickhouse-connect returns it: naive UTC datetimes, plus 0003's merged_from."""
    out: dict[str, Any] = {}
    for name, value in row.items():
        if isinstance(value, datetime):
            value = value.astimezone(UTC).replace(tzinfo=None)
        elif isinstance(value, dict):
            value = {
                k: v.astimezone(UTC).replace(tzinfo=None) if isinstance(v, datetime) else v
                for k, v in value.items()
            }
        out[name] = value
    out["merged_from"] = merged_from
    return out


def test_profile_has_the_keys_and_values_of_the_stream_json() -> None:
    state = _state()
    expected = profile_json("cust-1", state, merged_from=["old-1"])
    row = _stored(profile_row("cust-1", state, version=7), ["old-1"])

    got = render.profile(row, None, "cust-1")

    assert got.keys() == expected.keys()
    assert got["stats"].keys() == expected["stats"].keys()
    for key in ("customer_id", "identities", "traits", "traits_updated_at", "merged_from"):
        assert got[key] == expected[key], key
    assert got["scores"]["rfm"] is None and got["scores"]["ltv"] is None
    # What the row keeps exactly.
    lossy = {"revenue_by_currency", "last_pages", "subscriptions", "first_touch", "last_touch"}
    for key, value in expected["stats"].items():
        if key not in lossy:
            assert got["stats"][key] == value, key
    # What the flatter row keeps only in part.
    assert got["stats"]["revenue"] == 25.0 and got["stats"]["currency"] == "EUR"
    assert got["stats"]["revenue_by_currency"] == {"EUR": 25.0}
    assert [p["path"] for p in got["stats"]["last_pages"]] == ["/shoes", "/"]
    assert got["stats"]["subscriptions"] == {"news": {"active": True, "updated_at": None}}
    for touch in ("first_touch", "last_touch"):
        want = {**expected["stats"][touch], "utm_term": None, "utm_content": None}
        assert got["stats"][touch] == want, touch


def test_iso_is_utc_with_milliseconds_and_z() -> None:
    assert render.iso(None) is None
    assert render.iso(datetime(2024, 5, 1, 12, 0, 0, 123000)) == "2024-05-01T12:00:00.123Z"
    plus3 = datetime(2024, 5, 1, 15, 0, tzinfo=timezone(timedelta(hours=3)))
    assert render.iso(plus3) == "2024-05-01T12:00:00.000Z"


def _score_row(**values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "as_of": date(2024, 6, 1),
        "currency": "USD",
        "recency_days": 3,
        "frequency": 4,
        "monetary": Decimal("120.5000"),
        "r_score": 5,
        "f_score": 4,
        "m_score": 4,
        "rfm_cell": "544",
        "rfm_segment": "Champions",
        "abc_class": "A",
        "revenue_share": 0.1,
        "cumulative_share": 0.3,
        "xyz_class": "Y",
        "cv_orders": 0.75,
        "cv_revenue": None,
        "orders_in_window": 4,
        "historical_ltv": Decimal("120.5000"),
        "avg_order_value": Decimal("30.1250"),
        "orders_per_year": 4.0,
        "expected_remaining_years": 3,
        "predicted_ltv": 482.0,
        "refreshed_at": datetime(2024, 6, 1, 10, 0),
    }
    row.update(values)
    return row


def test_scores_from_a_scores_row() -> None:
    scores = render.scores(_score_row())
    assert scores["rfm"] == {
        "recency_days": 3,
        "frequency": 4,
        "monetary": 120.5,
        "r": 5,
        "f": 4,
        "m": 4,
        "cell": "544",
        "segment": "Champions",
    }
    assert scores["abc"] == {"class": "A", "revenue_share": 0.1, "cumulative_share": 0.3}
    assert scores["xyz"]["class"] == "Y" and scores["xyz"]["cv_revenue"] is None
    assert scores["ltv"]["historical"] == 120.5 and scores["ltv"]["predicted"] == 482.0
    assert scores["as_of"] == "2024-06-01"
    assert scores["refreshed_at"] == "2024-06-01T10:00:00.000Z"


def test_scores_of_a_customer_without_orders_keep_only_ltv() -> None:
    row = _score_row(rfm_segment=None, abc_class=None, xyz_class=None, historical_ltv=Decimal(0))
    scores = render.scores(row)
    assert scores["rfm"] is None and scores["abc"] is None and scores["xyz"] is None
    assert scores["ltv"]["historical"] == 0.0


def test_scores_before_the_first_refresh_are_null() -> None:
    assert render.scores(None) == {
        "rfm": None,
        "abc": None,
        "xyz": None,
        "ltv": None,
        "as_of": None,
        "refreshed_at": None,
    }


def test_event_parses_json_columns_and_leaves_the_ip_out() -> None:
    row = {
        "event_id": "e1",
        "customer_id": "c1",
        "type": "track",
        "event": "Order Completed",
        "timestamp": datetime(2024, 1, 2, 3, 4, 5),
        "received_at": datetime(2024, 1, 2, 3, 4, 6),
        "source": "web",
        "anonymous_id": "a1",
        "user_id": "",
        "properties": '{"order_id": "o1", "revenue": 10}',
        "traits": "not json",
        "page_url": "",
        "page_path": "/checkout",
        "referrer": "",
        "utm_source": "",
        "utm_medium": "",
        "utm_campaign": "",
        "device_type": "mobile",
        "os": "iOS",
        "browser": "Safari",
        "channel": "email",
        "is_bot": False,
        "consent": ["analytics"],
    }
    out = render.event(row)
    assert out["properties"] == {"order_id": "o1", "revenue": 10}
    assert out["traits"] == {"_raw": "not json"}
    assert out["user_id"] is None
    assert out["timestamp"] == "2024-01-02T03:04:05.000Z"
    assert out["context"]["page_path"] == "/checkout"
    assert out["device"] == {"type": "mobile", "os": "iOS", "browser": "Safari"}
    assert "ip" not in out
