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


class _Consumer:
    def __init__(self) -> None:
        self.should_stop = False
        self.calls: list[set[str]] = []
        self.release = asyncio.Event()

    async def commit(self, topics: set[str]) -> bool:
        self.calls.append(set(topics))
        await self.release.wait()
        return True


class _App:
    def __init__(self, in_transaction: bool) -> None:
        self.should_stop = False
        self.in_transaction = in_transaction
        self.consumer = _Consumer()


def test_eager_commit_commits_its_topic_once_at_a_time_and_keeps_one_request() -> None:
    from pipeline.worker.txsend import EagerCommit

    async def scenario() -> None:
        app = _App(in_transaction=True)
        eager = EagerCommit(app, "resolved")  # type: ignore[arg-type]
        eager.request()
        assert app.consumer.calls == []  # not before the agent had a turn to ack its group
        deadline = asyncio.get_running_loop().time() + 5
        while not app.consumer.calls:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        eager.request()  # while the first commit runs: kept for afterwards, not run beside it
        eager.request()
        await asyncio.sleep(0.01)
        assert app.consumer.calls == [{"resolved"}]
        app.consumer.release.set()
        while len(app.consumer.calls) < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert app.consumer.calls == [{"resolved"}, {"resolved"}]  # two requests, one commit

    asyncio.run(scenario())


def test_eager_commit_does_nothing_without_transactions_when_disabled_or_stopping() -> None:
    from pipeline.worker.txsend import EagerCommit

    stopping = _App(True)
    stopping.should_stop = True

    async def scenario() -> None:
        cases = ((_App(in_transaction=False), True), (_App(True), False), (stopping, True))
        for app, enabled in cases:
            eager = EagerCommit(app, "resolved", enabled=enabled)  # type: ignore[arg-type]
            eager.request()
            await asyncio.sleep(0.01)
            assert app.consumer.calls == []

    asyncio.run(scenario())


class _FaustConsumer:
    """faust's own ``Consumer.commit`` single-flight logic on a stand-in: ``force_commit``
    records what it committed and holds until released."""

    def __init__(self) -> None:
        import types

        from faust.transport.consumer import Consumer

        self.app = types.SimpleNamespace(client_only=False)
        self.loop = asyncio.get_running_loop()
        self._commit_fut: asyncio.Future[None] | None = None
        self.committed: list[set[str] | None] = []
        self.release = asyncio.Event()
        self.maybe_wait_for_commit_to_finish = types.MethodType(
            Consumer.maybe_wait_for_commit_to_finish, self
        )
        self.commit = types.MethodType(Consumer.commit, self)

    async def force_commit(self, topics: set[str] | None, start_new_transaction: bool) -> bool:
        self.committed.append(topics)
        await self.release.wait()
        return True


def test_a_commit_requested_while_another_runs_commits_after_it() -> None:
    from pipeline.worker.txsend import commit_after_running_commit

    commit_after_running_commit()
    commit_after_running_commit()  # idempotent: patched once

    async def scenario() -> None:
        consumer = _FaustConsumer()
        timer = asyncio.ensure_future(consumer.commit())  # all topics
        await asyncio.sleep(0)
        eager = asyncio.ensure_future(consumer.commit({"resolved"}))
        other = asyncio.ensure_future(consumer.commit({"raw"}))
        await asyncio.sleep(0.01)
        assert consumer.committed == [None]  # one commit at a time: the others wait
        consumer.release.set()
        results = await asyncio.wait_for(asyncio.gather(timer, eager, other), timeout=5)
        # faust alone returned False for the waiting two without committing their topics
        assert list(results) == [True, True, True]
        assert consumer.committed == [None, {"resolved"}, {"raw"}]

    asyncio.run(scenario())
