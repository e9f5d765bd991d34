"""The identity processor through the real broker into the embedded ClickHouse."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.settings import Settings
from tests.integration.worker_harness import event, produce_batches, wait_until

pytestmark = pytest.mark.integration


def _count(client: Any, sql: str, **params: Any) -> int:
    return int(client.query(sql, parameters=params).result_rows[0][0])


def test_raw_batches_are_resolved_stitched_and_written(
    local_worker_settings: Callable[..., Settings],
    clickhouse: tuple[Any, str],
) -> None:
    from pipeline.worker.app import create_app

    client, db = clickhouse
    settings = local_worker_settings()
    # Anonymous browsing on two devices, then a login on each: one customer in the end.
    batches = [
        [event("e1", 1_000, [("anonymous_id", "cookie-a")])],
        [event("e2", 2_000, [("anonymous_id", "cookie-b")])],
        [
            event("e3", 3_000, [("anonymous_id", "cookie-a"), ("user_id", "alice")]),
            event("e4", 4_000, [("anonymous_id", "cookie-b"), ("user_id", "alice")]),
            # A blocked id links nothing and, alone, resolves nothing: a dead letter.
            event("e5", 5_000, [("anonymous_id", "undefined")]),
            # Shared device: bob logs in on alice's cookie; the link is refused.
            event("e6", 6_000, [("anonymous_id", "cookie-a"), ("user_id", "bob")]),
            # A resend of e2 after cookie-b's customer merged away: it resolves to the
            # survivor, e2 itself went to the loser. Counted once only if identity drops it.
            event("e2", 2_000, [("anonymous_id", "cookie-b")]),
        ],
    ]
    app = create_app(settings)

    async def scenario() -> None:
        await app.start()
        try:
            await produce_batches(settings, batches)
            await wait_until(
                lambda: _count(client, f"SELECT count() FROM {db}.events") == 5,
                60,
                "5 resolved events in ClickHouse",
            )
            await wait_until(
                lambda: _count(client, f"SELECT count() FROM {db}.identity_refusals") == 1,
                30,
                "the refused shared-device link",
            )
            live = f"SELECT sum(events) FROM {db}.live_profiles"
            await wait_until(
                lambda: _count(client, live) == 5, 30, "5 events counted in live profiles"
            )
        finally:
            await app.stop()

    asyncio.run(scenario())

    rows = client.query(
        f"SELECT event_id, customer_id FROM {db}.events FINAL ORDER BY event_id"
    ).result_rows
    by_event = dict(rows)
    assert set(by_event) == {"e1", "e2", "e3", "e4", "e6"}
    alice = by_event["e4"]
    assert by_event["e3"] == alice
    assert by_event["e6"] != alice  # bob stays his own customer
    current = dict(
        client.query(
            f"SELECT id_type || ':' || id_value, argMax(customer_id, version) "
            f"FROM {db}.identities GROUP BY id_type, id_value"
        ).result_rows
    )
    assert current["anonymous_id:cookie-a"] == alice
    assert current["anonymous_id:cookie-b"] == alice
    assert current["user_id:alice"] == alice
    assert current["user_id:bob"] == by_event["e6"]
    merges = client.query(f"SELECT loser, survivor FROM {db}.customer_merges").result_rows
    assert len(merges) == 1 and merges[0][1] == alice
    refusal = client.query(
        f"SELECT id_type, id_value, kept_by, rule FROM {db}.identity_refusals"
    ).result_rows[0]
    assert refusal == ("anonymous_id", "cookie-a", alice, "limit:user_id")
