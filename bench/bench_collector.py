"""Collector throughput: events/s through ``/v1/batch`` and pixel requests/s, with p50/p99 latency.

``python -m bench.bench_collector [seconds] [--bootstrap HOST:PORT] [--phase batch|pixel]`` prints
a small table.

What runs: one collector *process* (``cdp collector``, as in production) producing to a real
broker: the one at ``--bootstrap``, else a fresh single-node Kafka (``LocalKafka``) on free ports
in a temporary folder, stopped at the end. Its topics get a unique prefix. This process
generates the load on loopback over concurrent keep-alive connections, each with one request in
flight: first ``POST /v1/batch`` with
100 realistic events per request (analytics.js-like context, a population of visitors with
repeating user agents and ids, as a site's traffic has), then the short pixel ``GET /i``, half
of the requests with a cookie, half without (a new visitor gets one set). Every 2xx was
acknowledged by Kafka (acks=all) before it was sent: that is what the figures measure.

The load generator must not be what is measured: requests are encoded once, before the clock
starts, and sent by a minimal HTTP/1.1 client (:class:`_Connection`, on uvloop when installed)
that costs a few percent of a core at 2,000 pixel requests/s, where aiohttp's client took about
as much CPU as the collector. On a 2-core box the collector, the load generator and the Kafka JVM
still share the cores, so the figures are a floor for a collector with a core of its own; the
table shows the CPU use of the collector process (Linux ``/proc``) and of the load generator, to
tell "CPU-bound" from "waiting".
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
from collections.abc import Coroutine, Iterator
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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight, requests pre-encoded.

    A minimal client on purpose: the load generator shares the cores with the collector, and
    aiohttp's client costs about as much CPU per request as the pixel handler it measures.
    Responses are read by ``Content-Length`` (the collector always sends one).
    """

    def __init__(self) -> None:
        self.transport: Any = None  # asyncio's or uvloop's transport
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self._fail(ConnectionError("connection closed"))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            self._fail(ConnectionError("response without Content-Length"))
            self.transport.close()
            return
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop > 0 else len(head)])
        if len(buffer) < end + 4 + length:
            return
        del buffer[: end + 4 + length]
        if b"\r\nconnection: close" in head and self.transport is not None:
            self.transport.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(int(head[9:12]))

    async def request(self, data: bytes) -> int:
        """Send one pre-encoded request; its response status."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self._waiter


async def _load(
    url: str, requests: Iterator[bytes], seconds: float, concurrency: int
) -> tuple[int, int, list[float], float]:
    """``(ok, failed, latencies, elapsed)`` of ``concurrency`` connections sending until the
    deadline, each with one request in flight (keep-alive, reconnecting when closed)."""
    ok = failed = 0
    latencies: list[float] = []
    host, _, port = url.removeprefix("http://").partition(":")
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + seconds

    async def connect() -> _Connection:
        _, protocol = await loop.create_connection(_Connection, host, int(port))
        return protocol

    async def worker() -> None:
        nonlocal ok, failed
        connection = await connect()
        clock = time.perf_counter
        record = latencies.append
        while clock() < deadline:
            data = next(requests)
            started = clock()
            try:
                status = await connection.request(data)
            except ConnectionError:
                failed += 1
                connection = await connect()
                continue
            record(clock() - started)
            if 200 <= status < 300:
                ok += 1
            else:
                failed += 1
            if not connection.open:
                connection = await connect()
        if connection.transport is not None:
            connection.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return ok, failed, latencies, elapsed


def _http_request(method: str, target: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _cycle(requests: list[bytes]) -> Iterator[bytes]:
    while True:
        yield from requests


def batch_requests(bodies: list[bytes]) -> list[bytes]:
    """``POST /v1/batch`` requests, encoded once (the load generator must stay cheap)."""
    headers = {**_AUTH, "Content-Type": "application/json"}
    return [_http_request("POST", "/v1/batch", headers, body) for body in bodies]


def pixel_requests(queries: list[str]) -> list[bytes]:
    """``GET /i`` requests, half from a returning browser (with its cookie), encoded once."""
    browser = {"User-Agent": _USER_AGENTS[0]}
    returning = {**browser, "Cookie": "cdp_aid=returning-visitor-0001"}
    return [
        _http_request("GET", f"/i?{query}", returning if i % 2 else browser)
        for i, query in enumerate(queries)
    ]


PHASES = ("batch", "pixel")


async def _measure(
    url: str, pid: int, seconds: float, phases: tuple[str, ...] = PHASES
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    load = {
        "batch": (lambda: batch_requests(batch_bodies(200)), 16, BATCH_EVENTS),
        "pixel": (lambda: pixel_requests(pixel_queries(5000)), 64, 1),
    }
    for name in phases:
        encode, concurrency, events_per_request = load[name]
        requests = _cycle(encode())
        await _load(url, requests, min(2.0, seconds / 4), concurrency)  # warm caches, connections
        cpu_before = _cpu_seconds(pid)
        own_before = time.process_time()
        ok, failed, latencies, elapsed = await _load(url, requests, seconds, concurrency)
        own = (time.process_time() - own_before) / elapsed
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
            "loadgen_cpu": own,
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


def _run_loop(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def run(
    seconds: float = 10.0, bootstrap: str | None = None, phases: tuple[str, ...] = PHASES
) -> dict[str, Any]:
    """Measure the phases for ``seconds`` each; the figures as a dict (see :func:`_measure`)."""
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        workdir = Path(tmp)
        with _broker(bootstrap, workdir) as servers, _collector(servers, workdir) as (url, pid):

            async def scenario() -> dict[str, Any]:
                await _wait_healthy(url)
                return await _measure(url, pid, seconds, phases)

            return _run_loop(scenario())


def _table(results: dict[str, Any]) -> str:
    lines = [
        f"{'phase':<8} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'failed':>7} {'conc':>5} {'collector CPU':>14} {'events/s per core':>18} "
        f"{'load gen CPU':>13}"
    ]
    for name, r in results.items():
        lines.append(
            f"{name:<8} {r['requests_per_s']:>9,.0f} {r['events_per_s']:>10,.0f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['failed']:>7} {r['concurrency']:>5} "
            f"{r['collector_cpu']:>13.0%} {r['events_per_s'] / r['collector_cpu']:>18,.0f} "
            f"{r['loadgen_cpu']:>12.0%}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", nargs="?", type=float, default=10.0)
    parser.add_argument("--bootstrap", help="an existing broker (default: start one)")
    parser.add_argument("--phase", choices=PHASES, action="append", help="default: both")
    args = parser.parse_args()
    print(_table(run(args.seconds, args.bootstrap, tuple(args.phase or PHASES))))


if __name__ == "__main__":
    main()
