"""The analytics views on the real engine against an independent Python computation.

One synthetic shop (seeded random profiles and order events, with the awkward cases: ties,
older profile versions, erased customers, merged customers still holding a live row, a merge
chain, resent orders, re-inserted events, bots, refunds below zero) goes into chDB; each view
is then recomputed here in plain Python from the documented rules and compared row by row.
"""

from __future__ import annotations

import math
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from pipeline.storage.clickhouse import connect
from tests.integration.api_support import (
    event,
    insert_events,
    insert_merges,
    insert_profiles,
    profile,
    refresh_scores,
    setup_schema,
)

CHANNELS = ("search", "social", "email", "direct", "")


@dataclass
class Shop:
    now: datetime
    live: dict[str, dict[str, Any]]  # the latest live profile rows, by customer
    survivor_of: dict[str, str]  # every merged id → its final survivor
    orders: list[dict[str, Any]]  # Order Completed events as inserted (duplicates included)


def _build_shop(client: Client, db: str) -> Shop:
    rng = random.Random(20240601)
    now = datetime.now(UTC).replace(microsecond=0)
    rows: list[dict[str, Any]] = []
    live: dict[str, dict[str, Any]] = {}
    for i in range(60):
        cid = f"cust-{i:03d}"
        orders = 0 if i % 10 == 0 else rng.choice((1, 1, 1, 2, 3, 5, 8))
        revenue = Decimal(rng.choice((10, 25, 25, 40, 99, 250))) * orders
        if i == 7:
            revenue = Decimal("-15.5")  # refunded more than bought (another currency's order)
        last_days = rng.randrange(0, 700)
        values: dict[str, Any] = {
            "orders": orders,
            "revenue": revenue,
            "avg_order_value": (revenue / orders).quantize(Decimal("0.0001")) if orders else 0,
            "first_touch_channel": CHANNELS[i % len(CHANNELS)],
            "version": 5,
        }
        if orders:
            values["last_order_at"] = now - timedelta(days=last_days, hours=rng.randrange(24))
            values["first_order_at"] = values["last_order_at"] - timedelta(
                days=rng.randrange(0, 900)
            )
        row = profile(cid, **values)
        rows.append(row)
        live[cid] = row
        # An older version with other figures: must not count.
        rows.append(profile(cid, orders=99, revenue=Decimal(99999), version=1))
    # Erased: the newest version is a deletion.
    rows.append(profile("cust-erased", orders=4, revenue=Decimal(500), version=1))
    rows.append(profile("cust-erased", orders=4, revenue=Decimal(500), version=2, is_deleted=1))
    # Merged away, but its last live row is still there (the deletion not written yet).
    rows.append(profile("cust-loser", orders=2, revenue=Decimal(80), version=3))
    insert_profiles(client, db, rows)
    # A chain: cust-old2 → cust-loser → cust-001.
    insert_merges(client, db, [("cust-loser", "cust-001"), ("cust-old2", "cust-loser")])
    survivor_of = {"cust-loser": "cust-001", "cust-old2": "cust-001"}

    orders_in: list[dict[str, Any]] = []
    today = now.date()
    owners = [*sorted(live), "cust-loser", "cust-old2", "cust-erased"]
    for n in range(400):
        owner = rng.choice(owners)
        at = now - timedelta(days=rng.randrange(0, 420), minutes=rng.randrange(1440))
        kind = rng.random()
        props: dict[str, Any] = {"revenue": rng.choice((10, 19.99, "30.5", 100))}
        if kind < 0.8:
            props["order_id"] = f"o-{n}" if rng.random() < 0.9 else n  # numeric ids too
        orders_in.append(
            {
                "event_id": f"ev-{n}",
                "customer_id": owner,
                "at": at,
                "name": rng.choice(("Order Completed", "Order Completed", "order completed")),
                "props": props,
                "is_bot": rng.random() < 0.05,
            }
        )
    # A resent order (same order_id, later, another event id) and a re-inserted event.
    first = orders_in[0]
    orders_in.append({**first, "event_id": "ev-resent", "at": first["at"] + timedelta(hours=1)})
    orders_in.append(dict(orders_in[1]))
    # An order in the future (client clock skew) stays out of the XYZ window.
    orders_in.append(
        {
            "event_id": "ev-future",
            "customer_id": "cust-001",
            "at": datetime.combine(today + timedelta(days=40), datetime.min.time(), UTC),
            "name": "Order Completed",
            "props": {"order_id": "o-future", "revenue": 5},
            "is_bot": False,
        }
    )
    rows_ev = [
        event(o["event_id"], o["customer_id"], o["at"], o["name"], properties=o["props"],
              is_bot=o["is_bot"])
        for o in orders_in
    ]  # fmt: skip
    # Other events do not count as orders.
    rows_ev.append(event("ev-page", "cust-001", now, "Page Viewed", kind="page"))
    rows_ev.append(event("ev-refund", "cust-001", now, "Order Refunded", properties={"x": 1}))
    insert_events(client, db, rows_ev)
    return Shop(now=now, live=live, survivor_of=survivor_of, orders=orders_in)


