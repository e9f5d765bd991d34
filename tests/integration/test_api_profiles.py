"""The profile API over HTTP on the real embedded ClickHouse.

Rows go straight into the tables (the stream's output), the application is the one the worker
serves (``build_api``), and requests go through aiohttp's test server on a free port.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from pipeline.api.server import build_api
from pipeline.settings import load_settings
from pipeline.storage.clickhouse import connect
from tests.integration.api_support import (
    event,
    insert_events,
    insert_identities,
    insert_merges,
    insert_profiles,
    profile,
    refresh_scores,
    setup_schema,
)

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ANN = "cust-ann"
NOW = datetime.now(UTC).replace(microsecond=0)


def _fill(client: Client, db: str) -> None:
    """Ann absorbed cust-old, which had absorbed cust-older (a two-hop chain)."""
    insert_profiles(
        client,
        db,
        [
            profile(ANN, version=1, orders=1, revenue=10),  # an older version
            profile(
                ANN,
                version=4,
                identities={
                    "email": ["ann@example.com"],
                    "phone": ["+14155552671"],
                    "user_id": ["U-1"],
                    "anonymous_id": ["anon-1", "anon-0"],
                    "loyalty_card": ["LC-9"],
                },
                traits='{"name": "Ann", "city": "Berlin"}',
                traits_updated_at={"name": NOW - timedelta(days=3)},
                events=9,
                page_views=4,
                orders=3,
                revenue=Decimal("120.5"),
                gross_revenue=Decimal("120.5"),
                avg_order_value=Decimal("40.1667"),
                first_seen=NOW - timedelta(days=100),
                last_seen=NOW - timedelta(hours=1),
                first_order_at=NOW - timedelta(days=90),
                last_order_at=NOW - timedelta(days=2),
                first_touch_channel="search",
                first_touch_source="google",
                first_touch_at=NOW - timedelta(days=100),
                last_pages=["/cart", "/"],
                merged_from=["cust-old", "cust-older"],
            ),
            profile("cust-old", version=2, orders=1),
            profile("cust-old", version=3, is_deleted=1),
            profile("cust-older", version=1, is_deleted=1),
            profile("cust-bob", version=1, orders=1, revenue=5, last_order_at=NOW),
            profile("cust-gone", version=1, orders=2),
            profile("cust-gone", version=2, is_deleted=1),  # erased
        ],
    )
    # cust-ghost merged before any profile row of its own was written.
    insert_merges(client, db, [("cust-old", ANN), ("cust-older", "cust-old"), ("cust-ghost", ANN)])
    insert_identities(
        client,
        db,
        [
            ("email", "ann@example.com", "cust-old", 1),  # before the merge …
            ("email", "ann@example.com", ANN, 2),  # … and after: the newest version wins
            ("phone", "+14155552671", ANN, 1),
            ("user_id", "U-1", ANN, 1),
            ("anonymous_id", "anon-0", "cust-older", 1),  # never rewritten: merges followed
            ("loyalty_card", "LC-9", ANN, 1),
            ("email", "bob@example.com", "cust-bob", 1),
            ("email", "gone@example.com", "cust-gone", 1),
        ],
    )
    t = NOW - timedelta(days=10)
    rows = [
        event("e1", "cust-older", t, "Page Viewed", kind="page"),
        event("e2", "cust-old", t + timedelta(minutes=1), "Product Viewed"),
        event("e3", ANN, t + timedelta(minutes=2), "Order Completed",
              properties={"order_id": "o1", "revenue": 40}),
        event("e4", ANN, t + timedelta(minutes=3), "Page Viewed", kind="page"),
        event("e5", "cust-old", t + timedelta(minutes=4), "Cart Viewed"),
        event("b1", "cust-bob", t + timedelta(minutes=5), "Page Viewed", kind="page"),
    ]  # fmt: skip
    insert_events(client, db, rows)
    insert_events(client, db, rows[2:4])  # a batch re-inserted after a crash


Call = Callable[[TestClient[Any, Any]], Awaitable[None]]


def _serve(client: Client, db: str, body: Call, registry: CollectorRegistry | None = None) -> None:
    settings = load_settings(
        clickhouse_database=db, api_token=TOKEN, identity_custom_types="loyalty_card"
    )
    app = build_api(
        settings,
        client=client,
        registry=registry or CollectorRegistry(),
        health=lambda: {"ok": True},
    )

    async def run() -> None:
        async with TestClient(TestServer(app)) as http:
            await asyncio.wait_for(body(http), timeout=30)

    asyncio.run(run())


@pytest.fixture(scope="module")
def store(chdb_path: Path) -> Iterator[tuple[Client, str]]:
    """One filled database for the module: the tests only read (migrating per test is slow)."""
    client = connect(f"chdb://{chdb_path}")
    db = f"test_api_{uuid.uuid4().hex[:10]}"
    client.command(f"CREATE DATABASE {db}")
    try:
        setup_schema(client, db)
        _fill(client, db)
        refresh_scores(client, db)
        yield client, db
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")


async def _json(response: ClientResponse, status: int) -> Any:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


def test_auth_is_required_except_on_public_paths(store: tuple[Client, str]) -> None:
    async def body(http: TestClient[Any, Any]) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await http.get(f"/v1/profiles/{ANN}", headers=headers)
            error = await _json(response, 401)
            assert "bearer" in error["error"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        await _json(await http.get("/v1/profiles?email=ann@example.com"), 401)
        await _json(await http.get(f"/v1/profiles/{ANN}/events"), 401)
        spec = await _json(await http.get("/openapi.json"), 200)
        assert spec["openapi"].startswith("3.")
        assert set(spec["paths"]) == {
            "/v1/profiles",
            "/v1/profiles/{customer_id}",
            "/v1/profiles/{customer_id}/events",
        }
        lookup = {p["name"] for p in spec["paths"]["/v1/profiles"]["get"]["parameters"]}
        assert lookup == {"user_id", "email", "phone", "loyalty_card", "anonymous_id"}
        assert (await http.get("/healthz")).status == 200

    _serve(*store, body)


def test_profile_by_id_has_the_documented_shape(store: tuple[Client, str]) -> None:
    client, db = store

    async def body(http: TestClient[Any, Any]) -> None:
        got = await _json(await http.get(f"/v1/profiles/{ANN}", headers=AUTH), 200)
        assert got["customer_id"] == ANN
        assert got["identities"]["email"] == ["ann@example.com"]
        assert got["identities"]["anonymous_id"] == ["anon-1", "anon-0"]
        assert got["traits"] == {"name": "Ann", "city": "Berlin"}
        assert got["merged_from"] == ["cust-old", "cust-older"]
        stats = got["stats"]
        assert (stats["orders"], stats["revenue"], stats["events"]) == (3, 120.5, 9)
        assert stats["last_order_at"] == (NOW - timedelta(days=2)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"
        )
        assert stats["first_touch"]["channel"] == "search"
        assert stats["first_touch"]["utm_source"] == "google"
        assert stats["last_pages"][0]["path"] == "/cart"
        scores = got["scores"]
        assert set(scores) >= {"rfm", "abc", "xyz", "ltv"}
        # Two buyers: Bob ordered today, so Ann ranks last on recency (R 1) and first on
        # frequency and money (rank 2 of 2: 1 + 5 * 1 // 2 = 3).
        rfm = scores["rfm"]
        assert (rfm["recency_days"], rfm["frequency"], rfm["monetary"]) == (2, 3, 120.5)
        assert (rfm["r"], rfm["f"], rfm["m"], rfm["cell"]) == (1, 3, 3, "133")
        assert rfm["segment"] == "At Risk"
        assert scores["abc"]["class"] == "A"  # 120.5 of 125.5
        assert scores["xyz"]["class"] in {"X", "Y", "Z"}  # one order in the window: Z
        assert scores["ltv"]["historical"] == 120.5
        assert scores["ltv"]["predicted"] > 120.5

    _serve(client, db, body)


def test_scores_are_null_before_the_first_refresh(clickhouse: tuple[Client, str]) -> None:
    client, db = clickhouse
    setup_schema(client, db)
    _fill(client, db)

    async def body(http: TestClient[Any, Any]) -> None:
        got = await _json(await http.get("/v1/profiles/cust-bob", headers=AUTH), 200)
        assert got["scores"]["rfm"] is None and got["scores"]["ltv"] is None

    _serve(client, db, body)


@pytest.mark.parametrize("merged_id", ["cust-old", "cust-older", "cust-ghost"])
def test_a_merged_id_answers_the_survivor(store: tuple[Client, str], merged_id: str) -> None:
    async def body(http: TestClient[Any, Any]) -> None:
        got = await _json(await http.get(f"/v1/profiles/{merged_id}", headers=AUTH), 200)
        assert got["customer_id"] == ANN
        assert got["merged_from"] == ["cust-old", "cust-older"]  # as the profile row says

    _serve(*store, body)


@pytest.mark.parametrize(
    "query",
    [
        "email=ann@example.com",
        "email=%20ANN@Example.COM%20",
        "email=Ann%40EXAMPLE.com",
        "phone=%2B14155552671",
        "phone=(415)%20555-2671",
        "phone=%2B1%20415-555-2671",
        "phone=415.555.2671",
        "user_id=U-1",
        "user_id=%20U-1",
        "anonymous_id=anon-0",  # still names cust-older: two merge hops to Ann
        "loyalty_card=LC-9",  # a configured custom type
    ],
)
def test_lookup_by_identifier_normalizes_and_follows_merges(
    store: tuple[Client, str], query: str
) -> None:
    async def body(http: TestClient[Any, Any]) -> None:
        got = await _json(await http.get(f"/v1/profiles?{query}", headers=AUTH), 200)
        assert got["customer_id"] == ANN

    _serve(*store, body)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v1/profiles/cust-nobody", 404),
        ("/v1/profiles/cust-gone", 404),  # erased
        ("/v1/profiles?email=nobody@example.com", 404),
        ("/v1/profiles?email=gone@example.com", 404),
        ("/v1/profiles/cust-nobody/events", 404),
        ("/v1/profiles/cust-gone/events", 404),
        ("/v1/nothing", 404),
        ("/v1/profiles?email=not-an-email", 400),
        ("/v1/profiles?email=a@b.com&phone=%2B14155552671", 400),
        ("/v1/profiles?fax=123", 400),
        ("/v1/profiles", 400),
        ("/v1/profiles?user_id=null", 400),
        ("/v1/profiles/bad%20id", 400),
        (f"/v1/profiles/{ANN}/events?limit=0", 400),
        (f"/v1/profiles/{ANN}/events?limit=1001", 400),
        (f"/v1/profiles/{ANN}/events?limit=ten", 400),
    ],
)
def test_errors_are_json(store: tuple[Client, str], path: str, status: int) -> None:
    async def body(http: TestClient[Any, Any]) -> None:
        error = await _json(await http.get(path, headers=AUTH), status)
        assert error["error"]

    _serve(*store, body)


def test_timeline_is_newest_first_with_merged_customers_and_no_duplicates(
    store: tuple[Client, str],
) -> None:
    async def body(http: TestClient[Any, Any]) -> None:
        got = await _json(await http.get(f"/v1/profiles/{ANN}/events", headers=AUTH), 200)
        assert got["customer_id"] == ANN
        assert set(got["customer_ids"]) == {ANN, "cust-old", "cust-older"}
        assert got["limit"] == 50
        ids = [e["event_id"] for e in got["events"]]
        assert ids == ["e5", "e4", "e3", "e2", "e1"]  # b1 is Bob's; e3/e4 once each
        times = [e["timestamp"] for e in got["events"]]
        assert times == sorted(times, reverse=True)
        assert got["events"][2]["properties"] == {"order_id": "o1", "revenue": 40}
        assert got["events"][0]["customer_id"] == "cust-old"  # stored under the loser

        # Through a merged id, and bounded by limit.
        page = await _json(
            await http.get("/v1/profiles/cust-older/events?limit=2", headers=AUTH), 200
        )
        assert [e["event_id"] for e in page["events"]] == ["e5", "e4"]

    _serve(*store, body)


def test_a_failing_store_answers_503_json(clickhouse: tuple[Client, str]) -> None:
    client, db = clickhouse  # no migrations: every table is missing

    async def body(http: TestClient[Any, Any]) -> None:
        error = await _json(await http.get(f"/v1/profiles/{ANN}", headers=AUTH), 503)
        assert "unavailable" in error["error"]
        assert "Exception" not in error["error"]  # no driver details leak

    _serve(client, db, body)


def test_requests_are_counted_by_route(store: tuple[Client, str]) -> None:
    registry = CollectorRegistry()

    async def body(http: TestClient[Any, Any]) -> None:
        await http.get(f"/v1/profiles/{ANN}", headers=AUTH)
        await http.get("/v1/profiles/cust-nobody", headers=AUTH)
        await http.get(f"/v1/profiles/{ANN}")
        metrics = await (await http.get("/metrics")).text()
        assert 'cdp_api_requests_total{route="/v1/profiles/{customer_id}",status="200"} 1.0' in (
            metrics
        )
        assert 'route="/v1/profiles/{customer_id}",status="404"} 1.0' in metrics
        assert 'route="/v1/profiles/{customer_id}",status="401"} 1.0' in metrics

    _serve(*store, body, registry)


def test_build_api_keeps_the_worker_signature() -> None:
    app = build_api(
        load_settings(),
        client=object(),
        registry=CollectorRegistry(),
        health=lambda: {"ok": True},
    )
    assert isinstance(app, web.Application)
