"""The profile stage over resolved batches: lists of messages in, stored profiles and rows out."""

from __future__ import annotations

import itertools
from collections import deque
from decimal import Decimal
from typing import Any

import orjson
import pytest

from pipeline.partitioning import partition_for
from pipeline.profile import ProfileState, apply_all, to_bytes
from pipeline.profile.stage import (
    MAX_CHANGE_BYTES,
    PROFILE_SINK_COLUMNS,
    Record,
    ResolvedBatch,
    StageError,
    StageOutput,
    decode_record,
    encode_changes,
    encode_record,
    process_batch,
    profile_change_rows,
)
from pipeline.worker.buffered import RecentCache

P = 4
T0 = 1_700_000_000_000
MIN = 60_000


def customer(partition: int, name: str) -> str:
    """A customer id that hashes to ``partition`` (ids are opaque strings to the stage)."""
    return next(
        cid
        for cid in (f"{name}-{i}" for i in itertools.count())
        if partition_for(cid, P) == partition
    )


def ev(eid: str, at: int, kind: str = "page", name: str | None = None, **props: Any) -> dict:
    return {
        "event_id": eid,
        "type": kind,
        "event": name,
        "timestamp": T0 + at,
        "identifiers": [{"type": "anonymous_id", "value": f"anon-{eid}"}],
        "properties": orjson.dumps(props).decode(),
        "traits": "{}",
        "context": {"page_path": f"/{eid}"},
        "enrichment": {"channel": "direct", "is_bot": False},
    }


def order(eid: str, at: int, order_id: str, revenue: float) -> dict:
    return ev(eid, at, "track", "Order Completed", order_id=order_id, revenue=revenue)


def batch(
    events: list[tuple[str, dict]] | None = None,
    merges: list[tuple[str, str]] | None = None,
    folds: list[dict] | None = None,
) -> ResolvedBatch:
    return {
        "events": [{"customer_id": c, "event": e} for c, e in events or ()],
        "merges": [{"loser": lo, "survivor": su, "at": T0} for lo, su in merges or ()],
        "folds": folds or [],
    }


class Pipeline:
    """All partitions of the stage, with forwards delivered like Kafka would (in order)."""

    def __init__(self, cache: RecentCache[Record] | None = None) -> None:
        self.store: dict[str, bytes] = {}
        self.cache = cache
        self.offsets = dict.fromkeys(range(P), 0)
        self.rows: list[dict[str, Any]] = []
        self.outputs: list[StageOutput] = []

    def process(self, partition: int, body: ResolvedBatch) -> StageOutput:
        """One message, without delivering what it forwards."""
        offset = self.offsets[partition]
        self.offsets[partition] += 1
        out = process_batch(
            body, self.store, partition, P, version_base=offset << 16, decoded=self.cache
        )
        self.store.update(out.writes)
        if self.cache is not None:
            for customer_id, record in out.touched.items():
                self.cache.put(customer_id, record)
        self.rows.extend(out.rows)
        self.outputs.append(out)
        return out

    def run(self, partition: int, body: ResolvedBatch) -> None:
        """One message and everything it forwards, transitively."""
        queue = deque([(partition, body)])
        while queue:
            out = self.process(*queue.popleft())
            queue.extend(out.forwards.items())

    def record(self, customer_id: str) -> Record:
        return decode_record(self.store[customer_id])

    def latest_row(self, customer_id: str) -> dict[str, Any]:
        return max(
            (r for r in self.rows if r["customer_id"] == customer_id), key=lambda r: r["version"]
        )