@pytest.fixture(scope="module")
def shop(chdb_path: Path) -> Iterator[tuple[Client, str, Shop]]:
    """One shop for the module's read-only tests (migrating per test is slow)."""
    client = connect(f"chdb://{chdb_path}")
    db = f"test_views_{uuid.uuid4().hex[:10]}"
    client.command(f"CREATE DATABASE {db}")
    try:
        setup_schema(client, db)
        yield client, db, _build_shop(client, db)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db}")


def _query(client: Client, sql: str) -> list[dict[str, Any]]:
    result = client.query(sql)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def _as_of(rows: list[dict[str, Any]]) -> date:
    days: set[date] = {row["as_of"] for row in rows}
    assert len(days) == 1
    return days.pop()


def _recency(last: datetime, as_of: date) -> int:
    return max((as_of - last.astimezone(UTC).date()).days, 0)


# --- RFM ------------------------------------------------------------------------------------


def _quintile(rank: int, n: int) -> int:
    return 1 + (5 * (rank - 1)) // n


def _segment(r: int, f: int, m: int) -> str:
    # The documented table, first match wins.
    if r >= 4 and f >= 4 and m >= 4:
        return "Champions"
    if r >= 3 and f >= 4:
        return "Loyal"
    if r >= 4 and f == 1:
        return "New"
    if r >= 3:
        return "Potential"
    if f >= 3:
        return "At Risk"
    return "Hibernating" if r == 2 else "Lost"


def expected_rfm(shop: Shop, as_of: date) -> dict[str, tuple[Any, ...]]:
    buyers = {c: p for c, p in shop.live.items() if p["orders"] >= 1}
    rec = {c: _recency(p["last_order_at"], as_of) for c, p in buyers.items()}
    freq = {c: p["orders"] for c, p in buyers.items()}
    mon = {c: p["revenue"] for c, p in buyers.items()}
    n = len(buyers)
    out = {}
    for c in buyers:
        # Tie-aware rank in ascending goodness: 1 + how many are strictly worse.
        r = _quintile(1 + sum(1 for o in buyers if rec[o] > rec[c]), n)
        f = _quintile(1 + sum(1 for o in buyers if freq[o] < freq[c]), n)
        m = _quintile(1 + sum(1 for o in buyers if mon[o] < mon[c]), n)
        out[c] = (rec[c], freq[c], mon[c], r, f, m, f"{r}{f}{m}", _segment(r, f, m))
    return out


def test_rfm_matches_an_independent_computation(shop: tuple[Client, str, Shop]) -> None:
    client, db, data = shop
    rows = _query(client, f"SELECT * FROM {db}.rfm")
    got = {
        row["customer_id"]: (
            row["recency_days"], row["frequency"], row["monetary"], row["r_score"],
            row["f_score"], row["m_score"], row["rfm_cell"], row["segment"],
        )
        for row in rows
    }  # fmt: skip
    assert got == expected_rfm(data, _as_of(rows))
    # The data is rich enough to exercise the scale and several segments.
    assert {v[3] for v in got.values()} == {1, 2, 3, 4, 5}
    assert len({v[7] for v in got.values()}) >= 4


def test_rfm_scores_equal_values_equally(shop: tuple[Client, str, Shop]) -> None:
    client, db, _ = shop
    rows = _query(client, f"SELECT frequency, groupUniqArray(f_score) AS s FROM {db}.rfm "
                          "GROUP BY frequency")  # fmt: skip
    assert all(len(row["s"]) == 1 for row in rows)


# --- ABC ------------------------------------------------------------------------------------


def test_abc_matches_an_independent_computation(shop: tuple[Client, str, Shop]) -> None:
    client, db, data = shop
    buyers = sorted(
        ((c, p["revenue"]) for c, p in data.live.items() if p["orders"] >= 1),
        key=lambda cr: (-cr[1], cr[0]),
    )
    total = sum(max(r, Decimal(0)) for _, r in buyers)
    expected: dict[str, str] = {}
    before = Decimal(0)
    for cid, revenue in buyers:
        positive = max(revenue, Decimal(0))
        if positive <= 0:
            expected[cid] = "C"
        elif before / total < Decimal("0.80"):
            expected[cid] = "A"
        elif before / total < Decimal("0.95"):
            expected[cid] = "B"
        else:
            expected[cid] = "C"
        before += positive
    rows = _query(client, f"SELECT customer_id, abc_class, cumulative_share FROM {db}.abc")
    assert {row["customer_id"]: row["abc_class"] for row in rows} == expected
    assert set(expected.values()) == {"A", "B", "C"}
    assert expected["cust-007"] == "C"  # negative net revenue


