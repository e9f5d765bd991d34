"""Profile aggregation as a bytewax-style ``(state, event) -> state`` plus a commutative merge.

``apply`` folds one resolved event (a dict shaped like ``schemas/avro/event.avsc`` plus
``customer_id``) into a :class:`ProfileState`, in place, and returns it. ``merge`` combines two
states into a new one without touching either; identity merges fold the loser into the survivor
with it, and events arriving for the loser later are simply applied to the survivor: for events
with distinct ids, ``merge(apply*(a, E1), apply*(b, E2)) == apply*(merge(a, b), E1 + E2)``.
Everything is keyed on event time, so any arrival order of the same events gives the same state
(within the bounds documented in :mod:`pipeline.profile.state`).

What counts as what:

* Bot events (``enrichment.is_bot``) only bump ``bot_events`` (and still record identities,
  because the identity graph did attribute them) unless ``include_bots=True``.
* ``identify`` / ``alias`` / ``group`` carry traits and identities but are not activity: they
  set ``first_seen`` / ``last_seen`` and ``events`` but open no session and are no touch.
* Activity (sessions, devices, touches) = ``page``, ``screen`` and ``track`` events, except the
  off-site ones in :data:`OFF_SITE_EVENTS` (an email opened in a mail client, a refund issued by
  a back office) which would otherwise invent sessions.
* First touch = the earliest activity event; last touch = the latest activity event that carries
  attribution (a channel other than ``direct`` or any ``utm_*``), i.e. "last non-direct click".
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, Final

import orjson

from pipeline.profile.state import (
    DEDUP_WINDOW,
    DEFAULT_CURRENCY,
    LAST_PAGES,
    MAX_FOLDED_TOP,
    MAX_IDS_PER_TYPE,
    MAX_PRODUCTS_PER_ORDER,
    MAX_SUBSCRIPTIONS,
    MAX_TECH_KEYS,
    MAX_TRAITS,
    SESSION_GAP_MS,
    Entry,
    ProfileState,
    event_key,
    keep_newest,
    trim_counter,
)

_EMPTY: Final[Mapping[str, Any]] = {}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_MONEY_DIGITS: Final = 12  # 10^12 currency units and more: a broken client, not a purchase
_TEXT_LIMIT: Final = 256

OFF_SITE_EVENTS: Final = frozenset({"email opened", "email link clicked", "order refunded"})
_ACTIVITY_TYPES: Final = frozenset({"page", "screen", "track"})
_UTM_KEYS: Final = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
_SUBSCRIBED: Final = frozenset(
    {"subscription started", "subscribed", "newsletter subscribed", "email subscribed"}
)
_UNSUBSCRIBED: Final = frozenset(
    {
        "subscription cancelled",
        "subscription canceled",
        "unsubscribed",
        "newsletter unsubscribed",
        "email unsubscribed",
    }
)
_SUBSCRIPTION_KEYS: Final = ("list", "list_id", "subscription_id", "plan", "topic")

_TrackHandler = Callable[[ProfileState, Mapping[str, Any], int, str], None]

# Plain per-event counters for track events, by lower-cased Segment event name.
_TRACK_COUNTERS: Final[Mapping[str, str]] = {
    "product added": "cart_adds",
    "checkout started": "checkouts",
    "product viewed": "product_views",
    "email opened": "email_opens",
    "email link clicked": "email_clicks",
    "form submitted": "form_submits",
    "product reviewed": "reviews",
    "application opened": "app_opens",
}


def to_millis(value: Any) -> int:
    """Event time as epoch millis from int / float millis, a datetime (naive = UTC) or ISO text."""
    if type(value) is int:
        return value
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // _MS  # exact integer arithmetic, no float rounding
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        return to_millis(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise TypeError(f"unsupported timestamp: {value!r}")


def to_money(value: Any) -> int | None:
    """A money amount in ten-thousandths (int), or None if it is not a sane number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        amount = Decimal(value) if isinstance(value, int | str) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        return None
    # By exponent, before any arithmetic: "1e999999999" would overflow the context or, as an
    # int, build a billion-digit number.
    if not amount.is_finite() or (amount and amount.adjusted() >= _MONEY_DIGITS):
        return None
    return int((amount * 10000).to_integral_value(ROUND_HALF_EVEN))


