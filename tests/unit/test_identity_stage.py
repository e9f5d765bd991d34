"""The identity stage over one raw batch: per-partition outputs, changes, dead letters."""

from __future__ import annotations

from typing import Any

from pipeline.identity.config import IdentityConfig
from pipeline.identity.engine import IdentityEngine
from pipeline.identity.stage import resolve_batch
from pipeline.partitioning import partition_for

P = 4


def ev(eid: str, ts: int, *ids: tuple[str, str]) -> dict[str, Any]:
    return {
        "event_id": eid,
        "timestamp": ts,
        "identifiers": [{"type": t, "value": v} for t, v in ids],
    }


def engine() -> IdentityEngine:
    return IdentityEngine(IdentityConfig.from_values())


def test_events_go_to_their_customers_partition_in_order() -> None:
    eng = engine()
    events = [ev(f"e{i}", 1000 + i, ("anonymous_id", f"a{i % 3}")) for i in range(9)]
    out = resolve_batch(eng, events, P)
    seen = []
    for partition, batch in out.resolved.items():
        for item in batch["events"]:
            assert partition_for(item["customer_id"], P) == partition
            seen.append(item["event"]["event_id"])
        ids = [item["event"]["event_id"] for item in batch["events"]]
        assert ids == sorted(ids, key=lambda e: int(e[1:]))  # order kept within a partition
    assert sorted(seen) == sorted(e["event_id"] for e in events)
    assert out.new_identifiers == 3
    # positions name each output event's index in the input (the processor frames its bytes)
    for partition, batch in out.resolved.items():
        assert [events[i] for i in out.positions[partition]] == [
            item["event"] for item in batch["events"]
        ]


def test_merge_is_sent_to_the_losers_partition_and_recorded() -> None:
    eng = engine()
    events = [
        ev("e1", 1000, ("anonymous_id", "a1")),
        ev("e2", 2000, ("user_id", "u1")),
        ev("e3", 3000, ("anonymous_id", "a1"), ("user_id", "u1")),
    ]
    out = resolve_batch(eng, events, P, version_base=7 << 16)
    assert out.merges == 1
    merge = next(c for c in out.changes if c["kind"] == "merge")
    loser, survivor = merge["loser"], merge["survivor"]
    # Survivor is the customer first seen earliest: the anonymous visitor from t=1000.
    assert survivor == eng.lookup("anonymous_id", "a1") == eng.lookup("user_id", "u1")
    assert out.resolved[partition_for(loser, P)]["merges"] == [
        {"loser": loser, "survivor": survivor, "at": 3000}
    ]
    moved = [c for c in out.changes if c["kind"] == "identifier" and c["customer_id"] == survivor]
    assert {(c["id_type"], c["id_value"]) for c in moved} >= {("user_id", "u1")}
    assert all(c["version"] >= 7 << 16 for c in moved)


def test_shared_device_refusal_is_counted_and_recorded() -> None:
    eng = engine()
    out = resolve_batch(
        eng,
        [
            ev("e1", 1, ("anonymous_id", "shared"), ("user_id", "alice")),
            ev("e2", 2, ("anonymous_id", "shared"), ("user_id", "bob")),
        ],
        P,
    )
    assert out.refusals == {"limit:user_id": 1}
    refusal = next(c for c in out.changes if c["kind"] == "refusal")
    assert refusal["id_type"] == "anonymous_id"
    assert eng.lookup("user_id", "alice") != eng.lookup("user_id", "bob")


def test_events_without_usable_identifiers_become_dead_letters() -> None:
    out = resolve_batch(
        engine(),
        [ev("e1", 1), ev("e2", 2, ("anonymous_id", "null"), ("user_id", "undefined"))],
        P,
    )
    assert [e["event_id"] for e, _ in out.unresolved] == ["e1", "e2"]
    assert "no identifier" in out.unresolved[0][1]
    assert "blocked" in out.unresolved[1][1]
    assert out.resolved == {}
