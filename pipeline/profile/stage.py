"""The profile stage's logic over one ``cdp.events.resolved`` message: store in, writes out.

Pure (no Kafka, Faust or ClickHouse), in the style of bytewax's ``stateful_map``: the faust agent
in ``processor.py`` decodes a :data:`ResolvedBatch`, calls :func:`process_batch` with its table
as the store, writes ``writes`` back, sends ``forwards`` and the profile change messages. Nothing
is written to the store here, so a message that raises leaves no half-applied state behind.

A message (``schemas/avro/resolved_batch.avsc``) addressed to partition ``p`` is applied in the
schema's order:

1. ``events``: grouped by customer and applied with :func:`apply_all` (one store read and one
   write per customer per message, not per event).
2. ``merges`` (this partition holds the loser): the loser's value becomes a tombstone
   (``merged_into`` = survivor, state kept, see below) and its profile is folded into the
   survivor: directly if the survivor lives in this partition, else as a ``fold`` sent to
   ``partition_for(survivor)``.
3. ``folds``: merged into the survivor's state with :func:`merge`; the loser and the loser's own
   ``merged_from`` are added to the survivor's ``merged_from``.

Anything addressed to a tombstoned customer (an event still in flight, a fold whose survivor has
itself merged away) follows the chain of tombstones to the live customer; when the chain leaves
this partition the item is *forwarded* there, re-addressed to the last customer known here, and
the receiving partition continues the chain. Every customer is therefore only ever read and
written in its own partition, in offset order, which is what makes the row versions grow.

Exactness under redelivery (at-least-once): duplicate events are absorbed by the state's event-id
window (the loser's window is merged into the survivor, so it also covers forwarded events); a
fold whose loser is already in the survivor's ``merged_from`` (or in that of a tombstone on the
way) is a duplicate and ignored; a merge replayed for a customer already tombstoned into the
same survivor re-sends the fold from the state the tombstone kept, because the first fold may be
the part of the crashed attempt that never reached Kafka.

Stored value (the faust table's bytes), a JSON header line then the state::

    {"format":1,"merged_from":["c2","c7"]}\\n[1, ...ProfileState (state.to_bytes)...]
    {"format":1,"merged_from":[],"merged_into":"c1","merged_at":1714564800000}\\n[1, ...]

The bookkeeping stays out of the state, whose part is exactly :func:`to_bytes` with its own
format number, so the two evolve independently. A tombstone keeps the loser's last state: the
replayed-merge case above needs it, and it costs the size of customers that merged away (mostly
short anonymous histories). A ``fold``'s
``state`` bytes carry the loser's stored value in this same format (with ``merged_into`` left
out), so ``merged_from`` travels transitively; a bare :func:`to_bytes` blob is accepted too.

Profile changes (``cdp.profiles.changes``), see :func:`encode_changes`: one Kafka message holds
the rows of *several* customers of one input message (chunked below :data:`MAX_CHANGE_BYTES`),
because faust spends ~200 µs per message sent, more than the whole profile update of a
customer (~100 µs plus ~20 µs per event). Value: a JSON array of :func:`profile_row` objects plus
``merged_from``, datetimes as ISO 8601 UTC strings, money as decimal strings (clickhouse-connect
inserts both as they are). Key: ``"<partition>:<offset>:<chunk>"``, deterministic, so a message
re-sent after a crash replaces its twin under compaction. The price of batching: the topic is
no longer a per-customer compacted view (keys are per message, so it needs a retention, i.e.
``cleanup.policy=compact,delete``); "latest profile per customer" is the ``profiles`` table
(``ReplacingMergeTree(version, is_deleted)``) and the faust table's own changelog.

Row version: ``offset << 16 | i`` (``i`` = the customer's index among the customers this message
touched, capped at 0xFFFF): a customer is written only in its partition, in offset order, one
row per message, so its versions grow.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

import orjson

from pipeline.jsonchunks import json_arrays
from pipeline.partitioning import partition_for
from pipeline.profile.aggregate import apply_all, merge
from pipeline.profile.state import ProfileState, from_bytes, to_bytes
from pipeline.profile.view import PROFILE_COLUMNS, profile_row

#: A ``cdp.events.resolved`` message body (schemas/avro/resolved_batch.avsc).
ResolvedBatch = dict[str, list[dict[str, Any]]]

STORE_FORMAT: Final = 1
MAX_MERGED_FROM: Final = 1000
"""Losers remembered per customer (newest kept). Beyond it the API's ``merged_from`` is cut and
a duplicate fold of a forgotten loser would count twice; 1000 merges into one customer means
something upstream is wrong (the identity limits allow 200 anonymous ids per customer)."""
MAX_CHAIN: Final = 64
"""Tombstones followed within one partition before giving up: survivors are the customers seen
first, so a chain cannot loop, and a long one means corrupt state rather than a real history."""
MAX_CHANGE_BYTES: Final = 256 * 1024
"""Rows per profile-changes message are cut below this (Kafka's default max is 1 MB)."""
VERSION_INDEX_BITS: Final = 16

#: Columns of the ``profiles`` table the sink inserts, in row order: PROFILE_COLUMNS + merged_from.
PROFILE_SINK_COLUMNS: Final[tuple[str, ...]] = (
    *(name for name, _ in PROFILE_COLUMNS),
    "merged_from",
)


class StageError(ValueError):
    """A message or stored value the stage cannot apply (the processor dead-letters it)."""


@dataclass(slots=True)
class Record:
    """One customer's stored value: the profile and its merge bookkeeping."""

    state: ProfileState
    merged_from: list[str] = field(default_factory=list)
    merged_into: str | None = None  # set: a tombstone, the profile lives on in that customer
    merged_at: int | None = None


def encode_record(record: Record) -> bytes:
    """The stored value: header line + ``to_bytes(state)`` (see the module docstring)."""
    header: dict[str, Any] = {"format": STORE_FORMAT, "merged_from": record.merged_from}
    if record.merged_into is not None:
        header["merged_into"] = record.merged_into
        header["merged_at"] = record.merged_at
    return orjson.dumps(header) + b"\n" + to_bytes(record.state)


def decode_record(data: bytes) -> Record:
    """Inverse of :func:`encode_record`; a bare ``to_bytes`` state is a live record."""
    head, newline, body = (b"{}", b"\n", data) if data[:1] == b"[" else data.partition(b"\n")
    try:
        header = orjson.loads(head)
        format_ok = isinstance(header, dict) and header.get("format", STORE_FORMAT) == STORE_FORMAT
        if not newline or not format_ok:
            raise ValueError("unknown format")
        return Record(
            from_bytes(body),
            list(header.get("merged_from") or ()),
            header.get("merged_into"),
            header.get("merged_at"),
        )
    except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise StageError(f"undecodable stored profile ({exc}): {data[:40]!r}") from exc


@dataclass
class StageOutput:
    """What one message produced."""

    #: customer_id → new stored value (every customer this message touched, tombstones too).
    writes: dict[str, bytes] = field(default_factory=dict)
    #: partition → message body to send to ``cdp.events.resolved`` (never this partition).
    forwards: dict[int, ResolvedBatch] = field(default_factory=dict)
    #: ``profiles`` rows of the touched customers (``profile_row`` + ``merged_from``).
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: customer_id → the record now stored (decoded ``writes``), for the caller's cache.
    touched: dict[str, Record] = field(default_factory=dict)
    events_applied: int = 0
    events_forwarded: int = 0
    tombstones: int = 0
    folds_applied: int = 0
    folds_forwarded: int = 0
    duplicates_ignored: int = 0  # replayed folds / merges recognised and skipped

    def forward_to(self, partition: int) -> ResolvedBatch:
        batch = self.forwards.get(partition)
        if batch is None:
            batch = self.forwards[partition] = {"events": [], "merges": [], "folds": []}
        return batch


class RecordCache(Protocol):
    """Decoded records the caller keeps between calls (``pipeline.worker.buffered.RecentCache``)."""

    def lookup(self, key: str, default: Any) -> Any: ...


def process_batch(
    batch: Mapping[str, Any],
    store: Mapping[str, bytes],
    partition: int,
    partitions: int,
    version_base: int = 0,
    decoded: RecordCache | None = None,
) -> StageOutput:
    """Apply one message addressed to ``partition``; read ``store``, never write it.

    ``version_base`` is the input offset shifted left by :data:`VERSION_INDEX_BITS`.

    ``decoded`` saves :func:`decode_record` (the JSON parse of a whole state, the largest cost of
    a small update) for customers seen recently: it must map a customer to the record that
    ``store`` holds, decoded. Records taken from it are changed in place, so the caller puts
    ``StageOutput.touched`` back after a successful call and clears it after one that raised.
    """
    return _Run(store, partition, partitions, decoded).run(batch, version_base)


class _Run:
    """State of one :func:`process_batch` call: the records read so far and those changed."""

    def __init__(
        self,
        store: Mapping[str, bytes],
        partition: int,
        partitions: int,
        decoded: RecordCache | None = None,
    ) -> None:
        self.store = store
        self.decoded = decoded
        self.partition = partition
        self.partitions = partitions
        self.records: dict[str, Record | None] = {}  # read-through cache: one read per customer
        self.touched: dict[str, Record] = {}  # insertion-ordered: the row index follows it
        self.out = StageOutput()

    def run(self, batch: Mapping[str, Any], version_base: int) -> StageOutput:
        self.apply_events(batch.get("events") or ())
        for item in batch.get("merges") or ():
            self.apply_merge(str(item["loser"]), str(item["survivor"]), int(item["at"]))
        for item in batch.get("folds") or ():
            fold = decode_record(item["state"])
            self.deliver_fold(str(item["loser"]), str(item["survivor"]), fold)
        out = self.out
        out.touched = self.touched
        for index, (customer_id, record) in enumerate(self.touched.items()):
            out.writes[customer_id] = encode_record(record)
            version = version_base + min(index, (1 << VERSION_INDEX_BITS) - 1)
            row = profile_row(
                customer_id, record.state, version, is_deleted=record.merged_into is not None
            )
            row["merged_from"] = list(record.merged_from)
            out.rows.append(row)
        return out

    # --- store access ------------------------------------------------------------------------

    def here(self, customer_id: str) -> bool:
        return partition_for(customer_id, self.partitions) == self.partition

    def load(self, customer_id: str) -> Record | None:
        if customer_id in self.records:
            return self.records[customer_id]
        record = None if self.decoded is None else self.decoded.lookup(customer_id, None)
        if record is None:
            data = self.store.get(customer_id)
            record = None if data is None else decode_record(data)
        self.records[customer_id] = record
        return record

    def touch(self, customer_id: str) -> Record:
        """The record to change (created empty if new); it will be written and get a row."""
        record = self.touched.get(customer_id)
        if record is None:
            record = self.load(customer_id) or Record(ProfileState())
            self.records[customer_id] = self.touched[customer_id] = record
        return record

    def resolve(self, customer_id: str) -> tuple[str, list[Record]]:
        """Follow tombstones while they are in this partition: (customer, tombstones passed).

        The customer returned is live here, new here, or in another partition (forward to it).
        """
        passed: list[Record] = []
        current = customer_id
        for _ in range(MAX_CHAIN):
            if not self.here(current):
                return current, passed
            record = self.load(current)
            if record is None or record.merged_into is None:
                return current, passed
            passed.append(record)
            current = record.merged_into
        raise StageError(f"merge chain from {customer_id!r} longer than {MAX_CHAIN}")

    # --- the three kinds of item ---------------------------------------------------------------

    def apply_events(self, items: Iterable[Mapping[str, Any]]) -> None:
        by_customer: dict[str, list[Mapping[str, Any]]] = {}
        for item in items:
            by_customer.setdefault(str(item["customer_id"]), []).append(item["event"])
        by_target: dict[str, list[Mapping[str, Any]]] = {}
        for customer_id, events in by_customer.items():
            target, _ = self.resolve(customer_id)
            if not self.here(target):
                forwarded = self.out.forward_to(partition_for(target, self.partitions))
                forwarded["events"].extend({"customer_id": target, "event": e} for e in events)
                self.out.events_forwarded += len(events)
            elif target in by_target:  # two addresses of one customer (a forward and a late one)
                by_target[target].extend(events)
            else:
                by_target[target] = events
        for target, events in by_target.items():
            apply_all(events, self.touch(target).state)
            self.out.events_applied += len(events)

    def apply_merge(self, loser: str, survivor: str, at: int) -> None:
        if loser == survivor:
            return
        if not self.here(loser):  # misrouted: the loser's own partition must tombstone it
            self.out.forward_to(partition_for(loser, self.partitions))["merges"].append(
                {"loser": loser, "survivor": survivor, "at": at}
            )
            return
        known = self.load(loser)
        if known is not None and known.merged_into is not None:
            if known.merged_into == survivor:
                # A replayed merge: the first fold (or the tombstone's row) may be what a crash
                # lost; send both again, the survivor's merged_from recognises a fold it has.
                self.touch(loser)
                self.deliver_fold(loser, survivor, Record(known.state, known.merged_from))
            # Merged into someone else already: identity never re-merges a loser, so this is
            # a stale record with nothing left to move.
            return
        record = self.touch(loser)
        record.merged_into, record.merged_at = survivor, at
        self.out.tombstones += 1
        self.deliver_fold(loser, survivor, Record(record.state, record.merged_from))

    def deliver_fold(self, loser: str, survivor: str, fold: Record) -> None:
        """Merge ``fold`` (the loser's profile) into the live end of ``survivor``'s chain."""
        target, passed = self.resolve(survivor)
        if target == loser or any(loser in r.merged_from for r in passed):
            self.out.duplicates_ignored += 1
            return
        if not self.here(target):
            payload = encode_record(Record(fold.state, fold.merged_from))
            self.out.forward_to(partition_for(target, self.partitions))["folds"].append(
                {"loser": loser, "survivor": target, "state": payload}
            )
            self.out.folds_forwarded += 1
            return
        known = self.load(target)
        if known is not None and loser in known.merged_from:
            self.out.duplicates_ignored += 1
            return
        record = self.touch(target)
        # merge() builds a new state sharing nothing with its inputs: the tombstone keeps its own.
        record.state = merge(record.state, fold.state)
        record.merged_from = _add_losers(record.merged_from, [loser, *fold.merged_from])
        self.out.folds_applied += 1


def _add_losers(known: list[str], new: Iterable[str]) -> list[str]:
    seen = set(known)
    out = list(known)
    for customer_id in new:
        if customer_id not in seen:
            seen.add(customer_id)
            out.append(customer_id)
    return out[-MAX_MERGED_FROM:]


# --- cdp.profiles.changes messages ------------------------------------------------------------


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact: Decimal(18, 4) money survives the round trip
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_changes(
    rows: Iterable[dict[str, Any]], partition: int, offset: int
) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` messages for ``cdp.profiles.changes`` (format: module docstring)."""
    encoded = (orjson.dumps(row, default=_json_default, option=orjson.OPT_UTC_Z) for row in rows)
    for index, value in enumerate(json_arrays(encoded, MAX_CHANGE_BYTES)):
        yield f"{partition}:{offset}:{index}".encode(), value


def profile_change_rows(value: bytes) -> list[tuple[Any, ...]]:
    """The ``profiles`` rows of one change message, in :data:`PROFILE_SINK_COLUMNS` order.

    Values go to clickhouse-connect as they were serialized: it parses ISO 8601 strings into
    DateTime64 and decimal strings into Decimal columns itself.
    """
    return [tuple(row[name] for name in PROFILE_SINK_COLUMNS) for row in orjson.loads(value)]
