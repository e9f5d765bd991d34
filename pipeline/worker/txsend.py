"""Send an agent's outputs inside the transaction of the input message being processed.

faust-streaming's exactly-once mode picks a transactional producer from the *destination*
topic's partition (``TransactionManager.send``), so an agent's outputs land in other
transactions than the one that commits its input offset and its table changelog. A crash
between those commits keeps the state change and loses the output for good: the replayed input
finds its identifiers known and emits nothing (tests/integration/test_identity_crash.py caught
this). Routing every output through the producer of the *source* partition - the one faust
commits the input offset and the changelog writes with - makes state, outputs and offset one
atomic transaction. It also works with several workers: the source partition is always
assigned to the worker processing it, a destination partition may not be.

Under at-least-once (no transactions) it is a plain send.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import faust
from faust.types import AppT, EventT


class SourceTransactionSender:
    """Sends raw bytes to a topic within the current input message's transaction."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    def _transactional_id(self, event: EventT[Any]) -> str | None:
        if not self._app.in_transaction:
            return None
        tp = event.message.tp
        group = self._app.assignor.group_for_topic(tp.topic)
        # The format faust's TransactionManager uses for the id that commits ``tp``'s offsets.
        return f"{self._app.conf.id}-{group}-{tp.partition}"

    async def send(
        self,
        event: EventT[Any],
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        transactional_id = self._transactional_id(event)
        if transactional_id is None:
            await self._app.producer.send(topic, key, value, partition, None, headers)
            return
        producer = self._app.consumer.transactions.producer
        await producer.send(
            topic, key, value, partition, None, headers, transactional_id=transactional_id
        )


class CommitGate:
    """Keeps faust's transaction commits out of the middle of a group of messages.

    An agent processing a group writes its tables (changelog records through faust's producer
    buffer) and then sends its outputs, awaiting each send. faust commits on a timer, in another
    task: a commit falling between the two put the group's state writes in one transaction and
    its outputs (and its offsets, acked after the body) in the next. A crash before that next
    commit kept the state change and lost the outputs; the replayed group then found its
    identifiers known and emitted no merge (tests/integration/test_identity_crash.py: 5 of 5,000
    events left on a merged-away customer in one run of four).

    The agents run each group inside :meth:`group`; a commit runs inside :meth:`committing`,
    which stops new groups from starting and waits for the running ones to finish. A group
    takes milliseconds, so a commit waits at most that long; groups wait at most one commit.
    """

    def __init__(self) -> None:
        import asyncio

        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    @asynccontextmanager
    async def group(self) -> AsyncIterator[None]:
        while not self._open.is_set():  # a commit is under way: start after it
            await self._open.wait()
        self._running += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    @asynccontextmanager
    async def committing(self) -> AsyncIterator[None]:
        self._open.clear()
        try:
            await self._idle.wait()
            yield
        finally:
            self._open.set()


def commit_gate(app: AppT) -> CommitGate:
    """The app's :class:`CommitGate` (one per app, created on first use)."""
    gate: CommitGate | None = getattr(app, "_cdp_commit_gate", None)
    if gate is None:
        gate = CommitGate()
        app._cdp_commit_gate = gate  # type: ignore[attr-defined]
    return gate


async def drain_producer_buffer(app: AppT) -> None:
    """Wait until faust's producer buffer has handed every record to the Kafka producer.

    Table writes are synchronous, so faust queues their changelog records in a buffer that a
    background task sends. faust's own ``flush`` returns as soon as no record was sent for
    0.1 s, even with records left (a send waits while its producer commits), and before each
    input message faust only waits for the buffer to fall to 100 records - while a group of
    new identifiers queues thousands. On such a backlog the buffer grew without bound, a commit
    could not drain it within the transaction timeout and the worker was fenced. The agents
    therefore drain it after each group (back-pressure: the next group starts once the last
    one's writes are on their way) and the commit drains it again, completely.
    """
    buffer = app.producer.buffer
    while buffer.size:
        await buffer.flush_atmost(buffer.size)


def guard_transaction_commits() -> None:
    """Make each faust transaction commit whole groups, with faust's producer buffer drained.

    * Between groups: the commit waits for the running groups (:class:`CommitGate`).
    * Buffer drained (:func:`drain_producer_buffer`): table changelog writes go through faust's
      producer *buffer* (``send_soon``) and reach Kafka asynchronously. Outside transactions
      faust flushes that buffer before committing offsets; its exactly-once path does not, so
      a state write made while processing input N could land in the transaction after the one
      that commits N's offset - and a crash in between keeps N committed while its state
      change is lost.

    Patched once per process, at worker start.
    """
    from faust.transport.consumer import TransactionManager

    original = TransactionManager.commit
    if getattr(original, "_cdp_guarded", False):
        return

    async def commit(
        self: TransactionManager, offsets: Any, start_new_transaction: bool = True
    ) -> bool:
        async with commit_gate(self.app).committing():
            await drain_producer_buffer(self.app)
            return await original(self, offsets, start_new_transaction=start_new_transaction)

    commit._cdp_guarded = True  # type: ignore[attr-defined]
    TransactionManager.commit = commit  # type: ignore[method-assign]


def commit_after_running_commit() -> None:
    """Make a commit that finds another one under way commit after it, not skip.

    faust lets one commit run at a time: ``Consumer.commit`` called while another runs waits
    for it and then returns without committing, on the assumption that the running one covered
    it. Beside faust's timer commit of every partition, the profile stage's eager commit of its
    own (:class:`EagerCommit`) breaks that assumption: at 2,000 events/s, 35 of 78 eager commits
    in 40 s found a timer commit under way (~0.1 s each) and did nothing, and so did 4 timer
    ticks that came during an eager commit. Their groups' offsets then waited for the next tick.
    Now the waiting caller commits after the running commit (one with nothing new to commit
    returns at once); still only one commit runs at a time. Measured with it: 89 of 90 eager
    commits committed; the end-to-end probes did not move beyond the noise (two pairs of runs),
    so the outputs had mostly been made visible by the timer's transaction anyway. Patched once
    per process.
    """
    from faust.transport.consumer import Consumer

    original = Consumer.commit
    if getattr(original, "_cdp_after_running", False):
        return

    async def commit(
        self: Consumer, topics: Any = None, start_new_transaction: bool = True
    ) -> bool:
        # Each wait is on a commit that really runs; after it, nothing runs until ``original``
        # claims the slot (no await in between), unless another waiter claimed it first.
        while await self.maybe_wait_for_commit_to_finish():
            pass
        return await original(self, topics, start_new_transaction=start_new_transaction)

    commit._cdp_after_running = True  # type: ignore[attr-defined]
    Consumer.commit = commit  # type: ignore[method-assign]


def commit_transactions_concurrently() -> None:
    """Make faust commit the transactions of its per-partition producers concurrently.

    Under exactly-once faust keeps one transactional producer per assigned input partition and
    commits them one after the other, each taking several broker round trips (offsets to the
    transaction, then its end markers). With the default 8 customer partitions plus the raw one
    that serial loop took most of a 0.5 s commit interval on a busy box, and a producer's sends
    wait while it commits, so the stages stalled with the CPU idle. Each partition's
    transaction is independent, so they commit side by side; a failure still surfaces (the
    first error is raised once the others have finished).

    A producer found outside a transaction begins one first (:func:`_begin_if_ended`): when
    stopping, faust commits with ``start_new_transaction=False``, ending each transaction, and
    does so twice (when the app stops its consumer, and again when the consumer service stops),
    its timer sometimes committing in between. Each of its commits takes only the first run of
    consecutive processed offsets of a partition (a transaction marker between two messages
    ends a run), so the later commits often had offsets left, and sending them to an ended
    transaction raised ``IllegalOperation``: in 15 of 27 crash-test runs the worker failed to
    stop its consumer, and in 9 of them the process then hung until killed 30 s later, so the
    next start rebuilt every table. Those offsets now commit in a transaction of their own
    (their messages' outputs were committed with the one before); with
    :func:`commit_every_processed_run` the first final commit rarely leaves any. Patched once
    per process.
    """
    import asyncio

    from faust.transport.drivers.aiokafka import Producer

    original = Producer.commit_transactions
    if getattr(original, "_cdp_concurrent", False):
        return

    async def commit_transactions(
        self: Producer,
        tid_to_offset_map: Any,
        group_id: str,
        start_new_transaction: bool = True,
    ) -> None:
        async def commit_one(transactional_id: str, offsets: Any) -> None:
            await _begin_if_ended(self, transactional_id)
            await original(
                self,
                {transactional_id: offsets},
                group_id,
                start_new_transaction=start_new_transaction,
            )

        results = await asyncio.gather(
            *(commit_one(tid, offsets) for tid, offsets in tid_to_offset_map.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    commit_transactions._cdp_concurrent = True  # type: ignore[attr-defined]
    Producer.commit_transactions = commit_transactions  # type: ignore[method-assign]


def commit_every_processed_run() -> None:
    """Make each faust commit take every processed offset it can, not just the first run.

    faust records the offsets a ``read_committed`` consumer never sees (transaction markers,
    aborted records) as gaps, each ending *with* the offset of the message after it, which is
    also in the list of processed offsets. Merged, that offset appears twice, and faust's
    search for the first run of consecutive offsets stops at the duplicate: every commit moved
    a partition past one transaction marker at most. Input partitions written by transactions
    (the customer partitions carry one marker per upstream commit) had their committed offset
    trail what was processed, so a restart processed more again, and a stop's final commit
    left offsets behind (seen: committed 28 → 33 with 28-35 processed, markers at 30-31).
    After faust's answer (it has merged the gaps by then), the duplicates it leaves are dropped
    and the run is extended over the processed offsets that follow on without a hole. Patched
    once per process.
    """
    from faust.transport.consumer import Consumer

    original = Consumer._new_offset
    if getattr(original, "_cdp_every_run", False):
        return

    @functools.wraps(original)  # keeps faust's original as ``__wrapped__``
    def _new_offset(self: Consumer, tp: Any) -> int | None:
        offset = original(self, tp)
        if offset is None:
            return None
        acked = self._acked[tp]  # sorted, gaps merged in, the first run taken out
        end = offset
        taken = 0
        for value in acked:  # copies (below ``end``) go with the run
            if value > end:
                break  # a hole: the run ends here
            if value == end:
                end += 1
            taken += 1
        del acked[:taken]
        self._acked_index[tp].difference_update(range(offset, end))
        return end

    _new_offset._cdp_every_run = True  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]


async def _begin_if_ended(producer: Any, transactional_id: str) -> None:
    """Begin a transaction on ``transactional_id``'s producer if faust ended its last one.

    Only from aiokafka's READY state (transaction ended): a failed transaction
    (ABORTABLE_ERROR) must fail the commit, as it would have. aiokafka has no public test of
    that state; its own ``send`` asks the transaction manager the same way. Under faust's lock
    for the producer, which a rebalance takes to begin transactions itself.
    """
    from aiokafka.producer.transaction_manager import TransactionState

    transaction_producer = producer._transaction_producers.get(transactional_id)
    lock = producer._trn_locks.get(transactional_id)
    manager = getattr(transaction_producer, "_txn_manager", None)
    if manager is None or lock is None:
        return  # faust itself reports the unknown transaction
    async with lock:
        if manager.state is TransactionState.READY:
            await transaction_producer.begin_transaction()


class EagerCommit:
    """Commits one agent's input partitions as soon as a group is done, not at the next tick.

    Under exactly-once a stage's outputs become visible downstream only when its transaction
    commits, and faust commits every agent on one timer (``CDP_COMMIT_INTERVAL_S``). The
    profile stage's input arrives in bursts, each made visible by one of identity's commits:
    on the timer, its outputs waited for the *next* tick, a whole interval later every time.
    Committing right after the burst's group takes that interval out of the end-to-end
    latency, at the price of about one extra (smaller) commit per upstream commit.

    :meth:`request` is called by the agent after its group: the commit runs in a task of its
    own once the agent has acked the group (``take_events`` acks when the loop asks for the
    next group), outside any group (:class:`CommitGate`). At most one runs at a time; a
    request while one runs is kept for when it ends, and faust itself lets one commit run at
    a time (a timer commit under way makes ours wait for it, then ours commits:
    :func:`commit_after_running_commit`). Under at-least-once nothing is done: outputs are
    visible as soon as they are sent.
    """

    def __init__(self, app: AppT, topic: str, *, enabled: bool = True) -> None:
        self._app = app
        self._topics = {topic}
        self._enabled = enabled
        self._task: Any = None
        self._again = False

    def request(self) -> None:
        import asyncio

        if not (self._enabled and self._app.in_transaction):  # in_worker is set at start
            return
        if self._stopping():
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._run())

    def _stopping(self) -> bool:
        # Stopping: faust commits once more itself; a commit of ours then would race the
        # consumer's and the producers' shutdown.
        return bool(self._app.should_stop or self._app.consumer.should_stop)

    async def _run(self) -> None:
        import asyncio
        import logging

        await asyncio.sleep(0)  # let the agent ack the group it has just finished
        again = True
        while again and not self._stopping():
            self._again = False
            try:
                await self._app.consumer.commit(self._topics)
            except Exception:  # the timer commit retries; a failure also surfaces there
                logging.getLogger(__name__).warning("eager commit failed", exc_info=True)
                return
            again = self._again


class DeadLetters:
    """Writes records a stage cannot process to ``cdp.events.invalid``, with the reason.

    Inside the input's transaction, so a dead letter is written exactly when its input is
    committed; counted by stage and by the reason's first word.
    """

    def __init__(
        self, sender: SourceTransactionSender, topic: str, metrics: Any, stage: str
    ) -> None:
        self._sender = sender
        self._topic = topic
        self._metrics = metrics
        self._stage = stage

    async def send(self, source: EventT[Any], raw: Any, reason: str) -> None:
        from pipeline.collector.deadletter import dead_letter_record

        self._metrics.dead_letters.labels(self._stage, reason.split(":")[0]).inc()
        record = dead_letter_record(raw, reason, None, None, received_at_ms=now_ms())
        await self._sender.send(source, self._topic, record)


def now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def as_current_event(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` faust's current event while the body runs.

    A faust table writes its changelog record to the partition of the *current* event, which
    faust sets while an agent iterates a stream one event at a time but not in the body of
    ``take_events``. The agents that take groups set it to an event of the partition whose keys
    they are about to write.
    """
    from faust.streams import _current_event  # faust's own context variable (no public setter)

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
