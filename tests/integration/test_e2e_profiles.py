"""End to end: HTTP collector → Kafka → worker (identity, profile, sink) → chDB → profile API.

Nothing is mocked or fed in behind the collector's back: events enter through the collector's
HTTP API (the unmodified Segment Python library, or plain ``/v1/batch`` requests when a test
needs exact event times) and come out of the profile API the worker serves, or the analytics
views of the database the worker's sink wrote. One stack (worker, collector, topics, database)
serves the whole module; each test has its own people, and every order sent is noted in the
stack's ledger so that the RFM test can recompute the view from everything that went in.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import segment.analytics as analytics

from pipeline.storage.clickhouse import connect
from tests.integration.api_support import refresh_scores
from tests.integration.e2e_support import WRITE_KEY, E2eStack, e2e_stack, iso
from tests.integration.test_views import Shop, expected_rfm

pytestmark = pytest.mark.integration

# A browser's context: without a library or user agent of their own, requests from the test's
# HTTP client would be judged by its User-Agent header (and flagged as a bot).
BROWSER = {
    "library": {"name": "analytics.js", "version": "4.1.0"},
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
}


@pytest.fixture(scope="module")
def stack(
    kafka_broker: str, chdb_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[E2eStack]:
    with e2e_stack(
        kafka_broker, chdb_path, tmp_path_factory.mktemp("e2e"), uuid.uuid4().hex[:10]
    ) as running:
        yield running


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def message(
    kind: str,
    at: datetime,
    *,
    mid: str | None = None,
    user: str | None = None,
    anon: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A Segment message with an exact event time (sent without ``sentAt``)."""
    msg: dict[str, Any] = {
        "type": kind,
        "messageId": mid or uuid.uuid4().hex,
        "timestamp": iso(at),
        "context": BROWSER,
    }
    if user is not None:
        msg["userId"] = user
    if anon is not None:
        msg["anonymousId"] = anon
    msg.update(fields)
    return msg


def order(
    stack: E2eStack, user: str, order_id: str, at: datetime, revenue: str, mid: str | None = None
) -> dict[str, Any]:
    """An ``Order Completed`` message, noted in the ledger (resends count once there too)."""
    stack.ledger.order(("user_id", user), order_id, at, revenue)
    props = {"order_id": order_id, "revenue": float(revenue), "currency": "USD"}
    return message("track", at, mid=mid, user=user, event="Order Completed", properties=props)


def _ids(timeline: dict[str, Any]) -> list[str]:
    return sorted(e["event_id"] for e in timeline["events"])


# --- 1. the Segment library, looked up by email ----------------------------------------------


