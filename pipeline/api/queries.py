"""The profile API's ClickHouse reads: point queries on sort keys, parameterised.

Every value from a request travels as a server-side ``{name:Type}`` parameter; the only text
formatted into the SQL is the database name from our own settings, checked against a strict
pattern once. Each query is shaped for its table's sort key, so one lookup reads a granule or two
whatever the number of customers:

* ``identities`` ORDER BY (id_type, id_value): the newest owner is ``argMax(customer_id, version)``
  over the few rows of one identifier (cheaper than FINAL, which would merge at read time).
* ``customer_merges`` ORDER BY (loser, survivor): one hop per query, followed for chains.
* ``profile_documents`` ORDER BY customer_id (0006: each ``profiles`` row as one JSON column,
  because reading ~60 columns of ``profiles`` costs five times more): the newest version is
  ``ORDER BY version DESC LIMIT 1`` over the rows of one customer; an ``is_deleted`` newest
  version means erased or merged away.
* ``events`` ORDER BY (customer_id, timestamp, event_id): the customer ids are the key prefix;
  ``LIMIT 1 BY event_id`` drops copies of a re-inserted batch.

Query analysis and a MergeTree read cost a few milliseconds each on chDB, so the profile read
also brings, as scalar subqueries, the customer's ``customer_scores.doc`` (0005) and the first
merge hop of the id asked for: a lookup of a live customer is one query, two by identifier.
Point queries run with ``max_threads = 1``: one granule gains nothing from parallel reading and
saves the thread hand-offs (measured ~10 % less CPU).

The client is synchronous (clickhouse-connect; on chDB it runs in-process), so these calls block
the event loop for the few milliseconds a point query takes. That is acceptable for point reads;
chDB serialises queries on one connection anyway, so a thread pool would not add parallelism.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

#: Merge chains are one or two hops in practice; the bound only stops a corrupt cycle.
MAX_MERGE_HOPS: Final = 16
_DB_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

#: profiles columns rendered into ``profile_documents.doc`` (0006 lists the same, in this order).
PROFILE_FIELDS: Final = (
    "customer_id", "identities", "traits", "traits_updated_at", "events", "page_views",
    "screen_views", "sessions", "time_on_site_s", "first_seen", "last_seen", "cart_adds",
    "checkouts", "product_views", "orders", "currency", "revenue", "gross_revenue",
    "refunded_amount", "refunds", "avg_order_value", "first_order_at", "last_order_at",
    "products_bought", "categories_bought", "devices", "browsers", "os",
    "first_touch_channel", "first_touch_source", "first_touch_medium", "first_touch_campaign",
    "first_touch_referrer", "first_touch_at", "last_touch_channel", "last_touch_source",
    "last_touch_medium", "last_touch_campaign", "last_touch_referrer", "last_touch_at",
    "email_opens", "email_clicks", "form_submits", "reviews", "app_opens", "nps_promoters",
    "nps_passives", "nps_detractors", "nps_last_score", "nps_last_at", "subscriptions",
    "consent", "consent_updated_at", "last_pages", "bot_events", "merged_from", "is_deleted",
)  # fmt: skip

EVENT_FIELDS: Final = (
    "event_id", "customer_id", "type", "event", "timestamp", "received_at", "source",
    "anonymous_id", "user_id", "properties", "traits", "page_url", "page_path", "referrer",
    "utm_source", "utm_medium", "utm_campaign", "device_type", "os", "browser", "channel",
    "is_bot", "consent",
)  # fmt: skip

_IDENTIFIER_OWNER = """
SELECT argMax(customer_id, version) AS customer_id
FROM {db}.identities
WHERE id_type = {{id_type:String}} AND id_value = {{id_value:String}}
SETTINGS max_threads = 1
"""

# argMax by merged_at: a loser has one survivor; should a replay ever write two, the latest wins.
_SURVIVOR = """
SELECT argMax(survivor, merged_at) AS survivor
FROM {db}.customer_merges
WHERE loser = {{customer_id:String}}
SETTINGS max_threads = 1
"""

# Qualified names in the subqueries: an unqualified `doc` would resolve to the outer table's.
_PROFILE = """
SELECT
    p.doc,
    p.is_deleted,
    (
        SELECT any(s.doc)
        FROM {db}.customer_scores AS s
        WHERE s.customer_id = {{customer_id:String}}
    ) AS scores_doc,
    (
        SELECT argMax(m.survivor, m.merged_at)
        FROM {db}.customer_merges AS m
        WHERE m.loser = {{customer_id:String}}
    ) AS merged_into
