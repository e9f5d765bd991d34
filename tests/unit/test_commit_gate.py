"""CommitGate: a transaction commit never falls inside a group of messages (txsend.py)."""

from __future__ import annotations

import asyncio

from pipeline.worker.txsend import CommitGate


def test_a_commit_waits_for_running_groups_and_new_groups_wait_for_the_commit() -> None:
    log: list[str] = []

    async def scenario() -> None:
        gate = CommitGate()
        in_group, finish_group = asyncio.Event(), asyncio.Event()
        in_commit, finish_commit = asyncio.Event(), asyncio.Event()

        async def group(name: str, started: asyncio.Event, finish: asyncio.Event) -> None:
            async with gate.group():
                log.append(f"{name} start")
                started.set()
                await finish.wait()
                log.append(f"{name} end")

        async def commit() -> None:
            async with gate.committing():
                log.append("commit start")
                in_commit.set()
                await finish_commit.wait()
                log.append("commit end")

        first = asyncio.create_task(group("g1", in_group, finish_group))
        await in_group.wait()
        committer = asyncio.create_task(commit())
        await asyncio.sleep(0)  # let the commit reach the gate: it must wait for g1
        second_started = asyncio.Event()
        second = asyncio.create_task(group("g2", second_started, asyncio.Event()))
        await asyncio.sleep(0)
        assert log == ["g1 start"]
        finish_group.set()
        await in_commit.wait()
        assert log == ["g1 start", "g1 end", "commit start"]  # g2 held back by the commit
        finish_commit.set()
        await second_started.wait()
        assert log[-2:] == ["commit end", "g2 start"]
        second.cancel()
        await asyncio.gather(first, committer, return_exceptions=True)

    asyncio.run(scenario())


def test_commits_and_groups_alone_do_not_wait() -> None:
    async def scenario() -> None:
        gate = CommitGate()
        async with asyncio.timeout(5):  # a bug here would hang, not fail
            async with gate.committing():
                pass
            async with gate.group(), gate.group():  # two agents' groups run side by side
                pass
            async with gate.committing():
                pass

    asyncio.run(scenario())
