"""List-in / list-out tests of the profile aggregation, one stat at a time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.profile import (
    PROFILE_COLUMNS,
    ProfileState,
    apply,
    apply_all,
    from_bytes,
    merge,
    profile_json,
    profile_row,
    to_bytes,
)
from pipeline.profile.state import (
    DEDUP_WINDOW,
    LAST_PAGES,
    MAX_IDS_PER_TYPE,
    MAX_ORDERS,
    MAX_SESSION_SPANS,
    MAX_TRAITS,
)

MIN = 60_000
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
_ids = itertools.count()


def event(
    kind: str = "track",
    name: str | None = None,
    *,
    at: int = 0,
    props: dict[str, Any] | None = None,
    traits: dict[str, Any] | None = None,
    event_id: str | None = None,
    channel: str = "direct",
    utm_source: str | None = None,
    is_bot: bool = False,
    consent: list[str] | None = None,
    path: str | None = None,
    identifiers: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """An event shaped like schemas/avro/event.avsc (plus customer_id), at T0 + ``at`` ms."""
    return {
        "event_id": event_id or f"ev-{next(_ids)}",
        "customer_id": "cust-1",
        "type": kind,
        "event": name,
        "anonymous_id": "anon-1",
        "user_id": None,
        "identifiers": identifiers or [{"type": "anonymous_id", "value": "anon-1"}],
        "timestamp": T0 + at,
        "received_at": T0 + at,
        "source": "web",
        "properties": orjson.dumps(props or {}).decode(),
        "traits": orjson.dumps(traits or {}).decode(),
        "context": {
            "page_path": path,
            "page_title": None,
            "referrer": None,
            "utm_source": utm_source,
        },
        "enrichment": {
            "device_type": "desktop",
            "browser": "Chrome",
            "os": "macOS",
            "is_bot": is_bot,
            "channel": channel,
        },
        "consent": consent or [],
    }


def page(at: int, **kw: Any) -> dict[str, Any]:
    return event("page", "Page", at=at, **kw)


def order(order_id: str, at: int = 0, **props: Any) -> dict[str, Any]:
    return event("track", "Order Completed", at=at, props={"order_id": order_id, **props})


def refund(order_id: str, at: int = 0, **props: Any) -> dict[str, Any]:
    return event("track", "Order Refunded", at=at, props={"order_id": order_id, **props})


def stats(events: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    stats: dict[str, Any] = profile_json("c", apply_all(events, **kw), merged_from=[])["stats"]
    return stats


# --- sessions ------------------------------------------------------------------------------


def test_sessions_split_on_more_than_30_minutes_of_inactivity() -> None:
    # 0, 10, 40 (30 min after 10: same session), then 71 (31 min gap: new session), 75.
    s = stats([page(0), page(10 * MIN), page(40 * MIN), page(71 * MIN), page(75 * MIN)])
    assert s["sessions"] == 2
    assert s["time_on_site_s"] == 40 * 60 + 4 * 60


def test_single_event_session_has_zero_duration() -> None:
    s = stats([page(0), page(2 * 60 * MIN)])
    assert (s["sessions"], s["time_on_site_s"]) == (2, 0)


def test_late_event_bridges_two_sessions() -> None:
    events = [page(0), page(50 * MIN), page(25 * MIN)]
    assert stats(events)["sessions"] == 1
    assert stats(events)["time_on_site_s"] == 50 * 60


def test_email_opens_do_not_create_sessions_or_touches() -> None:
    s = stats([event("track", "Email Opened", at=0), event("track", "Email Link Clicked", at=MIN)])
    assert (s["email_opens"], s["email_clicks"], s["sessions"]) == (1, 1, 0)
    assert s["first_touch"] is None
    assert s["events"] == 2


def test_identify_is_not_activity() -> None:
    s = stats([event("identify", traits={"name": "Ann"})])
    assert (s["events"], s["sessions"], s["page_views"]) == (1, 0, 0)
    assert s["first_seen"] == s["last_seen"] == "2023-11-14T22:13:20.000Z"


def test_sessions_beyond_the_bound_are_folded_and_still_counted() -> None:
    n = MAX_SESSION_SPANS + 50
    events = [e for i in range(n) for e in (page(i * 60 * MIN), page(i * 60 * MIN + 5 * MIN))]
    state = apply_all(events)
    assert len(state.spans) == MAX_SESSION_SPANS
    s = profile_json("c", state, merged_from=[])["stats"]
    assert (s["sessions"], s["time_on_site_s"]) == (n, n * 5 * 60)


# --- orders, refunds, revenue --------------------------------------------------------------


def test_order_resent_counts_once() -> None:
    events = [
        order("o1", 0, revenue=10),
        order("o1", 5 * MIN, revenue=10),  # a resend with a new messageId
        order("o2", 60 * MIN, revenue=30),
    ]
    s = stats(events)
    assert (s["orders"], s["revenue"], s["avg_order_value"]) == (2, 40.0, 20.0)
    assert s["first_order_at"] == "2023-11-14T22:13:20.000Z"
    assert s["last_order_at"] == "2023-11-14T23:13:20.000Z"


def test_revenue_falls_back_to_total_then_products() -> None:
    products = [
        {"product_id": "p1", "price": 2.5, "quantity": 2, "category": "Books"},
        {"sku": "s9", "price": "1.25", "category": "Books"},
    ]
    s = stats([order("o1", total=7), order("o2", products=products), order("o3")])
    assert (s["orders"], s["revenue"]) == (3, 7 + 6.25)
    assert s["products"] == {"p1": 2, "s9": 1}
    assert s["categories"] == {"Books": 3}


def test_absurd_amounts_are_ignored() -> None:
    s = stats([order("o1", revenue="1e999999999", total=3), order("o2", revenue=float("nan"))])
    assert (s["orders"], s["revenue"]) == (2, 3.0)


def test_money_sums_are_exact_decimals() -> None:
    s = stats([order(f"o{i}", revenue=0.1) for i in range(3)])
    assert s["revenue"] == 0.3  # not 0.30000000000000004


def test_full_refund_subtracts_order_revenue_and_counts_once() -> None:
    events = [order("o1", 0, revenue=50), order("o2", MIN, revenue=20), refund("o1", 2 * MIN)]
    s = stats([*events, refund("o1", 3 * MIN)])
    assert (s["orders"], s["refunds"], s["revenue"], s["gross_revenue"]) == (2, 1, 20.0, 70.0)
    assert s["refunded_amount"] == 50.0


def test_partial_refund_before_its_order_arrives() -> None:
    s = stats([refund("o1", 5 * MIN, total=15), order("o1", 0, revenue=40)])
    assert (s["revenue"], s["refunds"]) == (25.0, 1)


def test_currency_is_carried() -> None:
    s = stats(
        [order("o1", 0, revenue=10, currency="usd"), order("o2", MIN, revenue=900, currency="RUB")]
    )
    assert s["currency"] == "RUB"  # the latest order's
    assert s["revenue"] == 900.0
    assert s["revenue_by_currency"] == {"RUB": 900.0, "USD": 10.0}


def test_orders_beyond_the_bound_are_folded_into_totals() -> None:
    n = MAX_ORDERS + 10
    state = apply_all([order(f"o{i}", i * MIN, revenue=1) for i in range(n)])
    assert len(state.orders) == MAX_ORDERS
    s = profile_json("c", state, merged_from=[])["stats"]
    assert (s["orders"], s["revenue"]) == (n, float(n))
    assert s["first_order_at"] == "2023-11-14T22:13:20.000Z"


def test_cart_adds_checkouts_and_product_views() -> None:
    names = ["Product Added", "Product Added", "Checkout Started", "Product Viewed"]
    s = stats([event("track", n, at=i * MIN) for i, n in enumerate(names)])
    assert (s["cart_adds"], s["checkouts"], s["product_views"]) == (2, 1, 1)


# --- traits, identities, consent -----------------------------------------------------------


def test_traits_last_write_wins_by_event_time_not_arrival() -> None:
    late_old = event("identify", at=0, traits={"city": "Paris", "name": "Ann"})
    newer = event("identify", at=10 * MIN, traits={"city": "Berlin"})
    profile = profile_json("c", apply_all([newer, late_old]), merged_from=[])
    assert profile["traits"] == {"city": "Berlin", "name": "Ann"}
    assert profile["traits_updated_at"]["city"] == "2023-11-14T22:23:20.000Z"


def test_trait_ties_break_by_event_id() -> None:
    a = event("identify", at=0, traits={"plan": "a"}, event_id="id-a")
    b = event("identify", at=0, traits={"plan": "b"}, event_id="id-b")
    for events in ([a, b], [b, a]):
        assert profile_json("c", apply_all(events), merged_from=[])["traits"] == {"plan": "b"}


def test_identities_by_type_most_recent_first() -> None:
    events = [
        event("identify", at=0, identifiers=[{"type": "email", "value": "a@x.io"}]),
        event("identify", at=MIN, identifiers=[{"type": "email", "value": "b@x.io"}]),
        event("identify", at=2 * MIN, identifiers=[{"type": "user_id", "value": "u1"}]),
    ]
    ids = profile_json("c", apply_all(events), merged_from=[])["identities"]
    assert ids == {"email": ["b@x.io", "a@x.io"], "user_id": ["u1"]}


def test_traits_and_identities_beyond_their_bounds_keep_the_newest_in_any_order() -> None:
    n = max(MAX_TRAITS, MAX_IDS_PER_TYPE) + 40
    events = [
        event(
            "identify",
            at=(i // 2) * MIN,  # pairs share a time: the tie-break must not depend on arrival
            traits={f"t{i:03d}": i},
            identifiers=[{"type": "anonymous_id", "value": f"a{i:03d}"}],
            event_id=f"id-{i:03d}",
        )
        for i in range(n)
    ]
    forward, backward = apply_all(events), apply_all(reversed(events))
    assert forward == backward
    assert sorted(forward.traits) == [f"t{i:03d}" for i in range(n - MAX_TRAITS, n)]
    assert sorted(forward.ids["anonymous_id"]) == [
        f"a{i:03d}" for i in range(n - MAX_IDS_PER_TYPE, n)
    ]
    halves = merge(apply_all(events[::2]), apply_all(events[1::2]))
    assert halves == forward


def test_consent_latest_by_event_time() -> None:
    events = [page(10 * MIN, consent=["analytics"]), page(0, consent=["analytics", "marketing"])]
    s = stats([*events, page(20 * MIN)])  # no consent stated: keeps the last stated one
    assert s["consent"] == {"categories": ["analytics"], "updated_at": "2023-11-14T22:23:20.000Z"}


# --- channels, devices, pages --------------------------------------------------------------


def test_first_and_last_touch_by_event_time() -> None:
    events = [
        page(60 * MIN, channel="social", utm_source="fb"),
        page(90 * MIN),  # direct: not an attributed touch
        page(0, channel="search"),  # arrives late but is the first touch
        page(30 * MIN, channel="email", utm_source="newsletter"),
    ]
    s = stats(events)
    assert (s["first_touch"]["channel"], s["first_touch"]["at"]) == (
        "search",
        "2023-11-14T22:13:20.000Z",
    )
    assert (s["last_touch"]["channel"], s["last_touch"]["utm_source"]) == ("social", "fb")


def test_last_touch_falls_back_to_first_when_only_direct() -> None:
    s = stats([page(0), page(MIN)])
    assert s["last_touch"] == s["first_touch"]
    assert s["last_touch"]["channel"] == "direct"


def test_devices_browsers_os_and_last_pages() -> None:
    events = [page(i * MIN, path=f"/p{i}") for i in range(LAST_PAGES + 5)]
    s = stats(list(reversed(events)))
    assert s["devices"] == {"desktop": LAST_PAGES + 5}
    assert (s["browsers"], s["os"]) == ({"Chrome": LAST_PAGES + 5}, {"macOS": LAST_PAGES + 5})
    assert [p["path"] for p in s["last_pages"]] == [f"/p{i}" for i in range(LAST_PAGES + 4, 4, -1)]


# --- engagement ----------------------------------------------------------------------------


def test_nps_classes_and_last_score() -> None:
    scores: list[Any] = [10, 9, 8, 7, 6, 0, "8", 11, None, "x"]
    events = [
        event("track", "NPS Answered", at=i * MIN, props={"score": v}) for i, v in enumerate(scores)
    ]
    events.append(event("track", "Survey Answered", at=-MIN, props={"score": 3}))
    s = stats(events)
    assert (s["nps_promoters"], s["nps_passives"], s["nps_detractors"]) == (2, 3, 3)
    assert s["nps_last_score"] == 8


def test_forms_reviews_app_opens_and_subscriptions() -> None:
    events = [
        event("track", "Form Submitted", at=0),
        event("track", "Product Reviewed", at=0),
        event("track", "Application Opened", at=0),
        event("track", "Subscribed", at=0, props={"list": "news"}),
        event("track", "Unsubscribed", at=MIN, props={"list": "news"}),
        event("track", "Subscription Started", at=0, props={"plan": "pro"}),
    ]
    s = stats(events)
    assert (s["form_submits"], s["reviews"], s["app_opens"]) == (1, 1, 1)
    assert {k: v["active"] for k, v in s["subscriptions"].items()} == {"news": False, "pro": True}


# --- duplicates, bots, time formats --------------------------------------------------------


def test_duplicate_event_ids_count_once() -> None:
    first = order("o1", 0, revenue=5)
    resent = {**first, "timestamp": first["timestamp"] + 1500}  # retried: skew correction moved it
    s = stats([first, page(MIN), resent, first])
    assert (s["events"], s["orders"], s["revenue"]) == (2, 1, 5.0)


def test_duplicates_older_than_the_window_are_counted_again() -> None:
    old = page(0)
    events = [old, *(page((i + 1) * MIN) for i in range(DEDUP_WINDOW)), old]
    assert stats(events)["page_views"] == DEDUP_WINDOW + 2  # documented approximation


def test_bot_events_are_excluded_but_counted() -> None:
    events = [page(0, is_bot=True), page(MIN, is_bot=True), page(2 * MIN)]
    s = stats(events)
    assert (s["bot_events"], s["events"], s["page_views"]) == (2, 1, 1)
    included = stats(events, include_bots=True)
    assert (included["bot_events"], included["events"]) == (0, 3)


def test_timestamp_may_be_a_datetime() -> None:
    aware = {**page(0), "timestamp": datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)}
    naive = {**page(0), "timestamp": datetime(2023, 11, 14, 22, 13, 21)}
    s = stats([aware, naive])
    assert (s["first_seen"], s["last_seen"]) == (
        "2023-11-14T22:13:20.123Z",
        "2023-11-14T22:13:21.000Z",
    )


def test_broken_json_fields_are_ignored() -> None:
    e = {**event("track", "Order Completed"), "properties": "{not json", "traits": "[1]"}
    s = stats([e])
    assert (s["events"], s["orders"], s["revenue"]) == (1, 1, 0.0)


# --- merge and serialisation ---------------------------------------------------------------


def test_identity_merge_folds_loser_into_survivor_including_later_events() -> None:
    survivor_events = [page(0, path="/a"), order("o1", MIN, revenue=10)]
    loser_events = [page(10 * MIN, channel="paid"), order("o1", 12 * MIN, revenue=10)]
    after_merge = [order("o2", 90 * MIN, revenue=5), refund("o2", 91 * MIN)]
    merged = merge(apply_all(survivor_events), apply_all(loser_events))
    apply_all(after_merge, merged)
    assert merged == apply_all(survivor_events + loser_events + after_merge)
    s = profile_json("c", merged, merged_from=["loser"])["stats"]
    assert (s["orders"], s["revenue"], s["sessions"], s["refunds"]) == (2, 10.0, 2, 1)


def test_merge_leaves_its_inputs_untouched() -> None:
    a, b = apply_all([page(0), order("x", 0, revenue=1)]), apply_all([page(5 * MIN)])
    before = (to_bytes(a), to_bytes(b))
    merged = merge(a, b)
    apply(merged, page(7 * MIN))
    assert (to_bytes(a), to_bytes(b)) == before


def test_state_round_trips_through_bytes() -> None:
    events = [
        page(0, consent=["ads"], channel="social", utm_source="x"),
        order("o1", MIN, revenue=3.5, products=[{"product_id": "p", "price": 3.5}]),
        refund("o1", 2 * MIN),
        event("identify", at=3 * MIN, traits={"nested": {"a": [1, 2.5, None]}, "vip": True}),
        event("track", "NPS Answered", at=4 * MIN, props={"score": 9}),
        event("track", "Subscribed", at=4 * MIN),
    ]
    state = apply_all(events)
    blob = to_bytes(state)
    restored = from_bytes(blob)
    assert restored == state
    assert restored.seen_keys == state.seen_keys
    assert apply(restored, events[0]) == state  # the dedup index survived the trip


def test_from_bytes_rejects_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        from_bytes(b"[99, {}]")


def test_from_bytes_fills_fields_added_later_with_defaults() -> None:
    assert from_bytes(b"[1]") == ProfileState()


# --- views -----------------------------------------------------------------------------------


def test_profile_json_shape() -> None:
    profile = profile_json("c", apply_all([page(0)]), merged_from=["l1"], scores={"rfm": "555"})
    assert list(profile) == [
        "customer_id",
        "identities",
        "traits",
        "traits_updated_at",
        "stats",
        "scores",
        "merged_from",
    ]
    assert profile["scores"] == {"rfm": "555", "abc": None, "xyz": None, "ltv": None}
    assert profile["merged_from"] == ["l1"]
    orjson.dumps(profile)  # JSON-ready as is


def test_profile_row_matches_the_column_list() -> None:
    state = apply_all([page(0), order("o1", MIN, revenue=12.34)])
    row = profile_row("c", state, version=7, is_deleted=True)
    assert list(row) == [name for name, _ in PROFILE_COLUMNS]
    assert (row["version"], row["is_deleted"], row["orders"]) == (7, 1, 1)
    assert str(row["revenue"]) == "12.3400"
    assert row["first_seen"] == datetime.fromtimestamp(T0 / 1000, UTC)
    empty = profile_row("c", ProfileState(), version=1)
    assert (empty["first_seen"], empty["nps_last_score"], empty["first_touch_channel"]) == (
        None,
        None,
        "",
    )
