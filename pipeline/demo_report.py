"""The demo's read-back and report: profile API lookups, identity scoring, text tables.

Split from :mod:`pipeline.demo` (the flow) so each reads in one sitting. Scoring is pure.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any

import aiohttp

from pipeline.loadgen.model import Person, Simulation
from pipeline.loadgen.send import SendStats
from pipeline.settings import Settings

TIMELINE_LIMIT = 1000
CONCURRENCY = 4


def lookup_query(person: Person) -> tuple[str, str]:
    """The strongest identifier of a person, as the profile API's query parameter."""
    if person.user_id:
        return "user_id", person.user_id
    if person.email:
        return "email", person.email
    return "anonymous_id", person.anonymous_ids[0]


async def _get(
    session: aiohttp.ClientSession, url: str, params: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    async with session.get(url, params=params) as resp:
        if resp.status == 404:
            return None
        resp.raise_for_status()
        body: dict[str, Any] = await resp.json()
        return body


async def _gather_bounded(calls: Iterable[Any]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def bounded(call: Any) -> Any:
        async with gate:
            return await call

    return await asyncio.gather(*(bounded(c) for c in calls))


async def fetch_profiles(
    api_url: str, token: str, persons: Sequence[Person]
) -> dict[str, dict[str, Any] | None]:
    """person id → the profile the API answers for that person's strongest identifier."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        found = await _gather_bounded(
            _get(session, f"{api_url}/v1/profiles", dict([lookup_query(p)])) for p in persons
        )
    return {p.person_id: doc for p, doc in zip(persons, found, strict=True)}


async def fetch_timelines(
    api_url: str,
    token: str,
    profiles: Mapping[str, dict[str, Any] | None],
    sample: Sequence[Person],
) -> dict[str, list[str] | None]:
    """customer id → event ids of its timeline (merged customers included); None if truncated."""
    customers = sorted(
        {doc["customer_id"] for p in sample if (doc := profiles.get(p.person_id)) is not None}
    )
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        pages = await _gather_bounded(
            _get(session, f"{api_url}/v1/profiles/{cid}/events", {"limit": str(TIMELINE_LIMIT)})
            for cid in customers
        )
    timelines: dict[str, list[str] | None] = {}
    for cid, page in zip(customers, pages, strict=True):
        events = (page or {}).get("events", [])
        timelines[cid] = None if len(events) >= TIMELINE_LIMIT else [e["event_id"] for e in events]
    return timelines


@dataclass(frozen=True)
class IdentityScore:
    people: int
    events: int
    precision: float
    recall: float
    split_people: int  # people whose events landed in more than one customer
    mixed_customers: int  # customers holding events of more than one person


def score_identity(
    owner: Mapping[str, str],
    sample: Sequence[Person],
    profiles: Mapping[str, dict[str, Any] | None],
    timelines: Mapping[str, list[str] | None],
) -> IdentityScore | None:
    """Pairwise precision / recall of "same customer" against "same person" on a sample.

    The events scored: every event of the sampled people plus every event found in their
    customers' timelines (so other people's events wrongly attached count against precision).
    An event of a sampled person found in none of those timelines sits in some other customer:
    it gets a customer of its own, which counts against recall. People whose customer's timeline
    did not fit one page are left out.
    """
    complete = [
        p
        for p in sample
        if (doc := profiles.get(p.person_id)) is not None
        and timelines.get(doc["customer_id"]) is not None
    ]
    predicted: dict[str, str] = {}
    for cid, events in timelines.items():
        for event_id in events or ():
            predicted[event_id] = cid
    people = {p.person_id for p in complete}
    scored = {e for e, person in owner.items() if person in people}
    scored |= {e for cid, events in timelines.items() if events for e in events if e in owner}
    if not scored:
        return None
    cells: Counter[tuple[str, str]] = Counter()
    for event_id in scored:
        cells[(predicted.get(event_id, "unplaced:" + event_id), owner[event_id])] += 1
    by_customer: Counter[str] = Counter()
    by_person: Counter[str] = Counter()
    customers_of: defaultdict[str, set[str]] = defaultdict(set)
    persons_in: defaultdict[str, set[str]] = defaultdict(set)
    for (cid, person), n in cells.items():
        by_customer[cid] += n
        by_person[person] += n
        customers_of[person].add(cid)
        persons_in[cid].add(person)
    together = sum(comb(n, 2) for n in cells.values())
    predicted_pairs = sum(comb(n, 2) for n in by_customer.values())
    true_pairs = sum(comb(n, 2) for n in by_person.values())
    return IdentityScore(
        people=len(complete),
        events=len(scored),
        precision=together / predicted_pairs if predicted_pairs else 1.0,
        recall=together / true_pairs if true_pairs else 1.0,
        split_people=sum(1 for p in people if len(customers_of[p]) > 1),
        mixed_customers=sum(1 for c in persons_in.values() if len(c) > 1),
    )


# -- the text report ---------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        return indent + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(headers), *(line(r) for r in rows)]


def _money(value: float) -> str:
    return f"{value:,.2f}"


RFM_ORDER = ("Champions", "Loyal", "Potential", "New", "At Risk", "Hibernating", "Lost")


def render_report(
    *,
    settings: Settings,
    sim: Simulation,
    stats: SendStats,
    kinds: Mapping[str, int],
    metrics_delta: Mapping[str, float],
    profiles: Mapping[str, dict[str, Any] | None],
    identity: IdentityScore | None,
    processed_s: float,
    total_s: float,
    truth_path: Path,
) -> list[str]:
    docs = {doc["customer_id"]: doc for doc in profiles.values() if doc is not None}
    missing = sum(1 for doc in profiles.values() if doc is None)
    merges = int(metrics_delta.get("cdp_identity_merges_total", 0))
    refused = {
        key.split('"')[1]: int(v)
        for key, v in metrics_delta.items()
        if key.startswith("cdp_identity_refused_links_total{") and v
    }
    out = [
        "",
        "=" * 78,
        "Demo report",
        "=" * 78,
        f"Sent {stats.sent:,} events in {stats.seconds:.1f}s ({stats.events_per_s:,.0f} events/s)"
        f"; accepted {stats.accepted:,}, rejected {stats.rejected:,}; fully processed "
        f"{processed_s:.1f}s after the last send; {total_s:.0f}s in all.",
        "  in the stream: " + ", ".join(f"{n:,} {k}" for k, n in kinds.items()),
        "",
        "Customers",
        f"  simulated people                 {len(sim.persons):,} (+{len(sim.bots)} crawlers)",
        f"  read back (API lookups)          {len(profiles):,} people → {len(docs):,} customer "
        "profiles" + (f", {missing} people not found" if missing else ""),
        f"  merges                           {merges:,}",
        f"  refused links                    {sum(refused.values()):,}"
        + (f"  ({', '.join(f'{k}: {v}' for k, v in sorted(refused.items()))})" if refused else ""),
    ]
    if identity is not None:
        out.append(
            f"  identity vs ground truth         precision {identity.precision:.4f}, "
            f"recall {identity.recall:.4f}  (pairwise, {identity.people} sampled people, "
            f"{identity.events:,} events; {identity.split_people} split, "
            f"{identity.mixed_customers} customers mixing people)"
        )
    out += [
        "",
        f"The tables cover the {len(docs):,} profiles read back (the heaviest customers and a",
        "random sample: the profile API has no cross-customer endpoint yet; the full figures",
        "are the ClickHouse views cdp.rfm and cdp.channel_performance).",
        "",
        "Top customers by revenue",
    ]
    top = sorted(docs.values(), key=lambda d: d["stats"].get("revenue") or 0, reverse=True)[:5]
    out += _table(
        ("customer", "name", "orders", "revenue", "refunds", "RFM segment"),
        [
            (
                d["customer_id"][:13] + "…",
                str(d["traits"].get("name") or d["traits"].get("email") or "-"),
                str(d["stats"].get("orders", 0)),
                _money(d["stats"].get("revenue") or 0),
                str(d["stats"].get("refunds", 0)),
                str(((d.get("scores") or {}).get("rfm") or {}).get("segment") or "-"),
            )
            for d in top
        ],
    )
    out += ["", *_rfm_lines(docs.values()), "", *_channel_lines(docs.values())]
    out += _where_to_look(settings, top, truth_path)
    return out


def _rfm_lines(docs: Iterable[dict[str, Any]]) -> list[str]:
    segments: Counter[str] = Counter()
    buyers = unscored = 0
    for doc in docs:
        if not doc["stats"].get("orders"):
            continue
        buyers += 1
        rfm = (doc.get("scores") or {}).get("rfm") or {}
        if rfm.get("segment"):
            segments[rfm["segment"]] += 1
        else:
            unscored += 1
    lines = [f"RFM segments (customers with orders: {buyers:,})"]
    order = [s for s in RFM_ORDER if s in segments] + sorted(set(segments) - set(RFM_ORDER))
    lines += _table(("segment", "customers"), [(s, f"{segments[s]:,}") for s in order])
    if unscored:
        lines.append(
            f"  not scored yet: {unscored:,} (scores are recomputed every minute; "
            "the profile API has them at the next refresh)"
        )
    return lines


def _channel_lines(docs: Iterable[dict[str, Any]]) -> list[str]:
    rows: defaultdict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for doc in docs:
        channel = ((doc["stats"].get("first_touch") or {}).get("channel")) or "unknown"
        row = rows[channel]
        row[0] += 1
        row[1] += doc["stats"].get("orders") or 0
        row[2] += doc["stats"].get("revenue") or 0.0
    ordered = sorted(rows.items(), key=lambda kv: -kv[1][2])
    lines = ["Channels (first touch)"]
    lines += _table(
        ("channel", "customers", "orders", "revenue"),
        [(c, f"{int(r[0]):,}", f"{int(r[1]):,}", _money(r[2])) for c, r in ordered],
    )
    return lines


def _where_to_look(settings: Settings, top: Sequence[dict[str, Any]], truth: Path) -> list[str]:
    token = "$CDP_API_TOKEN"  # noqa: S105 - a shell variable, not a secret
    if settings.api_token.get_secret_value() == "local-api-token":
        token = "local-api-token"  # noqa: S105 - the well-known local default
    example = top[0]["customer_id"] if top else "<customer_id>"
    return [
        "",
        "Where to look",
        f"  profile       curl -H 'Authorization: Bearer {token}' "
        f"{settings.api_url}/v1/profiles/{example}",
        f"  timeline      curl -H 'Authorization: Bearer {token}' "
        f"'{settings.api_url}/v1/profiles/{example}/events?limit=20'",
        f"  API spec      {settings.api_url}/openapi.json",
        f"  metrics       {settings.collector_url}/metrics  {settings.api_url}/metrics",
        f"  ground truth  {truth}",
        f"  SQL views     cdp.rfm, cdp.abc, cdp.xyz, cdp.channel_performance, "
        f"cdp.cohort_retention, cdp.customer_ltv (after `make down`: chDB at {settings.chdb_path})",
        "",
        "The stack keeps running; send more with `cdp loadgen`, stop it with `make down`.",
    ]
