"""Read side of a profile state: the API's profile JSON and the ClickHouse ``profiles`` row.

Derived figures (revenue net of refunds, average order value, top products) are computed here
from the state rather than kept in it, so the state stays a pure semilattice and a refund that
arrives before its order still nets out correctly.

The ``profiles`` table, for the schema owner to copy into ``schemas/clickhouse/`` (column names
and types are :data:`PROFILE_COLUMNS`, in this order)::

    CREATE TABLE IF NOT EXISTS cdp.profiles
    (
        <name> <type>, ...                      -- PROFILE_COLUMNS
        -- add CODEC(ZSTD(3)) to traits, identities and last_pages
    )
    ENGINE = ReplacingMergeTree(version, is_deleted)
    ORDER BY customer_id

Reads take ``FINAL`` or ``argMax(col, version)``; an erased customer is written once more with
``is_deleted = 1`` and a higher version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import orjson

from pipeline.profile.state import DEFAULT_CURRENCY, Entry, ProfileState

TOP_N: Final = 20  # products / categories / pages shown
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DT: Final = "DateTime64(3, 'UTC')"
_MONEY: Final = "Decimal(18, 4)"

PROFILE_COLUMNS: Final[list[tuple[str, str]]] = [
    ("customer_id", "String"),
    ("identities", "Map(LowCardinality(String), Array(String))"),
    ("user_ids", "Array(String)"),
    ("emails", "Array(String)"),
    ("phones", "Array(String)"),
    ("traits", "String"),  # JSON object name → value
    ("traits_updated_at", f"Map(String, {_DT})"),
    ("events", "UInt64"),
    ("page_views", "UInt64"),
    ("screen_views", "UInt64"),
    ("sessions", "UInt32"),
    ("time_on_site_s", "UInt64"),
    ("first_seen", f"Nullable({_DT})"),
    ("last_seen", f"Nullable({_DT})"),
    ("cart_adds", "UInt32"),
    ("checkouts", "UInt32"),
    ("product_views", "UInt32"),
    ("orders", "UInt32"),
    ("currency", "LowCardinality(String)"),
    ("revenue", _MONEY),  # net of refunds, in `currency`
    ("gross_revenue", _MONEY),
    ("refunded_amount", _MONEY),
    ("refunds", "UInt32"),
    ("avg_order_value", _MONEY),
    ("first_order_at", f"Nullable({_DT})"),
    ("last_order_at", f"Nullable({_DT})"),
    ("products_bought", "Map(String, UInt32)"),
    ("categories_bought", "Map(String, UInt32)"),
    ("devices", "Map(LowCardinality(String), UInt32)"),
    ("browsers", "Map(LowCardinality(String), UInt32)"),
    ("os", "Map(LowCardinality(String), UInt32)"),
    ("first_touch_channel", "LowCardinality(String)"),
    ("first_touch_source", "String"),
    ("first_touch_medium", "String"),
    ("first_touch_campaign", "String"),
    ("first_touch_referrer", "String"),
    ("first_touch_at", f"Nullable({_DT})"),
    ("last_touch_channel", "LowCardinality(String)"),
    ("last_touch_source", "String"),
    ("last_touch_medium", "String"),
    ("last_touch_campaign", "String"),
    ("last_touch_referrer", "String"),
    ("last_touch_at", f"Nullable({_DT})"),
    ("email_opens", "UInt32"),
    ("email_clicks", "UInt32"),
    ("form_submits", "UInt32"),
    ("reviews", "UInt32"),
    ("app_opens", "UInt32"),
    ("nps_promoters", "UInt32"),
    ("nps_passives", "UInt32"),
    ("nps_detractors", "UInt32"),
    ("nps_last_score", "Nullable(UInt8)"),
    ("nps_last_at", f"Nullable({_DT})"),
    ("subscriptions", "Array(String)"),  # active ones
    ("consent", "Array(LowCardinality(String))"),
    ("consent_updated_at", f"Nullable({_DT})"),
    ("last_pages", "Array(String)"),  # newest first
    ("bot_events", "UInt64"),
    ("version", "UInt64"),
    ("is_deleted", "UInt8"),
]

_COUNTERS: Final = (
    "events",
    "page_views",
    "screen_views",
    "cart_adds",
    "checkouts",
    "product_views",
    "email_opens",
    "email_clicks",
    "form_submits",
    "reviews",
    "app_opens",
    "nps_promoters",
    "nps_passives",
    "nps_detractors",
    "bot_events",
)
_TOUCH_FIELDS: Final = (
    "channel",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "referrer",
)


@dataclass(frozen=True, slots=True)
class Transactions:
    """Orders, refunds and money of one state; amounts in ten-thousandths per currency."""

    orders: int
    refunds: int
    currency: str  # of the latest order: the one the customer buys in now
    orders_by_currency: dict[str, int]
    gross_e4: dict[str, int]
    refunded_e4: dict[str, int]
    first_order_at: int | None
    last_order_at: int | None
    products: dict[str, int]
    categories: dict[str, int]

    def net_e4(self, currency: str) -> int:
        return self.gross_e4.get(currency, 0) - self.refunded_e4.get(currency, 0)

    @property
    def avg_order_e4(self) -> int:
        count = self.orders_by_currency.get(self.currency, 0)
        return self.net_e4(self.currency) // count if count else 0


def transactions(state: ProfileState) -> Transactions:
    """Sum live and folded orders and refunds; a refund without amount takes its order's value."""
    count: Counter[str] = Counter()
    gross: Counter[str] = Counter()
    refunded: Counter[str] = Counter()
    products: Counter[str] = Counter(state.products_folded)
    categories: Counter[str] = Counter(state.categories_folded)
    for currency, (n, amount) in state.folded_orders.items():
        count[currency] += n
        gross[currency] += amount
    span = state.folded_order_span
    first, last = (span[0], span[1]) if span else (None, None)
    latest: Entry | None = None
    for entry in state.orders.values():
        ts, _, amount, currency, lines = entry
        count[currency] += 1
        gross[currency] += amount
        first = ts if first is None else min(first, ts)
        last = ts if last is None else max(last, ts)
        latest = entry if latest is None or entry[:2] > latest[:2] else latest
        for product, qty, category in lines:
            products[product] += qty
            if category:
                categories[category] += qty
    refunds = sum(n for n, _ in state.folded_refunds.values()) + len(state.refunds)
    for currency, (_, amount) in state.folded_refunds.items():
        refunded[currency] += amount
    for order_id, (_, _, amount, currency) in state.refunds.items():
        order = state.orders.get(order_id)
        if amount is None:
            amount = order[2] if order is not None else 0
        if currency is None:
            currency = order[3] if order is not None else DEFAULT_CURRENCY
        refunded[currency] += amount
    if latest is not None:
        main = latest[3]
    elif count:
        main = min(count, key=lambda c: (-count[c], c))
    else:
        main = DEFAULT_CURRENCY
    return Transactions(
        orders=sum(count.values()),
        refunds=refunds,
        currency=main,
        orders_by_currency=dict(count),
        gross_e4=dict(gross),
        refunded_e4=dict(refunded),
        first_order_at=first,
        last_order_at=last,
        products=_top(products),
        categories=_top(categories),
    )


