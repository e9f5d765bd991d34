"""Simulated people and the Segment event stream they produce (pure: no I/O, no clock).

A :class:`Simulation` builds ``customers`` people from one seeded ``random.Random`` and yields
:class:`SimEvent` s in *sending* order, each tagged with the person who really caused it, so the
identity resolution downstream can be scored against the truth. Same config (seed, end time) →
the same stream, byte for byte.

How people behave, and why each trait is there:

* Activity is Zipf-distributed over people (weight ``1 / rank**s``): a few heavy buyers and a long
  tail, as in real shops; every person gets at least the first visit so all of them exist.
* People with an account (``known_share``) log in (``identify`` with userId, email, phone, name)
  in the first session on every cookie they use, so every cookie of theirs is linkable: a perfect
  resolver reaches recall 1.0 on this truth. The others browse anonymously, and some of them
  check out as guests with their email (linking the cookie to the email).
* Several devices per person, cookies that churn (``cookie_churn``: a cleared browser), sessions of
  page views from a traffic source (referrer, UTM, click ids), product views, cart adds, orders
  (Segment ``Order Completed``) and later refunds (server-side, by userId).
* Email opens go through the pixel, identified by the email alone (mail clients keep no cookie).
* Shared devices: a share of people use one device of another person (one cookie, two logins);
  the identity limits must refuse the second user id on that cookie.
* Bots: crawler sessions with crawler user agents and a fresh cookie per crawl.
* Duplicates (the same message sent again, same messageId) and late events (held back and sent
  hundreds of events later, so their timestamp is older than their neighbours').
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, Literal

from pipeline.loadgen import catalog

DAY_MS = 86_400_000
#: A little above the measured average number of events per session (~9 with the default
#: shares): the planned sessions then never outlast the event budget, so every person's first
#: visit is sent, and the rest of the budget goes to extra sessions in the last day.
MEAN_SESSION_EVENTS = 10.0
LIBRARY = {"name": "analytics.js", "version": "5.2.0"}
SERVER_LIBRARY = {"name": "analytics-python", "version": "2.3.2"}


@dataclass(frozen=True)
class ModelConfig:
    customers: int = 3000
    events: int = 60_000
    seed: int = 1
    #: Event times end here (ms since the epoch) and start ``history_days`` earlier.
    end_ms: int = 1_750_000_000_000
    history_days: int = 120
    zipf_exponent: float = 0.8
    known_share: float = 0.7
    shared_device_share: float = 0.03
    bot_session_share: float = 0.02
    duplicate_share: float = 0.01
    late_share: float = 0.02
    cookie_churn: float = 0.03

    def __post_init__(self) -> None:
        if self.customers < 2 or self.events < 1:
            raise ValueError("need at least 2 customers and 1 event")


@dataclass
class Device:
    kind: Literal["desktop", "mobile"]
    user_agent: str
    ip: str
    cookies: list[str]
    #: Who used the device last: a different person logs the previous one out.
    last_user: str | None = None
    shared: bool = False


@dataclass
class Person:
    person_id: str
    known: bool
    first_name: str
    last_name: str
    city: str
    email: str | None
    phone: str | None
    user_id: str | None
    devices: list[Device] = field(default_factory=list)
    orders: list[tuple[str, float]] = field(default_factory=list)
    refunded: set[str] = field(default_factory=set)
    logged_in_cookies: set[str] = field(default_factory=set)

    @property
    def anonymous_ids(self) -> list[str]:
        return [c for d in self.devices for c in d.cookies]


@dataclass(frozen=True)
class SimEvent:
    """One message to send: through ``/v1/batch`` or the pixel, and who really sent it."""

    channel: Literal["batch", "pixel"]
    message: dict[str, Any]
    person_id: str
    duplicate: bool = False
    late: bool = False
    bot: bool = False
    shared_device: bool = False

    @property
    def message_id(self) -> str:
        return str(self.message["messageId"])


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Simulation:
    """The people and their stream; iterate :meth:`events` once, then read :attr:`persons`."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._orders = itertools.count(1)
        # Per-seed tags keep the emails and phones of two runs with other seeds apart, so a
        # second run on the same stack adds new people instead of merging into the first run's.
        self._tag = f"{self._rng.getrandbits(16):04x}."
        self._phone_offset = self._rng.randrange(len(catalog.AREA_CODES) * 800 * 10_000)
        self.persons = [self._person(i) for i in range(config.customers)]
        self.bots: dict[str, list[str]] = {}  # bot id → the cookies of its crawls
        self._share_devices()
        ranks = range(1, config.customers + 1)
        self._cum_weights = list(accumulate(1.0 / r**config.zipf_exponent for r in ranks))
        self._source_weights = list(accumulate(s.weight for s in catalog.TRAFFIC_SOURCES))

    # -- people ------------------------------------------------------------------------------

    def _uuid(self) -> str:
        # A UUID-shaped random hex string; formatting it directly is ~5x faster than uuid.UUID.
        h = f"{self._rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def _device(self, kind: Literal["desktop", "mobile"]) -> Device:
        rng = self._rng
        agents = catalog.DESKTOP_UAS if kind == "desktop" else catalog.MOBILE_UAS
        ip = ".".join(
            str(rng.randint(lo, hi)) for lo, hi in ((24, 220), (0, 255), (0, 255), (1, 254))
        )
        return Device(kind, rng.choice(agents), ip, [self._uuid()])

    def _person(self, index: int) -> Person:
        rng = self._rng
        first, last = rng.choice(catalog.FIRST_NAMES), rng.choice(catalog.LAST_NAMES)
        known = rng.random() < self.config.known_share
        # Unique by construction (the index is in them), so the truth never shares identifiers.
        email = f"{first}.{last}.{self._tag}{index}@{rng.choice(catalog.EMAIL_DOMAINS)}".lower()
        has_email = known or rng.random() < 0.5
        # Numbers run from a per-seed offset: unique within a run, rarely shared across seeds.
        number = (self._phone_offset + index) % (len(catalog.AREA_CODES) * 800 * 10_000)
        area = catalog.AREA_CODES[number // 8_000_000]
        phone = f"+1 {area} {200 + number // 10_000 % 800:03d} {number % 10_000:04d}"
        person = Person(
            person_id=f"P{index:06d}",
            known=known,
            first_name=first,
            last_name=last,
            city=rng.choice(catalog.CITIES),
            email=email if has_email else None,
            phone=phone if known and rng.random() < 0.6 else None,
            user_id=f"cus_{index:06d}_{rng.getrandbits(32):08x}" if known else None,
        )
        kinds: list[Literal["desktop", "mobile"]] = ["mobile" if rng.random() < 0.55 else "desktop"]
        if known:  # people with an account use the shop from more places
            kinds += ["desktop" if kinds[0] == "mobile" else "mobile"] * (rng.random() < 0.6)
            kinds += ["mobile"] * (rng.random() < 0.2)
        person.devices = [self._device(kind) for kind in kinds]
        return person

    def _share_devices(self) -> None:
        """Households: a share of people also use a device of another person (same cookie)."""
        known = [p for p in self.persons if p.known]
        n_pairs = round(len(self.persons) * self.config.shared_device_share / 2)
        if len(known) < 2 or n_pairs < 1:
            return
        for _ in range(n_pairs):
            owner, guest = self._rng.sample(known, 2)
            device = owner.devices[0]
            device.shared = True
            if device not in guest.devices:
                guest.devices.append(device)

    # -- the stream --------------------------------------------------------------------------

    def events(self) -> Iterator[SimEvent]:
        """Exactly ``config.events`` messages in sending order (duplicates included)."""
        cfg, rng = self.config, self._rng
        held: list[tuple[int, int, SimEvent]] = []  # (release at index, tiebreak, event)
        sent = 0
        tiebreak = itertools.count()
        for event in self._base_events():
            if sent + len(held) >= cfg.events:
                break
            while held and held[0][0] <= sent:
                yield heapq.heappop(held)[2]
                sent += 1
            if event.channel == "batch" and not event.bot and rng.random() < cfg.late_share:
                late = replace(event, late=True)
                heapq.heappush(held, (sent + rng.randint(200, 2000), next(tiebreak), late))
            else:
                yield event
                sent += 1
            if event.channel == "batch" and rng.random() < cfg.duplicate_share:
                dup = replace(event, duplicate=True)
                heapq.heappush(held, (sent + rng.randint(1, 100), next(tiebreak), dup))
        while held and sent < cfg.events:
            yield heapq.heappop(held)[2]
            sent += 1

    def _base_events(self) -> Iterator[SimEvent]:
        for at_ms, who in self._sessions():
            if who.startswith("bot-"):
                yield from self._bot_session(who, at_ms)
            else:
                yield from self._session(self.persons[int(who[1:])], at_ms)

    def _sessions(self) -> Iterator[tuple[int, str]]:
        """(start time, person or bot id), in time order; more in the last day if needed."""
        cfg, rng = self.config, self._rng
        start = cfg.end_ms - cfg.history_days * DAY_MS
        n_sessions = max(cfg.customers, math.ceil(cfg.events / MEAN_SESSION_EVENTS))
        arrival = [rng.randint(start, cfg.end_ms - 3_600_000) for _ in self.persons]
        plan: list[tuple[int, str]] = [
            (t, p.person_id) for t, p in zip(arrival, self.persons, strict=True)
        ]
        for _ in range(n_sessions - cfg.customers):
            index = bisect.bisect_left(self._cum_weights, rng.random() * self._cum_weights[-1])
            when = rng.randint(arrival[index], cfg.end_ms - 600_000)
            plan.append((when, self.persons[index].person_id))
        n_bots = max(1, len(catalog.BOT_UAS) * 2)
        for _ in range(round(n_sessions * cfg.bot_session_share)):
            plan.append((rng.randint(start, cfg.end_ms), f"bot-{rng.randrange(n_bots):03d}"))
        plan.sort()
        yield from plan
        while True:  # the event budget outlasted the plan: keep the heavy users busy today
            index = bisect.bisect_left(self._cum_weights, rng.random() * self._cum_weights[-1])
            yield rng.randint(cfg.end_ms - DAY_MS, cfg.end_ms - 600_000), f"P{index:06d}"

    # -- one session ---------------------------------------------------------------------------

    def _session(self, person: Person, t0: int) -> Iterator[SimEvent]:
        rng = self._rng
        device = rng.choice(person.devices)
        # Only account holders may clear cookies: they log in again on the new one, while an
        # anonymous visitor's new cookie could never be tied to them (not knowable truth).
        if person.known and rng.random() < self.config.cookie_churn:
            device.cookies.append(self._uuid())  # the browser's storage was cleared
        cookie = device.cookies[-1]
        if device.last_user != person.person_id:
            device.last_user = person.person_id  # a new person on the device: logged out
            logged_in = False
        else:
            logged_in = person.known and cookie in person.logged_in_cookies
        session = _Session(self, person, device, cookie, t0, logged_in)
        source = catalog.TRAFFIC_SOURCES[
            bisect.bisect_left(self._source_weights, rng.random() * self._source_weights[-1])
        ]
        if person.email and (source.name == "newsletter" or rng.random() < 0.06):
            yield session.email_open(t0 - rng.randint(60_000, 6 * 3_600_000))
        if person.orders and person.known and rng.random() < 0.05:
            yield from session.refund()
        yield session.landing(source)
        needs_login = person.known and cookie not in person.logged_in_cookies
        needs_signup = cookie not in person.logged_in_cookies
        if person.known and (needs_login or (not logged_in and rng.random() < 0.15)):
            yield session.login()
        elif not person.known and person.email and needs_signup:
            yield session.subscribe()
        yield from session.browse(1 + min(10, int(rng.expovariate(1 / 2.5))))

    def _bot_session(self, bot_id: str, t0: int) -> Iterator[SimEvent]:
        rng = self._rng
        cookie = self._uuid()  # crawlers keep no cookies: a new anonymous id every crawl
        self.bots.setdefault(bot_id, []).append(cookie)
        agent = catalog.BOT_UAS[int(bot_id[4:]) % len(catalog.BOT_UAS)]
        paths = [p for p, _ in catalog.CONTENT_PAGES] + [
            catalog.product_path(p) for p in catalog.PRODUCTS
        ]
        for n in range(rng.randint(5, 25)):
            path = rng.choice(paths)
            message = {
                "type": "page",
                "messageId": self._uuid(),
                "anonymousId": cookie,
                "timestamp": iso(t0 + n * 1500),
                "properties": {"url": catalog.SITE + path, "path": path},
                "context": {
                    "userAgent": agent,
                    "library": LIBRARY,
                    "page": {"url": catalog.SITE + path, "path": path},
                },
            }
            yield SimEvent("batch", message, bot_id, bot=True)

    def next_order_id(self) -> str:
        return f"ord_{self._tag}{next(self._orders):07d}"

    def uuid(self) -> str:
        return self._uuid()


class _Session:
    """One visit of one person on one device: builds its messages with advancing time."""

    def __init__(
        self, sim: Simulation, person: Person, device: Device, cookie: str, t0: int, logged_in: bool
    ) -> None:
        self.sim, self.rng = sim, sim._rng
        self.person, self.device, self.cookie = person, device, cookie
        self.t = t0
        self.logged_in = logged_in
        self.referrer: str | None = None
        self.cart: list[tuple[catalog.Product, int]] = []

    def _event(
        self, message: dict[str, Any], channel: Literal["batch", "pixel"] = "batch"
    ) -> SimEvent:
        return SimEvent(channel, message, self.person.person_id, shared_device=self.device.shared)

    def _tick(self) -> int:
        self.t += self.rng.randint(4_000, 120_000)
        return self.t

    def _base(self, kind: str, path: str, title: str, query: str = "") -> dict[str, Any]:
        url = catalog.SITE + path + (f"?{query}" if query else "")
        page = {"url": url, "path": path, "title": title, "referrer": self.referrer}
        message: dict[str, Any] = {
            "type": kind,
            "messageId": self.sim.uuid(),
            "anonymousId": self.cookie,
            "timestamp": iso(self._tick()),
            "context": {
                "userAgent": self.device.user_agent,
                "ip": self.device.ip,
                "locale": "en-US",
                "library": LIBRARY,
                "page": {k: v for k, v in page.items() if v is not None},
            },
        }
        if self.logged_in and self.person.user_id:
            message["userId"] = self.person.user_id
        if kind == "page":
            message["name"] = title
            message["properties"] = dict(message["context"]["page"])
        return message

    def landing(self, source: catalog.Source) -> SimEvent:
        rng = self.rng
        query = source.query.format(c=rng.choice(catalog.CAMPAIGNS), g=f"{rng.getrandbits(48):x}")
        path, title = rng.choice(catalog.CONTENT_PAGES[:3])
        self.referrer = source.referrer
        message = self._base("page", path, title, query)
        if query.startswith("utm_"):
            utm = dict(pair.split("=", 1) for pair in query.split("&") if pair.startswith("utm_"))
            message["context"]["campaign"] = {
                "source" if k == "utm_source" else k[4:].replace("campaign", "name"): v
                for k, v in utm.items()
            }
        # Later pages of the visit come from inside the site.
        self.referrer = message["context"]["page"]["url"]
        return self._event(message)

    def login(self) -> SimEvent:
        person = self.person
        message = self._base("identify", "/account/login", "Sign in")
        message["userId"] = person.user_id
        traits: dict[str, Any] = {
            "email": person.email,
            "firstName": person.first_name,
            "lastName": person.last_name,
            "name": f"{person.first_name} {person.last_name}",
            "address": {"city": person.city},
        }
        if person.phone:
            traits["phone"] = person.phone
        message["traits"] = traits
        self.logged_in = True
        person.logged_in_cookies.add(self.cookie)
        return self._event(message)

    def subscribe(self) -> SimEvent:
        """A visitor without an account leaves an email in the newsletter form."""
        message = self._base("identify", "/newsletter", "Newsletter")
        message["traits"] = {"email": self.person.email, "newsletter": True}
        self.person.logged_in_cookies.add(self.cookie)
        return self._event(message)

    def browse(self, pages: int) -> Iterator[SimEvent]:
        rng = self.rng
        for _ in range(pages):
            roll = rng.random()
            if roll < 0.2:
                path, title = rng.choice(catalog.CONTENT_PAGES)
                yield self._page(path, title)
            elif roll < 0.4:
                category = rng.choice(catalog.CATEGORIES)
                yield self._page(f"/c/{category.lower()}", category)
            else:
                yield from self._product()
        if self.cart and rng.random() < 0.45:
            yield from self._checkout()

    def _page(self, path: str, title: str) -> SimEvent:
        message = self._base("page", path, title)
        self.referrer = message["context"]["page"]["url"]
        return self._event(message)

    def _product(self) -> Iterator[SimEvent]:
        product = self.rng.choice(catalog.PRODUCTS)
        path = catalog.product_path(product)
        yield self._page(path, product.name)
        viewed = self._base("track", path, product.name)
        viewed["event"] = "Product Viewed"
        viewed["properties"] = _product_properties(product)
        yield self._event(viewed)
        if self.rng.random() < 0.3:
            quantity = 1 if self.rng.random() < 0.85 else 2
            self.cart.append((product, quantity))
            added = self._base("track", path, product.name)
            added["event"] = "Product Added"
            added["properties"] = {**_product_properties(product), "quantity": quantity}
            yield self._event(added)

    def _checkout(self) -> Iterator[SimEvent]:
        person = self.person
        if person.known and not self.logged_in:
            yield self.login()  # the shop asks for the account at checkout
        elif not person.known and not person.email:
            return  # guest checkout needs an email; this visitor leaves with the cart
        revenue = round(sum(p.price * q for p, q in self.cart), 2)
        order_id = self.sim.next_order_id()
        products = [{**_product_properties(p), "quantity": q} for p, q in self.cart]
        started = self._base("track", "/checkout", "Checkout")
        started["event"] = "Checkout Started"
        started["properties"] = {"revenue": revenue, "currency": catalog.CURRENCY}
        yield self._event(started)
        completed = self._base("track", "/checkout/thank-you", "Thank you")
        completed["event"] = "Order Completed"
        shipping = 0.0 if revenue >= 100 else 7.5
        completed["properties"] = {
            "order_id": order_id,
            "total": round(revenue + shipping, 2),
            "revenue": revenue,
            "shipping": shipping,
            "currency": catalog.CURRENCY,
            "products": products,
        }
        if not person.known:
            completed["context"]["traits"] = {"email": person.email}
        person.orders.append((order_id, revenue))
        self.cart.clear()
        yield self._event(completed)

    def refund(self) -> Iterator[SimEvent]:
        """A refund issued by the back office: server-side, by userId, no browser context."""
        person = self.person
        open_orders = [o for o in person.orders if o[0] not in person.refunded]
        if not open_orders or not person.user_id:
            return
        order_id, revenue = self.rng.choice(open_orders)
        person.refunded.add(order_id)
        message = {
            "type": "track",
            "event": "Order Refunded",
            "messageId": self.sim.uuid(),
            "userId": person.user_id,
            "timestamp": iso(self.t - self.rng.randint(3_600_000, 48 * 3_600_000)),
            "properties": {"order_id": order_id, "total": revenue, "currency": catalog.CURRENCY},
            "context": {"library": SERVER_LIBRARY},
        }
        yield self._event(message)

    def email_open(self, at_ms: int) -> SimEvent:
        message = {
            "type": "track",
            "event": "Email Opened",
            "messageId": self.sim.uuid(),
            "timestamp": iso(at_ms),
            "properties": {
                "campaign_id": self.rng.choice(catalog.CAMPAIGNS),
                "email_subject": "New this week at the shop",
            },
            "context": {
                "traits": {"email": self.person.email},
                "userAgent": catalog.MAIL_CLIENT_UA,
            },
        }
        return SimEvent("pixel", message, self.person.person_id)


def _product_properties(product: catalog.Product) -> dict[str, Any]:
    return {
        "product_id": product.product_id,
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "price": product.price,
        "currency": catalog.CURRENCY,
    }
