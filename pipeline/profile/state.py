"""Per-customer profile state: the model, its bounds, and a compact serialisation.

Every field is either a sum (counters) or a join-semilattice (min / max registers, last-write-wins
maps, "newest K" sets), so two states merge exactly and the state is a function of the *set* of
events applied, not of their arrival order. Bounded structures keep the newest K entries by a
total order; for "newest K" that truncation is itself a semilattice, so it stays exact. Where a
bound must fold old detail into a summary (sessions, orders, refunds) the result is exact while
the live part is under its bound and a documented approximation beyond it.

Bounds and what happens beyond them:

* ``seen`` (duplicate ``event_id`` window): the ``DEDUP_WINDOW`` newest event ids by event time,
  stored as 8-character hashes. A duplicate older than the window's oldest entry (i.e. with
  ``DEDUP_WINDOW`` newer events of the customer in between) is counted again; SDK retries and
  Kafka redeliveries arrive within seconds, far inside the window.
* ``spans`` (sessions): at most ``MAX_SESSION_SPANS`` exact session intervals. Older sessions are
  folded into ``sessions_folded`` / ``session_ms_folded``; an event arriving later for a folded
  session's time counts as a new zero-length session instead of extending the old one.
* ``orders`` / ``refunds``: the newest ``MAX_ORDERS`` orders (refunds) by event time, keyed by
  ``order_id`` so resends count once. Older ones fold into per-currency ``[count, amount]``
  summaries; a resend of a folded order counts again.
* ``ids``: ``MAX_IDS_PER_TYPE`` most recently seen values per identifier type; ``traits``:
  ``MAX_TRAITS`` most recently set names; ``subscriptions``: ``MAX_SUBSCRIPTIONS``; ``pages``:
  the ``LAST_PAGES`` newest page views (all exact semilattices).
* Top-N counters (devices, browsers, OS, folded products / categories): exact while they hold at
  most their cap of distinct keys; beyond that the smallest counts are dropped (a heavy-hitter
  approximation, order-dependent only in the dropped tail).

``merge`` is always commutative; it is associative, and split-then-merge equals one application,
exactly while the folded structures stay under their bounds (folding in an intermediate merge can
separate what a later merge would have joined). It assumes the two states saw disjoint events,
as identity resolution guarantees (each event goes to one customer): an event applied to both
sides is counted twice.

Entries are JSON lists, not tuples, so ``from_bytes(to_bytes(s)) == s`` without conversion.
"""

from __future__ import annotations

import binascii
import hashlib
from bisect import bisect_right, insort
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Final, TypeVar

import orjson

SESSION_GAP_MS: Final = 30 * 60 * 1000
"""Events at most this far apart (event time) belong to the same session."""

DEDUP_WINDOW: Final = 64
MAX_SESSION_SPANS: Final = 200
MAX_ORDERS: Final = 200
MAX_REFUNDS: Final = 200
MAX_IDS_PER_TYPE: Final = 200  # the identity processor's default anonymous_id limit
MAX_TRAITS: Final = 256
MAX_SUBSCRIPTIONS: Final = 64
LAST_PAGES: Final = 20
MAX_PRODUCTS_PER_ORDER: Final = 50
MAX_TECH_KEYS: Final = 16  # devices / browsers / OS families per customer
MAX_FOLDED_TOP: Final = 100  # products / categories of folded orders

DEFAULT_CURRENCY: Final = "USD"  # Segment's e-commerce spec default when `currency` is absent

STATE_FORMAT: Final = 1
"""Leading element of the serialised list. New fields are only ever appended (with defaults), so
an old blob still loads; a breaking change bumps this number."""

