"""The physical ceilings of this machine, measured in the same run as our own figures.

What the pipeline's rates should be compared with (issue 7): how fast the pieces we build on go
when they do nothing else, on the same broker build, the same client libraries and the same
(shared, noisy) cores:

* **Kafka's own tools** (``org.apache.kafka.tools.ProducerPerformance`` and
  ``ConsumerPerformance``, from the very jars the local broker runs from): records/s and MB/s
  with ``acks=all``, once at the size of one raw message (an Avro ``EventBatch`` of
  ``EVENTS_PER_MESSAGE`` events, as ``bench_pipeline`` writes) and once at ~500 bytes (one event
  per message).
* **Our aiokafka producer** (the collector's settings: ``acks=all``, idempotent) writing the
  raw ``EventBatch`` messages the consumer below reads: messages/s and MB/s.
* **A raw aiokafka consumer** (the library and settings of our ClickHouse sink: read_committed,
  4 MB fetches, no consumer group): messages/s over a pre-filled topic of real ``EventBatch``
  messages (and the events/s they carry, with and without Avro decoding), and over a topic of
  one ~500-byte record per message.
* **A bare faust agent** (``async for value in stream``, nothing else) on the faust app our
  worker builds (``pipeline.worker.app.create_faust_app``: exactly-once by default, and
  at-least-once) fed one record per message: messages/s.
* **chDB bulk inserts** through clickhouse-connect into our real ``events`` table
  (``schemas/clickhouse/0001_events.sql``) in batches of the sink's size: rows/s. chDB opens one
  data path per process, so this part runs in a child process.

Start-up and group joins are not timed: the raw consumer's clock starts when it is assigned
its partition (fetching starts then), the faust agent's at its first message, as
``bench_pipeline`` does for the worker; the Kafka tools report their own rates
(ConsumerPerformance's fetch rates, which exclude the group join). A fresh broker is started on free
ports unless ``--bootstrap`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pipeline.localstack.kafka import LocalKafka, ensure_jars, free_port
from pipeline.settings import PROJECT_ROOT, Settings

LIBS_DIR = PROJECT_ROOT / ".cache" / "kafka" / "libs"
EVENTS_PER_MESSAGE = 100  # bench_pipeline's batch: one raw message carries this many events
EVENT_RECORD_BYTES = 500  # about one enriched event, Avro-encoded
SINK_BATCH_ROWS = 20_000  # pipeline.sink.service.SinkConfig.max_rows
Guarantee = Literal["exactly_once", "at_least_once"]
GUARANTEES: tuple[Guarantee, ...] = ("exactly_once", "at_least_once")

#: Sizes per mode: (records of ~500 B, raw batch messages, faust messages, chDB rows).
SIZES = {
    "quick": {"event_records": 3_000, "batch_records": 300, "faust": 1_500, "chdb_rows": 5_000},
    "full": {
        "event_records": 200_000,
        "batch_records": 10_000,
        "faust": 20_000,
        "chdb_rows": 200_000,
    },
}
DECODE_MESSAGES = 2_000  # Avro decoding is measured over at most this many raw messages


class CeilingError(RuntimeError):
    """A ceiling measurement could not run (tool failed, output not understood, deadline)."""


# --- Kafka's own tools -----------------------------------------------------------------------


def _kafka_tool(libs: Path, main: str, *args: str, timeout_s: float = 300.0) -> str:
    cmd = ["java", "-Xmx256m", "-XX:+UseG1GC", "-cp", f"{libs}/*", main, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the JVM on timeout
        tool = main.rsplit(".", 1)[-1]
        raise CeilingError(f"{tool} did not finish in {timeout_s:.0f} s") from exc
    if done.returncode != 0:
        raise CeilingError(
            f"{main} exited with {done.returncode}: {(done.stderr or done.stdout)[-1500:]}"
        )
    return done.stdout


_PRODUCER_LINE = re.compile(
    r"(?P<records>\d+) records sent, (?P<rps>[\d.]+) records/sec \((?P<mbps>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, (?P<p50>\d+) ms 50th, "
    r"(?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th"
)


def parse_producer_performance(output: str) -> dict[str, Any]:
    """The summary line of ProducerPerformance (the last one; earlier ones are progress)."""
    found = list(_PRODUCER_LINE.finditer(output))
    if not found:
        raise CeilingError(f"no ProducerPerformance summary in: {output[-500:]!r}")
    m = found[-1]
    return {
        "records_per_s": float(m["rps"]),
        "mb_per_s": float(m["mbps"]),
        "p50_ms": int(m["p50"]),
        "p99_ms": int(m["p99"]),
    }


def parse_consumer_performance(output: str) -> dict[str, Any]:
    """ConsumerPerformance's CSV line (``--hide-header``); the fetch rates exclude the join.

    Fields: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg,
    nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec.
    """
    for line in reversed(output.strip().splitlines()):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) >= 10:
            try:
                return {
                    "records": int(fields[4]),
                    "records_per_s": float(fields[9]),
                    "mb_per_s": float(fields[8]),
                }
            except ValueError:
                continue
    raise CeilingError(f"no ConsumerPerformance figures in: {output[-500:]!r}")


def producer_performance(
    libs: Path, bootstrap: str, topic: str, records: int, record_bytes: int
) -> dict[str, Any]:
    out = _kafka_tool(
        libs,
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic", topic,
        "--num-records", str(records),
        "--record-size", str(record_bytes),
        "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all",
    )  # fmt: skip
    return {"record_bytes": record_bytes, "records": records, **parse_producer_performance(out)}


def consumer_performance(libs: Path, bootstrap: str, topic: str, records: int) -> dict[str, Any]:
    out = _kafka_tool(
        libs,
        "org.apache.kafka.tools.ConsumerPerformance",
        "--bootstrap-server", bootstrap,
        "--topic", topic,
        "--messages", str(records),
        "--group", f"cdp-ceiling-{uuid.uuid4().hex[:8]}",
        "--timeout", "30000",
        "--hide-header",
    )  # fmt: skip
    return parse_consumer_performance(out)


# --- raw aiokafka consumer -------------------------------------------------------------------


def _raw_batches(n_distinct: int) -> list[bytes]:
    """Real raw-topic messages: Avro ``EventBatch``es of bench_pipeline's events."""
    from bench.bench_pipeline import _raw_events
    from pipeline import avro

    events = _raw_events(n_distinct * EVENTS_PER_MESSAGE, seed=7)
    return [
        avro.encode_batch(events[i : i + EVENTS_PER_MESSAGE])
        for i in range(0, len(events), EVENTS_PER_MESSAGE)
    ]


