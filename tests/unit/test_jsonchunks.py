"""JSON array messages below a size (pipeline/jsonchunks.py)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from pipeline.jsonchunks import json_arrays


@given(st.lists(st.text(max_size=40), max_size=60), st.integers(min_value=8, max_value=200))
def test_arrays_hold_every_item_in_order_each_below_the_limit(
    items: list[str], max_bytes: int
) -> None:
    encoded = [orjson.dumps(item) for item in items]
    arrays = list(json_arrays(encoded, max_bytes))
    assert [x for array in arrays for x in orjson.loads(array)] == items
    for array in arrays:
        assert len(array) <= max_bytes or len(orjson.loads(array)) == 1


def test_nothing_in_no_message_out() -> None:
    assert list(json_arrays([], 100)) == []


def test_a_backlog_groups_changes_no_longer_exceed_one_message() -> None:
    change = orjson.dumps({"kind": "identifier", "id_type": "email", "id_value": "x" * 200})
    arrays = list(json_arrays([change] * 10_000, 512 * 1024))
    assert len(arrays) > 1 and all(len(a) <= 512 * 1024 for a in arrays)
