"""Worker memory per identifier with the RocksDB table store (issue #4, point 4; goal <= 300 B).

``python -m bench.bench_identity_memory [--quick] [--roles R] [--identifiers N]
[--guarantee G] [--cache-entries C] [--compare-cache [C2]] [--stores-identifiers M]
[--stores-compare] [--set NAME=VALUE ...]`` prints the figures (``--set``: any worker setting,
e.g. ``rocksdb_block_cache_mb=16``).

What runs: a single-node Kafka (``LocalKafka``) on free ports in a temp dir, and the worker
(``python -m pipeline.cli worker``) as its own process, configured only through ``CDP_*``
variables (RocksDB store, exactly-once, own data dir, topic prefix, consumer group and HTTP
port; everything else at its default), as ``cdp up`` runs it. This process only writes the raw
topic and watches.

Which worker: by default the identity stage alone (``CDP_WORKER_ROLES=identity``), the process
that holds the identity graph and whose memory the goal is about, fed **one million** new
identifiers (the issue's scale; ~7 minutes on the shared 2-core box). ``--roles
identity,profile,sink,api`` measures the whole single-process worker instead: there each new
customer is also a new profile (the profile stage's RocksDB tables and decoded-profile cache)
and rows in the embedded chDB, and the profile stage makes it ~5 times slower (a million
identifiers would take the better part of an hour; earlier rounds measured it at 100,000).

The stream is the worst case for memory: every event brings identifiers never seen before
(a new UUID ``anonymous_id``; 30 % also a new ``user_id``, 10 % also a new ``email``, so about
1.4 identifiers and one new customer per event), in raw ``EventBatch`` messages of 100 events,
encoded before the worker starts so the encoder does not compete with it for the CPU.

Measurement:

1. A warm-up (a few thousand such events) is written and the worker started; once every stage
   it runs processed it (the identity and profile counters, the sink's event rows), the
   **baseline** is taken: ``VmRSS`` of the worker from ``/proc/<pid>/status`` and the identity
   counters of its ``/metrics`` (``cdp_identity_identifiers_new_total``,
   ``cdp_agent_events_total``).
2. The main load is written (pre-encoded: seconds); while the worker works through it, ``VmRSS``
   (also ``RssAnon``) and the counters are sampled every ``--interval`` s.
3. **End**: when every stage it runs processed the whole load, the last sample;
   ``bytes_per_identifier`` = (RSS at the end - RSS after the warm-up) / new identifiers since
   the warm-up (the whole run's growth, fixed part included: this is the goal's figure).
   ``slope_bytes_per_identifier`` is the least-squares slope of RSS against identifiers over
   the samples taken while identity was working (less sensitive to when a RocksDB memtable or a
   cache generation was just dropped), and ``slope_second_half`` the same over the second half
   of the identifiers only (after the bounded caches have filled up, i.e. the growth that keeps
   going). ``rss_peak_mb`` is ``VmHWM``.
4. The worker is stopped (SIGTERM, SIGKILL after a deadline) and the on-disk size of the
   tables' RocksDB directories (SST files and WAL) under its ``<data dir>/faust/`` is taken per
   identifier: the two identity tables', and all tables'.
5. Optional, **the stores alone** (``--stores-identifiers``, needs the profile role):
   a fresh child process opens the same RocksDB databases (two identity tables, the profile
   table's partitions) with the worker's options and writes the records of that many new
   identifiers: per identifier one identifier record, per event a customer and a profile
   record, each after a read of its key, with values sampled from the worker's stores in
   step 4. ``--stores-compare`` repeats it with faust's default options (1M identifiers: 132 B
   per identifier bounded, 453 B with faust's defaults).

Bounded things that fill up while it runs, the fixed part of the growth: the read caches in
front of each table (``CDP_TABLE_CACHE_ENTRIES`` entries per generation, up to twice as many
held), the duplicate window (~12 MB), RocksDB memtables and block cache (one budget for all the
worker's databases: ``CDP_ROCKSDB_*``, pipeline/worker/rocksdb_options.py; faust's defaults
were 64 MB write buffers, up to 3, and a 2 GB block cache per database, i.e. per table
partition). ``--compare-cache`` repeats the run on a fresh topic with a smaller table cache,
which shows how much of the growth is those caches.

Exactly-once on this backlog used to stall the worker's transactions until the producer was
fenced: each input message put ~240 changelog records into faust's producer buffer, which had
no back-pressure, and full groups of 64 messages made a ~1.3 MB ``cdp.identity.changes``
message, over the producer's 1 MB limit. Both are fixed in the worker
(``pipeline/worker/txsend.py``: the agents drain the buffer after each group;
``pipeline/jsonchunks.py``: changes cut below 512 KB). The machine is shared: the load average
is part of the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.error
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import log_tail, print_figures, proc_status
from pipeline.demo import EVENTS_ROWS, PROFILE_EVENTS
from pipeline.localstack.kafka import LocalKafka, free_port, stop_process
from pipeline.settings import PROJECT_ROOT, TOPIC_RAW, Settings

EVENTS_PER_MESSAGE = 100
#: Expected identifiers per event of the stream (1 anonymous_id + 0.3 user_id + 0.1 email).
IDS_PER_EVENT = 1.4
WARMUP_EVENTS = 3_000
FULL_IDENTIFIERS = 1_000_000
QUICK_IDENTIFIERS = 5_000
#: A stores-alone measurement at the issue's scale (``--stores-identifiers``).
STORES_IDENTIFIERS = 1_000_000
#: A smaller read cache for the comparison run (entries per generation).
COMPARE_CACHE_ENTRIES = 10_000
GOAL_BYTES_PER_IDENTIFIER = 300

IDENTITY_EVENTS = 'cdp_agent_events_total{agent="identity"}'
NEW_IDENTIFIERS = "cdp_identity_identifiers_new_total"
IDENTITY_TABLES = ("cdp-identity-identifiers", "cdp-identity-customers")
#: The worker's RocksDB memory settings, reported with each run.
ROCKSDB_SETTINGS = tuple(name for name in Settings.model_fields if name.startswith("rocksdb_"))


class BenchError(RuntimeError):
    """The worker did not start, died, or did not process the load in time."""


# --- the stream ------------------------------------------------------------------------------


def encoded_batches(n_events: int, seed: int, first: int = 0) -> list[bytes]:
    """Raw ``EventBatch`` messages of ``n_events`` events, each with identifiers never seen."""
    from pipeline.collector.avro_writer import encode_event_fast, frame_batch
    from tests.integration.worker_harness import event

    rng = random.Random(f"{seed}/{first}")  # warm-up and load must not share values
    received = int(time.time() * 1000)
    batches: list[bytes] = []
    for start in range(first, first + n_events, EVENTS_PER_MESSAGE):
        encoded = []
        for i in range(start, min(start + EVENTS_PER_MESSAGE, first + n_events)):
            ids = [("anonymous_id", str(uuid.UUID(int=rng.getrandbits(128), version=4)))]
            if i % 10 < 3:
                ids.append(("user_id", f"user-{seed}-{i:09d}"))
            if i % 10 == 0:
                ids.append(("email", f"person{seed}x{i}@example.com"))
            ev = event(f"m{seed}-{i:09d}", 1_700_000_000_000 + i * 10, ids, received_at=received)
            encoded.append(encode_event_fast(ev))
        batches.append(frame_batch(encoded))
    return batches


async def _produce(bootstrap: str, topic: str, batches: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for value in batches:
            await producer.send(topic, value)
        await producer.flush()
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, batches: list[bytes]) -> None:
    asyncio.run(_produce(bootstrap, topic, batches))


# --- the worker process ----------------------------------------------------------------------


def _env(settings: Settings) -> dict[str, str]:
    """The CDP_* environment that reproduces ``settings`` in a child process."""
    return settings.child_env()


@dataclass
class Worker:
    settings: Settings
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "worker"],
                env=_env(self.settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group: stop_process signals the group
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            raise BenchError(f"the worker exited ({code}):\n{log_tail(self.log)}")

    def metrics(self) -> dict[str, float] | None:
        """The worker's Prometheus samples, or None while its HTTP server is not up."""
        from pipeline.demo import scrape

        try:
            return scrape(f"{self.settings.api_url}/metrics", timeout_s=10.0)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGTERM (the worker commits and closes its stores), SIGKILL after ``timeout_s``."""
        if self.proc is None:
            return
        if self.alive():
            stop_process(self.proc.pid, timeout_s)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


#: The counter of events each stage processed, by worker role (``CDP_WORKER_ROLES``).
STAGE_COUNTERS = {"identity": IDENTITY_EVENTS, "profile": PROFILE_EVENTS, "sink": EVENTS_ROWS}


def stage_counts(settings: Settings, metrics: dict[str, float]) -> dict[str, float]:
    """Events processed so far by each stage the worker runs."""
    return {
        role: metrics.get(counter, 0.0)
        for role, counter in STAGE_COUNTERS.items()
        if role in settings.roles
    }


def _state(counts: dict[str, float]) -> str:
    return ", ".join(f"{role} {count:,.0f}" for role, count in counts.items())


def _wait_processed(
    worker: Worker, events: float, deadline: float, what: str, interval_s: float
) -> dict[str, float]:
    """Poll the worker's counters until every stage it runs processed ``events`` events."""
    state = "no /metrics answer yet"
    while time.monotonic() < deadline:
        worker.check_alive()
        metrics = worker.metrics()
        if metrics is not None:
            counts = stage_counts(worker.settings, metrics)
            state = _state(counts)
            if min(counts.values()) >= events:
                return metrics
        time.sleep(interval_s)  # polling with a deadline
    raise BenchError(f"{what}: not processed before the deadline ({state})\n{log_tail(worker.log)}")


