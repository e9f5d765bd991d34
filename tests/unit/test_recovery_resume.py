"""faust's recovery must resume the input partitions last (pipeline/worker/recovery.py).

These run faust's own ``Recovery`` methods on a stand-in recovery and consumer that record the
order of the calls; the crash test (tests/integration/test_identity_crash.py) covers the real
consumer.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from faust.tables.recovery import Recovery

from pipeline.worker.recovery import resume_streams_last

STREAM = ("cdp.events.resolved", 0)
CHANGELOG = ("cdp-worker-cdp-profiles-changelog", 0)


class _Consumer:
    """Records resumes and seeks; a seek takes a broker round trip (an await)."""

    def __init__(self, calls: list[str], seek: Callable[[], None] = lambda: None) -> None:
        self.calls = calls
        self.seek = seek

    def assignment(self) -> set[tuple[str, int]]:
        return {STREAM, CHANGELOG}

    def resume_partitions(self, tps: Iterable[tuple[str, int]]) -> None:
        self.calls.append(f"resume {sorted(tps)}")

    async def perform_seek(self) -> None:
        self.calls.append("seek starts")
        await asyncio.sleep(0)  # the fetcher runs here
        self.seek()
        self.calls.append("seek done")

    def resume_flow(self) -> None:
        self.calls.append("resume flow")


def _recovery(consumer: _Consumer, generation_id: int = 1) -> Any:
    async def send() -> None:
        return None

    async def maybe_start() -> None:
        return None

    async def wait(coro: Awaitable[None], **_: Any) -> None:  # Recovery._wait, no rebalance
        await coro

    app = types.SimpleNamespace(
        consumer=consumer,
        consumer_generation_id=generation_id,
        rebalancing_count=1,
        on_rebalance_complete=types.SimpleNamespace(send=send),
        conf=types.SimpleNamespace(broker_request_timeout=5.0),
        # faust's flow control empties every agent's input queue when it resumes
        flow_control=types.SimpleNamespace(resume=lambda: consumer.calls.append("queues emptied")),
        _fetcher=types.SimpleNamespace(maybe_start=maybe_start),
        on_rebalance_end=lambda: None,
        assignor=types.SimpleNamespace(assigned_standbys=lambda: set()),
    )
    log = types.SimpleNamespace(dev=lambda *a: None, info=lambda *a: None, warning=lambda *a: None)
    tables = types.SimpleNamespace(
        on_actives_ready=lambda: None, on_standbys_ready=lambda: None, values=lambda: []
    )
    return types.SimpleNamespace(
        app=app,
        log=log,
        tables=tables,
        completed=asyncio.Event(),
        _wait=wait,
        _is_changelog_tp=lambda tp: tp == CHANGELOG,
        _set_recovery_ended=lambda: None,
    )


# Both of faust's ways out of a rebalance: after rebuilding tables, and without tables to rebuild.
METHODS = ["on_recovery_completed", "_resume_streams"]


def _patched(method: str) -> Callable[..., Awaitable[None]]:
    resume_streams_last()
    resume_streams_last()  # idempotent: patched once
    return getattr(Recovery, method)  # type: ignore[no-any-return]


@pytest.mark.parametrize("method", METHODS)
def test_faust_alone_resumes_the_input_before_seeking_and_emptying_the_queues(method: str) -> None:
    """The race the patch removes, on the same stand-ins: faust's own order."""
    calls: list[str] = []
    asyncio.run(_patched(method).__wrapped__(_recovery(_Consumer(calls)), 1))  # type: ignore[attr-defined]
    assert calls == [
        f"resume {[STREAM]}",  # delivering from here on...
        "seek starts",
        "seek done",  # ...re-delivered...
        "queues emptied",  # ...and thrown away
        "resume flow",
    ]


@pytest.mark.parametrize("method", METHODS)
def test_the_input_is_resumed_after_the_seek_and_the_emptied_queues(method: str) -> None:
    calls: list[str] = []
    consumer = _Consumer(calls)
    asyncio.run(_patched(method)(_recovery(consumer), 1))
    assert calls == [
        "seek starts",
        "seek done",
        "queues emptied",
        "resume flow",
        f"resume {[STREAM]}",  # only the input partitions, not the changelog
    ]
    assert "resume_partitions" not in vars(consumer)  # the consumer's own method is back


@pytest.mark.parametrize("method", METHODS)
def test_a_failed_seek_resumes_nothing(method: str) -> None:
    """faust's recovery then crashes the worker, or restarts (RebalanceAgain) and resumes."""
    calls: list[str] = []

    def fail() -> None:
        raise RuntimeError("broker gone")

    consumer = _Consumer(calls, seek=fail)
    with pytest.raises(RuntimeError, match="broker gone"):
        asyncio.run(_patched(method)(_recovery(consumer), 1))
    assert calls == ["seek starts"]
    assert "resume_partitions" not in vars(consumer)


@pytest.mark.parametrize("method", METHODS)
def test_a_rebalance_before_the_resume_resumes_nothing(method: str) -> None:
    calls: list[str] = []
    consumer = _Consumer(calls)
    asyncio.run(_patched(method)(_recovery(consumer, generation_id=2), 1))
    assert calls == []
    assert "resume_partitions" not in vars(consumer)


# A rebalance beginning during the seek: faust counts it when it revokes (pausing the partitions
# and ending their transactions), and the generation changes once the new assignment is in.
BEGINNINGS = {
    "revoked": lambda app: setattr(app, "rebalancing_count", app.rebalancing_count + 1),
    "assigned": lambda app: setattr(app, "consumer_generation_id", 2),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("beginning", sorted(BEGINNINGS))
def test_a_rebalance_beginning_during_the_seek_resumes_nothing(method: str, beginning: str) -> None:
    """The new rebalance's recovery resumes its own partitions when it is done."""
    calls: list[str] = []
    consumer = _Consumer(calls)
    recovery = _recovery(consumer, generation_id=1)
    consumer.seek = lambda: BEGINNINGS[beginning](recovery.app)
    asyncio.run(_patched(method)(recovery, 1))
    assert f"resume {[STREAM]}" not in calls
    assert "resume_partitions" not in vars(consumer)
