"""The profile API's ClickHouse reads: one query per lookup, parameterised.

Every value from a request travels as a server-side ``{name:Type}`` parameter; the only text
formatted into the SQL is the database name from our own settings, checked against a strict
pattern once.

A profile lookup reads the key-value tables of 0007 (EmbeddedRocksDB, kept by materialized views
from ``identities``, ``customer_merges``, ``profiles`` and ``customer_scores``) in one query of
chained LEFT JOINs on their keys. ClickHouse runs a join on a key-value table's key as a direct
join (a RocksDB multi-get for the rows on the left, no hash table of the right side), so the
query reads one key per table:

1. the start: the customer id asked for, or ``identity_lookup['<type>:<value>']``;
2. one merge hop: ``merge_lookup[start]``'s survivor if the start was merged away, else the start
   (the target);
3. ``profile_lookup[target]`` (the newest profile row as a JSON array, its version and deletion
   flag), ``score_lookup[target]`` (``customer_scores.doc``) and ``merge_lookup[target]`` (set
   only when the target was merged away too: a chain, followed by querying again from there).

Why not MergeTree point reads: each costs chDB a few milliseconds of CPU (analysis, parts,
marks, one granule per part) and the lookup needs four; a scalar subquery per table costs about
as much as a query of its own, and a join on a MergeTree table would hash the whole table. The
key-value query does the same work for ~2.5x less CPU at 1M profiles (bench/bench_api.py).
``join_algorithm = 'direct'`` makes a join that cannot be direct an error instead of a full scan.
Point queries run with ``max_threads = 1``: nothing to parallelise. (chDB still runs each
query's pipeline on a pool thread while the caller waits: ~2 context switches per lookup.)

Nearly all of a lookup's engine time is query analysis and planning, not reading: ``EXPLAIN`` of
the lookup costs ~93% of the CPU of running it, and the CPU is the same at 100k and 1M profiles
(a point read of a one-row RocksDB table costs what one of 1M rows does): ~0.7 ms per query plus
~0.5-0.9 ms per table it names, so the query names only what the answer needs.
``query_plan_optimize_join_order_limit = 0`` skips the join-order search, which has nothing to
choose (every join is a key lookup of the row before it) and cost ~0.4 ms of ~6 ms of CPU per
lookup (engine alone, interleaved A/B at 1M bench profiles).

The timeline reads ``events`` ORDER BY (customer_id, timestamp, event_id): the customer ids are
the key prefix; ``LIMIT 1 BY event_id`` drops copies of a re-inserted batch.

The client is synchronous (clickhouse-connect; on chDB it runs in-process), so these calls block
the event loop for the few milliseconds a query takes. That is acceptable for point reads; chDB
serialises queries on one connection anyway, so a thread pool would not add parallelism.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from clickhouse_connect.driver.client import Client

from pipeline.api import documents
from pipeline.api.documents import PROFILE_FIELDS

log = logging.getLogger(__name__)

__all__ = ["EVENT_FIELDS", "MAX_MERGE_HOPS", "PROFILE_FIELDS", "ProfileQueries", "StoredProfile"]

#: Merge chains are one or two hops in practice; the bound only stops a corrupt cycle.
MAX_MERGE_HOPS: Final = 16
_DB_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

EVENT_FIELDS: Final = (
    "event_id", "customer_id", "type", "event", "timestamp", "received_at", "source",
    "anonymous_id", "user_id", "properties", "traits", "page_url", "page_path", "referrer",
    "utm_source", "utm_medium", "utm_campaign", "device_type", "os", "browser", "channel",
    "is_bot", "consent",
)  # fmt: skip

# {start} is the one-column subquery naming the customer to start from (id or identifier).
# LEFT JOINs without a match give the column defaults: '' and 0.
_LOOKUP = """
SELECT t.start, t.target, p.doc, p.is_deleted, s.doc, m.survivor
FROM
(
    SELECT origin.customer_id AS start, if(hop.survivor = '', start, hop.survivor) AS target
    FROM ({start}) AS origin
    LEFT JOIN {db}.merge_lookup AS hop ON hop.loser = origin.customer_id
) AS t
LEFT JOIN {db}.profile_lookup AS p ON p.customer_id = t.target
LEFT JOIN {db}.score_lookup AS s ON s.customer_id = t.target
LEFT JOIN {db}.merge_lookup AS m ON m.loser = t.target
SETTINGS max_threads = 1, join_algorithm = 'direct', join_use_nulls = 0,
    query_plan_optimize_join_order_limit = 0
