"""glibc malloc in the worker: fewer arenas and periodic trims, less resident memory.

glibc gives threads that contend for the heap arenas of their own (up to 8 per core), and
memory freed into an arena is rarely handed back to the system: what one arena frees another
cannot reuse. The worker's allocations come from several threads - RocksDB's flush and
compaction threads, the Kafka clients' threads, chDB's - so its resident set grows with
fragmentation across arenas. Measured with the identity stage alone over 150,000 new
identifiers (``bench.bench_identity_memory``): 340 MB at the end with the default, 323 MB with
two arenas, the growth over the second half 292 against 36 bytes per identifier; throughput
unchanged within noise. RocksDB's own advice is jemalloc, which its Python binding here does not
use. ``MALLOC_ARENA_MAX`` in the environment still wins (glibc reads it at start).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable
from typing import Any, Final

from mode import Service

log = logging.getLogger(__name__)

#: Arenas of the worker process (glibc's default is 8 per core).
WORKER_MALLOC_ARENAS: Final = 2
_M_ARENA_MAX: Final = -8  # mallopt parameter, <malloc.h>


def _libc_function(name: str) -> Callable[..., int] | None:
    """``name`` from the C library, or None where it has no such function (not glibc)."""
    library = ctypes.util.find_library("c")
    if not library:
        return None
    try:
        function: Callable[..., int] = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    return function


def limit_malloc_arenas(arenas: int = WORKER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (before threads start); False where that is not possible
    (not glibc, or ``MALLOC_ARENA_MAX`` is set: the operator's choice stands)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    ok = bool(mallopt(_M_ARENA_MAX, arenas))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX, %d) refused", arenas)
    return ok


def malloc_trim_function() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (frees the heap's free memory back to the system), or None
    where there is no glibc."""
    return _libc_function("malloc_trim")


class MallocTrimmer(Service):
    """Calls glibc's ``malloc_trim(0)`` every ``interval_s`` seconds.

    glibc returns freed memory to the system only from the top of a heap; memory freed below a
    live allocation stays resident. A backlog makes exactly that pattern: full groups of
    decoded events and outputs are freed while RocksDB memtable and cache blocks allocated
    meanwhile stay. Measured in the identity worker 40 s into a backlog of new identifiers:
    329 MB resident, 258 MB right after one ``malloc_trim(0)``. A trim of a few hundred MB
    heap takes milliseconds; it runs in a thread so the event loop does not wait.
    """

    def __init__(self, interval_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._interval_s = interval_s

    @Service.task
    async def _trim(self) -> None:
        trim = malloc_trim_function()
        if trim is None:  # not glibc: nothing to do
            return
        while not self.should_stop:
            await self.sleep(self._interval_s)
            await asyncio.to_thread(trim, 0)