def _json_object(raw: Any) -> Mapping[str, Any]:
    """Parse a JSON-object string field; a dict passes through; anything broken is empty."""
    if isinstance(raw, Mapping):
        return raw
    if not raw or raw == "{}":
        return _EMPTY
    try:
        parsed = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return _EMPTY
    return parsed if isinstance(parsed, dict) else _EMPTY


def _text(value: Any) -> str:
    """A bounded string for keys and labels; non-strings (ids sent as numbers) are stringified."""
    if type(value) is str:
        return value.strip()[:_TEXT_LIMIT]
    if value is None or isinstance(value, dict | list):
        return ""
    return str(value).strip()[:_TEXT_LIMIT]


def _quantity(value: Any) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 10**6:
        return int(value)
    return 1


def _currency(props: Mapping[str, Any]) -> str | None:
    code = _text(props.get("currency")).upper()
    return code[:8] if code else None


def _products(props: Mapping[str, Any]) -> tuple[list[Entry], int | None]:
    """Order lines as ``[product, qty, category]`` and the sum of price * quantity (if priced)."""
    raw = props.get("products")
    if not isinstance(raw, list):
        return [], None
    lines: list[Entry] = []
    total: int | None = None
    for item in raw[:MAX_PRODUCTS_PER_ORDER]:
        if not isinstance(item, dict):
            continue
        qty = _quantity(item.get("quantity", 1))
        price = to_money(item.get("price"))
        if price is not None:
            total = (total or 0) + price * qty
        product = _text(item.get("product_id")) or _text(item.get("sku")) or _text(item.get("name"))
        if product:
            lines.append([product, qty, _text(item.get("category"))])
    return lines, total


def _amount(props: Mapping[str, Any], products_total: int | None) -> int | None:
    """Segment's order value: ``revenue``, else ``total``, else the priced products."""
    for key in ("revenue", "total"):
        amount = to_money(props.get(key))
        if amount is not None:
            return amount
    return products_total


def _on_order_completed(state: ProfileState, props: Mapping[str, Any], ts: int, eid: str) -> None:
    lines, products_total = _products(props)
    order_id = _text(props.get("order_id")) or f"event:{eid}"
    amount = _amount(props, products_total) or 0
    entry: Entry = [ts, eid, amount, _currency(props) or DEFAULT_CURRENCY, lines]
    known = state.orders.get(order_id)
    # A resent order counts once; the earliest report (event time, then id) is the canonical one,
    # so which copy arrives first does not matter.
    if known is None or (ts, eid) < (known[0], known[1]):
        state.orders[order_id] = entry
        if known is None:
            state.fold_orders()


def _on_order_refunded(state: ProfileState, props: Mapping[str, Any], ts: int, eid: str) -> None:
    _, products_total = _products(props)
    order_id = _text(props.get("order_id")) or f"event:{eid}"
    entry: Entry = [ts, eid, _amount(props, products_total), _currency(props)]
    known = state.refunds.get(order_id)
    if known is None or (ts, eid) < (known[0], known[1]):
        state.refunds[order_id] = entry
        if known is None:
            state.fold_refunds()


def _on_nps(state: ProfileState, props: Mapping[str, Any], ts: int, eid: str) -> None:
    score = props.get("score")
    if isinstance(score, str) and score.strip().isdigit():
        score = int(score)
    if isinstance(score, float) and score.is_integer():
        score = int(score)
    if type(score) is not int or not 0 <= score <= 10:
        return  # a survey answer without an NPS score
    name = "nps_promoters" if score >= 9 else "nps_passives" if score >= 7 else "nps_detractors"
    counts = state.counts
    counts[name] = counts.get(name, 0) + 1
    entry: Entry = [ts, score]
    if state.nps_last is None or entry > state.nps_last:
        state.nps_last = entry


