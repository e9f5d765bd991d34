"""Profile API lookup latency with many stored profiles (issue 5: p99 <= 20 ms at 1,000,000).

``python -m bench.bench_api [n_profiles ...] [--requests N] [--kinds by_email,by_id]
[--background-refresh]`` fills a fresh embedded ClickHouse (chDB, in a temporary folder) with
``n_profiles`` synthetic profiles, their identities (email, user id, anonymous id), a merge for
every 20th customer and five events each, refreshes the scores, then times lookups through the
real aiohttp application over HTTP (the same ``build_api`` the worker serves): by email, by
customer id, by a merged (loser) id and the timeline. Prints p50 / p99 (and CPU per request:
client, server and engine share the process) per kind, and the storage of the tables the
lookups read (MergeTree bytes from ``system.parts``, EmbeddedRocksDB bytes from their files);
:func:`run` returns them (from a child process, see there).

The data is generated inside ClickHouse (``INSERT … SELECT … FROM numbers(n)``) so a million
profiles load in a minute or two (most of it the lookup tables' views) rather than in an hour
of Python row building. The kinds are timed interleaved (one request of each in turn), so a
burst of load from elsewhere on the machine hits all of them alike.

Steady state: timing starts only once the engine is idle, as a deployment serving lookups would
be: the scores refreshed, their every-minute refresh paused (see :func:`measure`), and no merge or
mutation running on the bench's tables (:func:`_settle` waits for them, up to ten minutes; the
wait is reported as ``settle_s``). chDB writes no system logs (no ``query_log``) to flush. The
app is started like the worker starts it (its start-up hook freezes the garbage collector's
start-up objects, pipeline/api/server.py); the collections that still happen while timing are
reported (``gc``: count per generation, total and longest pause), as is the 1-minute load
average before and after timing: on a shared machine the percentiles move with it, the CPU per
request much less.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry

from bench.procs import run_child
from pipeline.api.server import build_api
from pipeline.settings import load_settings
from pipeline.storage.clickhouse import connect
from pipeline.storage.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "bench_api"
_DATA_DIR: str | None = None
TOKEN = "bench-token"  # noqa: S105 - a throwaway token of a local bench
MERGE_EVERY = 20  # every 20th customer absorbed another one
EVENTS_PER_CUSTOMER = 5

# Deterministic UUID-looking ids from a number: the API sees realistic 36-character keys.
_CID = "UUIDNumToString(MD5(concat('c', toString({n}))))"
_LOSER = "UUIDNumToString(MD5(concat('l', toString({n}))))"

# Templates of our own (database and counts are the bench's constants, never user input).
_FILL_PROFILES = """
INSERT INTO {db}.profiles (customer_id, identities, user_ids, emails, traits, events, page_views,
    sessions, first_seen, last_seen, orders, currency, revenue, gross_revenue, avg_order_value,
    first_order_at, last_order_at, first_touch_channel, merged_from, version, is_deleted)
SELECT
    {cid},
    map('email', [concat('user', toString(number), '@example.com')],
        'user_id', [concat('u', toString(number))],
        'anonymous_id', [concat('anon-', toString(number))]),
    [concat('u', toString(number))],
    [concat('user', toString(number), '@example.com')],
    concat('{{"first_name":"User ', toString(number), '"}}'),
    {events}, 3, 1,
    toDateTime64('2024-01-01 00:00:00', 3, 'UTC') + toIntervalMinute(number % 500000),
    toDateTime64('2025-06-01 00:00:00', 3, 'UTC') + toIntervalMinute(number % 500000),
    number % 4, 'USD',
    toDecimal64((number % 4) * 25.5, 4),
    toDecimal64((number % 4) * 25.5, 4),
    toDecimal64(if(number % 4 = 0, 0, 25.5), 4),
    if(number % 4 = 0, NULL,
       toDateTime64('2024-02-01 00:00:00', 3, 'UTC') + toIntervalHour(number % 10000)),
    if(number % 4 = 0, NULL,
       toDateTime64('2025-05-01 00:00:00', 3, 'UTC') + toIntervalHour(number % 10000)),
    ['direct', 'search', 'social', 'email', 'paid'][number % 5 + 1],
    if(number % {every} = 0, [{loser}], []),
    2, 0