FROM {db}.profile_documents AS p
WHERE p.customer_id = {{customer_id:String}}
ORDER BY p.version DESC
LIMIT 1
SETTINGS max_threads = 1
"""

# Newest first; ties on the timestamp by event id so pages are stable.
_TIMELINE = """
SELECT {fields}
FROM {db}.events
WHERE customer_id IN {{customer_ids:Array(String)}}
ORDER BY timestamp DESC, event_id DESC
LIMIT 1 BY event_id
LIMIT {{limit:UInt32}}
"""


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """The newest stored version of one customer's profile."""

    doc: str  # profile_documents.doc
    deleted: bool  # erased, or the tombstone of a customer merged away
    scores_doc: str  # customer_scores.doc; "" before the first refresh after it appeared
    merged_into: str  # the direct survivor when this customer was merged away, else ""

    @property
    def merged_from(self) -> list[str]:
        ids = orjson.loads(self.doc).get("merged_from") or []
        return [str(loser) for loser in ids]


class ProfileQueries:
    """Point reads for the profile API on one database."""

    def __init__(self, client: Client, database: str) -> None:
        if not _DB_NAME.match(database):
            raise ValueError(f"invalid database name {database!r}")
        self._client = client
        self._identifier_owner = _IDENTIFIER_OWNER.format(db=database)
        self._survivor = _SURVIVOR.format(db=database)
        self._profile = _PROFILE.format(db=database)
        self._timeline = _TIMELINE.format(db=database, fields=", ".join(EVENT_FIELDS))

    def _rows(self, sql: str, parameters: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return self._client.query(sql, parameters=parameters).result_rows

    def identifier_owner(self, id_type: str, id_value: str) -> str | None:
        """The customer an (already normalized) identifier belongs to, as last written."""
        rows = self._rows(self._identifier_owner, {"id_type": id_type, "id_value": id_value})
        owner = str(rows[0][0]) if rows else ""
        return owner or None  # argMax over no rows is the empty string

    def survivor(self, customer_id: str) -> str:
        """Follow loser → survivor records to the customer ``customer_id`` denotes now."""
        current = customer_id
        seen = {current}
        for _ in range(MAX_MERGE_HOPS):
            rows = self._rows(self._survivor, {"customer_id": current})
            target = str(rows[0][0]) if rows else ""
            if not target:
                return current
            if target in seen:
                log.warning("merge cycle through %s; answering %s", customer_id, current)
                return current
            seen.add(target)
            current = target
        log.warning("merge chain from %s longer than %d hops", customer_id, MAX_MERGE_HOPS)
        return current

    def stored(self, customer_id: str) -> StoredProfile | None:
        """The newest profile row of exactly ``customer_id`` (no merge following)."""
        rows = self._rows(self._profile, {"customer_id": customer_id})
        if not rows:
            return None
        doc, is_deleted, scores_doc, merged_into = rows[0]
        return StoredProfile(str(doc), bool(is_deleted), str(scores_doc), str(merged_into))

    def find(self, customer_id: str) -> tuple[str, StoredProfile] | None:
        """The live profile ``customer_id`` denotes now, as (survivor id, profile); None when
        unknown or erased. A live customer costs one query; a merged one three."""
        stored = self.stored(customer_id)
        if stored is not None and not stored.merged_into:
            return None if stored.deleted else (customer_id, stored)
        # Merged away, or no row at all (it may have merged before its row was written).
        survivor = self.survivor(stored.merged_into if stored is not None else customer_id)
        if survivor == customer_id:
            return None
        stored = self.stored(survivor)
        if stored is None or stored.deleted:
            return None
        return survivor, stored

    def timeline(self, customer_ids: Sequence[str], limit: int) -> list[dict[str, Any]]:
        rows = self._rows(self._timeline, {"customer_ids": list(customer_ids), "limit": limit})
        return [dict(zip(EVENT_FIELDS, row, strict=True)) for row in rows]