def _top(counter: Mapping[str, int]) -> dict[str, int]:
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(ranked[:TOP_N])


def iso(ms: int | None) -> str | None:
    """Epoch millis as ISO 8601 UTC with a ``Z``: ``2024-05-01T12:00:00.000Z``."""
    if ms is None:
        return None
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")[:-6] + "Z"


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + timedelta(milliseconds=ms)


def _float_money(e4: int) -> float:
    return round(e4 / 10_000, 4)


def _decimal_money(e4: int) -> Decimal:
    return Decimal(e4).scaleb(-4)


def _session_stats(state: ProfileState) -> tuple[int, int]:
    """(sessions, time on site in whole seconds) over live and folded sessions."""
    live_ms = sum(end - start for start, end in state.spans)
    return (
        len(state.spans) + state.sessions_folded,
        (live_ms + state.session_ms_folded) // 1000,
    )


def _identities(state: ProfileState) -> dict[str, list[str]]:
    """Values per type, most recently seen first."""
    return {
        id_type: [v for v, _ in sorted(seen.items(), key=lambda vt: (-vt[1], vt[0]))]
        for id_type, seen in sorted(state.ids.items())
    }


def _touch_json(touch: Entry | None) -> dict[str, Any] | None:
    if touch is None:
        return None
    fields = {name: value or None for name, value in zip(_TOUCH_FIELDS, touch[1:], strict=True)}
    return {"at": iso(touch[0]), **fields}


def _last_touch(state: ProfileState) -> Entry | None:
    # Without any attributed visit, the last non-direct touch is the first (direct) one.
    return state.last_touch if state.last_touch is not None else state.first_touch


