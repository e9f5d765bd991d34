"""BufferedTable: reads through a bounded cache, writes once per key per flush."""

from __future__ import annotations

from collections import UserDict
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.worker.buffered import BufferedTable


class CountingTable(UserDict[str, Any]):
    """A dict that counts what reaches it, as a faust table's changelog would see it."""

    def __init__(self, *args: Any) -> None:
        self.reads = 0
        self.writes: list[tuple[str, Any]] = []
        super().__init__(*args)
        self.writes.clear()

    def __getitem__(self, key: str) -> Any:
        self.reads += 1  # hits and misses alike
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append((key, value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes.append((key, None))
        super().__delitem__(key)


def test_reads_are_cached_including_misses() -> None:
    table = CountingTable({"a": 1})
    buffered = BufferedTable(table)
    assert buffered["a"] == 1 and buffered.get("a") == 1 and "a" in buffered
    assert buffered.get("nope") is None and "nope" not in buffered
    with pytest.raises(KeyError):
        buffered["nope"]
    assert table.reads == 2  # "a" once, "nope" once


def test_writes_reach_the_table_once_per_key_at_flush() -> None:
    table = CountingTable()
    buffered = BufferedTable(table)
    buffered["c"] = {"n": 1}
    buffered["c"] = {"n": 2}
    buffered["d"] = 5
    assert table.writes == [] and buffered["c"] == {"n": 2} and buffered.pending == 2
    assert buffered.flush() == 2
    assert table.writes == [("c", {"n": 2}), ("d", 5)]
    assert buffered["c"] == {"n": 2} and buffered.pending == 0


def test_a_deletion_is_buffered_too() -> None:
    table = CountingTable({"x": 1})
    buffered = BufferedTable(table)
    del buffered["x"]
    assert "x" not in buffered and "x" in table
    buffered.flush()
    assert "x" not in table and "x" not in buffered
    with pytest.raises(KeyError):
        del buffered["x"]


def test_discard_forgets_unflushed_writes_and_in_place_mutations() -> None:
    table = CountingTable({"r": {"ids": [1]}})
    buffered = BufferedTable(table)
    record = buffered["r"]
    record["ids"].append(2)  # a stage mutating a cached value, then failing
    buffered["new"] = 1
    buffered.discard()
    assert table.reads == 1
    assert "new" not in buffered and table.writes == []
    assert table.reads == 2  # the cache was dropped: "new" is read from the table
    buffered["r"]
    assert table.reads == 3


def test_the_cache_is_bounded_by_two_generations() -> None:
    table = CountingTable({str(i): i for i in range(100)})
    buffered = BufferedTable(table, generation_size=10)
    for i in range(100):
        assert buffered[str(i)] == i
    assert len(buffered._cache) <= 20  # type: ignore[attr-defined]
    reads = table.reads
    assert buffered["99"] == 99 and table.reads == reads  # recent keys stay cached
    assert buffered["0"] == 0 and table.reads == reads + 1  # old ones are read again


def test_invalidate_rereads_the_table() -> None:
    table = CountingTable({"k": 1})
    buffered = BufferedTable(table)
    assert buffered["k"] == 1
    table.data["k"] = 2  # the table rebuilt from its changelog behind the cache
    assert buffered["k"] == 1
    buffered.invalidate()
    assert buffered["k"] == 2


def test_iteration_needs_a_flush() -> None:
    buffered = BufferedTable(CountingTable({"a": 1}))
    assert list(buffered) == ["a"] and len(buffered) == 1
    buffered["b"] = 2
    with pytest.raises(RuntimeError):
        len(buffered)
    buffered.flush()
    assert sorted(buffered) == ["a", "b"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["get", "set", "del", "flush"]), st.integers(0, 12)),
        max_size=80,
    ),
    st.integers(1, 4),
)
def test_behaves_like_a_dict_after_every_flush(ops: list[tuple[str, int]], size: int) -> None:
    reference: dict[str, int] = {}
    table = CountingTable()
    buffered = BufferedTable(table, generation_size=size)
    for step, (op, n) in enumerate(ops):
        key = f"k{n}"
        if op == "get":
            assert buffered.get(key) == reference.get(key)
        elif op == "set":
            buffered[key] = reference[key] = step
        elif op == "del" and key in reference:
            del buffered[key]
            del reference[key]
        elif op == "flush":
            buffered.flush()
            assert dict(table.data) == reference
    buffered.flush()
    assert dict(table.data) == reference
