"""The local stack: Kafka, the worker and the collector as background processes.

``cdp up`` starts what is not running yet and returns when every part answers its health check;
``cdp down`` stops everything it started (SIGTERM, then SIGKILL after a deadline) and checks that
the ports are free again. Pid files and logs live under ``CDP_DATA_DIR`` (``.run/`` by default).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.kafka_admin import ensure_topics, pipeline_topics
from pipeline.localstack.kafka import LocalKafka, port_open, process_alive, stop_process
from pipeline.settings import Settings


class StackError(RuntimeError):
    """A part of the local stack did not start or stop as it should."""


def local_kafka(settings: Settings) -> LocalKafka:
    host, _, port = settings.kafka_bootstrap.rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise StackError(f"CDP_KAFKA_BOOTSTRAP={settings.kafka_bootstrap} is not a local broker")
    return LocalKafka(
        run_dir=settings.data_dir / "kafka",
        libs_dir=settings.kafka_libs_dir,
        port=int(port),
        controller_port=int(port) + 1,
        heap=settings.kafka_heap,
    )


@dataclass(frozen=True)
class PythonService:
    """A `cdp <command>` process run in the background with a pid file and a log file."""

    name: str
    command: str
    host: str
    port: int

    def pid_file(self, settings: Settings) -> Path:
        return settings.data_dir / "pids" / f"{self.name}.pid"

    def log_file(self, settings: Settings) -> Path:
        return settings.data_dir / "logs" / f"{self.name}.log"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/healthz"

    def pid(self, settings: Settings) -> int | None:
        try:
            pid = int(self.pid_file(settings).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self, settings: Settings) -> int:
        if (pid := self.pid(settings)) is not None:
            return pid
        if port_open(self.host, self.port):
            raise StackError(f"{self.name}: port {self.port} is taken by another process")
        self.pid_file(settings).parent.mkdir(parents=True, exist_ok=True)
        self.log_file(settings).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file(settings), "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", self.command],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file(settings).write_text(str(proc.pid))
        return proc.pid

    def wait_healthy(self, settings: Settings, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid(settings) is None:
                raise StackError(
                    f"{self.name} exited during start-up; see {self.log_file(settings)}"
                )
            if self.healthy():
                return
            time.sleep(0.25)
        raise StackError(f"{self.name} not healthy after {timeout_s:.0f}s; see its log")

    def stop(self, settings: Settings, timeout_s: float = 30.0) -> bool:
        pid = self.pid(settings)
        self.pid_file(settings).unlink(missing_ok=True)
        if pid is None:
            return False
        stop_process(pid, timeout_s)
        return True


def services(settings: Settings) -> list[PythonService]:
    return [
        PythonService("worker", "worker", settings.api_host, settings.api_port),
        PythonService("collector", "collector", settings.collector_host, settings.collector_port),
    ]


def up(settings: Settings, echo: Callable[[str], None] = print, timeout_s: float = 120) -> None:
    kafka = local_kafka(settings)
    echo(f"kafka      starting on {kafka.bootstrap} …")
    kafka.start(timeout_s=timeout_s)
    ensure_topics(settings.kafka_bootstrap, pipeline_topics(settings))
    for service in services(settings):
        echo(f"{service.name:<10} starting …")
        service.start(settings)
    for service in services(settings):
        service.wait_healthy(settings, timeout_s)
    echo("")
    echo("The local stack is up:")
    for line in status_lines(settings):
        echo("  " + line)


def down(settings: Settings, echo: Callable[[str], None] = print) -> None:
    # Python services first, so they commit offsets and flush before the broker goes away.
    for service in reversed(services(settings)):
        if service.stop(settings):
            echo(f"{service.name:<10} stopped")
    if local_kafka(settings).stop():
        echo("kafka      stopped")
    busy = [f"{s.name}:{s.port}" for s in services(settings) if port_open(s.host, s.port)]
    kafka = local_kafka(settings)
    if port_open("127.0.0.1", kafka.port):
        busy.append(f"kafka:{kafka.port}")
    if busy:
        raise StackError(f"ports still open after stop: {', '.join(busy)}")


def status_lines(settings: Settings) -> list[str]:
    kafka = local_kafka(settings)
    kafka_pid = kafka.pid()
    lines = [
        f"kafka      {'up  ' if kafka_pid else 'down'}  {kafka.bootstrap}"
        + (f"  (pid {kafka_pid})" if kafka_pid else "")
    ]
    for service in services(settings):
        pid = service.pid(settings)
        state = "up  " if pid and service.healthy() else ("starting" if pid else "down")
        url = f"http://{service.host}:{service.port}"
        lines.append(f"{service.name:<10} {state}  {url}" + (f"  (pid {pid})" if pid else ""))
    lines.append(
        f"metrics    {services(settings)[1].health_url.replace('/healthz', '/metrics')}"
        f"  {services(settings)[0].health_url.replace('/healthz', '/metrics')}"
    )
    lines.append(f"clickhouse {settings.effective_clickhouse_dsn}")
    return lines