FROM numbers({n})
"""
# The losers' last rows: the profile processor writes them once more with is_deleted = 1.
_FILL_LOSERS = """
INSERT INTO {db}.profiles (customer_id, version, is_deleted)
SELECT {loser}, 3, 1 FROM numbers({n}) WHERE number % {every} = 0
"""
_FILL_MERGES = """
INSERT INTO {db}.customer_merges (loser, survivor, reason, merged_at)
SELECT {loser}, {cid}, 'email', now64(3) FROM numbers({n}) WHERE number % {every} = 0
"""
_FILL_IDENTITIES = """
INSERT INTO {db}.identities (id_type, id_value, customer_id, first_seen, version)
SELECT id.1, id.2, customer_id, now64(3), 1
FROM (
    SELECT arrayJoin([('email', concat('user', toString(number), '@example.com')),
                      ('user_id', concat('u', toString(number))),
                      ('anonymous_id', concat('anon-', toString(number)))]) AS id,
           {cid} AS customer_id
    FROM numbers({n})
)
"""
# Events: four page views and an order per customer; a merged customer's first event is
# stored under its loser id, as it was before the merge.
_FILL_EVENTS = """
INSERT INTO {db}.events (event_id, customer_id, type, event, timestamp, received_at,
    properties, page_path, channel)
SELECT
    UUIDNumToString(MD5(concat('e', toString(c), '-', toString(k)))),
    if(c % {every} = 0 AND k = 0, {loser_c}, {cid_c}),
    if(k = 4, 'track', 'page'),
    if(k = 4, 'Order Completed', ''),
    toDateTime64('2025-01-01 00:00:00', 3, 'UTC') + toIntervalMinute(c % 100000 + k * 1440),
    now64(3),
    if(k = 4, concat('{{"order_id":"o', toString(c), '","revenue":25.5}}'), '{{}}'),
    '/catalog', 'direct'
FROM (SELECT intDiv(number, {events}) AS c, number % {events} AS k
      FROM numbers({n_events}))
"""
_SAMPLE_IDS = "SELECT {expr} FROM numbers(0, {{n:UInt64}}, {{step:UInt64}}) LIMIT 2000"


def _fill(client: Client, db: str, n: int) -> None:
    names = {
        "db": db,
        "n": n,
        "every": MERGE_EVERY,
        "events": EVENTS_PER_CUSTOMER,
        "n_events": n * EVENTS_PER_CUSTOMER,
        "cid": _CID.format(n="number"),
        "loser": _LOSER.format(n="number"),
        "cid_c": _CID.format(n="c"),
        "loser_c": _LOSER.format(n="c"),
    }
    for template in (_FILL_PROFILES, _FILL_LOSERS, _FILL_MERGES, _FILL_IDENTITIES, _FILL_EVENTS):
        client.command(template.format(**names))


def _sample(client: Client, expr: str, n: int, step: int) -> list[str]:
    sql = _SAMPLE_IDS.format(expr=expr.format(n="number"))
    return [str(row[0]) for row in client.query(sql, {"n": n, "step": step}).result_rows]


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "max_ms": round(ordered[-1], 2),
    }


KINDS = ("by_email", "by_id", "by_merged_id", "timeline")
#: Tables whose size the bench reports: the lookups' sources and their key-value copies (0007).
STORAGE_TABLES = (
    "profiles", "identities", "customer_merges", "customer_scores", "profile_documents",
    "profile_lookup", "identity_lookup", "merge_lookup", "score_lookup",
)  # fmt: skip


def _storage(client: Client, db: str) -> dict[str, int]:
    """Bytes on disk per table: active parts for MergeTree, the data folder for the others
    (EmbeddedRocksDB; chDB runs in this process, so its folders are local)."""
    rows = client.query(
        "SELECT name, engine, data_paths, total_bytes FROM system.tables "
        "WHERE database = {db:String} AND name IN {names:Array(String)}",
        parameters={"db": db, "names": list(STORAGE_TABLES)},
    ).result_rows
    parts = dict(
        client.query(
            "SELECT table, sum(bytes_on_disk) FROM system.parts "
            "WHERE database = {db:String} AND active GROUP BY table",
            parameters={"db": db},
        ).result_rows
    )
    sizes: dict[str, int] = {}
    for name, engine, paths, total_bytes in rows:
        if "MergeTree" in str(engine):
            sizes[str(name)] = int(parts.get(name, 0))
            continue
        on_disk = sum(
            f.stat().st_size for path in paths for f in Path(path).rglob("*") if f.is_file()
        )
        sizes[str(name)] = on_disk or int(total_bytes or 0)
    return dict(sorted(sizes.items()))


def _settle(client: Client, db: str, timeout_s: float = 600.0) -> float:
    """Wait until no merge or mutation runs on ``db``'s tables; returns the seconds waited."""
    started = time.perf_counter()
    busy = (
        "SELECT (SELECT count() FROM system.merges WHERE database = {db:String})"
        " + (SELECT count() FROM system.mutations WHERE database = {db:String} AND NOT is_done)"
    )
    while time.perf_counter() - started < timeout_s:
        if not client.query(busy, parameters={"db": db}).result_rows[0][0]:
            break
        time.sleep(0.5)
    return round(time.perf_counter() - started, 1)