# --- orders from events (XYZ, cohorts) --------------------------------------------------------


def _order_key(o: dict[str, Any]) -> str:
    order_id = o["props"].get("order_id")
    return "event:" + o["event_id"] if order_id in (None, "") else str(order_id)


def deduplicated_orders(data: Shop) -> dict[tuple[str, str], datetime]:
    """(survivor, order key) → the time of the order's earliest report; bots and the erased out."""
    orders: dict[tuple[str, str], datetime] = {}
    for o in data.orders:
        if o["is_bot"] or o["name"].lower() != "order completed":
            continue
        owner = data.survivor_of.get(o["customer_id"], o["customer_id"])
        if owner not in data.live:
            continue
        key = (owner, _order_key(o))
        orders[key] = min(orders.get(key, o["at"]), o["at"])
    return orders


def _month(d: date) -> date:
    return d.replace(day=1)


def _months_back(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 - n
    return date(index // 12, index % 12 + 1, 1)


def test_xyz_matches_an_independent_computation(shop: tuple[Client, str, Shop]) -> None:
    client, db, data = shop
    rows = _query(client, f"SELECT * FROM {db}.xyz")
    as_of = _as_of(rows)
    window = {_months_back(_month(as_of), k) for k in range(12)}
    per_month: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for (owner, _), at in deduplicated_orders(data).items():
        day = at.astimezone(UTC).date()
        if _month(day) in window and day <= as_of:
            per_month[owner][_month(day)] += 1
    expected = {}
    for owner, counts in per_month.items():
        series = [counts.get(m, 0) for m in sorted(window)]
        mean = Fraction(sum(series), 12)
        variance = sum((Fraction(c) - mean) ** 2 for c in series) / 12
        cv_squared = variance / mean**2
        cls = "X" if cv_squared <= Fraction(1, 4) else "Y" if cv_squared <= 1 else "Z"
        expected[owner] = (sum(series), cls, math.sqrt(cv_squared))
    got = {row["customer_id"]: row for row in rows}
    assert got.keys() == expected.keys()
    for owner, (count, cls, cv) in expected.items():
        row = got[owner]
        assert (row["orders_in_window"], row["xyz_class"]) == (count, cls), owner
        assert row["cv_orders"] == pytest.approx(cv, rel=1e-9)
    assert "cust-001" in got  # the merged customers' orders are the survivor's


def test_xyz_classes_on_exact_boundaries(clickhouse: tuple[Client, str]) -> None:
    client, db = clickhouse
    setup_schema(client, db)
    today = client.query("SELECT toDate(now(), 'UTC')").result_rows[0][0]
    this_month = _month(today)
    customers = ("steady", "edge", "half", "once")
    insert_profiles(client, db, [profile(c, orders=1) for c in customers])
    rows = []
    for k in range(12):  # 3, 1, 3, 1 … orders a month: cv exactly 0.5 → X, not Y
        day = datetime.combine(_months_back(this_month, k), datetime.min.time(), UTC)
        for j in range(3 if k % 2 else 1):
            rows.append(event(f"e{k}-{j}", "edge", day, "Order Completed"))
    for k in range(12):  # one order every month: cv 0
        day = datetime.combine(_months_back(this_month, k), datetime.min.time(), UTC)
        rows.append(event(f"s{k}", "steady", day, "Order Completed", properties={"order_id": k}))
    for k in range(0, 12, 2):  # every other month: cv exactly 1.0 → Y, not Z
        day = datetime.combine(_months_back(this_month, k), datetime.min.time(), UTC)
        rows.append(event(f"h{k}", "half", day, "Order Completed", properties={"order_id": k}))
    rows.append(event("o1", "once", datetime.combine(this_month, datetime.min.time(), UTC),
                      "Order Completed"))  # fmt: skip
    insert_events(client, db, rows)
    got = {
        row["customer_id"]: (row["xyz_class"], row["cv_orders"])
        for row in _query(client, f"SELECT * FROM {db}.xyz")
    }
    assert got["steady"] == ("X", 0.0)
    assert got["edge"] == ("X", 0.5)
    assert got["half"] == ("Y", 1.0)
    assert got["once"][0] == "Z"


# --- cohorts ----------------------------------------------------------------------------------


def test_cohort_retention_matches_an_independent_computation(
    shop: tuple[Client, str, Shop],
) -> None:
    client, db, data = shop
    active: dict[str, set[date]] = defaultdict(set)
    for (owner, _), at in deduplicated_orders(data).items():
        active[owner].add(_month(at.astimezone(UTC).date()))
    cohort = {owner: min(months) for owner, months in active.items()}
    size: dict[date, int] = defaultdict(int)
    for first in cohort.values():
        size[first] += 1
    counts: dict[tuple[date, int], int] = defaultdict(int)
    for owner, months in active.items():
        first = cohort[owner]
        for m in months:
            offset = (m.year - first.year) * 12 + m.month - first.month
            counts[(first, offset)] += 1
    expected = {key: (size[key[0]], n, round(n / size[key[0]], 4)) for key, n in counts.items()}
    rows = _query(client, f"SELECT * FROM {db}.cohort_retention")
    got = {
        (row["cohort_month"], row["months_since_first"]): (
            row["cohort_size"], row["active_customers"], row["retention"],
        )
        for row in rows
    }  # fmt: skip
    assert got == expected
    assert all(v[2] == 1.0 for (_, offset), v in got.items() if offset == 0)


# --- channels and LTV ---------------------------------------------------------------------------


def test_channel_performance_matches_an_independent_computation(
    shop: tuple[Client, str, Shop],
) -> None:
    client, db, data = shop
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in data.live.values():
        groups[p["first_touch_channel"] or "unknown"].append(p)
    expected = {}
    for channel, members in groups.items():
        orders = sum(p["orders"] for p in members)
        revenue = sum((p["revenue"] for p in members), Decimal(0))
        buyers = sum(1 for p in members if p["orders"] > 0)
        expected[channel] = (
            len(members), buyers, orders, revenue, round(buyers / len(members), 4),
            round(float(revenue) / orders, 2) if orders else 0,
            round(float(revenue) / len(members), 2),
        )  # fmt: skip
    rows = _query(client, f"SELECT * FROM {db}.channel_performance")
    got = {
        row["channel"]: (
            row["customers"], row["buyers"], row["orders"], row["revenue"], row["conversion"],
            row["avg_order_value"], row["revenue_per_customer"],
        )
        for row in rows
    }  # fmt: skip
    assert got == expected
    assert [row["revenue"] for row in rows] == sorted((r["revenue"] for r in rows), reverse=True)


def test_ltv_matches_the_documented_model(shop: tuple[Client, str, Shop]) -> None:
    client, db, data = shop
    rows = _query(client, f"SELECT * FROM {db}.customer_ltv")
    as_of = _as_of(rows)
    got = {row["customer_id"]: row for row in rows}
    assert got.keys() == data.live.keys()
    for cid, p in data.live.items():
        row = got[cid]
        assert row["historical_ltv"] == p["revenue"]
        if not p["orders"]:
            assert row["predicted_ltv"] == pytest.approx(float(p["revenue"]))
            continue
        tenure = _recency(p["first_order_at"], as_of)
        recency = _recency(p["last_order_at"], as_of)
        per_year = p["orders"] * 365 / max(tenure, 365)
        years = 3 if recency <= 365 else 0
        future = float(p["avg_order_value"]) * per_year * years
        assert row["orders_per_year"] == pytest.approx(per_year)
        assert row["expected_remaining_years"] == years
        assert row["predicted_ltv"] == pytest.approx(float(p["revenue"]) + future, abs=0.011)


def test_scores_table_is_the_views_joined(shop: tuple[Client, str, Shop]) -> None:
    client, db, data = shop
    refresh_scores(client, db)
    scores = {r["customer_id"]: r for r in _query(client, f"SELECT * FROM {db}.customer_scores")}
    assert scores.keys() == data.live.keys()
    rfm = {r["customer_id"]: r for r in _query(client, f"SELECT * FROM {db}.rfm")}
    abc = {r["customer_id"]: r for r in _query(client, f"SELECT * FROM {db}.abc")}
    xyz = {r["customer_id"]: r for r in _query(client, f"SELECT * FROM {db}.xyz")}
    for cid, row in scores.items():
        assert row["rfm_segment"] == (rfm[cid]["segment"] if cid in rfm else None)
        assert row["r_score"] == (rfm[cid]["r_score"] if cid in rfm else None)
        assert row["abc_class"] == (abc[cid]["abc_class"] if cid in abc else None)
        assert row["xyz_class"] == (xyz[cid]["xyz_class"] if cid in xyz else None)
    assert scores["cust-000"]["rfm_segment"] is None  # no orders