async def _fill(bootstrap: str, topic: str, values: list[bytes], n_messages: int) -> dict[str, Any]:
    """Write ``n_messages`` (cycling ``values``) with our collector's producer settings, timed."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0
    )
    await producer.start()
    size = 0
    try:
        started = time.perf_counter()
        for value in itertools.islice(itertools.cycle(values), n_messages):
            size += len(value)
            await producer.send(topic, value)
        await producer.flush()
        seconds = max(1e-6, time.perf_counter() - started)
    finally:
        await producer.stop()
    return {"messages_per_s": n_messages / seconds, "mb_per_s": size / seconds / 1e6}


async def _consume(
    bootstrap: str, topic: str, n_messages: int, decode: bool = False, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Read ``n_messages`` from the start of a one-partition topic as our sink does."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from pipeline import avro

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()  # connects and loads metadata: not timed
    try:
        # Fetching starts on assignment, so the clock starts just before it.
        started = time.perf_counter()
        consumer.assign([TopicPartition(topic, 0)])
        messages = events = size = 0
        deadline = time.monotonic() + timeout_s
        while messages < n_messages:
            if time.monotonic() > deadline:
                raise CeilingError(f"read {messages}/{n_messages} of {topic} in {timeout_s:.0f} s")
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records[: n_messages - messages]:
                    value = record.value or b""
                    size += len(value)
                    if decode:
                        events += len(avro.decode_batch(value))
                    messages += 1
        seconds = max(1e-6, time.perf_counter() - started)
    finally:
        await consumer.stop()
    result: dict[str, Any] = {
        "messages": messages,
        "messages_per_s": messages / seconds,
        "mb_per_s": size / seconds / 1e6,
    }
    if decode:
        result["decoded_events_per_s"] = events / seconds
    return result


# --- bare faust agent ------------------------------------------------------------------------


async def _faust_rate(
    bootstrap: str, topic: str, n_messages: int, guarantee: Guarantee, data_dir: Path
) -> dict[str, Any]:
    """Messages/s of an agent that only counts, on the faust app our worker builds."""
    from pipeline.worker.app import create_faust_app

    unique = uuid.uuid4().hex[:8]
    settings = Settings(
        kafka_bootstrap=bootstrap,
        worker_id=f"cdp-ceiling-{guarantee}-{unique}",
        data_dir=data_dir / unique,
        processing_guarantee=guarantee,
        faust_store="memory://",
        topic_partitions=1,
    )  # type: ignore[call-arg]
    app = create_faust_app(settings)
    # faust runs transactions only inside a faust.Worker (``in_worker``), which `cdp worker`
    # is; without this the "exactly_once" agent would run without transactions.
    app.in_worker = True
    source = app.topic(topic, value_serializer="raw", key_serializer="raw")
    done = asyncio.Event()
    seen = {"count": 0, "first": 0.0, "last": 0.0}

    @app.agent(source)
    async def bare(stream: Any) -> None:
        async for _value in stream:
            now = time.perf_counter()
            if not seen["count"]:
                seen["first"] = now
            seen["count"] += 1
            seen["last"] = now
            if seen["count"] >= n_messages:
                done.set()

    try:
        await app.start()
        await asyncio.wait_for(done.wait(), timeout=max(120.0, n_messages / 500))
    except TimeoutError as exc:
        raise CeilingError(
            f"faust ({guarantee}) saw {seen['count']}/{n_messages} messages before the deadline"
        ) from exc
    finally:
        await app.stop()
    seconds = max(1e-6, seen["last"] - seen["first"])
    return {"messages": n_messages, "messages_per_s": (n_messages - 1) / seconds}


# --- chDB bulk insert ------------------------------------------------------------------------


def _event_rows(n: int, seed: int = 11) -> list[tuple[Any, ...]]:
    """Rows of the ``events`` table with realistic sizes (URLs, JSON properties, traits)."""
    rng = random.Random(seed)
    customers = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(max(10, n // 40))]
    names = ("Page Viewed", "Product Viewed", "Product Added", "Order Completed", "Signed Up")
    paths = ("/", "/shop", "/shop/shoes", "/product/sku-{}", "/cart", "/checkout", "/blog/{}")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(n):
        path = rng.choice(paths).format(rng.randint(1, 5000))
        at = t0 + timedelta(milliseconds=i * 50)
        props = json.dumps(
            {
                "path": path,
                "sku": f"sku-{rng.randint(1, 5000)}",
                "price": round(rng.uniform(5, 300), 2),
                "currency": "EUR",
            }
        )
        rows.append((
            str(uuid.UUID(int=rng.getrandbits(128))), rng.choice(customers),
            "track" if rng.random() < 0.4 else "page", rng.choice(names), at, at,
            f"anon-{rng.getrandbits(48):012x}", f"u{rng.randint(1, 50_000)}" if rng.random() < 0.3
            else "", "web", props, "{}", f"https://shop.example.com{path}?utm_source=news",
            path, "https://www.google.com/", "newsletter", "email", f"spring-{rng.randint(1, 9)}",
            rng.choice(("desktop", "mobile")), rng.choice(("Windows", "iOS", "Android", "macOS")),
            rng.choice(("Chrome", "Safari", "Firefox")), rng.choice(("direct", "email", "search")),
            rng.random() < 0.02, ["analytics"], f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.1",
        ))  # fmt: skip
    return rows


def measure_chdb(n_rows: int, batch_rows: int = SINK_BATCH_ROWS) -> dict[str, Any]:
    """Insert ``n_rows`` into a fresh chDB ``events`` table in ``batch_rows`` inserts."""
    from pipeline.sink.rows import EVENT_COLUMNS
    from pipeline.storage.clickhouse import connect
    from pipeline.storage.migrate import discover

    database = "bench_ceilings"
    rows = _event_rows(n_rows)
    with tempfile.TemporaryDirectory(prefix="cdp-bench-chdb-") as tmp:
        client = connect(f"chdb://{tmp}/clickhouse")
        client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        events_ddl = next(
            statement
            for statement in discover()[0].statements(database)
            if f"{database}.events" in statement.split("(", 1)[0]
        )
        client.command(events_ddl)
        target = f"{database}.events"
        started = time.perf_counter()
        for i in range(0, n_rows, batch_rows):
            client.insert(target, rows[i : i + batch_rows], column_names=list(EVENT_COLUMNS))
        seconds = time.perf_counter() - started
        counted = client.command(f"SELECT count() FROM {target}")  # noqa: S608 - our constant
        stored = int(counted)  # type: ignore[arg-type]
        if stored != n_rows:
            raise CeilingError(f"chDB holds {stored} rows after inserting {n_rows}")
        client.close()
    return {"rows": n_rows, "batch_rows": batch_rows, "rows_per_s": n_rows / max(1e-6, seconds)}


def chdb_in_child(n_rows: int, batch_rows: int = SINK_BATCH_ROWS) -> dict[str, Any]:
    """:func:`measure_chdb` in a child process (chDB opens one data path per process)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_ceilings", "--chdb-only", str(n_rows),
         "--chdb-batch", str(batch_rows), "--json"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise CeilingError(f"chDB insert bench failed: {done.stderr.strip()[-1500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- all together ----------------------------------------------------------------------------


async def _python_clients(
    bootstrap: str,
    raw_topic: str,
    event_topic: str,
    sizes: dict[str, int],
    guarantees: tuple[Guarantee, ...],
    data_dir: Path,
) -> dict[str, Any]:
    produced = await _fill(bootstrap, raw_topic, _raw_batches(50), sizes["batch_records"])
    batch = await _consume(bootstrap, raw_topic, sizes["batch_records"])
    decoded = await _consume(
        bootstrap, raw_topic, min(sizes["batch_records"], DECODE_MESSAGES), decode=True
    )
    batch["events_per_message"] = EVENTS_PER_MESSAGE
    batch["events_per_s"] = batch["messages_per_s"] * EVENTS_PER_MESSAGE
    batch["decoded_events_per_s"] = decoded["decoded_events_per_s"]
    single = await _consume(bootstrap, event_topic, sizes["event_records"])
    faust = {
        guarantee: await _faust_rate(bootstrap, event_topic, sizes["faust"], guarantee, data_dir)
        for guarantee in guarantees
    }
    return {
        "aiokafka_producer": {"batch": produced},
        "aiokafka_consumer": {"batch": batch, "event": single},
        "faust_agent": faust,
    }


def measure(
    bootstrap: str, sizes: dict[str, int], guarantees: tuple[Guarantee, ...], base: Path
) -> dict[str, Any]:
    from pipeline.kafka_admin import TopicSpec, ensure_topics

    libs = ensure_jars(LIBS_DIR)
    unique = uuid.uuid4().hex[:8]
    perf_batch, perf_event = f"ceil{unique}.perf-batch", f"ceil{unique}.perf-event"
    raw_topic, event_topic = f"ceil{unique}.raw", perf_event
    ensure_topics(bootstrap, [TopicSpec(t, 1) for t in (perf_batch, perf_event, raw_topic)])
    batch_bytes = len(_raw_batches(1)[0])
    producer = {
        "batch": producer_performance(
            libs, bootstrap, perf_batch, sizes["batch_records"], batch_bytes
        ),
        "event": producer_performance(
            libs, bootstrap, perf_event, sizes["event_records"], EVENT_RECORD_BYTES
        ),
    }
    consumer = {
        "batch": consumer_performance(libs, bootstrap, perf_batch, sizes["batch_records"]),
        "event": consumer_performance(libs, bootstrap, perf_event, sizes["event_records"]),
    }
    clients = asyncio.run(
        _python_clients(bootstrap, raw_topic, event_topic, sizes, guarantees, base / "faust")
    )
    return {"kafka_producer_perf": producer, "kafka_consumer_perf": consumer, **clients}


def run(quick: bool = False, bootstrap: str | None = None) -> dict[str, Any]:
    """Every ceiling; ``quick`` is the smoke size (exactly-once faust only)."""
    sizes = SIZES["quick" if quick else "full"]
    guarantees = GUARANTEES[:1] if quick else GUARANTEES
    with tempfile.TemporaryDirectory(prefix="cdp-bench-ceilings-") as tmp:
        base = Path(tmp)
        broker = None
        if bootstrap is None:
            broker = LocalKafka(
                run_dir=base / "kafka", libs_dir=LIBS_DIR, port=free_port(),
                controller_port=free_port(),
            )  # fmt: skip
            broker.start()
            bootstrap = broker.bootstrap
        try:
            result = measure(bootstrap, sizes, guarantees, base)
        finally:
            if broker is not None:
                broker.stop()
    # After the broker stopped: the insert has the cores to itself (as far as a shared box goes).
    rows = sizes["chdb_rows"]
    result["chdb_insert"] = chdb_in_child(rows, min(SINK_BATCH_ROWS, max(1, rows // 5)))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke sizes")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--chdb-only", type=int, metavar="ROWS", help="only the chDB insert")
    parser.add_argument("--chdb-batch", type=int, default=SINK_BATCH_ROWS)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.chdb_only:
        result = measure_chdb(args.chdb_only, args.chdb_batch)
    else:
        result = run(args.quick, args.bootstrap)
    if args.json:
        print(json.dumps(result))
        return
    from bench.run import _flatten

    for key, value in _flatten(result):
        print(f"{key:>44}  {value:,.1f}" if isinstance(value, float) else f"{key:>44}  {value}")


if __name__ == "__main__":
    main()
