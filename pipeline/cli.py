"""``cdp``: the command line of the pipeline (local stack, processes, migrations, tools)."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import typer

from pipeline.settings import load_settings

app = typer.Typer(
    help="Customer Data Platform pipeline. Settings come from CDP_* environment variables.",
    no_args_is_help=True,
    add_completion=False,
)
kafka_app = typer.Typer(help="The local Apache Kafka broker (KRaft, run from its jars).")
app.add_typer(kafka_app, name="kafka")


def _logging() -> None:
    level = load_settings().log_level.upper().replace("WARN", "WARNING")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


@kafka_app.command("fetch")
def kafka_fetch(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Maven's output."),
) -> None:
    """Fetch the pinned Kafka jars from Maven Central (idempotent)."""
    from pipeline.localstack.kafka import KafkaError, ensure_jars

    settings = load_settings()
    try:
        path = ensure_jars(settings.kafka_libs_dir, quiet=not verbose)
    except KafkaError as exc:
        _fail(str(exc))
    typer.echo(f"Kafka jars in {path}")


@kafka_app.command("start")
def kafka_start() -> None:
    """Start the local broker in the background and wait until it answers."""
    from pipeline.localstack.kafka import KafkaError
    from pipeline.localstack.stack import local_kafka

    broker = local_kafka(load_settings())
    try:
        broker.start()
    except KafkaError as exc:
        _fail(str(exc))
    typer.echo(f"Kafka ready on {broker.bootstrap} (pid {broker.pid()})")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    from pipeline.localstack.stack import local_kafka

    stopped = local_kafka(load_settings()).stop()
    typer.echo("Kafka stopped" if stopped else "Kafka was not running")


@app.command()
def topics() -> None:
    """Create the pipeline's Kafka topics if missing."""
    from pipeline.kafka_admin import ensure_topics, pipeline_topics

    settings = load_settings()
    created = ensure_topics(settings.kafka_bootstrap, pipeline_topics(settings))
    typer.echo(f"created: {', '.join(created) or 'nothing, all present'}")


@app.command()
def migrate() -> None:
    """Apply the ClickHouse migrations under schemas/clickhouse/ (idempotent)."""
    from pipeline.localstack.stack import services
    from pipeline.storage.clickhouse import client_from_settings
    from pipeline.storage.migrate import MigrationError
    from pipeline.storage.migrate import migrate as run_migrations

    settings = load_settings()
    if settings.embedded_clickhouse and services(settings)[0].pid(settings) is not None:
        _fail("the worker holds the embedded ClickHouse and migrates on start; `make down` first")
    try:
        applied = run_migrations(
            client_from_settings(settings),
            settings.clickhouse_database,
            progress=lambda name: typer.echo(f"applied {name}"),
        )
    except MigrationError as exc:
        _fail(str(exc))
    typer.echo(f"{len(applied)} migration(s) applied; schema is current")


@app.command()
def up() -> None:
    """Start the local stack (Kafka, worker, collector) in the background; wait until healthy."""
    from pipeline.localstack.kafka import KafkaError
    from pipeline.localstack.stack import StackError
    from pipeline.localstack.stack import up as stack_up

    try:
        stack_up(load_settings(), echo=typer.echo)
    except (StackError, KafkaError) as exc:
        _fail(str(exc))


@app.command()
def down() -> None:
    """Stop everything `cdp up` started."""
    from pipeline.localstack.stack import StackError
    from pipeline.localstack.stack import down as stack_down

    try:
        stack_down(load_settings(), echo=typer.echo)
    except StackError as exc:
        _fail(str(exc))
    typer.echo("The local stack is down.")


@app.command()
def status() -> None:
    """Show which parts of the local stack run, and their URLs."""
    from pipeline.localstack.stack import status_lines

    for line in status_lines(load_settings()):
        typer.echo(line)


@app.command()
def worker() -> None:
    """Run the stream-processing worker in the foreground (plus profile API and /metrics)."""
    from pipeline.worker.app import run_worker

    _logging()
    # faust.Worker parses sys.argv; give it only the program name.
    sys.argv = sys.argv[:1]
    run_worker(load_settings())


@app.command()
def collector() -> None:
    """Run the collector (tracking API and pixel) in the foreground."""
    from pipeline.collector.server import run_collector

    _logging()
    run_collector(load_settings())