def _du(path: Path) -> int:
    """Bytes of the regular files under ``path`` (allocated blocks, like ``du``)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def store_bytes(faust_dir: Path) -> dict[str, int]:
    """On-disk bytes of each table's RocksDB directories (all its partitions), by table."""
    sizes: dict[str, int] = {}
    for root, dirs, _files in os.walk(faust_dir):
        for name in list(dirs):
            if name.endswith(".db"):
                table = name.removesuffix(".db").rsplit("-", 1)[0]
                sizes[table] = sizes.get(table, 0) + _du(Path(root) / name)
                dirs.remove(name)
    return sizes


def _slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y against x, None with fewer than 3 distinct x."""
    if len({x for x, _ in points}) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx


# --- one measurement -------------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    identity_events: float
    identifiers: float
    profile_events: float
    rss_kb: int
    anon_kb: int


def measure(
    bootstrap: str,
    base: Path,
    identifiers: int,
    cache_entries: int,
    *,
    timeout_s: float,
    interval_s: float = 1.0,
    seed: int = 1,
    guarantee: str = "at_least_once",
    overrides: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One worker, one fresh topic: RSS growth for ``identifiers`` new identifiers.

    ``overrides``: further worker settings (field names of :class:`Settings`, e.g.
    ``rocksdb_write_buffer_mb``), passed to the worker as ``CDP_*`` variables.
    """
    from pipeline.kafka_admin import ensure_topics, pipeline_topics

    unique = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"bim{unique}.",
        "worker_id": f"cdp-bench-mem-{unique}",
        "data_dir": base / f"worker-{unique}",
        "api_port": free_port(),
        "topic_partitions": 4,
        "faust_store": "rocksdb://",
        "table_cache_entries": cache_entries,
        "processing_guarantee": guarantee,
        "log_level": "warn",
    }
    settings = Settings(**{**fields, **(overrides or {})})
    settings.data_dir.mkdir(parents=True)
    ensure_topics(bootstrap, pipeline_topics(settings))
    raw = settings.topic(TOPIC_RAW)
    n_events = max(EVENTS_PER_MESSAGE, round(identifiers / IDS_PER_EVENT))
    encode_started = time.monotonic()
    warm = encoded_batches(WARMUP_EVENTS, seed)
    load = encoded_batches(n_events, seed, first=WARMUP_EVENTS)
    encode_s = time.monotonic() - encode_started
    produce(bootstrap, raw, warm)

    deadline = time.monotonic() + timeout_s
    worker = Worker(settings, base / f"worker-{unique}.log")
    result: dict[str, Any] = {
        "worker_roles": settings.worker_roles,
        "table_cache_entries": cache_entries,
        "processing_guarantee": guarantee,
        "events": n_events,
        "events_per_message": EVENTS_PER_MESSAGE,
        **{name: getattr(settings, name) for name in ROCKSDB_SETTINGS},
    }
    try:
        worker.start()
        before = _wait_processed(worker, WARMUP_EVENTS, deadline, "warm-up", interval_s)
        status = proc_status(worker.pid)
        base_rss, base_anon = status.get("VmRSS", 0), status.get("RssAnon", 0)
        base_ids = before.get(NEW_IDENTIFIERS, 0.0)
        base_events = before.get(IDENTITY_EVENTS, 0.0)
        target = base_events + n_events

        started = time.monotonic()
        produce(bootstrap, raw, load)
        produce_s = time.monotonic() - started
        samples: list[Sample] = []
        identity_done: Sample | None = None
        state = ""
        next_report = started + 15
        while True:
            worker.check_alive()
            now = time.monotonic()
            metrics = worker.metrics()
            status = proc_status(worker.pid)
            if metrics is not None and status:
                sample = Sample(
                    t=now - started,
                    identity_events=metrics.get(IDENTITY_EVENTS, 0.0) - base_events,
                    identifiers=metrics.get(NEW_IDENTIFIERS, 0.0) - base_ids,
                    profile_events=metrics.get(PROFILE_EVENTS, 0.0) - base_events,
                    rss_kb=status.get("VmRSS", 0),
                    anon_kb=status.get("RssAnon", 0),
                )
                samples.append(sample)
                counts = stage_counts(settings, metrics)
                state = f"{_state(counts)} of {target:,.0f}"
                if identity_done is None and counts["identity"] >= target:
                    identity_done = sample
                if min(counts.values()) >= target:
                    break
            if now > deadline:
                raise BenchError(
                    f"not processed after {timeout_s:.0f}s: {state}\n{log_tail(worker.log)}"
                )
            if progress and samples and now >= next_report:
                rss = samples[-1].rss_kb / 1024
                progress(f"{now - started:6.0f}s  {state}, RSS {rss:,.0f} MB")
                next_report = now + 15
            time.sleep(interval_s)  # polling with a deadline
        end = samples[-1]
        peak = proc_status(worker.pid).get("VmHWM", 0)
    finally:
        worker.stop()
    assert identity_done is not None
    stores = store_bytes(settings.data_dir / "faust")
    result["_samples"] = sample_records(settings.data_dir / "faust")
    store = {table: stores.get(table, 0) for table in IDENTITY_TABLES}
    ids = end.identifiers
    mb = 1024.0
    working = [(s.identifiers, s.rss_kb * 1024.0) for s in samples if s.t <= identity_done.t]
    second_half = [(x, y) for x, y in working if x >= ids / 2]
    slope = _slope(working)
    slope_late = _slope(second_half)
    result.update(
        {
            "identifiers": int(ids),
            "identifiers_per_event": round(ids / n_events, 3),
            "rss_baseline_mb": round(base_rss / mb, 1),
            "rss_identity_done_mb": round(identity_done.rss_kb / mb, 1),
            "rss_end_mb": round(end.rss_kb / mb, 1),
            "rss_peak_mb": round(peak / mb, 1),
            "rss_anon_baseline_mb": round(base_anon / mb, 1),
            "rss_anon_end_mb": round(end.anon_kb / mb, 1),
            "bytes_per_identifier": round((end.rss_kb - base_rss) * 1024 / max(ids, 1), 1),
            "anon_bytes_per_identifier": round((end.anon_kb - base_anon) * 1024 / max(ids, 1), 1),
            "slope_bytes_per_identifier": None if slope is None else round(slope, 1),
            "slope_second_half_bytes_per_identifier": (
                None if slope_late is None else round(slope_late, 1)
            ),
            "samples": len(working),
            "identity_store_disk_mb": round(sum(store.values()) / mb / mb, 1),
            "identity_store_disk_bytes_per_identifier": round(sum(store.values()) / max(ids, 1), 1),
            "all_stores_disk_mb": round(sum(stores.values()) / mb / mb, 1),
            "all_stores_disk_bytes_per_identifier": round(sum(stores.values()) / max(ids, 1), 1),
            "identity_done_s": round(identity_done.t, 1),
            "all_stages_done_s": round(end.t, 1),
            "identity_events_per_s": round(n_events / max(identity_done.t, 1e-6)),
            "encode_s": round(encode_s, 1),
            "produce_s": round(produce_s, 1),
        }
    )
    return result


