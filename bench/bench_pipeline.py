"""The worker through the real broker: identity, profile and sink rates on a pre-filled topic.

Raw ``EventBatch`` messages (from the load generator's model, so identities, orders and
sessions are realistic) are written straight to a fresh raw topic first; then one in-process
worker (the default guarantee, exactly-once, with ``in_worker`` set as `cdp worker` has it;
RocksDB store, embedded ClickHouse) is started and the time each stage
takes to process all of them is read from the worker's own counters. Rates are events/s of the
whole stage, start-up excluded (the clock starts when identity processes its first event).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from bench.procs import run_child
from pipeline.localstack.kafka import LocalKafka, free_port
from pipeline.settings import PROJECT_ROOT, Settings


def _counter(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return float(value or 0.0)


def _raw_events(n_events: int, seed: int) -> list[dict[str, Any]]:
    """Events as the collector would write them, from the load generator's people."""
    import random

    from tests.integration.worker_harness import event

    rng = random.Random(seed)
    people = max(10, n_events // 15)
    out = []
    for i in range(n_events):
        p = int(rng.paretovariate(1.2)) % people
        ids = [("anonymous_id", f"a{p}-{rng.randint(0, 2)}")]
        if rng.random() < 0.3:
            ids.append(("user_id", f"u{p}"))
        if rng.random() < 0.1:
            ids.append(("email", f"p{p}@example.com"))
        out.append(event(f"b{i:08d}", 1_700_000_000_000 + i * 50, ids))
    return out


async def _measure(settings: Settings, n_events: int, batch_size: int) -> dict[str, Any]:
    from pipeline.kafka_admin import ensure_topics, pipeline_topics
    from pipeline.worker.app import create_app
    from tests.integration.worker_harness import produce_batches

    ensure_topics(settings.kafka_bootstrap, pipeline_topics(settings))
    events = _raw_events(n_events, seed=3)
    await produce_batches(
        settings, [events[i : i + batch_size] for i in range(0, n_events, batch_size)]
    )
    registry = CollectorRegistry()
    app = create_app(settings, registry)
    # faust only runs transactions inside a faust.Worker (``app.in_worker``); `cdp worker` is
    # one, so set it here too and measure the processing guarantee the worker really runs.
    app.in_worker = True
    marks: dict[str, float] = {}
    deadline = time.monotonic() + 600
    await app.start()
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            identity = _counter(registry, "cdp_agent_events_total", agent="identity")
            profile = _counter(registry, "cdp_agent_events_total", agent="profile")
            rows = _counter(registry, "cdp_sink_rows_total", table="events")
            if identity and "start" not in marks:
                marks["start"] = now
            for name, value in (("identity", identity), ("profile", profile), ("sink", rows)):
                if value >= n_events and name not in marks:
                    marks[name] = now
            if {"identity", "profile", "sink"} <= set(marks):
                break
            await asyncio.sleep(0.05)
    finally:
        await app.stop()
    start = marks.get("start", time.monotonic())
    result: dict[str, Any] = {"events": n_events, "events_per_message": batch_size}
    for stage in ("identity", "profile", "sink"):
        if stage in marks and marks[stage] > start:
            result[f"{stage}_events_per_s"] = n_events / (marks[stage] - start)
        elif stage in marks:  # done by the poll that saw its first event: too few to time
            result[f"{stage}_events_per_s"] = "done within one 50 ms poll"
        else:
            result[f"{stage}_events_per_s"] = "did not finish in 600 s"
    return result


def run(n_events: int = 20_000, batch_size: int = 100) -> dict[str, Any]:
    """:func:`measure` in a child process (``bench.procs.run_child``): the in-process faust app
    and its chDB path stay out of the process that runs the other benchmarks."""
    return run_child(
        "bench.bench_pipeline", "--events", str(n_events), "--batch-size", str(batch_size)
    )


def measure(
    n_events: int = 20_000, batch_size: int = 100, bootstrap: str | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cdp-bench-pipeline-") as tmp:
        base = Path(tmp)
        broker = None
        if bootstrap is None:
            broker = LocalKafka(
                run_dir=base / "kafka",
                libs_dir=PROJECT_ROOT / ".cache" / "kafka" / "libs",
                port=free_port(),
                controller_port=free_port(),
            )
            broker.start()
            bootstrap = broker.bootstrap
        unique = uuid.uuid4().hex[:8]
        settings = Settings(
            kafka_bootstrap=bootstrap,
            topic_prefix=f"bench{unique}.",
            worker_id=f"cdp-bench-{unique}",
            data_dir=base / "run",
            api_port=free_port(),
            topic_partitions=4,
        )  # type: ignore[call-arg]
        try:
            return asyncio.run(_measure(settings, n_events, batch_size))
        finally:
            if broker is not None:
                broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--bootstrap")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = measure(args.events, args.batch_size, args.bootstrap)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}  {value:,.0f}" if isinstance(value, float) else f"{key:>28}  {value}")


if __name__ == "__main__":
    main()
    # An app started and stopped in-process (not by a faust.Worker) sometimes leaves faust's
    # consumer thread running after app.stop() (seen with and without this round's eager
    # commits and heap trims); the interpreter then waits for it for ever at exit. The figures
    # are out, the broker is gone: leave without waiting.
    sys.stdout.flush()
    os._exit(0)