# Entry layouts (lists so that JSON round-trips them unchanged):
#   traits[name]          = [value, ts, event_id]          newest (ts, event_id) wins
#   seen                  = sorted [[ts, event_key], ...]
#   spans                 = sorted [[start_ms, end_ms], ...], disjoint, gaps > SESSION_GAP_MS
#   orders[order_id]      = [ts, event_id, revenue_e4, currency, [[product, qty, category], ...]]
#   refunds[order_id]     = [ts, event_id, amount_e4 | None (= whole order), currency | None]
#   folded_*[currency]    = [count, amount_e4]
#   touch                 = [ts, channel, source, medium, campaign, term, content, referrer]
#   nps_last              = [ts, score];   consent = [ts, [category, ...]]
#   subscriptions[name]   = [active, ts, event_id]
#   pages                 = sorted [[ts, path, title], ...]
# Money is an int in ten-thousandths of the currency unit ("e4"): integer sums are associative,
# floats are not, and merge must not depend on grouping.
Entry = list[Any]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class ProfileState:
    """Aggregates of one customer. Build with ``ProfileState()``; see the module docstring."""

    ids: dict[str, dict[str, int]] = field(default_factory=dict)  # type → value → last seen
    traits: dict[str, Entry] = field(default_factory=dict)
    seen: list[Entry] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    first_seen: int | None = None
    last_seen: int | None = None
    spans: list[list[int]] = field(default_factory=list)
    sessions_folded: int = 0
    session_ms_folded: int = 0
    orders: dict[str, Entry] = field(default_factory=dict)
    folded_orders: dict[str, list[int]] = field(default_factory=dict)
    folded_order_span: list[int] | None = None  # [first_order_at, last_order_at] of folded
    refunds: dict[str, Entry] = field(default_factory=dict)
    folded_refunds: dict[str, list[int]] = field(default_factory=dict)
    products_folded: dict[str, int] = field(default_factory=dict)
    categories_folded: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    browsers: dict[str, int] = field(default_factory=dict)
    oses: dict[str, int] = field(default_factory=dict)
    first_touch: Entry | None = None
    last_touch: Entry | None = None
    nps_last: Entry | None = None
    subscriptions: dict[str, Entry] = field(default_factory=dict)
    pages: list[Entry] = field(default_factory=list)
    consent: Entry | None = None
    # Derived index over ``seen`` for O(1) duplicate checks; rebuilt on load, never serialised.
    seen_keys: set[str] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.seen and not self.seen_keys:
            self.seen_keys = {key for _, key in self.seen}

    def remember(self, key: str, ts: int) -> bool:
        """Record an event key; False if it is a duplicate inside the window."""
        keys = self.seen_keys
        if key in keys:
            return False
        seen = self.seen
        item: Entry = [ts, key]
        if len(seen) >= DEDUP_WINDOW:
            if item < seen[0]:
                return True  # older than the window: cannot tell, count it (documented)
            insort(seen, item)
            keys.discard(seen.pop(0)[1])
        else:
            insort(seen, item)
        keys.add(key)
        return True

    def add_activity(self, t: int) -> None:
        """Put one activity time into the session intervals, joining neighbours within the gap."""
        spans = self.spans
        if spans:
            last = spans[-1]
            if t >= last[0]:  # the common in-order case: within or after the newest session
                if t > last[1]:
                    if t - last[1] <= SESSION_GAP_MS:
                        last[1] = t
                    else:
                        spans.append([t, t])
                        self.fold_sessions()
                return
        i = bisect_right(spans, t, key=itemgetter(0))  # spans[i-1] starts at or before t
        prev = spans[i - 1] if i else None
        if prev is not None and t <= prev[1]:
            return
        nxt = spans[i] if i < len(spans) else None
        joins_prev = prev is not None and t - prev[1] <= SESSION_GAP_MS
        joins_next = nxt is not None and nxt[0] - t <= SESSION_GAP_MS
        if prev is not None and nxt is not None and joins_prev and joins_next:
            prev[1] = nxt[1]
            del spans[i]
        elif prev is not None and joins_prev:
            prev[1] = t
        elif nxt is not None and joins_next:
            nxt[0] = t
        else:
            spans.insert(i, [t, t])
            self.fold_sessions()

    def fold_sessions(self) -> None:
        """Fold the oldest sessions into the summary until the bound holds."""
        spans = self.spans
        while len(spans) > MAX_SESSION_SPANS:
            start, end = spans.pop(0)
            self.sessions_folded += 1
            self.session_ms_folded += end - start

    def fold_orders(self) -> None:
        """Fold the oldest orders (by event time, then event id) into per-currency summaries."""
        orders = self.orders
        if len(orders) <= MAX_ORDERS:
            return
        by_age = sorted(orders, key=lambda oid: (orders[oid][0], orders[oid][1]))
        for oid in by_age[: len(orders) - MAX_ORDERS]:
            ts, _, revenue, currency, products = orders.pop(oid)
            add_pair(self.folded_orders, currency, revenue)
            span = self.folded_order_span
            if span is None:
                self.folded_order_span = [ts, ts]
            else:
                self.folded_order_span = [min(span[0], ts), max(span[1], ts)]
            for product, qty, category in products:
                bump(self.products_folded, product, qty, MAX_FOLDED_TOP)
                if category:
                    bump(self.categories_folded, category, qty, MAX_FOLDED_TOP)

    def fold_refunds(self) -> None:
        """Fold the oldest refunds, resolving "whole order" amounts against the live orders."""
        refunds = self.refunds
        if len(refunds) <= MAX_REFUNDS:
            return
        by_age = sorted(refunds, key=lambda oid: (refunds[oid][0], refunds[oid][1]))
        for oid in by_age[: len(refunds) - MAX_REFUNDS]:
            _, _, amount, currency = refunds.pop(oid)
            order = self.orders.get(oid)
            if amount is None:
                amount = order[2] if order is not None else 0
            if currency is None:
                currency = order[3] if order is not None else DEFAULT_CURRENCY
            add_pair(self.folded_refunds, currency, amount)