class _GcPauses:
    """Garbage collections (per generation) and their pauses while timing."""

    def __init__(self) -> None:
        self._started = 0.0
        self.reset()

    def reset(self) -> None:
        self.counts = [0, 0, 0]
        self.total_ms = 0.0
        self.max_ms = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause_ms = (time.perf_counter() - self._started) * 1000
        self.counts[info["generation"]] += 1
        self.total_ms += pause_ms
        self.max_ms = max(self.max_ms, pause_ms)

    def figures(self) -> dict[str, Any]:
        return {
            "collections": list(self.counts),
            "total_ms": round(self.total_ms, 1),
            "max_ms": round(self.max_ms, 2),
        }


async def _measure(
    client: Client, db: str, n: int, requests: int, kinds: tuple[str, ...] = KINDS
) -> dict[str, Any]:
    settings = load_settings(clickhouse_database=db, api_token=TOKEN)
    app = build_api(
        settings, client=client, registry=CollectorRegistry(), health=lambda: {"ok": True}
    )
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    id_list = _sample(client, _CID, n, max(1, n // 2000))
    loser_list = _sample(client, _LOSER, n, MERGE_EVERY)
    paths: dict[str, Callable[[], str]] = {
        "by_email": lambda: f"/v1/profiles?email=User{rng.randrange(n)}@Example.com",
        "by_id": lambda: f"/v1/profiles/{rng.choice(id_list)}",
        "by_merged_id": lambda: f"/v1/profiles/{rng.choice(loser_list)}",
        "timeline": lambda: f"/v1/profiles/{rng.choice(id_list)}/events?limit=50",
    }
    samples: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu_ms = dict.fromkeys(kinds, 0.0)
    pauses = _GcPauses()
    load_before = os.getloadavg()[0]
    async with TestClient(TestServer(app)) as http:
        gc.callbacks.append(pauses)
        for i in range(requests + 50):
            if i == 50:
                pauses.reset()  # count the timed requests only
            for kind in kinds:  # interleaved: load from elsewhere hits every kind alike
                path = paths[kind]()
                started, cpu_started = time.perf_counter(), time.process_time()
                response = await http.get(path, headers=headers)
                await response.read()
                elapsed = (time.perf_counter() - started) * 1000
                if response.status != 200:
                    raise RuntimeError(f"{path}: HTTP {response.status}")
                if i >= 50:  # warm-up: first queries compile and fill caches
                    samples[kind].append(elapsed)
                    cpu_ms[kind] += (time.process_time() - cpu_started) * 1000
        gc.callbacks.remove(pauses)
    # CPU per request (client, server and engine: one process) depends less on what else runs
    # on the machine than wall-clock percentiles do.
    return {
        **{
            kind: {**_percentiles(samples[kind]), "cpu_ms": round(cpu_ms[kind] / requests, 2)}
            for kind in kinds
        },
        "gc": pauses.figures(),
        "load_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }


def _data_dir() -> str:
    """One chDB folder per process (chDB opens a single path per process), removed at exit."""
    global _DATA_DIR
    if _DATA_DIR is None:
        _DATA_DIR = tempfile.mkdtemp(prefix="bench-api-")
        atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)
    return _DATA_DIR


def run(
    n_profiles: int,
    requests: int = 2000,
    background_refresh: bool = False,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    """:func:`measure` in a child process, for callers that may hold another chDB path already
    (``make bench`` runs every benchmark in one process, and chDB opens one path per process)."""
    args = [str(n_profiles), "--requests", str(requests), "--kinds", ",".join(kinds)]
    if background_refresh:
        args.append("--background-refresh")
    return run_child("bench.bench_api", *args)


def _refresh_views(client: Client, database: str) -> list[str]:
    """The refreshable views, in refresh order: the scores, then their lookup copy (0007)."""
    names = {
        str(row[0])
        for row in client.query(
            "SELECT name FROM system.tables WHERE database = {db:String} "
            "AND name IN ('customer_scores_refresh', 'score_lookup_refresh')",
            parameters={"db": database},
        ).result_rows
    }
    return [
        f"{database}.{name}"
        for name in ("customer_scores_refresh", "score_lookup_refresh")
        if name in names
    ]


def measure(
    n_profiles: int,
    requests: int = 2000,
    background_refresh: bool = False,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    """Fill a fresh chDB with ``n_profiles`` and time the API lookups; returns the figures.

    The scores' refreshable views (every minute, in this process like in the local worker) are
    paused while timing unless ``background_refresh``: with it, the lookups that coincide with
    a refresh show what the refresh costs them.
    """
    database = f"{DATABASE}_{n_profiles}"
    client = connect(f"chdb://{_data_dir()}/clickhouse")
    client.command(f"DROP DATABASE IF EXISTS {database}")
    try:
        migrate(client, database)
        views = _refresh_views(client, database)
        for view in views:
            client.command(f"SYSTEM STOP VIEW {view}")
        started = time.perf_counter()
        _fill(client, database, n_profiles)
        fill_s = time.perf_counter() - started
        started = time.perf_counter()
        for view in views:
            client.command(f"SYSTEM START VIEW {view}")
            client.command(f"SYSTEM REFRESH VIEW {view}")
            client.command(f"SYSTEM WAIT VIEW {view}")
        refresh_s = time.perf_counter() - started
        if not background_refresh:
            for view in views:
                client.command(f"SYSTEM STOP VIEW {view}")
        settle_s = _settle(client, database)
        storage = _storage(client, database)
        lookups = asyncio.run(_measure(client, database, n_profiles, requests, kinds))
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
    return {
        "profiles": n_profiles,
        "requests_per_kind": requests,
        "background_refresh": background_refresh,
        "fill_s": round(fill_s, 1),
        "scores_refresh_s": round(refresh_s, 2),
        "settle_s": settle_s,
        **lookups,
        "storage_bytes": storage,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "profiles",
        nargs="*",
        type=int,
        default=[100_000],
        help="profile counts (e.g. 100000 1000000)",
    )
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per kind")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help=f"comma-separated lookups to time, of {','.join(KINDS)}",
    )
    parser.add_argument(
        "--background-refresh",
        action="store_true",
        help="keep the every-minute scores refresh running while timing",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line per size")
    args = parser.parse_args(argv)
    kinds = tuple(kind for kind in args.kinds.split(",") if kind)
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        parser.error(f"--kinds: choose from {','.join(KINDS)}")
    if args.json:
        for n in args.profiles:
            result = measure(n, args.requests, args.background_refresh, kinds)
            print(json.dumps(result), flush=True)
        return
    print(f"{'profiles':>10} {'kind':<14} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'cpu ms':>8}")
    for n in args.profiles:
        result = measure(n, args.requests, args.background_refresh, kinds)
        for kind in kinds:
            figures = result[kind]
            print(
                f"{n:>10} {kind:<14} {figures['p50_ms']:>8} {figures['p99_ms']:>8}"
                f" {figures['max_ms']:>8} {figures['cpu_ms']:>8}"
            )
        pauses = result["gc"]
        print(
            f"{n:>10} fill {result['fill_s']} s, scores refresh {result['scores_refresh_s']} s,"
            f" settle {result['settle_s']} s, load average {result['load_1m'][0]} before timing,"
            f" {result['load_1m'][1]} after; gc while timing {pauses['collections']} collections,"
            f" {pauses['total_ms']} ms, longest {pauses['max_ms']} ms"
        )
        sizes = ", ".join(f"{t} {b / 1e6:.1f}" for t, b in result["storage_bytes"].items())
        print(f"{n:>10} storage MB: {sizes}")


if __name__ == "__main__":
    main()
