"""Resolved messages cut by size: every event once, in order; merges and folds last."""

from __future__ import annotations

from pipeline import avro
from pipeline.avro_reader import decode_resolved_fast
from pipeline.identity.processor import frame_chunks


def _event(i: int) -> bytes:
    return avro.encode_event(
        {
            "event_id": f"e{i}",
            "type": "page",
            "event": None,
            "anonymous_id": f"a{i}",
            "user_id": None,
            "previous_id": None,
            "group_id": None,
            "identifiers": [{"type": "anonymous_id", "value": f"a{i}"}],
            "timestamp": 1_700_000_000_000 + i,
            "received_at": 1_700_000_000_000 + i,
            "sent_at": None,
            "source": "web",
            "properties": "{}" + " " * 200,
            "traits": "{}",
            "context": {},
            "enrichment": {},
            "consent": [],
            "original_timestamp": None,
        }
    )


def test_chunks_keep_order_and_put_merges_last() -> None:
    frames = [(f"c{i}", _event(i)) for i in range(50)]
    merges = [{"loser": "c1", "survivor": "c0", "at": 5}]
    chunks = list(frame_chunks(frames, merges, [], max_bytes=2_000))
    assert len(chunks) > 5
    bodies = [decode_resolved_fast(chunk) for chunk in chunks]
    assert [e["event"]["event_id"] for b in bodies for e in b["events"]] == [
        f"e{i}" for i in range(50)
    ]
    assert all(not b["merges"] for b in bodies[:-1]) and bodies[-1]["merges"] == merges
    assert all(len(chunk) <= 2_000 + 400 for chunk in chunks)  # one event may overshoot


def test_one_chunk_when_small_and_merges_only() -> None:
    assert len(list(frame_chunks([("c0", _event(0))], [], []))) == 1
    (only,) = frame_chunks([], [{"loser": "a", "survivor": "b", "at": 1}], [])
    assert decode_resolved_fast(only)["merges"][0]["loser"] == "a"