def _subscription_handler(active: bool) -> _TrackHandler:
    def handle(state: ProfileState, props: Mapping[str, Any], ts: int, eid: str) -> None:
        name = next((_text(props[k]) for k in _SUBSCRIPTION_KEYS if _text(props.get(k))), "")
        name = name or "default"
        known = state.subscriptions.get(name)
        if known is None or (ts, eid) > (known[1], known[2]):
            state.subscriptions[name] = [active, ts, eid]
            keep_newest(state.subscriptions, MAX_SUBSCRIPTIONS, _rank_lww)

    return handle


_TRACK_HANDLERS: Final[dict[str, _TrackHandler]] = {
    "order completed": _on_order_completed,
    "order refunded": _on_order_refunded,
    "nps answered": _on_nps,
    "survey answered": _on_nps,
    **{name: _subscription_handler(True) for name in _SUBSCRIBED},
    **{name: _subscription_handler(False) for name in _UNSUBSCRIBED},
}


def _rank_lww(name: str, entry: Entry) -> tuple[Any, ...]:
    """Order of ``[value, ts, event_id]`` entries: oldest first, name as the last tie-break."""
    return (entry[1], entry[2], name)


def _apply_identities(state: ProfileState, event: Mapping[str, Any], ts: int) -> None:
    # Only the normalized `identifiers`: the raw anonymous_id / user_id fields may hold blocked
    # values ("null", "guest") that the identity processor refused to link.
    ids = state.ids
    for ident in event.get("identifiers") or ():
        id_type = ident.get("type")
        value = ident.get("value")
        if not id_type or not value:
            continue
        seen = ids.get(id_type)
        if seen is None:
            ids[id_type] = {value: ts}
        elif seen.get(value, ts - 1) < ts:
            seen[value] = ts
            if len(seen) > MAX_IDS_PER_TYPE:
                keep_newest(seen, MAX_IDS_PER_TYPE, lambda v, t: (t, v))


def _apply_traits(state: ProfileState, traits: Mapping[str, Any], ts: int, eid: str) -> None:
    current = state.traits
    added = False
    for name, value in traits.items():
        known = current.get(name)
        if known is None or (ts, eid) > (known[1], known[2]):
            added = added or known is None
            current[name] = [value, ts, eid]
    if added and len(current) > MAX_TRAITS:
        keep_newest(current, MAX_TRAITS, _rank_lww)


def _apply_activity(
    state: ProfileState, event: Mapping[str, Any], kind: str, name: str, ts: int
) -> None:
    """Sessions, technology, touches and pages of an on-site event."""
    state.add_activity(ts)
    enrichment = event.get("enrichment") or _EMPTY
    context = event.get("context") or _EMPTY
    _count(state.devices, enrichment.get("device_type") or "unknown")
    browser = enrichment.get("browser")
    if browser:
        _count(state.browsers, browser)
    os_name = enrichment.get("os")
    if os_name:
        _count(state.oses, os_name)
    _apply_touch(state, enrichment.get("channel") or "direct", context, ts)
    if kind != "track":
        path = _text(context.get("page_path")) or _text(context.get("page_url")) or name
        title = _text(context.get("page_title")) or name
        pages = state.pages
        page: Entry = [ts, path, title]
        if len(pages) < LAST_PAGES or page > pages[0]:
            insort(pages, page)
            if len(pages) > LAST_PAGES:
                del pages[0]


def _count(counter: dict[str, int], key: str) -> None:
    counter[key] = counter.get(key, 0) + 1
    if len(counter) > MAX_TECH_KEYS:
        trim_counter(counter, MAX_TECH_KEYS)


