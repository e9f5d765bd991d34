"""The profile API app's start-up: the garbage collector's start-up objects are frozen."""

from __future__ import annotations

import asyncio
import gc

from aiohttp import web
from prometheus_client import CollectorRegistry

from pipeline.api.server import build_api, freeze_gc
from pipeline.settings import load_settings


def test_startup_freezes_the_objects_alive_then() -> None:
    app = build_api(
        load_settings(api_token="t"),
        client=object(),
        registry=CollectorRegistry(),
        health=lambda: {"ok": True},
    )
    assert freeze_gc in app.on_startup

    async def start_and_stop() -> int:
        runner = web.AppRunner(app)
        await runner.setup()  # runs on_startup
        try:
            return gc.get_freeze_count()
        finally:
            await runner.cleanup()

    gc.unfreeze()
    threshold = gc.get_threshold()
    try:
        assert asyncio.run(start_and_stop()) > 0
    finally:
        gc.unfreeze()  # leave the test process as it was
        gc.set_threshold(*threshold)