def test_segment_library_events_are_in_the_profile_found_by_email(
    stack: E2eStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors: list[Any] = []
    # The documented way to use the library: configure the module, let its thread send, flush.
    monkeypatch.setattr(analytics, "default_client", None)
    monkeypatch.setattr(analytics, "write_key", WRITE_KEY)
    monkeypatch.setattr(analytics, "host", stack.collector.url)
    monkeypatch.setattr(analytics, "on_error", lambda error, batch: errors.append(error))
    user = "u-sam"
    stack.ledger.order(("user_id", user), "sam-o-1", _now(), "12.5")
    analytics.identify(user, {"email": "Sam.Segment@Example.COM", "name": "Sam"}, message_id="s1")
    analytics.page(user, name="Home", properties={"url": "https://shop.example/"}, message_id="s2")
    analytics.track(user, "Product Viewed", {"product_id": "p-1"}, message_id="s3")
    analytics.track(
        user,
        "Order Completed",
        {"order_id": "sam-o-1", "revenue": 12.5, "currency": "USD"},
        message_id="s4",
    )
    analytics.flush()
    analytics.shutdown()
    assert errors == []

    # Another case and spaces around: the API normalizes as the collector did.
    profile = stack.profile_when(
        "email",
        "  SAM.segment@example.com ",
        lambda p: p["stats"]["events"] >= 4,
        "the Segment library's four events in the profile",
    )
    stats = profile["stats"]
    assert stats["events"] == 4
    assert (stats["page_views"], stats["product_views"], stats["orders"]) == (1, 1, 1)
    assert (stats["revenue"], stats["currency"]) == (12.5, "USD")
    assert profile["identities"]["email"] == ["sam.segment@example.com"]
    assert profile["identities"]["user_id"] == [user]
    assert profile["traits"]["name"] == "Sam"

    timeline = stack.timeline_when(
        profile["customer_id"], lambda t: len(t["events"]) >= 4, "the timeline's four events"
    )
    assert _ids(timeline) == ["s1", "s2", "s3", "s4"]
    assert {e["source"] for e in timeline["events"]} == {"web"}  # the write key's source


# --- 2. anonymous browsing, then a login that merges ------------------------------------------


def test_anonymous_history_joins_the_known_customer_on_identify(stack: E2eStack) -> None:
    t = _now()
    user, laptop, phone = "u-mia", "anon-mia-laptop", "anon-mia-phone"
    day = t - timedelta(days=5)
    stack.send(
        # Mia's own history, on her laptop, five days ago.
        message("identify", day, mid="m-id1", user=user, anon=laptop,
                traits={"email": "Mia@Example.com", "name": "Mia"}),
        message("page", day + timedelta(minutes=1), mid="m-p1", user=user, anon=laptop,
                name="Home"),
        message("page", day + timedelta(minutes=2), mid="m-p2", user=user, anon=laptop,
                name="Shoes"),
        order(stack, user, "mia-o-1", day + timedelta(minutes=3), "30", mid="m-o1"),
        # Someone browses on a phone, anonymously, two hours ago.
        *(
            message("page", t - timedelta(hours=2, minutes=-i), mid=f"m-b{i}", anon=phone,
                    name="Sale")
            for i in range(3)
        ),
    )  # fmt: skip
    known = stack.profile_when(
        "user_id", user, lambda p: p["stats"]["events"] == 4, "Mia's own history"
    )
    anonymous = stack.profile_when(
        "anonymous_id", phone, lambda p: p["stats"]["page_views"] == 3, "the phone's browsing"
    )
    survivor, loser = known["customer_id"], anonymous["customer_id"]
    assert survivor != loser
    assert "user_id" not in anonymous["identities"]

    # Mia logs in on the phone: the anonymous visitor was her.
    stack.send(
        message("identify", t - timedelta(hours=1), mid="m-id2", user=user, anon=phone,
                traits={"email": "mia@example.com"}),
    )  # fmt: skip
    profile = stack.profile_when(
        "email",
        " MIA@example.COM",
        lambda p: bool(p["merged_from"]) and p["stats"]["page_views"] == 5,
        "the phone's page views folded into Mia's profile",
    )
    # The customer first seen earliest survives.
    assert profile["customer_id"] == survivor
    assert profile["merged_from"] == [loser]
    stats = profile["stats"]
    assert (stats["events"], stats["page_views"], stats["orders"]) == (8, 5, 1)
    assert stats["first_seen"] == iso(day)
    assert stats["last_seen"] == iso(t - timedelta(hours=1))
    assert sorted(profile["identities"]["anonymous_id"]) == [laptop, phone]

    # The loser's id, and the phone's cookie, now answer the survivor.
    status, by_loser = stack.api(f"/v1/profiles/{loser}")
    assert status == 200 and by_loser["customer_id"] == survivor
    status, by_cookie = stack.lookup("anonymous_id", phone)
    assert status == 200 and by_cookie["customer_id"] == survivor

    everything = ["m-b0", "m-b1", "m-b2", "m-id1", "m-id2", "m-o1", "m-p1", "m-p2"]
    timeline = stack.timeline_when(
        survivor, lambda t: len(t["events"]) >= 8, "all eight events in the timeline"
    )
    assert _ids(timeline) == everything
    assert timeline["customer_id"] == survivor
    # The anonymous page views were stored under the loser's id, before the merge.
    owners = {e["event_id"]: e["customer_id"] for e in timeline["events"]}
    assert {owners[f"m-b{i}"] for i in range(3)} == {loser}
    assert _ids(stack.api(f"/v1/profiles/{loser}/events?limit=1000")[1]) == everything


def test_an_older_anonymous_visitor_survives_and_keeps_the_login(stack: E2eStack) -> None:
    """The other direction: the cookie was seen before the account, so the account merges away."""
    t = _now()
    user, laptop, tablet = "u-noah", "anon-noah-laptop", "anon-noah-tablet"
    stack.send(
        message("page", t - timedelta(days=3), mid="n-b0", anon=tablet, name="Home"),
        message("page", t - timedelta(days=3, minutes=-1), mid="n-b1", anon=tablet, name="Sale"),
        message("identify", t - timedelta(days=1), mid="n-id1", user=user, anon=laptop,
                traits={"email": "noah@example.com", "name": "Noah"}),
        message("page", t - timedelta(days=1, minutes=-1), mid="n-p1", user=user, anon=laptop,
                name="Account"),
    )  # fmt: skip
    known = stack.profile_when(
        "user_id", user, lambda p: p["stats"]["events"] == 2, "Noah's own history"
    )
    anonymous = stack.profile_when(
        "anonymous_id", tablet, lambda p: p["stats"]["page_views"] == 2, "the tablet's browsing"
    )
    survivor, loser = anonymous["customer_id"], known["customer_id"]
    assert survivor != loser

    stack.send(message("identify", t - timedelta(hours=1), mid="n-id2", user=user, anon=tablet))
    profile = stack.profile_when(
        "email",
        "Noah@Example.com",
        lambda p: bool(p["merged_from"]) and p["stats"]["page_views"] == 3,
        "Noah's account folded into the tablet's visitor",
    )
    assert profile["customer_id"] == survivor
    assert profile["merged_from"] == [loser]
    assert (profile["stats"]["events"], profile["stats"]["first_seen"]) == (
        5,
        iso(t - timedelta(days=3)),
    )
    assert profile["identities"]["user_id"] == [user]
    assert profile["traits"]["name"] == "Noah"
    for path in (f"/v1/profiles/{loser}", f"/v1/profiles?user_id={user}"):
        status, body = stack.api(path)
        assert (status, body["customer_id"]) == (200, survivor), path


# --- 3. orders resent ----------------------------------------------------------------------


def test_resent_orders_count_once(stack: E2eStack) -> None:
    t = _now()
    user = "u-olga"
    stack.send(
        message("identify", t - timedelta(days=4), mid="o-id", user=user,
                traits={"email": "olga@example.com"}),
        order(stack, user, "olga-o-1", t - timedelta(days=3), "40", mid="o-o1"),
        order(stack, user, "olga-o-2", t - timedelta(days=1), "15.5", mid="o-o2"),
    )  # fmt: skip
    stack.profile_when("user_id", user, lambda p: p["stats"]["orders"] == 2, "Olga's two orders")

    # The same order again under a new messageId (a server retrying with fresh ids), the same
    # messages again (an SDK retry), each in a request of its own; then a page view, after
    # which everything before it has been processed (one raw partition, one customer).
    resent = [
        order(stack, user, "olga-o-1", t - timedelta(days=3, seconds=-5), "40", mid="o-o1-again"),
        order(stack, user, "olga-o-1", t - timedelta(days=3), "40", mid="o-o1"),
        order(stack, user, "olga-o-2", t - timedelta(days=1), "15.5", mid="o-o2"),
        message("page", t, mid="o-last", user=user, name="Account"),
    ]
    for msg in resent:
        stack.send(msg)
    profile = stack.profile_when(
        "email", "Olga@Example.com", lambda p: p["stats"]["page_views"] == 1, "the last page view"
    )
    stats = profile["stats"]
    assert (stats["orders"], stats["revenue"], stats["avg_order_value"]) == (2, 55.5, 27.75)
    assert stats["first_order_at"] == iso(t - timedelta(days=3))
    assert stats["last_order_at"] == iso(t - timedelta(days=1))
    # Five distinct messages: the identify, three order reports and the page view.
    assert stats["events"] == 5

    timeline = stack.timeline_when(
        profile["customer_id"], lambda tl: "o-last" in _ids(tl), "the timeline's last event"
    )
    assert _ids(timeline) == ["o-id", "o-last", "o-o1", "o-o1-again", "o-o2"]
    # The analytics side counts the same: one row per order in the order_events view.
    rows = stack.query(
        "SELECT order_key, ordered_at, amount FROM {db}.order_events "
        "WHERE customer_id = {cid:String} ORDER BY order_key",
        cid=profile["customer_id"],
    )
    assert [(r["order_key"], float(r["amount"])) for r in rows] == [
        ("olga-o-1", 40.0),
        ("olga-o-2", 15.5),
    ]
    assert rows[0]["ordered_at"].replace(tzinfo=UTC) == t - timedelta(days=3)


# --- 4. late events ------------------------------------------------------------------------


def test_late_events_land_at_their_event_time(stack: E2eStack) -> None:
    t = _now()
    user = "u-lena"
    stack.send(
        message("identify", t - timedelta(hours=1), mid="l-id1", user=user,
                traits={"email": "lena@example.com", "city": "Berlin"}),
        message("page", t - timedelta(minutes=30), mid="l-p1", user=user, name="Home"),
        order(stack, user, "lena-o-2", t - timedelta(days=2), "20", mid="l-o2"),
    )  # fmt: skip
    before = stack.profile_when(
        "user_id", user, lambda p: p["stats"]["events"] == 3, "Lena's first three events"
    )
    assert before["stats"]["first_seen"] == iso(t - timedelta(days=2))
    assert before["traits"]["city"] == "Berlin"

    # Older events arrive now: a page view from a newsletter 20 days ago, an order 10 days
    # ago and an identify 5 days ago with an older city (and a trait not seen yet).
    campaign = {"source": "newsletter", "medium": "email", "name": "spring"}
    stack.send(
        message("page", t - timedelta(days=20), mid="l-p0", user=user, name="Spring sale",
                context={**BROWSER, "campaign": campaign}),
        order(stack, user, "lena-o-1", t - timedelta(days=10), "10", mid="l-o1"),
        message("identify", t - timedelta(days=5), mid="l-id0", user=user,
                traits={"city": "Paris", "plan": "basic"}),
    )  # fmt: skip
    profile = stack.profile_when(
        "user_id", user, lambda p: p["stats"]["events"] == 6, "the three late events"
    )
    stats = profile["stats"]
    assert stats["first_seen"] == iso(t - timedelta(days=20))  # moved back
    assert stats["last_seen"] == iso(t - timedelta(minutes=30))  # not the late arrival's time
    assert (stats["orders"], stats["revenue"]) == (2, 30.0)
    assert stats["first_order_at"] == iso(t - timedelta(days=10))
    assert stats["last_order_at"] == iso(t - timedelta(days=2))
    # Last write wins by event time, not by arrival.
    assert profile["traits"]["city"] == "Berlin"
    assert profile["traits_updated_at"]["city"] == iso(t - timedelta(hours=1))
    assert profile["traits"]["plan"] == "basic"
    assert profile["traits_updated_at"]["plan"] == iso(t - timedelta(days=5))
    # The first touch is the earliest visit, wherever it arrived in the stream.
    touch = stats["first_touch"]
    assert touch["at"] == iso(t - timedelta(days=20))
    assert (touch["utm_source"], touch["utm_campaign"]) == ("newsletter", "spring")


# --- 5. RFM on what went through -----------------------------------------------------------


def test_rfm_view_matches_an_independent_computation_of_what_was_sent(stack: E2eStack) -> None:
    rng = random.Random(5)
    t = _now()
    messages = []
    for i in range(14):
        user = f"u-rfm-{i:02d}"
        for n in range(rng.choice((1, 1, 2, 3, 5))):
            at = t - timedelta(days=rng.randrange(1, 400), minutes=rng.randrange(1440))
            revenue = rng.choice(("10", "25", "25", "40", "19.99"))
            messages.append(order(stack, user, f"{user}-o{n}", at, revenue))
    stack.send(*messages)

    # Everyone with orders in this module's stack (this test's people and the other tests'),
    # once the pipeline shows what the ledger says.
    live: dict[str, dict[str, Any]] = {}
    for person in sorted(stack.ledger.orders):
        want = stack.ledger.figures(person)

        def shows(p: dict[str, Any], want: dict[str, Any] = want) -> bool:
            figures = (p["stats"]["orders"], p["stats"]["revenue"])
            return figures == (want["orders"], float(want["revenue"]))

        profile = stack.profile_when(*person, shows, f"{person}'s {want['orders']} orders")
        live[profile["customer_id"]] = want
    assert len(live) >= 14

    rows = stack.query("SELECT * FROM {db}.rfm")
    got = {
        row["customer_id"]: (
            row["recency_days"], row["frequency"], row["monetary"], row["r_score"],
            row["f_score"], row["m_score"], row["rfm_cell"], row["segment"],
        )
        for row in rows
    }  # fmt: skip
    [as_of] = {row["as_of"] for row in rows}
    expected = expected_rfm(Shop(now=t, live=live, survivor_of={}, orders=[]), as_of)
    assert got == expected
    assert len({v[3] for v in got.values()}) >= 3  # the data spreads over the scale
    assert len({v[7] for v in got.values()}) >= 3

    # The scores the API serves are the view's (after a refresh of customer_scores).
    client = connect(stack.settings.effective_clickhouse_dsn)
    stack.worker.call(lambda: refresh_scores(client, stack.database))
    for customer_id, (*_, cell, segment) in expected.items():
        status, profile = stack.api(f"/v1/profiles/{customer_id}")
        assert status == 200
        rfm = profile["scores"]["rfm"]
        assert (rfm["cell"], rfm["segment"]) == (cell, segment), customer_id
