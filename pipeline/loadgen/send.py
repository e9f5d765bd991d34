"""Send a simulated stream to the collector over HTTP: ``/v1/batch`` and the Segment pixel.

A producer coroutine cuts the stream into requests (``batch_size`` messages per ``/v1/batch``, one
GET per pixel message), paces them to ``rate`` events/s (0: as fast as the collector answers) and
hands them to ``concurrency`` workers sharing one aiohttp connection pool. Retries follow the
collector's contract: ``503`` / ``429`` (and connection errors) are retried after ``Retry-After``;
an answered request is never resent, so every duplicate in the stream is a deliberate one.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from pipeline.loadgen.model import SimEvent

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_BACKOFF_S = 5.0


@dataclass(frozen=True)
class SendOptions:
    collector_url: str = "http://127.0.0.1:8080"
    write_key: str = "local-write-key"
    batch_size: int = 100
    rate: float = 0.0  # events/s; 0 = as fast as possible
    concurrency: int = 4
    duration_s: float | None = None  # stop sending after this long (whatever is left unsent)
    max_retries: int = 8
    timeout_s: float = 30.0


@dataclass
class SendStats:
    sent: int = 0  # messages the collector answered for (accepted + rejected)
    accepted: int = 0
    rejected: int = 0
    failed: int = 0  # given up after retries: not known to the collector
    requests: int = 0
    retries: int = 0
    pixel: int = 0
    seconds: float = 0.0
    last_error: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Request:
    events: list[SimEvent]
    pixel: bool


class _Failure(Exception):
    """A request that may be retried (no answer, or an answer that says "later")."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Sender:
    def __init__(
        self,
        options: SendOptions,
        progress: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.stats = SendStats()
        self._progress = progress or (lambda _n: None)
        self._clock = clock
        self._auth = aiohttp.BasicAuth(options.write_key, "")

    async def run(self, events: Iterable[SimEvent]) -> SendStats:
        opts = self.options
        started = self._clock()
        queue: asyncio.Queue[_Request | None] = asyncio.Queue(maxsize=opts.concurrency * 2)
        connector = aiohttp.TCPConnector(limit=opts.concurrency)
        timeout = aiohttp.ClientTimeout(total=opts.timeout_s)
        # No cookie jar: the pixel's cookie belongs to one simulated browser, not to the sender.
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as session:
            workers = [
                asyncio.create_task(self._worker(session, queue)) for _ in range(opts.concurrency)
            ]
            try:
                await self._produce(events, queue, started)
            finally:
                for _ in workers:
                    await queue.put(None)
                await asyncio.gather(*workers)
        self.stats.seconds = self._clock() - started
        return self.stats

    async def _produce(
        self, events: Iterable[SimEvent], queue: asyncio.Queue[_Request | None], started: float
    ) -> None:
        opts = self.options
        queued = 0
        batch: list[SimEvent] = []

        async def put(request: _Request) -> None:
            nonlocal queued
            if opts.rate > 0:  # pace by schedule, not by sleeping a fixed gap (no drift)
                delay = started + queued / opts.rate - self._clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            queued += len(request.events)
            await queue.put(request)

        stream = iter(events)
        for n in itertools.count():
            # Check the time before taking the next event: the truth file records what the
            # iterator yields, so an event taken must be an event sent.
            if opts.duration_s is not None and n % 64 == 0:
                if self._clock() - started >= opts.duration_s:
                    break
                await asyncio.sleep(0)  # let workers run while the generator is busy
            event = next(stream, None)
            if event is None:
                break
            if event.channel == "pixel":
                await put(_Request([event], pixel=True))
                continue
            batch.append(event)
            if len(batch) >= opts.batch_size:
                await put(_Request(batch, pixel=False))
                batch = []
        if batch:
            await put(_Request(batch, pixel=False))

    async def _worker(
        self, session: aiohttp.ClientSession, queue: asyncio.Queue[_Request | None]
    ) -> None:
        while (request := await queue.get()) is not None:
            for attempt in range(self.options.max_retries + 1):
                try:
                    accepted, rejected = await self._send(session, request)
                except _Failure as exc:
                    self.stats.last_error = str(exc)
                    if attempt == self.options.max_retries:
                        self.stats.failed += len(request.events)
                        break
                    self.stats.retries += 1
                    backoff = min(MAX_BACKOFF_S, 0.2 * 2**attempt)
                    await asyncio.sleep(exc.retry_after_s or backoff)
                    continue
                self.stats.accepted += accepted
                self.stats.rejected += rejected
                self.stats.sent += accepted + rejected
                break
            self.stats.requests += 1
            self.stats.pixel += request.pixel
            self._progress(len(request.events))

    async def _send(self, session: aiohttp.ClientSession, request: _Request) -> tuple[int, int]:
        """(accepted, rejected) of one request; raises :class:`_Failure` when worth a retry."""
        base = self.options.collector_url.rstrip("/")
        try:
            if request.pixel:
                message = {**request.events[0].message, "writeKey": self.options.write_key}
                data = base64.urlsafe_b64encode(orjson.dumps(message)).rstrip(b"=").decode()
                async with session.get(f"{base}/v1/pixel/track", params={"data": data}) as resp:
                    await resp.read()
                    return self._answer(resp, None, 1)
            body = {"batch": [e.message for e in request.events], "sentAt": _now_iso()}
            async with session.post(
                f"{base}/v1/batch",
                data=orjson.dumps(body),
                auth=self._auth,
                headers={"Content-Type": "application/json"},
            ) as resp:
                payload = await resp.read()
                return self._answer(resp, payload, len(request.events))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Failure(f"{type(exc).__name__}: {exc}") from exc

    def _answer(
        self, resp: aiohttp.ClientResponse, payload: bytes | None, count: int
    ) -> tuple[int, int]:
        if resp.status in RETRY_STATUSES:
            raise _Failure(f"HTTP {resp.status}", _retry_after(resp.headers.get("Retry-After")))
        if resp.status == 200 and payload is None:
            return 1, 0
        body: dict[str, Any] = {}
        if payload:
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError:
                body = {}
        if resp.status == 200:
            accepted = int(body.get("accepted", count))
            return accepted, count - accepted
        # 400 (none valid), 401, 413: answered, not retried; keep the reason for the summary.
        self.stats.last_error = f"HTTP {resp.status}: {body.get('message', '')}".strip()
        return 0, count


def _retry_after(value: str | None) -> float | None:
    try:
        return min(MAX_BACKOFF_S, float(value)) if value else None
    except ValueError:
        return None


async def send_events(
    events: Iterable[SimEvent],
    options: SendOptions,
    progress: Callable[[int], None] | None = None,
) -> SendStats:
    return await Sender(options, progress).run(events)