"""
_START_BY_ID = "SELECT {customer_id:String} AS customer_id"
_START_BY_IDENTIFIER = """
SELECT customer_id FROM {db}.identity_lookup
WHERE key = concat({{id_type:String}}, ':', {{id_value:String}})
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

    doc: str  # profile_lookup.doc: the profiles row as a JSON array in PROFILE_FIELDS order
    deleted: bool  # erased, or the tombstone of a customer merged away
    scores_doc: str  # customer_scores.doc; "" before the first refresh after it appeared
    merged_into: str  # the direct survivor when this customer was merged away, else ""

    @property
    def merged_from(self) -> list[str]:
        return [str(loser) for loser in documents.profile_row(self.doc).get("merged_from") or []]


@dataclass(frozen=True, slots=True)
class _Step:
    """One lookup query's answer: where it started, the customer after one merge hop, and that
    customer's stored profile (doc "" when it has no row)."""

    start: str
    target: str
    profile: StoredProfile


class ProfileQueries:
    """Point reads for the profile API on one database."""

    def __init__(self, client: Client, database: str) -> None:
        if not _DB_NAME.match(database):
            raise ValueError(f"invalid database name {database!r}")
        self._client = client
        self._by_id = _LOOKUP.format(db=database, start=_START_BY_ID)
        self._by_identifier = _LOOKUP.format(
            db=database, start=_START_BY_IDENTIFIER.format(db=database).strip()
        )
        self._timeline = _TIMELINE.format(db=database, fields=", ".join(EVENT_FIELDS))

    def _rows(self, sql: str, parameters: dict[str, Any]) -> Sequence[Sequence[Any]]:
        return self._client.query(sql, parameters=parameters).result_rows

    def _step(self, sql: str, parameters: dict[str, Any]) -> _Step | None:
        rows = self._rows(sql, parameters)
        if not rows:
            return None  # an identifier nobody has
        start, target, doc, is_deleted, scores_doc, merged_into = rows[0]
        stored = StoredProfile(str(doc), bool(is_deleted), str(scores_doc), str(merged_into))
        return _Step(str(start), str(target), stored)

    def find(self, customer_id: str) -> tuple[str, StoredProfile] | None:
        """The live profile ``customer_id`` denotes now, as (survivor id, profile); None when
        unknown or erased. One query, and one more per two further hops of a merge chain."""
        step = self._step(self._by_id, {"customer_id": customer_id})
        assert step is not None  # a start by id always gives a row
        return self._resolve(step)

    def find_by_identifier(
        self, id_type: str, id_value: str
    ) -> tuple[str | None, tuple[str, StoredProfile] | None]:
        """(the customer an already normalized identifier names, as last written; the live
        profile that customer denotes now). (None, None) when no customer has the identifier."""
        step = self._step(self._by_identifier, {"id_type": id_type, "id_value": id_value})
        if step is None:
            return None, None
        return step.start, self._resolve(step)

    def _resolve(self, step: _Step) -> tuple[str, StoredProfile] | None:
        """Follow merge records from a lookup's target to the customer that is still its own."""
        seen = {step.start, step.target}
        for _ in range(MAX_MERGE_HOPS):
            stored = step.profile
            if not stored.merged_into:
                if not stored.doc or stored.deleted:
                    return None  # no row (unknown), erased, or a merged id's survivor not written
                return step.target, stored
            if stored.merged_into in seen:
                log.warning("merge cycle through %s; answering %s", step.start, step.target)
                return None if not stored.doc or stored.deleted else (step.target, stored)
            next_step = self._step(self._by_id, {"customer_id": stored.merged_into})
            assert next_step is not None
            seen.update((next_step.start, next_step.target))
            step = next_step
        log.warning("merge chain from %s longer than %d hops", step.start, MAX_MERGE_HOPS)
        return None

    def timeline(self, customer_ids: Sequence[str], limit: int) -> list[dict[str, Any]]:
        rows = self._rows(self._timeline, {"customer_ids": list(customer_ids), "limit": limit})
        return [dict(zip(EVENT_FIELDS, row, strict=True)) for row in rows]
