"""The identity stage's window of recent event ids (pipeline/identity/dedup.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.identity.dedup import EventIdWindow, _decode, _encode


def admit_all(window: EventIdWindow, ids: list[str]) -> list[bool]:
    admitted = [window.admit(i) for i in ids]
    window.commit()
    return admitted


def test_a_resend_is_refused_within_a_group_and_after_it() -> None:
    window = EventIdWindow({})
    assert admit_all(window, ["a", "b", "a"]) == [True, True, False]
    assert admit_all(window, ["b", "c"]) == [False, True]


def test_discard_forgets_the_failed_groups_ids() -> None:
    window = EventIdWindow({})
    admit_all(window, ["a"])
    assert window.admit("b")
    window.discard()
    assert admit_all(window, ["b", "a"]) == [True, False]


def test_the_oldest_slot_leaves_the_window_when_it_is_full() -> None:
    table: dict[str, bytes] = {}
    window = EventIdWindow(table, slots=2, slot_size=2)
    admit_all(window, ["a", "b", "c", "d"])  # slots 0: a b, 1: c d
    assert window.admit("a") is False  # still held
    window.discard()
    admit_all(window, ["e"])  # slot 2 replaces slot 0 (a, b)
    assert admit_all(window, ["a", "b", "c", "d", "e"]) == [True, True, False, False, False]
    assert set(table) == {"slot:0", "slot:1"}  # never more keys than slots


def test_a_restarted_worker_rebuilds_the_window_from_the_table() -> None:
    table: dict[str, bytes] = {}
    first = EventIdWindow(table, slots=3, slot_size=2)
    admit_all(first, ["a", "b", "c", "d", "e"])
    second = EventIdWindow(table, slots=3, slot_size=2)
    assert admit_all(second, ["a", "e", "f"]) == [False, False, True]
    # The rebuilt window carries on from the newest slot: f filled slot 2, g starts slot 3,
    # which replaces slot 0 (a, b) and nothing else.
    admit_all(second, ["g"])
    third = EventIdWindow(table, slots=3, slot_size=2)
    assert admit_all(third, ["a", "b", "c", "d", "e", "f", "g"]) == [True, True] + [False] * 5


def test_invalidate_reloads_what_the_table_holds() -> None:
    table: dict[str, bytes] = {}
    window = EventIdWindow(table)
    admit_all(window, ["a"])
    table.clear()  # e.g. the partition moved to another worker and came back empty
    window.invalidate()
    assert admit_all(window, ["a"]) == [True]


def test_only_the_changed_slots_are_written() -> None:
    writes: list[str] = []

    class Recording(dict[str, bytes]):
        def __setitem__(self, key: str, value: bytes) -> None:
            writes.append(key)
            super().__setitem__(key, value)

    window = EventIdWindow(Recording(), slots=4, slot_size=3)
    admit_all(window, ["a", "b"])
    admit_all(window, [])  # nothing admitted, nothing written
    admit_all(window, ["a"])  # a duplicate only
    admit_all(window, ["c", "d"])  # fills slot 0, starts slot 1
    assert writes == ["slot:0", "slot:0", "slot:1"]


def test_slot_encoding_round_trips_and_rejects_garbage() -> None:
    hashes = [0, 1, 2**64 - 1, 12345678901234567]
    assert _decode(_encode(7, hashes)) == (7, hashes)
    with pytest.raises(ValueError, match="not a dedup slot"):
        _decode(b"\x00" * 11)


@given(st.lists(st.integers(min_value=0, max_value=40), max_size=300))
def test_refuses_exactly_the_ids_seen_recently(stream: list[int]) -> None:
    """Every id admitted within the last (slots - 1) * slot_size admissions is refused; an id
    never seen is always admitted; nothing older than the window's capacity is refused, the
    capacity counted from the last commit (slots rotate when a group commits, so the ids
    admitted since then come on top)."""
    slots, slot_size = 3, 4
    window = EventIdWindow({}, slots=slots, slot_size=slot_size)
    admitted: list[int] = []
    uncommitted = 0
    for n, value in enumerate(stream):
        result = window.admit(str(value))
        recent = admitted[-(slots - 1) * slot_size :]
        if value in recent:
            assert result is False
        elif value not in admitted[-(slots * slot_size + uncommitted) :]:
            assert result is True
        if result:
            admitted.append(value)
            uncommitted += 1
        if n % 5 == 4:
            window.commit()
            uncommitted = 0
    window.commit()
