"""Garbage-collector settings for the long-running processes (collector, worker).

CPython collects cyclic garbage when allocations minus deallocations of container objects
pass a threshold (700 by default), and a collection of an older generation walks every object
in it. Both processes hold many objects alive for a short while (a batch request's parsed body
until Kafka acknowledges it; a worker's group of decoded events until its outputs are sent), so
with the default those objects survive young collections, get promoted, and trigger full
collections of the whole heap - and the worker's heap holds its table caches (tens of thousands
of entries, each several objects). Almost everything here is freed by reference counting;
cycles are rare. Measured:

* collector (``bench.bench_collector``, 15 s, loaded box): the collections took ~3 s against
  ~14 s of CPU (35 full ones of ~50 ms); at a threshold of 50,000, 2 young ones and no full one.
* worker (``bench.bench_e2e``, 30k events): 1.85 s of 25 s of CPU in collections (1,938 young,
  174 middle, 21 full: 1.24 s), against 0.42 s with the settings below.
* profile API: a full collection walked ~77k start-up objects, 95-240 ms pauses.

:func:`tune_gc` raises the young threshold and freezes what start-up built (modules, parsers,
the app): frozen objects are never walked again, and they live as long as the process anyway.
"""

from __future__ import annotations

import gc
from typing import Final

GC_YOUNG_THRESHOLD: Final = 50_000
"""Net allocations of container objects between two young-generation collections."""


def tune_gc(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Collect cyclic garbage far less often, and never rescan what exists now.

    Call once start-up is done (after warm-ups and caches that live for the whole process).
    """
    gc.collect()  # what is garbage now must not be frozen
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    gc.freeze()