# --- the RocksDB stores alone, at scale --------------------------------------------------------

#: faust's offset key in every store (not a table record).
_OFFSET_KEY = b"__faust\0offset__"
SAMPLES_PER_TABLE = 2_000


def sample_records(faust_dir: Path, limit: int = SAMPLES_PER_TABLE) -> dict[str, list[list[str]]]:
    """Up to ``limit`` (key, value) records (hex) of each table, read from a stopped worker's
    RocksDB directories: the shapes :func:`stores_at_scale` replays."""
    import rocksdict

    samples: dict[str, list[list[str]]] = {}
    for path in sorted(faust_dir.rglob("*.db")):
        table = path.name.removesuffix(".db").rsplit("-", 1)[0]
        have = samples.setdefault(table, [])
        if len(have) >= limit:
            continue
        read_only = rocksdict.AccessType.read_only()
        db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True), access_type=read_only)
        try:
            for key, value in db.items():
                if isinstance(key, bytes) and key != _OFFSET_KEY:
                    have.append([key.hex(), value.hex()])
                    if len(have) >= limit:
                        break
        finally:
            db.close()
    return samples


def stores_at_scale(
    identifiers: int,
    samples: dict[str, list[list[str]]],
    settings: Settings,
    faust_defaults: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """RSS of *this* process while it writes ``identifiers`` identifiers' records into RocksDB
    stores opened as the worker opens them (one database per table partition).

    Per identifier one ``cdp-identity-identifiers`` record; per event (1 / ``IDS_PER_EVENT``
    identifiers) one customer and one profile record (profile partition from the key), each
    preceded by a read of its key (a miss, as for a new identifier). Keys are fresh and random
    (the sampled key with a random 16-hex prefix), values are the sampled values of the table.
    ``faust_defaults`` opens them with faust's own options instead of the bounded ones.
    Meant for a fresh child process (see :func:`run_stores_at_scale`).
    """
    import hashlib

    from faust.stores.rocksdb import RocksDBOptions

    from pipeline.worker.rocksdb_options import BoundedRocksDBOptions, RocksDBMemory

    records = {t: [(bytes.fromhex(k), bytes.fromhex(v)) for k, v in r] for t, r in samples.items()}
    missing = {IDENTITY_TABLES[0], IDENTITY_TABLES[1], "cdp-profiles"} - records.keys()
    if missing:
        raise BenchError(f"no sampled records of {sorted(missing)}")
    memory = RocksDBMemory.from_settings(settings)
    options = RocksDBOptions() if faust_defaults else BoundedRocksDBOptions(memory)
    base = settings.data_dir
    partitions = settings.topic_partitions
    dbs = {
        table: [options.open(base / f"{table}-{p}.db") for p in range(n)]
        for table, n in (
            (IDENTITY_TABLES[0], 1),
            (IDENTITY_TABLES[1], 1),
            ("cdp-profiles", partitions),
        )
    }

    def fresh(i: int, sample: bytes) -> bytes:
        return (
            hashlib.blake2b(i.to_bytes(8, "little"), digest_size=8).hexdigest().encode()
            + (sample[16:])
        )

    points: list[tuple[float, float]] = []
    started = time.monotonic()
    rss0 = proc_status(os.getpid()).get("VmRSS", 0)
    events = 0
    every = max(1_000, identifiers // 200)  # RSS samples
    try:
        for i in range(identifiers):
            ident = records[IDENTITY_TABLES[0]][i % len(records[IDENTITY_TABLES[0]])]
            key = fresh(2 * i, ident[0])
            db = dbs[IDENTITY_TABLES[0]][0]
            db.get(key)
            db.put(key, ident[1])
            if i * 10 < events * 14:  # ~1.4 identifiers per event
                continue
            customer = records[IDENTITY_TABLES[1]][events % len(records[IDENTITY_TABLES[1]])]
            profile = records["cdp-profiles"][events % len(records["cdp-profiles"])]
            ckey = fresh(2 * i + 1, customer[0])
            db = dbs[IDENTITY_TABLES[1]][0]
            db.get(ckey)
            db.put(ckey, customer[1])
            pkey = fresh(2 * i + 1, profile[0])
            db = dbs["cdp-profiles"][int.from_bytes(pkey[:4], "big") % partitions]
            db.get(pkey)
            db.put(pkey, profile[1])
            events += 1
            if i % every == 0:
                points.append((i, proc_status(os.getpid()).get("VmRSS", 0) * 1024.0))
                if progress and i % (every * 20) == 0:
                    progress(f"stores: {i:,} identifiers, RSS {points[-1][1] / 1024**2:,.0f} MB")
        rss1 = proc_status(os.getpid()).get("VmRSS", 0)
        usage = memory.usage()
    finally:
        for table_dbs in dbs.values():
            for db in table_dbs:
                db.close()
    late = _slope([(x, y) for x, y in points if x >= identifiers / 2])
    disk = sum(store_bytes(base).values())
    mb = 1024.0
    return {
        "options": "faust defaults" if faust_defaults else "bounded (CDP_ROCKSDB_*)",
        "identifiers": identifiers,
        "events": events,
        "databases": sum(len(v) for v in dbs.values()),
        "rss_start_mb": round(rss0 / mb, 1),
        "rss_end_mb": round(rss1 / mb, 1),
        "bytes_per_identifier": round((rss1 - rss0) * 1024 / identifiers, 1),
        "slope_second_half_bytes_per_identifier": None if late is None else round(late, 1),
        "block_cache_mb": round(usage["block_cache"] / mb / mb, 1),
        "write_buffers_mb": round(usage["write_buffers"] / mb / mb, 1),
        "disk_bytes_per_identifier": round(disk / identifiers, 1),
        "seconds": round(time.monotonic() - started, 1),
    }


def run_stores_at_scale(
    identifiers: int,
    samples: dict[str, list[list[str]]],
    base: Path,
    faust_defaults: bool,
    overrides: dict[str, Any] | None = None,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """:func:`stores_at_scale` in a fresh child process (its RSS is the stores' alone)."""
    import json

    work = base / f"stores-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    (work / "samples.json").write_text(json.dumps(samples))
    settings = Settings(data_dir=work, topic_partitions=4, **(overrides or {}))
    command = [sys.executable, "-m", "bench.bench_identity_memory", "--stores-only", str(work)]
    command += ["--identifiers", str(identifiers)]
    if faust_defaults:
        command.append("--faust-defaults")
    done = subprocess.run(
        command,
        env=settings.child_env(),
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"stores at scale failed:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


# --- entry points ----------------------------------------------------------------------------


def run(
    quick: bool = False,
    identifiers: int | None = None,
    cache_entries: int | None = None,
    compare_cache: int | None = None,
    timeout_s: float | None = None,
    interval_s: float = 1.0,
    guarantee: str = "exactly_once",
    overrides: dict[str, Any] | None = None,
    stores_identifiers: int | None = None,
    stores_compare: bool = False,
    progress: Callable[[str], None] | None = None,
    roles: str = "identity",
) -> dict[str, Any]:
    """Measure the worker's RSS growth per new identifier (module docstring).

    ``roles``: the worker's ``CDP_WORKER_ROLES`` (default: the identity stage alone, the
    process that holds the identity graph; ``identity,profile,sink,api`` is the whole worker).
    ``cache_entries`` defaults to the settings' ``table_cache_entries``; ``compare_cache``
    (entries per generation) adds a second run with that smaller read cache (none by default).
    ``guarantee``: the worker's default, exactly-once. ``overrides``: worker settings of both
    runs (e.g. ``{"rocksdb_block_cache_mb": 16}``). ``stores_identifiers``: size of the
    stores-alone measurement (:func:`stores_at_scale`, with the worker's bounded RocksDB
    options; ``stores_compare`` repeats it with faust's defaults); none by default, and it
    needs the profile stage among the roles (it replays its records too).
    """
    n = identifiers or (QUICK_IDENTIFIERS if quick else FULL_IDENTIFIERS)
    overrides = {"worker_roles": roles, **(overrides or {})}
    cache = cache_entries or Settings.model_fields["table_cache_entries"].default
    # Generous: at least ~250 identifiers/s (the identity stage alone did ~2,000 here).
    timeout = timeout_s or (180.0 if quick else 300.0 + n / 250)
    started = time.monotonic()
    result: dict[str, Any] = {
        "goal_bytes_per_identifier": GOAL_BYTES_PER_IDENTIFIER,
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="cdp-bench-idmem-") as tmp:
        base = Path(tmp)
        kafka = LocalKafka(
            run_dir=base / "kafka",
            libs_dir=PROJECT_ROOT / ".cache" / "kafka" / "libs",
            port=free_port(),
            controller_port=free_port(),
        )
        kafka.start()
        try:
            main_run = measure(
                kafka.bootstrap,
                base,
                n,
                cache,
                timeout_s=timeout,
                interval_s=interval_s,
                guarantee=guarantee,
                overrides=overrides,
                progress=progress,
            )
            samples = main_run.pop("_samples")
            result.update(main_run)
            if compare_cache:
                small = measure(
                    kafka.bootstrap,
                    base,
                    n,
                    compare_cache,
                    timeout_s=timeout,
                    interval_s=interval_s,
                    seed=2,
                    guarantee=guarantee,
                    overrides=overrides,
                    progress=progress,
                )
                small.pop("_samples")
                result[f"cache_{compare_cache}"] = small
            if stores_identifiers:
                variants = [("stores_bounded", False)]
                if stores_compare or quick:
                    variants.append(("stores_faust", True))
                for name, faust_defaults in variants:
                    if progress:
                        progress(f"{name}: {stores_identifiers:,} identifiers (stores alone)")
                    result[name] = run_stores_at_scale(
                        stores_identifiers, samples, base, faust_defaults, overrides
                    )
        finally:
            kafka.stop()
    result["load_average_after"] = round(os.getloadavg()[0], 2)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="~5k identifiers (smoke)")
    parser.add_argument(
        "--roles",
        default="identity",
        help="CDP_WORKER_ROLES of the worker measured (default: identity; "
        "identity,profile,sink,api: the whole worker)",
    )
    parser.add_argument("--identifiers", type=int, help="new identifiers to feed (about)")
    parser.add_argument("--cache-entries", type=int, help="CDP_TABLE_CACHE_ENTRIES of the run")
    parser.add_argument(
        "--compare-cache",
        type=int,
        nargs="?",
        const=COMPARE_CACHE_ENTRIES,
        help=f"second run with this smaller table cache (without a value: "
        f"{COMPARE_CACHE_ENTRIES:,})",
    )
    parser.add_argument(
        "--guarantee", choices=("exactly_once", "at_least_once"), default="exactly_once"
    )
    parser.add_argument("--timeout", type=float, help="deadline of one run in seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="sampling interval (s)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting (Settings field, e.g. rocksdb_write_buffer_mb=64); repeatable",
    )
    parser.add_argument(
        "--stores-identifiers",
        type=int,
        help=f"identifiers of a stores-alone run (e.g. {STORES_IDENTIFIERS:,}; needs the "
        "profile role)",
    )
    parser.add_argument(
        "--stores-compare",
        action="store_true",
        help="repeat the stores-alone run with faust's default RocksDB options",
    )
    parser.add_argument("--stores-only", type=Path, help=argparse.SUPPRESS)  # the child
    parser.add_argument("--faust-defaults", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stores_only:  # child of run_stores_at_scale: settings from CDP_*, JSON on stdout
        import json

        samples = json.loads((args.stores_only / "samples.json").read_text())
        print(
            json.dumps(
                stores_at_scale(
                    args.identifiers,
                    samples,
                    Settings(),  # type: ignore[call-arg]
                    faust_defaults=args.faust_defaults,
                    progress=lambda line: print(line, file=sys.stderr, flush=True),
                )
            )
        )
        return
    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or name not in Settings.model_fields:
            parser.error(f"--set {item}: expected NAME=VALUE with NAME a Settings field")
        overrides[name] = value
    print_figures(
        run(
            quick=args.quick,
            identifiers=args.identifiers,
            cache_entries=args.cache_entries,
            compare_cache=args.compare_cache,
            timeout_s=args.timeout,
            interval_s=args.interval,
            guarantee=args.guarantee,
            overrides=overrides,
            stores_identifiers=args.stores_identifiers,
            stores_compare=args.stores_compare,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            roles=args.roles,
        ),
        width=48,
    )


if __name__ == "__main__":
    main()
