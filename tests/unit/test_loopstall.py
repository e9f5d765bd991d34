"""The event-loop lag sampler (pipeline/worker/loopstall.py) sees synchronous work."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry

from pipeline.metrics import WorkerMetrics
from pipeline.worker.loopstall import watch_loop


def _lag(registry: CollectorRegistry, suffix: str, le: str | None = None) -> float:
    labels = {} if le is None else {"le": le}
    value = registry.get_sample_value(f"cdp_event_loop_lag_seconds_{suffix}", labels)
    return value or 0.0


def test_a_blocked_loop_is_recorded_in_the_right_bucket() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics.create(registry)

    async def scenario() -> None:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_loop(metrics.loop_lag, 0.01, stop))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while _lag(registry, "count") < 3:  # the sampler runs
            assert loop.time() < deadline
            await asyncio.sleep(0.005)
        time.sleep(0.3)  # noqa: ASYNC251 - the stimulus: synchronous work holding the loop
        while _lag(registry, "sum") < 0.25:
            assert loop.time() < deadline, "the stall was not recorded"
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(watcher, 5)

    asyncio.run(scenario())
    # One sample of ~0.3 s: above the 0.25 s bound, within 0.5 s; the others short.
    count = _lag(registry, "count")
    assert _lag(registry, "bucket", "0.25") == count - 1
    assert _lag(registry, "bucket", "0.5") == count