def profile_json(
    customer_id: str,
    state: ProfileState,
    *,
    merged_from: Iterable[str],
    scores: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The profile as served by ``GET /v1/profiles/{customer_id}`` (JSON-ready, floats for money).

    ``scores`` (rfm / abc / xyz / ltv) come from ClickHouse views; until then they are null.
    """
    counts = state.counts
    tx = transactions(state)
    sessions, time_on_site_s = _session_stats(state)
    traits = dict(sorted(state.traits.items()))
    stats: dict[str, Any] = {name: counts.get(name, 0) for name in _COUNTERS}
    stats.update(
        sessions=sessions,
        time_on_site_s=time_on_site_s,
        first_seen=iso(state.first_seen),
        last_seen=iso(state.last_seen),
        orders=tx.orders,
        currency=tx.currency,
        revenue=_float_money(tx.net_e4(tx.currency)),
        gross_revenue=_float_money(tx.gross_e4.get(tx.currency, 0)),
        refunded_amount=_float_money(tx.refunded_e4.get(tx.currency, 0)),
        revenue_by_currency={
            c: _float_money(tx.net_e4(c)) for c in sorted(tx.gross_e4.keys() | tx.refunded_e4)
        },
        refunds=tx.refunds,
        avg_order_value=_float_money(tx.avg_order_e4),
        first_order_at=iso(tx.first_order_at),
        last_order_at=iso(tx.last_order_at),
        products=tx.products,
        categories=tx.categories,
        devices=_top(state.devices),
        browsers=_top(state.browsers),
        os=_top(state.oses),
        first_touch=_touch_json(state.first_touch),
        last_touch=_touch_json(_last_touch(state)),
        nps_last_score=state.nps_last[1] if state.nps_last else None,
        nps_last_at=iso(state.nps_last[0]) if state.nps_last else None,
        subscriptions={
            name: {"active": entry[0], "updated_at": iso(entry[1])}
            for name, entry in sorted(state.subscriptions.items())
        },
        consent=(
            {"categories": state.consent[1], "updated_at": iso(state.consent[0])}
            if state.consent
            else None
        ),
        last_pages=[
            {"at": iso(ts), "path": path, "title": title or None}
            for ts, path, title in reversed(state.pages)
        ],
    )
    return {
        "customer_id": customer_id,
        "identities": _identities(state),
        "traits": {name: entry[0] for name, entry in traits.items()},
        "traits_updated_at": {name: iso(entry[1]) for name, entry in traits.items()},
        "stats": stats,
        "scores": {"rfm": None, "abc": None, "xyz": None, "ltv": None, **(scores or {})},
        "merged_from": list(merged_from),
    }


def _touch_columns(prefix: str, touch: Entry | None) -> dict[str, Any]:
    t = touch or [None, "", "", "", "", "", "", ""]
    return {
        f"{prefix}_channel": t[1],
        f"{prefix}_source": t[2],
        f"{prefix}_medium": t[3],
        f"{prefix}_campaign": t[4],
        f"{prefix}_referrer": t[7],
        f"{prefix}_at": _dt(t[0]),
    }


def profile_row(
    customer_id: str, state: ProfileState, version: int, is_deleted: bool = False
) -> dict[str, Any]:
    """One ``profiles`` row, keys in :data:`PROFILE_COLUMNS` order, values as clickhouse-connect
    takes them (aware UTC datetimes, ``Decimal`` money, dicts for maps)."""
    counts = state.counts
    tx = transactions(state)
    sessions, time_on_site_s = _session_stats(state)
    identities = _identities(state)
    traits = dict(sorted(state.traits.items()))
    return {
        "customer_id": customer_id,
        "identities": identities,
        "user_ids": identities.get("user_id", []),
        "emails": identities.get("email", []),
        "phones": identities.get("phone", []),
        "traits": orjson.dumps({name: entry[0] for name, entry in traits.items()}).decode(),
        "traits_updated_at": {name: _dt(entry[1]) for name, entry in traits.items()},
        "events": counts.get("events", 0),
        "page_views": counts.get("page_views", 0),
        "screen_views": counts.get("screen_views", 0),
        "sessions": sessions,
        "time_on_site_s": time_on_site_s,
        "first_seen": _dt(state.first_seen),
        "last_seen": _dt(state.last_seen),
        "cart_adds": counts.get("cart_adds", 0),
        "checkouts": counts.get("checkouts", 0),
        "product_views": counts.get("product_views", 0),
        "orders": tx.orders,
        "currency": tx.currency,
        "revenue": _decimal_money(tx.net_e4(tx.currency)),
        "gross_revenue": _decimal_money(tx.gross_e4.get(tx.currency, 0)),
        "refunded_amount": _decimal_money(tx.refunded_e4.get(tx.currency, 0)),
        "refunds": tx.refunds,
        "avg_order_value": _decimal_money(tx.avg_order_e4),
        "first_order_at": _dt(tx.first_order_at),
        "last_order_at": _dt(tx.last_order_at),
        "products_bought": tx.products,
        "categories_bought": tx.categories,
        "devices": dict(state.devices),
        "browsers": dict(state.browsers),
        "os": dict(state.oses),
        **_touch_columns("first_touch", state.first_touch),
        **_touch_columns("last_touch", _last_touch(state)),
        "email_opens": counts.get("email_opens", 0),
        "email_clicks": counts.get("email_clicks", 0),
        "form_submits": counts.get("form_submits", 0),
        "reviews": counts.get("reviews", 0),
        "app_opens": counts.get("app_opens", 0),
        "nps_promoters": counts.get("nps_promoters", 0),
        "nps_passives": counts.get("nps_passives", 0),
        "nps_detractors": counts.get("nps_detractors", 0),
        "nps_last_score": state.nps_last[1] if state.nps_last else None,
        "nps_last_at": _dt(state.nps_last[0]) if state.nps_last else None,
        "subscriptions": sorted(name for name, e in state.subscriptions.items() if e[0]),
        "consent": list(state.consent[1]) if state.consent else [],
        "consent_updated_at": _dt(state.consent[0]) if state.consent else None,
        "last_pages": [path for _, path, _ in reversed(state.pages)],
        "bot_events": counts.get("bot_events", 0),
        "version": version,
        "is_deleted": int(is_deleted),
    }
