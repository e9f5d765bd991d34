"""Micro-batching towards Kafka: events of concurrent requests share one Kafka message.

Why: the identity processor reads ``cdp.events.raw`` (one partition, a single writer) and pays a
per-message cost; a Kafka message per event would also cost the collector a producer call, a
record header and an acknowledgement per event. So events bound for the same partition collect in
an open batch for at most ``linger_s`` or until ``max_events`` / ``max_bytes``, then the batch is
*sealed* and becomes one ``EventBatch`` message.

Every request gets, for its events, the future(s) of the batch(es) they went into and answers 2xx
only once those are resolved, i.e. once Kafka acknowledged the message (acks=all): an event is
never acknowledged to a client before it is durable. A batch that fails fails every request in it
(they answer 503 and the clients retry; events that did reach Kafka are then duplicated, which
the ``event_id`` idempotency key downstream absorbs: at-least-once, never at-most-once).

Ordering: sealed batches go to Kafka through one sender loop, in sealing order, and the producer
is idempotent, so the events of one partition reach it in the order they were added; a person's
events always go to the same partition (see :mod:`pipeline.collector.producer`).

Back-pressure: bytes added but not yet acknowledged are bounded by ``max_pending_bytes``; beyond
that :meth:`Batcher.add` raises :class:`DeliveryError` ("overloaded") at once instead of queueing
without limit while Kafka is down. A sealed batch still queued after ``delivery_timeout_s`` (every
request waiting on it has given up and answered 503) is dropped unsent, which spares the clients'
retries a duplicate.

Pure asyncio: the Kafka side is the injected ``send`` coroutine, so unit tests drive it with an
in-memory fake and the integration tests with the real producer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.collector.avro_writer import frame_batch

log = logging.getLogger(__name__)

#: ``send(partition, value)`` hands one message to the producer and returns the future that
#: resolves when Kafka acknowledged it (``AIOKafkaProducer.send`` with topic and headers bound).
SendBatch = Callable[[int, bytes], Awaitable["asyncio.Future[Any]"]]

# Avro framing of an EventBatch: the item count varint (at most 10 bytes) and the end marker.
_FRAMING_BYTES = 11


class DeliveryError(Exception):
    """Events could not be (or may not have been) written to Kafka: the client should retry.

    ``code`` is ``unavailable`` (Kafka down, slow or refusing) or ``overloaded`` (too much
    waiting for Kafka already); both map to HTTP 503 with ``Retry-After``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False, slots=True)
class _Batch:
    partition: int
    future: asyncio.Future[None]  # what the requests wait on
    parts: list[bytes] = field(default_factory=list)
    size: int = _FRAMING_BYTES
    timer: asyncio.TimerHandle | None = None  # linger while open, delivery deadline once sealed
    sealed_at: float = 0.0
    released: bool = False  # its bytes no longer count as pending


@dataclass(frozen=True, slots=True)
class BatchLimits:
    linger_s: float = 0.005
    max_events: int = 500
    max_bytes: int = 256 * 1024
    max_pending_bytes: int = 64 * 1024 * 1024
    delivery_timeout_s: float = 5.0


class _ThrottledLog:
    """One warning per ``interval_s`` with a count of the ones held back: a Kafka outage fails
    hundreds of batches a second, and the log must stay readable."""

    def __init__(self, logger: logging.Logger, interval_s: float, clock: Callable[[], float]):
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last = -interval_s
        self._held_back = 0

    def note(self, message: str) -> None:
        now = self._clock()
        if now - self._last < self._interval_s:
            self._held_back += 1
            return
        suffix = f" (and {self._held_back} more since the last report)" if self._held_back else ""
        self._logger.warning("%s%s", message, suffix)
        self._last = now
        self._held_back = 0


def _retrieve(future: asyncio.Future[None]) -> None:
    # A batch may fail after all of its requests gave up waiting; reading the exception here
    # keeps asyncio from logging "exception was never retrieved" for it.
    if not future.cancelled():
        future.exception()