@app.command()
def demo(
    # Sized for ~2.5 minutes on the 2-core box: the worker processes ~450 events/s end to end.
    customers: int = typer.Option(2000, help="Simulated customers."),
    events: int = typer.Option(30_000, help="Messages to send through the collector."),
    seed: int | None = typer.Option(
        None, help="Seed of the simulation (default: a new one per run, so runs add people)."
    ),
    wait_s: float = typer.Option(300, "--wait", help="Longest wait for the worker to catch up."),
) -> None:
    """Start the local stack, send a realistic stream, wait until processed, print a report."""
    from pipeline.demo import DemoError, run_demo
    from pipeline.localstack.kafka import KafkaError
    from pipeline.localstack.stack import StackError

    try:
        run_demo(
            load_settings(),
            customers=customers,
            events=events,
            seed=seed if seed is not None else int(time.time()),
            wait_s=wait_s,
            echo=typer.echo,
        )
    except (DemoError, StackError, KafkaError) as exc:
        _fail(str(exc))


@app.command()
def loadgen(
    customers: int = typer.Option(3000, help="Simulated customers (Zipf-distributed activity)."),
    events: int = typer.Option(60_000, help="Messages to send (duplicates included)."),
    duration: float | None = typer.Option(
        None, help="Stop after this many seconds (with --rate: sends rate × duration events)."
    ),
    rate: float = typer.Option(0.0, help="Target events/s; 0 = as fast as the collector takes."),
    batch_size: int = typer.Option(100, help="Messages per POST /v1/batch."),
    concurrency: int = typer.Option(4, help="Concurrent HTTP connections."),
    seed: int = typer.Option(1, help="Seed: same seed and --end give the same stream."),
    end: str | None = typer.Option(
        None, help="Event times end here (ISO 8601, default now); history goes back from it."
    ),
    history_days: int = typer.Option(120, help="Days of simulated history before --end."),
    truth: str | None = typer.Option(
        None, help="Ground-truth JSONL (default <data dir>/loadgen/truth.jsonl)."
    ),
    collector: str | None = typer.Option(None, help="Collector URL (default from settings)."),
    write_key: str = typer.Option("local-write-key", help="Write key (HTTP Basic user name)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Send simulated customers' events through the collector; write who really sent each."""
    from pipeline.loadgen.model import ModelConfig
    from pipeline.loadgen.run import run_loadgen
    from pipeline.loadgen.send import SendOptions

    settings = load_settings()
    if duration is not None and rate > 0:
        events = int(rate * duration)
    elif duration is not None:
        # As fast as possible until the time is up: budget above what one collector takes
        # (~15k events/s per core), not unbounded, because the session plan is built upfront.
        events = int(duration * 30_000)
    try:
        end_ms = _epoch_ms(end)
        config = ModelConfig(
            customers=customers, events=events, seed=seed, end_ms=end_ms, history_days=history_days
        )
    except ValueError as exc:
        _fail(str(exc))
    options = SendOptions(
        collector_url=collector or settings.collector_url,
        write_key=write_key,
        batch_size=batch_size,
        rate=rate,
        concurrency=concurrency,
        duration_s=duration,
    )
    truth_path = Path(truth) if truth else settings.data_dir / "loadgen" / "truth.jsonl"
    result = run_loadgen(config, options, truth_path, progress=progress)
    s = result.stats
    typer.echo(
        f"sent {s.sent:,} events in {s.seconds:.1f}s ({s.events_per_s:,.0f} events/s, "
        f"{s.requests:,} requests, {s.pixel:,} pixel): accepted {s.accepted:,}, "
        f"rejected {s.rejected:,}, failed {s.failed:,}, retries {s.retries:,}"
    )
    if s.last_error:
        typer.echo(f"last error: {s.last_error}")
    typer.echo(f"ground truth: {truth_path}")
    if s.failed or s.rejected:
        raise typer.Exit(1)


def _epoch_ms(text: str | None) -> int:
    from datetime import UTC, datetime

    if text is None:
        return int(datetime.now(UTC).timestamp() * 1000)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@app.command()
def version() -> None:
    """Print the version."""
    from pipeline import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
