"""Resume the input partitions only once faust has finished coming out of a rebalance.

After a rebalance (a worker start or restart included) faust-streaming 0.15 rebuilds the tables
and then, in ``Recovery.on_recovery_completed`` (``Recovery._resume_streams`` without tables):

1. resumes fetching the input ("stream") partitions,
2. awaits a seek of every partition to its committed offset (a broker round trip, ~0.1 s),
3. resumes its flow control, which *empties every agent's input queue*.

The consumer already stands at the committed offsets, so the fetcher delivers from step 1 on,
and faust's read offset moves past each delivered message. Then:

* The seek re-delivers those messages. The ones behind the read offset are dropped as already
  read; the ones still queued are then thrown away by step 3. Such a message is never
  processed, which leaves a hole in faust's list of processed offsets. faust commits past a
  hole of one offset right after the committed offset (it tolerates that one), so the input is
  lost: the crash test (tests/integration/test_identity_crash.py) lost a raw message of 10
  events that way in 2 of 7 runs (offset 200 queued behind a full group of 64 while the seek
  landed; 199 and 201 were processed). A longer hole is never committed past: the partition's
  transaction stays open until the broker aborts it (60 s), holding back every
  ``read_committed`` reader, and the worker is fenced.
* Messages re-delivered ahead of the read offset are processed twice.

Holding the resume until faust's method has returned - seek done, queues emptied - means
nothing is delivered before the positions and faust's bookkeeping are reset. aiokafka keeps
the records it fetched for a partition faust has not resumed buffered, and a seek drops them.
Patched once per process, at worker start.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from faust.types import TP


def resume_streams_last() -> None:
    """Make faust's recovery resume the input partitions only when it is done."""
    from faust.tables.recovery import Recovery

    for name in ("on_recovery_completed", "_resume_streams"):
        original = getattr(Recovery, name)
        if not getattr(original, "_cdp_resume_last", False):
            setattr(Recovery, name, _resuming_last(original))


def _resuming_last(
    original: Callable[..., Awaitable[None]],
) -> Callable[..., Awaitable[None]]:
    @functools.wraps(original)  # keeps faust's original as ``__wrapped__``
    async def resume_last(self: Any, generation_id: int = 0) -> None:
        app = self.app
        consumer = app.consumer
        rebalances = app.rebalancing_count
        held: set[TP] = set()

        def hold(tps: Iterable[TP]) -> None:
            held.update(tps)

        # An instance attribute shadows the class's method for the length of the call.
        consumer.resume_partitions = hold
        try:
            await original(self, generation_id)
        finally:
            if vars(consumer).get("resume_partitions") is hold:
                del consumer.resume_partitions
        # On an exception nothing is resumed: another rebalance (faust's RebalanceAgain) resumes
        # its own partitions when its recovery is done, anything else stops the recovery. The
        # same when a rebalance began meanwhile: its revocation (which counts it before the
        # generation changes) has paused the partitions and ended their transactions.
        if (
            held
            and app.rebalancing_count == rebalances
            and app.consumer_generation_id == generation_id
        ):
            consumer.resume_partitions(held)

    resume_last._cdp_resume_last = True  # type: ignore[attr-defined]
    return resume_last
