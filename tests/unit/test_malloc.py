"""The worker caps glibc's malloc arenas unless the operator chose (pipeline/worker/malloc.py)."""

from __future__ import annotations

import pytest

from pipeline.worker.malloc import limit_malloc_arenas


def test_the_operators_malloc_arena_max_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


def test_arenas_are_capped_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt(M_ARENA_MAX) is glibc's")
    assert limit_malloc_arenas() is True


def test_the_trimmer_trims_on_its_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from pipeline.worker import malloc

    calls: list[int] = []
    monkeypatch.setattr(malloc, "malloc_trim_function", lambda: calls.append)

    async def scenario() -> None:
        trimmer = malloc.MallocTrimmer(0.01)
        await trimmer.start()
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while len(calls) < 3:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.01)
        finally:
            await trimmer.stop()
        assert set(calls) == {0}

    asyncio.run(scenario())


def test_malloc_trim_is_found_on_glibc() -> None:
    import platform

    from pipeline.worker.malloc import malloc_trim_function

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    trim = malloc_trim_function()
    assert trim is not None
    assert trim(0) in (0, 1)