class CountingStore(dict[str, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.reads.append(key)
        return super().get(key, default)


def test_events_are_grouped_one_read_and_one_write_per_customer() -> None:
    a, b = customer(0, "a"), customer(0, "b")
    store = CountingStore()
    body = batch(
        [(a, ev("e1", 0)), (b, ev("e2", MIN)), (a, ev("e3", 2 * MIN)), (a, ev("e4", 3 * MIN))]
    )
    out = process_batch(body, store, 0, P, version_base=5 << 16)
    assert sorted(store.reads) == sorted([a, b])
    assert set(out.writes) == {a, b}
    assert out.forwards == {}
    assert (out.events_applied, out.events_forwarded) == (4, 0)
    expected = apply_all([ev("e1", 0), ev("e3", 2 * MIN), ev("e4", 3 * MIN)])
    assert decode_record(out.writes[a]).state == expected
    rows = {r["customer_id"]: r for r in out.rows}
    assert (rows[a]["page_views"], rows[b]["page_views"]) == (3, 1)
    assert [r["version"] for r in out.rows] == [5 << 16, (5 << 16) + 1]
    assert all(r["is_deleted"] == 0 and r["merged_from"] == [] for r in out.rows)
    assert list(out.rows[0]) == list(PROFILE_SINK_COLUMNS)


def test_merge_tombstones_the_loser_and_a_late_event_is_forwarded_to_the_survivor() -> None:
    loser, survivor = customer(0, "loser"), customer(1, "survivor")
    pipe = Pipeline()
    pipe.run(0, batch([(loser, ev("e1", 0)), (loser, ev("e2", MIN))]))
    pipe.run(1, batch([(survivor, ev("e3", 10 * MIN))]))

    out = pipe.process(0, batch(merges=[(loser, survivor)]))
    assert out.tombstones == 1
    fold = out.forwards[1]["folds"][0]
    assert (fold["loser"], fold["survivor"]) == (loser, survivor)
    assert decode_record(fold["state"]).state == pipe.record(loser).state
    assert pipe.record(loser).merged_into == survivor
    pipe.run(1, out.forwards[1])

    # An event still addressed to the loser (e.g. redelivered by identity) and older than all.
    late = pipe.process(0, batch([(loser, ev("e0", -5 * MIN))]))
    assert late.writes == {} and late.rows == []
    assert late.forwards[1]["events"][0]["customer_id"] == survivor
    assert late.events_forwarded == 1
    pipe.run(1, late.forwards[1])

    everything = [ev("e0", -5 * MIN), ev("e1", 0), ev("e2", MIN), ev("e3", 10 * MIN)]
    record = pipe.record(survivor)
    assert record.state == apply_all(everything)  # exactly as if one customer all along
    assert record.merged_from == [loser]
    row = pipe.latest_row(survivor)
    assert row["page_views"] == 4
    assert row["first_seen"].timestamp() * 1000 == T0 - 5 * MIN


def test_fold_into_a_survivor_that_itself_merged_away_follows_the_chain() -> None:
    a, b, c = customer(0, "a"), customer(1, "b"), customer(2, "c")
    pipe = Pipeline()
    pipe.run(0, batch([(a, ev("e1", 0))]))
    pipe.run(1, batch([(b, ev("e2", MIN))]))
    pipe.run(2, batch([(c, ev("e3", 2 * MIN))]))

    fold_a = pipe.process(0, batch(merges=[(a, b)]))  # a → b, the fold is still in flight...
    pipe.run(1, batch(merges=[(b, c)]))  # ...when b merges into c
    assert pipe.record(b).merged_into == c

    pipe.run(1, fold_a.forwards[1])  # arrives at b's tombstone, goes on to c
    forwarded = pipe.outputs[-2]
    assert forwarded.folds_forwarded == 1
    assert forwarded.forwards[2]["folds"][0]["survivor"] == c

    record = pipe.record(c)
    assert record.state == apply_all([ev("e1", 0), ev("e2", MIN), ev("e3", 2 * MIN)])
    assert sorted(record.merged_from) == sorted([a, b])
    assert pipe.latest_row(c)["merged_from"] == record.merged_from


def test_chain_inside_one_partition_is_resolved_without_a_round_trip() -> None:
    a, b, c = customer(0, "a"), customer(0, "b"), customer(0, "c")
    pipe = Pipeline()
    pipe.run(0, batch([(a, ev("e1", 0)), (b, ev("e2", MIN)), (c, ev("e3", 2 * MIN))]))
    out = pipe.process(0, batch(merges=[(b, c), (a, b)]))
    assert out.forwards == {}
    assert (out.tombstones, out.folds_applied) == (2, 2)
    assert pipe.record(c).state == apply_all([ev("e1", 0), ev("e2", MIN), ev("e3", 2 * MIN)])
    assert pipe.record(c).merged_from == [b, a]
    late = pipe.process(0, batch([(a, ev("e4", 3 * MIN))]))  # two hops, applied in place
    assert set(late.writes) == {c} and late.forwards == {}
    assert pipe.latest_row(c)["page_views"] == 4


def test_an_order_resent_across_a_merge_counts_once() -> None:
    loser, survivor = customer(0, "loser"), customer(3, "survivor")
    pipe = Pipeline()
    pipe.run(0, batch([(loser, order("e1", 0, "o-1", 25.0))]))
    pipe.run(0, batch(merges=[(loser, survivor)]))
    # The SDK resends the order as a new message, and Kafka redelivers the first one.
    pipe.run(3, batch([(survivor, order("e2", MIN, "o-1", 25.0))]))
    pipe.run(0, batch([(loser, order("e1", 0, "o-1", 25.0))]))
    row = pipe.latest_row(survivor)
    assert (row["orders"], row["revenue"], row["events"]) == (1, Decimal("25.0000"), 2)


def test_tombstone_rows_are_deleted_with_a_higher_version() -> None:
    loser, survivor = customer(2, "loser"), customer(1, "survivor")
    pipe = Pipeline()
    pipe.run(2, batch([(loser, ev("e1", 0))]))
    pipe.run(2, batch(merges=[(loser, survivor)]))
    loser_rows = [r for r in pipe.rows if r["customer_id"] == loser]
    assert [r["is_deleted"] for r in loser_rows] == [0, 1]
    assert loser_rows[1]["version"] > loser_rows[0]["version"]
    assert loser_rows[1]["page_views"] == 1  # the last snapshot, marked deleted
    survivor_row = pipe.latest_row(survivor)
    assert (survivor_row["is_deleted"], survivor_row["page_views"]) == (0, 1)
    assert survivor_row["merged_from"] == [loser]


def test_replayed_merge_and_duplicate_fold_do_not_double_count() -> None:
    loser, survivor = customer(0, "loser"), customer(1, "survivor")
    pipe = Pipeline()
    pipe.run(0, batch([(loser, ev("e1", 0)), (loser, order("e2", MIN, "o-9", 10.0))]))
    first = pipe.process(0, batch(merges=[(loser, survivor)]))
    # A crash after the tombstone was stored: the merge is processed again and re-sends the fold.
    again = pipe.process(0, batch(merges=[(loser, survivor)]))
    assert again.tombstones == 0 and again.forwards[1]["folds"]
    pipe.run(1, first.forwards[1])
    out = pipe.process(1, again.forwards[1])
    assert out.duplicates_ignored == 1 and out.writes == {}
    row = pipe.latest_row(survivor)
    assert (row["events"], row["orders"], row["merged_from"]) == (2, 1, [loser])


def test_fold_of_a_loser_already_folded_further_down_the_chain_is_ignored() -> None:
    a, b, c = customer(0, "a"), customer(1, "b"), customer(2, "c")
    pipe = Pipeline()
    pipe.run(0, batch([(a, ev("e1", 0))]))
    fold_a = pipe.process(0, batch(merges=[(a, b)])).forwards[1]
    pipe.run(1, fold_a)
    pipe.run(1, batch(merges=[(b, c)]))
    pipe.run(1, fold_a)  # redelivered to b's tombstone, which already holds a in merged_from
    assert pipe.outputs[-1].duplicates_ignored == 1
    assert pipe.latest_row(c)["page_views"] == 1


def test_misrouted_items_go_to_their_own_partition() -> None:
    elsewhere = customer(3, "x")
    out = process_batch(batch([(elsewhere, ev("e1", 0))], [(elsewhere, "y")]), {}, 0, P)
    assert out.writes == {}
    assert out.forwards[3]["events"][0]["customer_id"] == elsewhere
    assert out.forwards[3]["merges"][0]["loser"] == elsewhere


def test_a_merge_cycle_is_an_error_and_nothing_is_written() -> None:
    a, b = customer(0, "a"), customer(0, "b")
    store = {
        a: encode_record(Record(ProfileState(), merged_into=b, merged_at=T0)),
        b: encode_record(Record(ProfileState(), merged_into=a, merged_at=T0)),
    }
    with pytest.raises(StageError, match="longer than"):
        process_batch(batch([(a, ev("e1", 0))]), store, 0, P)


def test_stored_value_round_trip_and_formats() -> None:
    state = apply_all([ev("e1", 0)])
    live = Record(state, ["x", "y"])
    tomb = Record(state, [], merged_into="z", merged_at=T0)
    for record in (live, tomb):
        assert decode_record(encode_record(record)) == record
    assert encode_record(live).startswith(b'{"format":1,"merged_from":["x","y"]}\n[1,')
    assert decode_record(to_bytes(state)) == Record(state)  # a bare state is a live record
    for bad in (b"garbage", b'{"format":9}\n[1]', b'{"format":1}', b'{"format":1}\n[7]'):
        with pytest.raises(StageError):
            decode_record(bad)


def test_change_messages_are_chunked_json_rows_in_sink_column_order() -> None:
    a, b = customer(0, "a"), customer(0, "b")
    pipe = Pipeline()
    pipe.run(0, batch([(a, order("e1", 0, "o1", 9.99)), (b, ev("e2", 0))]))
    pipe.run(0, batch([(a, ev("e3", MIN))]))
    messages = [
        *encode_changes(pipe.outputs[0].rows, 0, 0),
        *encode_changes(pipe.outputs[1].rows, 0, 1),
    ]
    assert [key for key, _ in messages] == [b"0:0:0", b"0:1:0"]
    inserted = [row for _, value in messages for row in profile_change_rows(value)]
    assert [r[0] for r in inserted] == [a, b, a]
    rows = {r[0]: dict(zip(PROFILE_SINK_COLUMNS, r, strict=True)) for r in inserted}
    assert (rows[a]["version"], rows[a]["page_views"], rows[a]["revenue"]) == (1 << 16, 1, "9.9900")
    assert rows[a]["first_seen"] == "2023-11-14T22:13:20Z"

    big = [dict(pipe.rows[0], customer_id=f"c{i}", last_pages=["/p" * 500]) for i in range(300)]
    chunks = list(encode_changes(big, 2, 7))
    assert len(chunks) > 1
    assert all(len(value) <= MAX_CHANGE_BYTES + 2 for _, value in chunks)
    assert [key for key, _ in chunks] == [f"2:7:{i}".encode() for i in range(len(chunks))]
    assert sum(len(orjson.loads(value)) for _, value in chunks) == 300


def test_a_cache_of_decoded_records_changes_nothing() -> None:
    """Same stored bytes and rows with the processor's decoded-record cache as without it,
    through events, merges across partitions, forwards and late events (a tiny cache, so
    entries are also evicted and re-read)."""
    people = [customer(p, f"c{i}") for i in range(3) for p in range(P)]
    plain, cached = Pipeline(), Pipeline(RecentCache(2))
    for step in range(40):
        a, b = people[step % len(people)], people[(step * 7 + 3) % len(people)]
        events = [(a, ev(f"e{step}", step * 1000)), (b, order(f"o{step}", step * 500, "o1", 5.0))]
        # Survivors are always the earlier customer, as identity makes them (no cycles).
        loser, survivor = sorted((a, b), key=people.index, reverse=True)
        merges = [(loser, survivor)] if step % 9 == 4 and a != b else []
        for pipeline in (plain, cached):
            for partition in {partition_for(c, P) for c, _ in events}:
                mine = [(c, e) for c, e in events if partition_for(c, P) == partition]
                mine_merges = [m for m in merges if partition_for(m[0], P) == partition]
                pipeline.run(partition, batch(mine, mine_merges))
    assert cached.store == plain.store
    assert cached.rows == plain.rows
