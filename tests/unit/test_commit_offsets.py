"""Which offset faust commits for a partition (``Consumer._new_offset``), as patched by
pipeline/worker/txsend.py: every processed run, not just the first.

faust's own method runs on a stand-in consumer holding its bookkeeping: the processed ("acked")
offsets and the gaps (offsets a ``read_committed`` consumer never sees, such as transaction
markers), each of which faust records up to and including the message after it.
"""

from __future__ import annotations

import types
from collections import defaultdict
from typing import Any

from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from pipeline.worker.txsend import commit_every_processed_run

TP = ("cdp.events.resolved", 0)


def _consumer(committed: int, acked: list[int], gaps: list[tuple[int, int]]) -> Any:
    consumer = types.SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset={TP: committed},
    )
    consumer._acked[TP] = list(acked)
    consumer._acked_index[TP] = set(acked)
    for begin, end in gaps:
        consumer._gap[TP].addi(begin, end)
    return consumer


def _new_offset(consumer: Any) -> int | None:
    commit_every_processed_run()
    commit_every_processed_run()  # idempotent: patched once
    return Consumer._new_offset(consumer, TP)  # type: ignore[arg-type]


def test_faust_alone_stops_at_the_message_after_a_marker() -> None:
    """Seen at a stop: committed 28, 28-35 processed, markers at 30-31 recorded with 32."""
    commit_every_processed_run()
    original = Consumer._new_offset.__wrapped__  # type: ignore[attr-defined]
    consumer = _consumer(28, [28, 29, 32, 33, 34, 35], [(30, 33)])
    assert original(consumer, TP) == 33


def test_every_processed_offset_past_the_markers_is_committed() -> None:
    consumer = _consumer(28, [28, 29, 32, 33, 34, 35], [(30, 33)])
    assert _new_offset(consumer) == 36
    assert consumer._acked[TP] == []
    assert consumer._acked_index[TP] == set()


def test_several_markers_in_one_commit() -> None:
    consumer = _consumer(10, [10, 12, 13, 15, 16], [(11, 13), (14, 16)])
    assert _new_offset(consumer) == 17


def test_the_run_ends_at_an_offset_not_yet_processed() -> None:
    # 34 is still being processed: 35 waits for the next commit
    consumer = _consumer(28, [28, 29, 32, 33, 35], [(30, 33)])
    assert _new_offset(consumer) == 34
    assert consumer._acked[TP] == [35]
    assert consumer._acked_index[TP] == {35}
    consumer._committed_offset[TP] = 34
    consumer._acked[TP] += [34]
    consumer._acked_index[TP].add(34)
    assert _new_offset(consumer) == 36


def test_nothing_processed_nothing_to_commit() -> None:
    assert _new_offset(_consumer(28, [], [])) is None