class Batcher:
    """Per-partition open batches, a sealed-batch queue and the loop that sends it in order."""

    def __init__(
        self,
        send: SendBatch,
        limits: BatchLimits,
        *,
        on_acknowledged: Callable[[float, int], None] | None = None,
        on_failed: Callable[[BaseException, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._limits = limits
        self._on_acknowledged = on_acknowledged
        self._on_failed = on_failed
        self._clock = clock
        self._open: dict[int, _Batch] = {}
        self._sealed: deque[_Batch] = deque()
        self._wakeup = asyncio.Event()
        self._pending_bytes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._sender: asyncio.Task[None] | None = None
        self._failures = _ThrottledLog(log, interval_s=10.0, clock=clock)

    @property
    def pending_bytes(self) -> int:
        """Avro bytes added and not yet acknowledged or failed."""
        return self._pending_bytes

    def start(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())

    def add(self, partition: int, events: Sequence[bytes]) -> list[asyncio.Future[None]]:
        """Add Avro-encoded events for ``partition``; the futures of the batches they joined.

        Raises :class:`DeliveryError` when closed or over the pending-bytes bound; in that case
        none of the events was added.
        """
        if self._closed:
            raise DeliveryError("unavailable", "the collector is shutting down")
        total = sum(len(event) for event in events)
        if self._pending_bytes + total > self._limits.max_pending_bytes:
            raise DeliveryError("overloaded", "too many events are waiting for Kafka; retry later")
        self._pending_bytes += total
        if total:
            self._idle.clear()
        limits = self._limits
        batch = self._open.get(partition)
        if events and self._fits(batch, len(events), total):
            # The common case, a request's events all joining one batch that none of them
            # seals: what the loop below would do, without its per-event steps.
            if batch is None:
                batch = self._open_batch(partition)
            batch.parts.extend(events)
            batch.size += total
            return [batch.future]
        futures: list[asyncio.Future[None]] = []
        for event in events:
            if batch is None:
                batch = self._open_batch(partition)
            elif batch.size + len(event) > limits.max_bytes and batch.parts:
                self._seal(batch)
                batch = self._open_batch(partition)
            batch.parts.append(event)
            batch.size += len(event)
            if not futures or futures[-1] is not batch.future:
                futures.append(batch.future)
            if len(batch.parts) >= limits.max_events:
                self._seal(batch)
                batch = None
        return futures

    def _fits(self, batch: _Batch | None, count: int, size: int) -> bool:
        """Whether ``count`` events of ``size`` bytes join ``batch`` (or a new one) and leave it
        open: under both limits (reaching ``max_events`` would seal it)."""
        if batch is None:
            return (
                _FRAMING_BYTES + size <= self._limits.max_bytes and count < self._limits.max_events
            )
        return (
            batch.size + size <= self._limits.max_bytes
            and len(batch.parts) + count < self._limits.max_events
        )

    async def wait(self, futures: Sequence[asyncio.Future[None]]) -> None:
        """Return when every future resolved; :class:`DeliveryError` when one failed.

        No timeout here: every batch fails by itself ``delivery_timeout_s`` after it was sealed
        (one timer per batch rather than one per request), and it is sealed at most
        ``linger_s`` after it opened. ``shield``: a cancelled request must not cancel a batch
        future that other requests are waiting on too.
        """
        for future in futures:
            try:
                await asyncio.shield(future)
            except DeliveryError:
                raise
            except Exception as exc:
                raise DeliveryError(
                    "unavailable", f"Kafka refused the write ({type(exc).__name__}); retry later"
                ) from exc

    async def close(self, timeout_s: float) -> None:
        """Seal what is open, wait (bounded) for everything to be acknowledged, stop."""
        self._closed = True
        for batch in list(self._open.values()):
            self._seal(batch)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        while self._sealed:
            self._fail(self._sealed.popleft(), DeliveryError("unavailable", "shut down"))

    # --- internals ----------------------------------------------------------------------------

    def _open_batch(self, partition: int) -> _Batch:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        future.add_done_callback(_retrieve)
        batch = _Batch(partition, future)
        batch.timer = loop.call_later(self._limits.linger_s, self._seal_if_open, batch)
        self._open[partition] = batch
        return batch

    def _seal_if_open(self, batch: _Batch) -> None:
        if self._open.get(batch.partition) is batch:
            self._seal(batch)

    def _seal(self, batch: _Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
        if self._open.get(batch.partition) is batch:
            del self._open[batch.partition]
        batch.sealed_at = self._clock()
        batch.timer = asyncio.get_running_loop().call_later(
            self._limits.delivery_timeout_s, self._expire, batch
        )
        self._sealed.append(batch)
        self._wakeup.set()

    def _expire(self, batch: _Batch) -> None:
        """The delivery deadline passed: its requests answer 503 now, whatever Kafka does later.

        Its bytes stay pending until Kafka's side is settled (the producer still holds them).
        """
        if not batch.future.done():
            timeout = self._limits.delivery_timeout_s
            error = DeliveryError(
                "unavailable", f"Kafka did not acknowledge within {timeout:g} s; retry later"
            )
            batch.future.set_exception(error)
            self._failures.note("Kafka did not acknowledge a batch in time")
            if self._on_failed is not None:
                self._on_failed(error, len(batch.parts))

    async def _send_loop(self) -> None:
        while True:
            if not self._sealed:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._sealed.popleft()
            if batch.future.done():
                # Expired while queued: every request waiting on it has answered 503, and
                # sending it now would only duplicate the events their clients will retry.
                self._release(batch)
                continue
            value = frame_batch(batch.parts)
            started = self._clock()
            try:
                acknowledgement = await self._send(batch.partition, value)
            except asyncio.CancelledError:
                self._fail(batch, DeliveryError("unavailable", "shut down"))
                raise
            except Exception as exc:
                self._failures.note(f"producing a batch failed: {type(exc).__name__}")
                self._fail(batch, exc)
                continue
            acknowledgement.add_done_callback(functools.partial(self._resolved, batch, started))

    def _resolved(self, batch: _Batch, started: float, ack: asyncio.Future[Any]) -> None:
        error = (
            DeliveryError("unavailable", "the write was cancelled")
            if ack.cancelled()
            else ack.exception()
        )
        if error is not None:
            self._failures.note(f"Kafka did not acknowledge a batch: {type(error).__name__}")
            self._fail(batch, error)
            return
        self._release(batch)
        if batch.timer is not None:
            batch.timer.cancel()
        if not batch.future.done():
            batch.future.set_result(None)
        if self._on_acknowledged is not None:
            self._on_acknowledged(self._clock() - started, len(batch.parts))

    def _fail(self, batch: _Batch, error: BaseException) -> None:
        self._release(batch)
        if batch.timer is not None:
            batch.timer.cancel()
        if not batch.future.done():
            batch.future.set_exception(error)
            if self._on_failed is not None:
                self._on_failed(error, len(batch.parts))

    def _release(self, batch: _Batch) -> None:
        if batch.released:
            return
        batch.released = True
        self._pending_bytes -= batch.size - _FRAMING_BYTES
        if self._pending_bytes == 0:
            self._idle.set()
