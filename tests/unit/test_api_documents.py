"""JSON documents written by the migrations, read back as typed rows."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest

from pipeline.api import documents, render
from pipeline.api.documents import DocumentError
from pipeline.api.queries import PROFILE_FIELDS
from pipeline.storage.migrate import MIGRATIONS_DIR

# A document as chDB 26 writes it (formatRowNoNewline('JSONEachRow', …)), trimmed to the
# fields the assertions use plus every type family of the table.
DOC = {
    "customer_id": "c1",
    "identities": {"email": ["ann@example.com"], "anonymous_id": ["a2", "a1"]},
    "traits": '{"name":"Ann"}',
    "traits_updated_at": {"name": "2024-05-01 12:00:00.250"},
    **{name: 0 for name in render.COUNTERS},
    "events": 5,
    "sessions": 2,
    "time_on_site_s": 75,
    "first_seen": "2024-04-01 08:00:00.000",
    "last_seen": "2024-05-01 12:00:00.250",
    "orders": 2,
    "currency": "EUR",
    "revenue": 25.5,
    "gross_revenue": 30,
    "refunded_amount": 4.5,
    "refunds": 1,
    "avg_order_value": 12.75,
    "first_order_at": "2024-04-02 09:00:00.000",
    "last_order_at": None,
    "products_bought": {"p1": 2},
    "categories_bought": {},
    "devices": {"desktop": 3},
    "browsers": {},
    "os": {},
    "first_touch_channel": "search",
    "first_touch_source": "google",
    "first_touch_medium": "",
    "first_touch_campaign": "",
    "first_touch_referrer": "",
    "first_touch_at": "2024-04-01 08:00:00.000",
    "last_touch_channel": "",
    "last_touch_source": "",
    "last_touch_medium": "",
    "last_touch_campaign": "",
    "last_touch_referrer": "",
    "last_touch_at": None,
    "nps_last_score": None,
    "nps_last_at": None,
    "subscriptions": ["news"],
    "consent": [],
    "consent_updated_at": None,
    "last_pages": ["/b", "/a"],
    "merged_from": ["c0"],
    "is_deleted": 0,
}


def test_profile_document_becomes_the_typed_row() -> None:
    row = documents.profile_row(orjson.dumps(DOC).decode())
    assert row["first_seen"] == datetime(2024, 4, 1, 8, tzinfo=UTC)
    assert row["traits_updated_at"] == {"name": datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)}
    assert row["last_order_at"] is None
    assert row["revenue"] == Decimal("25.5") and row["gross_revenue"] == Decimal(30)
    assert row["orders"] == 2 and row["products_bought"] == {"p1": 2}

    profile = render.profile(row, None, "c1")
    assert profile["stats"]["first_seen"] == "2024-04-01T08:00:00.000Z"
    assert profile["stats"]["revenue"] == 25.5
    assert profile["traits"] == {"name": "Ann"}
    assert profile["merged_from"] == ["c0"]


def test_other_json_output_settings_read_the_same() -> None:
    """Quoted 64-bit integers and ISO times (server-side output settings) change nothing."""
    variant = {
        **DOC,
        "events": "5",
        "time_on_site_s": "75",
        "first_seen": "2024-04-01T08:00:00.000Z",
        "products_bought": {"p1": "2"},
    }
    plain = documents.profile_row(orjson.dumps(DOC).decode())
    assert documents.profile_row(orjson.dumps(variant).decode()) == plain


def test_score_document() -> None:
    doc = {
        "as_of": "2024-06-01",
        "currency": "USD",
        "recency_days": 3,
        "frequency": "4",
        "monetary": 120.5,
        "r_score": 5,
        "f_score": 4,
        "m_score": 4,
        "rfm_cell": "544",
        "rfm_segment": "Champions",
        "abc_class": "A",
        "revenue_share": 0.1,
        "cumulative_share": 0.3,
        "xyz_class": None,
        "cv_orders": None,
        "cv_revenue": None,
        "orders_in_window": None,
        "historical_ltv": 120.5,
        "avg_order_value": 30.125,
        "orders_per_year": 4,
        "expected_remaining_years": 3,
        "predicted_ltv": 482,
        "refreshed_at": "2024-06-01 10:00:00.000",
    }
    row = documents.score_row(orjson.dumps(doc).decode())
    assert row is not None
    assert row["as_of"] == date(2024, 6, 1) and row["frequency"] == 4
    assert row["monetary"] == Decimal("120.5") and row["orders_in_window"] is None
    scores = render.scores(row)
    assert scores["rfm"]["segment"] == "Champions" and scores["xyz"] is None
    assert documents.score_row("") is None


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"x"'])
def test_a_corrupt_profile_document_is_an_error(text: str) -> None:
    with pytest.raises(DocumentError):
        documents.profile_row(text)


def _format_row_fields(sql: str) -> list[list[str]]:
    calls = re.findall(r"formatRowNoNewline\('JSONCompactEachRow',(.*?)\),", sql, re.S)
    return [[name.strip() for name in call.split(",")] for call in calls]


def test_the_migration_renders_exactly_the_fields_the_api_reads() -> None:
    sql = (MIGRATIONS_DIR / "0007_lookup_tables.sql").read_text()
    calls = _format_row_fields(sql)
    assert len(calls) == 2  # the view and the backfill
    for fields in calls:
        assert fields == list(PROFILE_FIELDS)


def test_a_compact_document_reads_like_the_object() -> None:
    """0007 stores the values only (JSONCompactEachRow), in PROFILE_FIELDS order."""
    compact = [DOC.get(name) for name in PROFILE_FIELDS]
    full = {name: DOC.get(name) for name in PROFILE_FIELDS}
    as_array = documents.profile_row(orjson.dumps(compact).decode())
    assert as_array == documents.profile_row(orjson.dumps(full).decode())
    assert as_array["customer_id"] == "c1" and as_array["merged_from"] == ["c0"]
    with pytest.raises(DocumentError, match="values"):
        documents.profile_row(orjson.dumps(compact[:-1]).decode())
