"""Collector throughput: events/s through ``/v1/batch`` and pixel requests/s, with p50/p99 latency.

``python -m bench.bench_collector [seconds] [--bootstrap HOST:PORT]`` prints a small table.

What runs: one collector *process* (``cdp collector``, as in production) producing to a real
broker: the one at ``--bootstrap``, else a fresh single-node Kafka (``LocalKafka``) on free ports
in a temporary folder, stopped at the end. Its topics get a unique prefix. This process
generates the load on loopback with concurrent aiohttp clients: first ``POST /v1/batch`` with
100 realistic events per request (analytics.js-like context, a population of visitors with
repeating user agents and ids, as a site's traffic has), then the short pixel ``GET /i``, half
of the requests with a cookie, half without (a new visitor gets one set). Every 2xx was
acknowledged by Kafka (acks=all) before it was sent: that is what the figures measure.

On a 2-core box the collector, the load generator and the Kafka JVM share the cores, so the
figures are a floor for a collector with a core of its own; the table shows the collector
process's CPU use (Linux ``/proc``) to tell "CPU-bound" from "waiting".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import orjson

WRITE_KEY = "bench-write-key"
BATCH_EVENTS = 100
_AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
_USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
)
_REFERRERS = ("", "https://www.google.com/", "https://t.co/x", "https://mail.example.com/")
_PAGES = ("/", "/catalog", "/p/123", "/p/456?utm_source=news&utm_medium=email", "/cart")


# --- synthetic traffic -------------------------------------------------------------------------


def _event(rng: random.Random, person: int) -> dict[str, Any]:
    path = rng.choice(_PAGES)
    kind = rng.random()
    message: dict[str, Any] = {
        "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
        "anonymousId": f"anon-{person:06d}",
        "timestamp": "2026-01-01T12:00:00.000Z",
        "context": {
            "page": {
                "url": f"https://shop.example{path}",
                "path": path.split("?")[0],
                "title": "Shop",
                "referrer": rng.choice(_REFERRERS),
            },
            "userAgent": _USER_AGENTS[person % len(_USER_AGENTS)],
            "ip": f"198.51.{person % 200}.{person % 250}",
            "locale": "en-US",
            "library": {"name": "analytics.js", "version": "4.1.0"},
        },
    }
    if person % 3 == 0:
        message["userId"] = f"user-{person:06d}"
    if kind < 0.4:
        message.update(type="page", name="Shop", properties={"path": path})
    elif kind < 0.9:
        message.update(
            type="track",
            event="Product Viewed",
            properties={"product_id": f"p{rng.randrange(500)}", "price": 19.9, "currency": "USD"},
        )
    elif kind < 0.97:
        message.update(
            type="track",
            event="Order Completed",
            properties={
                "order_id": f"o{rng.getrandbits(40)}",
                "revenue": 59.7,
                "currency": "USD",
                "products": [{"product_id": "p1", "price": 19.9, "quantity": 3}],
            },
        )
    else:
        message.update(
            type="identify", traits={"email": f"person{person}@example.com", "name": "Ann"}
        )
    return message


def batch_bodies(count: int, people: int = 20_000, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [
        orjson.dumps(
            {
                "batch": [_event(rng, rng.randrange(people)) for _ in range(BATCH_EVENTS)],
                "sentAt": "2026-01-01T12:00:01.000Z",
            }
        )
        for _ in range(count)
    ]


def pixel_queries(count: int, people: int = 20_000, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    queries = []
    for _ in range(count):
        person = rng.randrange(people)
        if rng.random() < 0.3:
            params = {"k": WRITE_KEY, "e": "Email Opened", "em": f"person{person}@example.com"}
            params["campaign_id"] = "spring"
        else:
            params = {"k": WRITE_KEY, "u": f"https://shop.example{rng.choice(_PAGES)}"}
            params["r"] = rng.choice(_REFERRERS)
        queries.append(urlencode(params))
    return queries


# --- load ------------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _load(
    url: str,
    requests: Iterator[tuple[str, str, bytes | None, dict[str, str]]],
    seconds: float,
    concurrency: int,
) -> tuple[int, int, list[float], float]:
    """``(ok, failed, latencies, elapsed)`` of ``concurrency`` loops sending until the deadline."""
    ok = failed = 0
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal ok, failed
            while time.perf_counter() < deadline:
                method, path, body, headers = next(requests)
                started = time.perf_counter()
                async with http.request(method, url + path, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                latencies.append(time.perf_counter() - started)
                if 200 <= status < 300:
                    ok += 1
                else:
                    failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return ok, failed, latencies, elapsed


def _batch_requests(bodies: list[bytes]) -> Iterator[tuple[str, str, bytes | None, dict[str, str]]]:
    headers = {**_AUTH, "Content-Type": "application/json"}
    while True:
        for body in bodies:
            yield "POST", "/v1/batch", body, headers


def _pixel_requests(queries: list[str]) -> Iterator[tuple[str, str, bytes | None, dict[str, str]]]:
    browser = {"User-Agent": _USER_AGENTS[0]}
    returning = {**browser, "Cookie": "cdp_aid=returning-visitor-0001"}
    while True:
        for i, query in enumerate(queries):
            yield "GET", f"/i?{query}", None, returning if i % 2 else browser


async def _measure(url: str, pid: int, seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    phases = (
        ("batch", _batch_requests(batch_bodies(200)), 16, BATCH_EVENTS),
        ("pixel", _pixel_requests(pixel_queries(5000)), 64, 1),
    )
    for name, requests, concurrency, events_per_request in phases:
        await _load(url, requests, min(2.0, seconds / 4), concurrency)  # warm caches, connections
        cpu_before = _cpu_seconds(pid)
        ok, failed, latencies, elapsed = await _load(url, requests, seconds, concurrency)
        cpu_after = _cpu_seconds(pid)
        cpu = (
            (cpu_after - cpu_before) / elapsed
            if cpu_before is not None and cpu_after is not None
            else float("nan")
        )
        results[name] = {
            "requests_per_s": ok / elapsed,
            "events_per_s": ok * events_per_request / elapsed,
            "failed": failed,
            "p50_ms": _percentile(latencies, 0.50) * 1000,
            "p99_ms": _percentile(latencies, 0.99) * 1000,
            "concurrency": concurrency,
            "collector_cpu": cpu,
        }
    return results


# --- processes -------------------------------------------------------------------------------


@contextlib.contextmanager
def _broker(bootstrap: str | None, workdir: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from pipeline.localstack.kafka import LocalKafka, free_port
    from pipeline.settings import load_settings

    kafka = LocalKafka(
        run_dir=workdir / "kafka",
        libs_dir=load_settings().kafka_libs_dir,
        port=free_port(),
        controller_port=free_port(),
    )
    kafka.start(timeout_s=120)
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


@contextlib.contextmanager
def _collector(bootstrap: str, workdir: Path) -> Iterator[tuple[str, int]]:
    from pipeline.kafka_admin import TopicSpec, ensure_topics
    from pipeline.localstack.kafka import free_port
    from pipeline.settings import TOPIC_INVALID, TOPIC_RAW

    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    ensure_topics(
        bootstrap, [TopicSpec(prefix + TOPIC_RAW, 1), TopicSpec(prefix + TOPIC_INVALID, 1)]
    )
    port = free_port()
    env = {
        **os.environ,
        "CDP_KAFKA_BOOTSTRAP": bootstrap,
        "CDP_TOPIC_PREFIX": prefix,
        "CDP_COLLECTOR_PORT": str(port),
        "CDP_WRITE_KEYS": f"{WRITE_KEY}:bench",
        "CDP_LOG_LEVEL": "warn",
    }
    with open(workdir / "collector.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "collector"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_healthy(url: str, timeout_s: float = 60.0) -> None:
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout_s):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)


def run(seconds: float = 10.0, bootstrap: str | None = None) -> dict[str, Any]:
    """Measure both phases for ``seconds`` each; the figures as a dict (see :func:`_measure`)."""
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        workdir = Path(tmp)
        with _broker(bootstrap, workdir) as servers, _collector(servers, workdir) as (url, pid):

            async def scenario() -> dict[str, Any]:
                await _wait_healthy(url)
                return await _measure(url, pid, seconds)

            return asyncio.run(scenario())


def _table(results: dict[str, Any]) -> str:
    lines = [
        f"{'phase':<8} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'failed':>7} {'conc':>5} {'collector CPU':>14} {'events/s per core':>18}"
    ]
    for name, r in results.items():
        lines.append(
            f"{name:<8} {r['requests_per_s']:>9,.0f} {r['events_per_s']:>10,.0f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['failed']:>7} {r['concurrency']:>5} "
            f"{r['collector_cpu']:>13.0%} {r['events_per_s'] / r['collector_cpu']:>18,.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=10.0)
    parser.add_argument("--bootstrap", help="an existing broker (default: start one)")
    args = parser.parse_args()
    print(_table(run(args.seconds, args.bootstrap)))


if __name__ == "__main__":
    main()