def _apply_touch(state: ProfileState, channel: str, context: Mapping[str, Any], ts: int) -> None:
    first, last = state.first_touch, state.last_touch
    get = context.get
    # Cheap checks first: most events can neither be the first touch nor an attributed one, and
    # building the touch entry is the expensive part.
    attributed = channel != "direct" or bool(
        get("utm_source")
        or get("utm_medium")
        or get("utm_campaign")
        or get("utm_term")
        or get("utm_content")
    )
    maybe_first = first is None or ts <= first[0]
    maybe_last = attributed and (last is None or ts >= last[0])
    if not (maybe_first or maybe_last):
        return
    touch: Entry = [ts, channel, *[_text(get(key)) for key in _UTM_KEYS], _text(get("referrer"))]
    # Whole-entry comparison breaks equal-time ties by content, so the winner is order-free.
    if maybe_first and (first is None or touch < first):
        state.first_touch = touch
    if maybe_last and (channel != "direct" or any(touch[2:7])) and (last is None or touch > last):
        state.last_touch = touch


def apply(
    state: ProfileState, event: Mapping[str, Any], *, include_bots: bool = False
) -> ProfileState:
    """Fold one event into ``state`` (mutated and returned); a recent duplicate id is a no-op."""
    event_id = str(event["event_id"])
    ts = to_millis(event["timestamp"])
    if not state.remember(event_key(event_id), ts):
        return state
    _apply_identities(state, event, ts)
    counts = state.counts
    enrichment = event.get("enrichment") or _EMPTY
    if enrichment.get("is_bot") and not include_bots:
        counts["bot_events"] = counts.get("bot_events", 0) + 1
        return state

    counts["events"] = counts.get("events", 0) + 1
    if state.first_seen is None or ts < state.first_seen:
        state.first_seen = ts
    if state.last_seen is None or ts > state.last_seen:
        state.last_seen = ts
    traits = _json_object(event.get("traits"))
    if traits:
        _apply_traits(state, traits, ts, event_id)
    consent = event.get("consent")
    if consent:
        entry: Entry = [ts, sorted(set(consent))]
        if state.consent is None or entry > state.consent:
            state.consent = entry

    kind = event.get("type") or ""
    if kind not in _ACTIVITY_TYPES:
        return state
    name = _text(event.get("event"))
    if kind == "track":
        lowered = name.lower()
        counter = _TRACK_COUNTERS.get(lowered)
        if counter is not None:
            counts[counter] = counts.get(counter, 0) + 1
        handler = _TRACK_HANDLERS.get(lowered)
        if handler is not None:
            handler(state, _json_object(event.get("properties")), ts, event_id)
        if lowered in OFF_SITE_EVENTS:
            return state
    else:
        views = "page_views" if kind == "page" else "screen_views"
        counts[views] = counts.get(views, 0) + 1
    _apply_activity(state, event, kind, name, ts)
    return state


def apply_all(
    events: Iterable[Mapping[str, Any]],
    state: ProfileState | None = None,
    *,
    include_bots: bool = False,
) -> ProfileState:
    """Apply a sequence of events to ``state`` (a fresh one by default)."""
    current = ProfileState() if state is None else state
    for event in events:
        apply(current, event, include_bots=include_bots)
    return current


# --- merge -----------------------------------------------------------------------------------
# Each helper builds fresh containers: ``apply`` mutates a state in place, so a merged state must
# not share mutable lists or dicts with its inputs.


