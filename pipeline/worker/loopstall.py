"""How long the worker's event loop was held by synchronous work (``cdp_event_loop_lag_seconds``).

A worker process runs its stages, the sink's bookkeeping, the HTTP server and the Kafka
clients' callbacks on one asyncio loop. A stage's group of messages is processed in one
synchronous piece (decoding, aggregation, table writes), and while it runs nothing else on the
loop moves: another stage's input waits, the API answers late, sends and commits are not
started. Under load much of the end-to-end latency builds up in these stalls, and no per-stage
metric shows them: a trace of the stream process at 2,000 events/s found the profile stage's
group of a commit interval's burst holding the loop for 0.2-0.4 s at a time (README, "Where the
latency goes"). So each worker process samples its own loop: a task sleeps ``interval_s`` and
records how much later than asked it woke up. On an idle loop that is well under a millisecond;
a long tail means synchronous work in pieces that long. The cost is ~20 wake-ups a second.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mode import Service
from prometheus_client import Histogram


async def watch_loop(lag: Histogram, interval_s: float, stop: asyncio.Event) -> None:
    """Until ``stop`` is set: sleep ``interval_s``, record how late the loop woke up."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(interval_s)
        lag.observe(max(0.0, loop.time() - started - interval_s))


class LoopStallMonitor(Service):
    """Runs :func:`watch_loop` on the worker's loop for the life of the process."""

    def __init__(self, lag: Histogram, interval_s: float = 0.05, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lag = lag
        self._interval_s = interval_s
        self._stop = asyncio.Event()

    @Service.task
    async def _watch(self) -> None:
        await watch_loop(self._lag, self._interval_s, self._stop)

    async def on_stop(self) -> None:
        self._stop.set()
