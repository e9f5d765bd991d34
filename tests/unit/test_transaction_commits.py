"""faust's per-partition transaction commits, as patched by pipeline/worker/txsend.py.

faust's own ``Producer.commit_transactions`` runs on stand-in transactional producers that keep
aiokafka's rule: offsets can only be sent inside a transaction.
"""

from __future__ import annotations

import asyncio
import types
from typing import Any

import pytest
from aiokafka.errors import IllegalOperation
from aiokafka.producer.transaction_manager import TransactionState
from faust.transport.drivers.aiokafka import Producer

from pipeline.worker.txsend import commit_transactions_concurrently


class _Manager:
    """aiokafka's transaction manager as far as these commits see it."""

    def __init__(self) -> None:
        self.state = TransactionState.IN_TRANSACTION  # faust begins one when it creates it

    @property
    def in_transaction(self) -> bool:
        return self.state is TransactionState.IN_TRANSACTION


class _TransactionalProducer:
    """What faust calls on an aiokafka transactional producer, with aiokafka's state rule."""

    def __init__(self, log: list[str], name: str, fail: bool = False) -> None:
        self._txn_manager = _Manager()
        self.log = log
        self.name = name
        self.fail = fail

    async def begin_transaction(self) -> None:
        await asyncio.sleep(0)  # aiokafka waits for its producer id first
        assert self._txn_manager.state is TransactionState.READY, self._txn_manager.state
        self._txn_manager.state = TransactionState.IN_TRANSACTION
        self.log.append(f"{self.name} begin")

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        if not self._txn_manager.in_transaction:
            raise IllegalOperation("Not in the middle of a transaction")
        self.log.append(f"{self.name} offsets {offsets}")
        await asyncio.sleep(0.01)  # a broker round trip
        if self.fail:
            raise RuntimeError(f"{self.name} broker error")

    async def commit_transaction(self) -> None:
        self._txn_manager.state = TransactionState.READY
        self.log.append(f"{self.name} commit")


def _producer(log: list[str], failing: str = "") -> Any:
    producers = {tid: _TransactionalProducer(log, tid, tid == failing) for tid in ("t-0", "t-1")}
    return types.SimpleNamespace(
        _transaction_producers=producers, _trn_locks={tid: asyncio.Lock() for tid in producers}
    )


def _commit(producer: Any, offsets: dict[str, int], start_new: bool) -> Any:
    commit_transactions_concurrently()
    commit_transactions_concurrently()  # idempotent: patched once
    return Producer.commit_transactions(
        producer,
        {tid: {"tp": offset} for tid, offset in offsets.items()},
        "group",
        start_new_transaction=start_new,
    )


def test_each_partitions_transaction_commits_and_a_new_one_begins() -> None:
    log: list[str] = []
    producer = _producer(log)
    asyncio.run(_commit(producer, {"t-0": 5, "t-1": 7}, start_new=True))
    # side by side: both sends began before either transaction committed
    assert log[:2] == ["t-0 offsets {'tp': 5}", "t-1 offsets {'tp': 7}"]
    assert sorted(log[2:]) == ["t-0 begin", "t-0 commit", "t-1 begin", "t-1 commit"]


def test_a_failure_surfaces_once_the_other_partitions_have_committed() -> None:
    log: list[str] = []
    producer = _producer(log, failing="t-1")
    with pytest.raises(RuntimeError, match="t-1 broker error"):
        asyncio.run(_commit(producer, {"t-0": 5, "t-1": 7}, start_new=True))
    assert "t-0 commit" in log


def test_offsets_left_after_the_final_commit_commit_in_a_transaction_of_their_own() -> None:
    """Stopping, faust ends every transaction, then commits again what the first left."""
    log: list[str] = []
    producer = _producer(log)

    async def stop() -> None:
        await _commit(producer, {"t-0": 5}, start_new=False)  # the app's final commit
        await _commit(producer, {"t-0": 9}, start_new=False)  # the consumer's, later

    asyncio.run(stop())
    assert log == [
        "t-0 offsets {'tp': 5}",
        "t-0 commit",
        "t-0 begin",  # raised IllegalOperation here before: not in a transaction
        "t-0 offsets {'tp': 9}",
        "t-0 commit",
    ]
    assert not producer._transaction_producers["t-0"]._txn_manager.in_transaction


def test_a_failed_transaction_is_not_begun_anew_and_its_commit_fails() -> None:
    log: list[str] = []
    producer = _producer(log)
    producer._transaction_producers["t-0"]._txn_manager.state = TransactionState.ABORTABLE_ERROR
    with pytest.raises(IllegalOperation):
        asyncio.run(_commit(producer, {"t-0": 5}, start_new=True))
    assert log == []