def add_pair(summary: dict[str, list[int]], currency: str, amount: int) -> None:
    """Add one item of ``amount`` to a per-currency ``[count, amount]`` summary."""
    pair = summary.get(currency)
    if pair is None:
        summary[currency] = [1, amount]
    else:
        pair[0] += 1
        pair[1] += amount


def bump(counter: dict[str, int], key: str, n: int, cap: int) -> None:
    """Add ``n`` to a bounded counter; beyond ``cap`` keys drop the smallest (ties: larger key)."""
    counter[key] = counter.get(key, 0) + n
    if len(counter) > cap:
        trim_counter(counter, cap)


def trim_counter(counter: dict[str, int], cap: int) -> None:
    """Keep the ``cap`` largest counts, ties kept by smaller key so the choice is deterministic."""
    if len(counter) > cap:
        for key in sorted(counter, key=lambda k: (-counter[k], k))[cap:]:
            del counter[key]


def keep_newest(d: dict[K, V], cap: int, rank: Callable[[K, V], Any]) -> None:
    """Drop the lowest-ranked entries until at most ``cap`` remain."""
    if len(d) > cap:
        for key in sorted(d, key=lambda k: rank(k, d[k]))[: len(d) - cap]:
            del d[key]


def event_key(event_id: str) -> str:
    """Fixed 8-character key for the duplicate window.

    48 bits suffice: a false "duplicate" needs a collision with one of the ``DEDUP_WINDOW`` ids
    of the same customer, about 64 / 2**48 per event.
    """
    digest = hashlib.blake2b(event_id.encode(), digest_size=6).digest()
    return binascii.b2a_base64(digest, newline=False).decode()


_FIELDS: Final = tuple(name for name in ProfileState.__dataclass_fields__ if name != "seen_keys")


def to_bytes(state: ProfileState) -> bytes:
    """Compact JSON: ``[STATE_FORMAT, field1, field2, ...]`` in declaration order."""
    return orjson.dumps([STATE_FORMAT, *(getattr(state, name) for name in _FIELDS)])


def from_bytes(data: bytes) -> ProfileState:
    """Inverse of :func:`to_bytes`; fields missing at the end (older blobs) take defaults."""
    loaded = orjson.loads(data)
    if not isinstance(loaded, list) or not loaded or loaded[0] != STATE_FORMAT:
        raise ValueError(f"unsupported profile state format: {str(loaded)[:40]!r}")
    return ProfileState(**dict(zip(_FIELDS, loaded[1:], strict=False)))
