"""`make bench`: run the benchmarks and write BENCHMARKS.md.

Each benchmark module has ``run(...) -> dict``; this runner calls them with the sizes of the
chosen mode, keeps the figures of one run together (the machine is shared and noisy, so ratios
are only meaningful within one run) and writes them with the machine, date and versions.
``--quick`` is the smoke mode the test suite uses: tiny sizes, nothing asserted about speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("faust-streaming", "aiokafka", "fastavro", "clickhouse-connect", "chdb", "orjson")

# Suites are found in the results by their source file (the second item of a suite).
PIPELINE_SOURCE = "bench/bench_pipeline.py"
CEILINGS_SOURCE = "bench/bench_ceilings.py"
#: The end-to-end suite: when its results are present, its ``sustained_events_per_s`` (events/s
#: fully reflected in ClickHouse profiles) is our throughput in the ratios; until then the
#: worker suite's ``profile_events_per_s``.
E2E_SOURCE = "bench/bench_e2e.py"
OUR_THROUGHPUT = (
    (E2E_SOURCE, "sustained_events_per_s"),
    (PIPELINE_SOURCE, "profile_events_per_s"),
)
#: The ceilings our throughput is divided by: label, unit, path in the ceilings' results.
RATIO_CEILINGS = (
    ("bare faust agent, exactly_once, one event per message", "messages/s",
     ("faust_agent", "exactly_once", "messages_per_s")),
    ("bare faust agent, at_least_once, one event per message", "messages/s",
     ("faust_agent", "at_least_once", "messages_per_s")),
    ("raw aiokafka consumer, batches of events (as our raw topic)", "events/s",
     ("aiokafka_consumer", "batch", "events_per_s")),
    ("raw aiokafka consumer + Avro decoding, batches of events", "events/s",
     ("aiokafka_consumer", "batch", "decoded_events_per_s")),
    ("raw aiokafka consumer, one event per message", "messages/s",
     ("aiokafka_consumer", "event", "messages_per_s")),
)  # fmt: skip


def _suites(quick: bool) -> list[tuple[str, str, Callable[[], dict[str, Any]]]]:
    from bench import (
        bench_api,
        bench_ceilings,
        bench_collector,
        bench_e2e,
        bench_identity,
        bench_identity_memory,
        bench_pipeline,
        bench_profile,
    )

    suites: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        (
            "Identity engine (pure, one core)",
            "bench/bench_identity.py",
            lambda: bench_identity.run(
                20_000 if quick else 1_000_000, 20_000 if quick else 1_000_000
            ),
        ),
        (
            "Profile aggregation (pure, one core)",
            "bench/bench_profile.py",
            lambda: bench_profile.run(5_000 if quick else 200_000, repeats=1 if quick else 3),
        ),
        (
            "Collector through the real broker",
            "bench/bench_collector.py",
            lambda: bench_collector.run(seconds=2.0 if quick else 15.0),
        ),
        (
            "Worker through the real broker (identity, profile, sink)",
            PIPELINE_SOURCE,
            lambda: bench_pipeline.run(2_000 if quick else 50_000),
        ),
        (
            "Physical ceilings (Kafka's tools, raw consumer, bare faust agent, chDB inserts)",
            CEILINGS_SOURCE,
            lambda: bench_ceilings.run(quick=quick),
        ),
        (
            "End to end: collector → Kafka → worker → ClickHouse profiles (own stack)",
            E2E_SOURCE,
            lambda: bench_e2e.run(quick=quick),
        ),
        (
            "Identity memory per identifier (the identity worker, RocksDB store)",
            "bench/bench_identity_memory.py",
            lambda: bench_identity_memory.run(quick=quick),
        ),
        (
            "Profile API lookups on chDB",
            "bench/bench_api.py",
            lambda: bench_api.run(2_000 if quick else 100_000, requests=200 if quick else 2_000),
        ),
    ]
    if quick:
        return suites
    return [
        *suites,
        (
            "Profile API lookups on chDB at 1,000,000 profiles (by email, by id)",
            "bench/bench_api.py",
            lambda: bench_api.run(1_000_000, requests=2_000, kinds=("by_email", "by_id")),
        ),
    ]  # fmt: skip


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _flatten(result: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in result.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        else:
            rows.append((prefix + key, value))
    return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _lookup(result: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def render_ratios(results: list[tuple[str, str, dict[str, Any] | str, float]]) -> list[str]:
    """The "Ratios" section: our throughput over the ceilings measured in the same run."""
    figures = {source: result for _, source, result, _ in results if isinstance(result, dict)}
    lines = ["## Ratios", ""]
    ours = next(
        (
            (source, key, number)
            for source, key in OUR_THROUGHPUT
            if (number := _number(figures.get(source, {}).get(key))) is not None
        ),
        None,
    )
    ceilings = figures.get(CEILINGS_SOURCE)
    if ours is None:
        sources = " or ".join(f"`{source}`" for source, _ in OUR_THROUGHPUT)
        return [*lines, f"Not computed: no throughput of ours ({sources}) in this run.", ""]
    if ceilings is None:
        return [*lines, f"Not computed: no ceilings (`{CEILINGS_SOURCE}`) in this run.", ""]
    source, key, value = ours
    lines += [
        f"Our throughput: `{key}` of `{source}`, {_fmt(value)} events/s, divided by the "
        "ceilings of the same run. A ceiling in messages/s is at one event per message; the "
        "pipeline carries batches of events per message, so it can exceed those.",
        "",
        "| ceiling | value | ours / ceiling |",
        "|---|---|---|",
    ]
    for label, unit, path in RATIO_CEILINGS:
        ceiling = _number(_lookup(ceilings, path))
        if ceiling is not None:
            lines.append(f"| {label} | {_fmt(ceiling)} {unit} | {value / ceiling:.3g} |")
    lines.append("")
    return lines


def render(results: list[tuple[str, str, dict[str, Any] | str, float]], mode: str) -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in PACKAGES)
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` ({mode} mode) on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} at the start.",
        f"Versions: {versions}.",
        "",
        "The machine is shared: compare figures within one run, not across runs.",
        "",
    ]
    for title, source, result, seconds in results:
        lines += [f"## {title}", "", f"`{source}`, {seconds:.0f} s.", ""]
        if isinstance(result, str):
            lines += [f"Failed: `{result}`", ""]
            continue
        lines += ["| measure | value |", "|---|---|"]
        lines += [f"| {key} | {_fmt(value)} |" for key, value in _flatten(result)]
        lines.append("")
    lines += render_ratios(results)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    results: list[tuple[str, str, dict[str, Any] | str, float]] = []
    failed = False
    for title, source, bench in _suites(args.quick):
        print(f"== {title} …", flush=True)
        started = time.perf_counter()
        try:
            result: dict[str, Any] | str = bench()
        except Exception as exc:  # one failing benchmark must not hide the others' figures
            result, failed = f"{type(exc).__name__}: {exc}", True
        results.append((title, source, result, time.perf_counter() - started))
    args.out.write_text(render(results, "quick" if args.quick else "full"))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
