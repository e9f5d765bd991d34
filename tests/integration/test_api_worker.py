"""The profile API as the worker serves it, on profiles the real pipeline computed.

Events go through the real broker into the worker (identity, profile, sinks into chDB), and the
API the worker starts on its own port answers: by email (normalized), by the merged customer's
id, and the timeline with the merged customer's events, each once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import CollectorRegistry

from pipeline.settings import Settings
from tests.integration.worker_harness import event, produce_batches, wait_until

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
LAPTOP = ("anonymous_id", "cookie-a")
PHONE = ("anonymous_id", "cookie-b")
ALICE = ("user_id", "alice")
EMAIL = ("email", "alice@example.com")
ORDER = orjson.dumps({"order_id": "o-1", "revenue": 25.0, "currency": "USD"}).decode()
TOKEN = "worker-test-token"


def _page(eid: str, at_s: int, *ids: tuple[str, str]) -> dict[str, Any]:
    return event(eid, T0 + at_s * 1000, ids, type_="page", name="Home")


def test_the_worker_serves_merged_profiles_and_timelines(
    local_worker_settings: Callable[..., Settings],
    clickhouse: tuple[Any, str],
) -> None:
    from pipeline.worker.app import create_app

    client, db = clickhouse
    settings = local_worker_settings(
        api_token=TOKEN,
    )
    batches = [
        [_page("p1", 1, LAPTOP), _page("p2", 2, LAPTOP)],
        [
            event("i1", T0 + 100_000, [PHONE, ALICE, EMAIL], type_="identify", name=None),
            event("o1", T0 + 110_000, [PHONE, ALICE], name="Order Completed", properties=ORDER),
        ],
        # Alice logs in on the laptop: the phone's customer merges into the laptop's.
        [event("i2", T0 + 200_000, [LAPTOP, ALICE], type_="identify", name=None)],
        [event("o1", T0 + 110_000, [PHONE, ALICE], name="Order Completed", properties=ORDER)],
    ]
    app = create_app(settings, CollectorRegistry())
    base = f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}

    async def get(session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
        async with session.get(base + path, headers=headers) as response:
            return response.status, await response.json()

    async def merged_profile(session: aiohttp.ClientSession) -> Any:
        """Poll the API (by email, spelled differently) until the merge has folded in."""
        deadline = asyncio.get_running_loop().time() + 45
        while True:
            status, body = await get(session, "/v1/profiles?email=%20Alice@Example.COM")
            if status == 200 and body["merged_from"] and body["stats"]["orders"] == 1:
                return body
            assert asyncio.get_running_loop().time() < deadline, f"not merged: {status} {body}"
            await asyncio.sleep(0.2)

    async def scenario() -> tuple[Any, Any, Any, list[tuple[str, str]]]:
        await app.start()
        try:
            await produce_batches(settings, batches)
            async with aiohttp.ClientSession() as session:
                profile = await merged_profile(session)
                loser = profile["merged_from"][0]
                status, by_loser = await get(session, f"/v1/profiles/{loser}")
                assert status == 200
                merges = client.query(
                    f"SELECT loser, survivor FROM {db}.customer_merges"
                ).result_rows

                def all_events_stored() -> bool:
                    n = client.query(f"SELECT uniqExact(event_id) FROM {db}.events").result_rows
                    return bool(n[0][0] >= 5)

                await wait_until(all_events_stored, 30, "the events in ClickHouse")
                _, timeline = await get(session, f"/v1/profiles/{loser}/events")
                return profile, by_loser, timeline, merges
        finally:
            await app.stop()

    profile, by_loser, timeline, merges = asyncio.run(scenario())

    [(loser, survivor)] = merges
    assert profile["customer_id"] == survivor and profile["merged_from"] == [loser]
    assert profile["identities"]["email"] == ["alice@example.com"]
    assert profile["stats"]["orders"] == 1 and profile["stats"]["revenue"] == 25.0
    assert by_loser["customer_id"] == survivor
    assert timeline["customer_id"] == survivor
    ids = [e["event_id"] for e in timeline["events"]]
    assert sorted(ids) == ["i1", "i2", "o1", "p1", "p2"]  # the resent o1 once
    times = [e["timestamp"] for e in timeline["events"]]
    assert times == sorted(times, reverse=True)
    assert {e["customer_id"] for e in timeline["events"]} == {loser, survivor}
