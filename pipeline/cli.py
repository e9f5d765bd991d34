"""``cdp``: the command line of the pipeline (local stack, processes, migrations, tools)."""

from __future__ import annotations

import logging
import sys

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
def demo() -> None:
    """Start the local stack and show where to look (the profile work makes it a full demo)."""
    up()
    typer.echo("")
    typer.echo("Send an event:")
    settings = load_settings()
    typer.echo(
        f"  curl -u local-write-key: -H 'Content-Type: application/json' "
        f'-d \'{{"userId":"u1","event":"Signed Up"}}\' {settings.collector_url}/v1/track'
    )
    typer.echo("Stop everything with: make down")


@app.command()
def version() -> None:
    """Print the version."""
    from pipeline import __version__

    typer.echo(__version__)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