def merge(a: ProfileState, b: ProfileState) -> ProfileState:
    """Combine two customers' states; commutative, associative, inputs left untouched."""
    out = ProfileState(
        ids={
            id_type: _union_max(a.ids.get(id_type, {}), b.ids.get(id_type, {}))
            for id_type in a.ids.keys() | b.ids.keys()
        },
        traits=_union_lww(a.traits, b.traits, _newer_trait),
        seen=_merge_seen(a.seen, b.seen),
        counts=_add_counts(a.counts, b.counts),
        first_seen=_min_opt(a.first_seen, b.first_seen),
        last_seen=_max_opt(a.last_seen, b.last_seen),
        spans=_coalesce(sorted([start, end] for start, end in a.spans + b.spans)),
        sessions_folded=a.sessions_folded + b.sessions_folded,
        session_ms_folded=a.session_ms_folded + b.session_ms_folded,
        orders=_union_lww(a.orders, b.orders, _earlier_report),
        folded_orders=_add_pairs(a.folded_orders, b.folded_orders),
        folded_order_span=_merge_span(a.folded_order_span, b.folded_order_span),
        refunds=_union_lww(a.refunds, b.refunds, _earlier_report),
        folded_refunds=_add_pairs(a.folded_refunds, b.folded_refunds),
        products_folded=_add_counts(a.products_folded, b.products_folded, MAX_FOLDED_TOP),
        categories_folded=_add_counts(a.categories_folded, b.categories_folded, MAX_FOLDED_TOP),
        devices=_add_counts(a.devices, b.devices, MAX_TECH_KEYS),
        browsers=_add_counts(a.browsers, b.browsers, MAX_TECH_KEYS),
        oses=_add_counts(a.oses, b.oses, MAX_TECH_KEYS),
        first_touch=_min_opt(a.first_touch, b.first_touch),
        last_touch=_max_opt(a.last_touch, b.last_touch),
        nps_last=_max_opt(a.nps_last, b.nps_last),
        subscriptions=_union_lww(a.subscriptions, b.subscriptions, _newer_trait),
        pages=sorted(a.pages + b.pages)[-LAST_PAGES:],
        consent=_max_opt(a.consent, b.consent),
    )
    for values in out.ids.values():
        keep_newest(values, MAX_IDS_PER_TYPE, lambda v, t: (t, v))
    keep_newest(out.traits, MAX_TRAITS, _rank_lww)
    keep_newest(out.subscriptions, MAX_SUBSCRIPTIONS, _rank_lww)
    out.fold_sessions()
    out.fold_orders()
    out.fold_refunds()  # after the orders, as apply does: "whole order" refunds look them up
    return out


def _newer_trait(candidate: Entry, known: Entry) -> bool:
    return (candidate[1], candidate[2]) > (known[1], known[2])


def _earlier_report(candidate: Entry, known: Entry) -> bool:
    return (candidate[0], candidate[1]) < (known[0], known[1])


def _union_lww(
    a: dict[str, Entry], b: dict[str, Entry], wins: Callable[[Entry, Entry], bool]
) -> dict[str, Entry]:
    out = dict(a)
    for key, entry in b.items():
        known = out.get(key)
        if known is None or wins(entry, known):
            out[key] = entry
    return out


def _union_max(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for key, value in b.items():
        if out.get(key, value - 1) < value:
            out[key] = value
    return out


def _merge_seen(a: list[Entry], b: list[Entry]) -> list[Entry]:
    newest: dict[str, int] = {}
    for ts, key in a + b:
        if newest.get(key, ts - 1) < ts:
            newest[key] = ts
    return sorted([ts, key] for key, ts in newest.items())[-DEDUP_WINDOW:]


def _add_counts(a: dict[str, int], b: dict[str, int], cap: int | None = None) -> dict[str, int]:
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    if cap is not None:
        trim_counter(out, cap)
    return out


def _add_pairs(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict[str, list[int]]:
    out = {currency: list(pair) for currency, pair in a.items()}
    for currency, (count, amount) in b.items():
        pair = out.setdefault(currency, [0, 0])
        pair[0] += count
        pair[1] += amount
    return out


def _merge_span(a: list[int] | None, b: list[int] | None) -> list[int] | None:
    if a is None or b is None:
        return None if a is None and b is None else list(a or b or ())
    return [min(a[0], b[0]), max(a[1], b[1])]


def _coalesce(spans: list[list[int]]) -> list[list[int]]:
    """Join start-sorted intervals that overlap or lie within the session gap of each other."""
    out: list[list[int]] = []
    for span in spans:
        if out and span[0] - out[-1][1] <= SESSION_GAP_MS:
            out[-1][1] = max(out[-1][1], span[1])
        else:
            out.append(span)
    return out


def _min_opt(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else min(a, b)


def _max_opt(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else max(a, b)
