"""The micro-batcher's rules, with an in-memory stand-in for the producer (pure asyncio logic;
the integration tests run it against the real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline import avro
from pipeline.collector.avro_writer import encode_event_fast
from pipeline.collector.batcher import Batcher, BatchLimits, DeliveryError
from pipeline.collector.enrich import Enricher
from pipeline.identity.config import IdentityConfig

_ENRICHER = Enricher(IdentityConfig.from_values(), {"k": "web"}, lambda: 1_767_225_600.0)


def encoded(n: int) -> bytes:
    event = _ENRICHER.event({"type": "track", "userId": f"u{n}", "event": f"E{n}"}, write_key="k")
    return encode_event_fast(event)


def names(value: bytes) -> list[str]:
    return [e["event"] for e in avro.decode_batch(value)]


class FakeProducer:
    """Records each message; acknowledges it soon, fails it, or never answers."""

    def __init__(self, mode: str = "ack") -> None:
        self.mode = mode
        self.messages: list[tuple[int, bytes]] = []
        self.gate: asyncio.Event | None = None  # when set: send() blocks until it opens

    async def send(self, partition: int, value: bytes) -> asyncio.Future[Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "raise":
            raise RuntimeError("broker says no")
        self.messages.append((partition, value))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.mode == "ack":
            asyncio.get_running_loop().call_soon(ack.set_result, None)
        elif self.mode == "fail":
            asyncio.get_running_loop().call_soon(ack.set_exception, OSError("lost"))
        return ack


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())


def make(producer: FakeProducer, **limits: Any) -> Batcher:
    values = {"linger_s": 0.01, "delivery_timeout_s": 1.0, **limits}
    batcher = Batcher(producer.send, BatchLimits(**values))
    batcher.start()
    return batcher


def test_concurrent_requests_within_the_linger_share_one_message() -> None:
    producer = FakeProducer()

    async def scenario() -> None:
        batcher = make(producer)

        async def request(n: int) -> None:
            await batcher.wait(batcher.add(0, [encoded(n)]))

        await asyncio.gather(*(request(n) for n in range(5)))
        assert batcher.pending_bytes == 0

    run(scenario)
    assert len(producer.messages) == 1
    assert names(producer.messages[0][1]) == ["E0", "E1", "E2", "E3", "E4"]


def test_event_and_byte_limits_seal_batches_early_keeping_order() -> None:
    producer = FakeProducer()
    size = len(encoded(0))

    async def scenario() -> int:
        batcher = make(producer, max_events=2, linger_s=10.0)
        futures = batcher.add(0, [encoded(n) for n in range(5)])
        assert len(futures) == 3
        await batcher.close(1.0)  # seals the last, partial batch
        await batcher.wait(futures)
        by_bytes = make(producer, max_bytes=2 * size + 20, linger_s=10.0)
        more = by_bytes.add(0, [encoded(n) for n in range(5, 9)])
        await by_bytes.close(1.0)
        await by_bytes.wait(more)
        return len(more)

    assert run(scenario) == 2
    assert [names(v) for _, v in producer.messages] == [
        ["E0", "E1"],
        ["E2", "E3"],
        ["E4"],
        ["E5", "E6"],
        ["E7", "E8"],
    ]


def test_partitions_get_their_own_messages() -> None:
    producer = FakeProducer()

    async def scenario() -> None:
        batcher = make(producer)
        futures = batcher.add(0, [encoded(0)]) + batcher.add(3, [encoded(1)])
        futures += batcher.add(0, [encoded(2)])
        await batcher.wait(futures)

    run(scenario)
    assert sorted((p, names(v)) for p, v in producer.messages) == [
        (0, ["E0", "E2"]),
        (3, ["E1"]),
    ]


@pytest.mark.parametrize("mode", ["fail", "raise"])
def test_a_failed_write_fails_every_request_in_the_batch(mode: str) -> None:
    producer = FakeProducer(mode)

    async def scenario() -> list[BaseException | None]:
        batcher = make(producer)
        futures = [batcher.add(0, [encoded(n)]) for n in range(3)]
        results = await asyncio.gather(*(batcher.wait(f) for f in futures), return_exceptions=True)
        assert batcher.pending_bytes == 0
        return list(results)

    results = run(scenario)
    assert all(isinstance(r, DeliveryError) and r.code == "unavailable" for r in results)


def test_no_acknowledgement_fails_at_the_delivery_timeout() -> None:
    producer = FakeProducer("silent")

    async def scenario() -> float:
        batcher = make(producer, delivery_timeout_s=0.2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(DeliveryError, match=r"did not acknowledge within 0\.2 s"):
            await batcher.wait(batcher.add(0, [encoded(0)]))
        return asyncio.get_running_loop().time() - started

    assert 0.2 <= run(scenario) < 1.0


def test_a_batch_expired_while_queued_is_never_sent() -> None:
    producer = FakeProducer()

    async def scenario() -> None:
        producer.gate = asyncio.Event()  # the producer is stuck (e.g. waiting for metadata)
        batcher = make(producer, delivery_timeout_s=0.1, linger_s=0.0)
        first = batcher.add(0, [encoded(0)])
        await asyncio.sleep(0.02)
        second = batcher.add(0, [encoded(1)])
        for futures in (first, second):
            with pytest.raises(DeliveryError):
                await batcher.wait(futures)
        producer.gate.set()
        await batcher.close(1.0)

    run(scenario)
    # The first was already handed to the producer (it may still write it: at least once);
    # the second expired in the queue, its clients told to retry, so it is dropped.
    assert [names(v) for _, v in producer.messages] == [["E0"]]


def test_too_much_waiting_for_kafka_is_refused_at_once() -> None:
    producer = FakeProducer("silent")

    async def scenario() -> None:
        one = len(encoded(0))
        batcher = make(producer, max_pending_bytes=2 * one)
        batcher.add(0, [encoded(0), encoded(1)])
        with pytest.raises(DeliveryError) as refused:
            batcher.add(0, [encoded(2)])
        assert refused.value.code == "overloaded"
        assert batcher.pending_bytes == 2 * one

    run(scenario)


def test_close_flushes_what_is_open_then_refuses() -> None:
    producer = FakeProducer()

    async def scenario() -> None:
        batcher = make(producer, linger_s=60.0)
        futures = batcher.add(0, [encoded(0)])
        await batcher.close(1.0)
        await batcher.wait(futures)
        with pytest.raises(DeliveryError, match="shutting down"):
            batcher.add(0, [encoded(1)])

    run(scenario)
    assert len(producer.messages) == 1


class _LoopOnlyBatcher(Batcher):
    """The batcher without its whole-request fast path: every event takes the general loop."""

    def _fits(self, batch: Any, count: int, size: int) -> bool:
        return False


def _batching(batcher: Batcher, requests: list[list[int]]) -> list[Any]:
    """For each request, which batches its futures are; then every batch's parts, in order."""
    ordinals: dict[int, int] = {}
    futures_seen = []
    for request_number, sizes in enumerate(requests):
        events = [bytes([request_number % 256]) * size for size in sizes]
        futures = batcher.add(0, events)
        futures_seen.append([ordinals.setdefault(id(f), len(ordinals)) for f in futures])
    batches = [*batcher._sealed, *batcher._open.values()]
    return [futures_seen, [(b.parts, b.size) for b in batches]]


@settings(max_examples=200, derandomize=True, database=None)
@given(
    requests=st.lists(st.lists(st.integers(1, 9), max_size=6), max_size=8),
    max_events=st.integers(1, 6),
    max_bytes=st.integers(12, 60),
)
@example(requests=[[1], [1, 1], [1]], max_events=3, max_bytes=120)  # fills max_events exactly
@example(requests=[[4], [2, 3], [1]], max_events=9, max_bytes=20)  # fills max_bytes exactly
@example(requests=[[5, 5]], max_events=9, max_bytes=20)  # a new batch's framing counts
def test_the_whole_request_fast_path_batches_as_the_per_event_loop(
    requests: list[list[int]], max_events: int, max_bytes: int
) -> None:
    limits = BatchLimits(linger_s=10.0, max_events=max_events, max_bytes=max_bytes)

    async def scenario() -> list[list[Any]]:
        results = []
        for kind in (Batcher, _LoopOnlyBatcher):
            batcher = kind(FakeProducer().send, limits)  # not started: nothing is sent
            results.append(_batching(batcher, requests))
            await batcher.close(0.0)
        return results

    fast, loop = run(scenario)
    assert fast == loop
