"""Run the real Apache Kafka (KRaft, single node) from its Maven Central jars.

No Docker engine runs here, so the local stack and the tests start the same broker that
production runs, as a plain JVM: ``deploy/kafka/pom.xml`` pins the version, Maven copies the jars
into a git-ignored cache, and this module formats the storage, starts ``kafka.Kafka``, waits for a
real metadata answer and stops it again. The test fixture and ``cdp kafka start`` share this code.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.settings import PROJECT_ROOT

KAFKA_DEPLOY_DIR = PROJECT_ROOT / "deploy" / "kafka"
POM = KAFKA_DEPLOY_DIR / "pom.xml"


class KafkaError(RuntimeError):
    """The local broker could not be set up, started or reached."""


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def ensure_jars(libs_dir: Path, *, quiet: bool = True) -> Path:
    """Copy the pinned Kafka jars into ``libs_dir`` unless they are already there.

    A marker file holds the pom's digest, so changing the pinned version refetches.
    """
    libs_dir = libs_dir.resolve()  # mvn resolves relative paths against the pom's folder
    marker = libs_dir / ".pom-digest"
    digest = _pom_digest()
    if marker.exists() and marker.read_text().strip() == digest:
        return libs_dir
    if shutil.which("mvn") is None:
        raise KafkaError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven")
    if libs_dir.exists():
        shutil.rmtree(libs_dir)
    libs_dir.mkdir(parents=True)
    cmd = [
        "mvn",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={libs_dir}",
        "-DincludeScope=runtime",
    ]
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=quiet, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stdout or "")[-2000:] + (result.stderr or "")[-2000:]
        raise KafkaError(f"mvn could not fetch the Kafka jars (exit {result.returncode}):\n{tail}")
    marker.write_text(digest)
    return libs_dir


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (Linux; the IANA range elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def free_port() -> int:
    """A free port below the ephemeral range where possible.

    A port the kernel picked for ``bind(0)`` comes from the ephemeral range, which outgoing
    connections also draw from: between choosing it and the server binding it, a client
    socket could take it (Kafka failed to bind its controller port that way while a benchmark
    held many connections). Ports below that range are only ever taken by a bind.
    """
    low, _ = _ephemeral_range()
    if low > 11_000:
        for _ in range(50):
            port = random.randrange(10_000, low - 1)
            if _bindable(port):
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A free port whose successor is free too (the local stack's controller uses port + 1)."""
    for _ in range(100):
        port = free_port()
        if port < 65535 and not port_open("127.0.0.1", port + 1) and _bindable(port + 1):
            return port
    raise KafkaError("no two consecutive free ports found")


def _bindable(port: int) -> bool:
    """Whether a socket can bind ``port`` on the loopback address right now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def broker_ready(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker answers a real metadata request and has a controller."""
    from kafka import KafkaAdminClient  # heavy import, only needed here
    from kafka.errors import KafkaError as ClientError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            client_id="cdp-readiness",
        )
    except (ClientError, OSError, ValueError):
        return False
    try:
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
    except (ClientError, OSError, ValueError):
        return False
    finally:
        admin.close()


@dataclass
class LocalKafka:
    """One single-node KRaft broker whose data, config, log and pid live under ``run_dir``."""

    run_dir: Path
    libs_dir: Path
    port: int = 9092
    controller_port: int = 9093
    heap: str = "512m"

    def __post_init__(self) -> None:
        self.run_dir = self.run_dir.resolve()
        self.libs_dir = self.libs_dir.resolve()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def config_file(self) -> Path:
        return self.run_dir / "server.properties"

    def _write_config(self) -> None:
        template = (KAFKA_DEPLOY_DIR / "server.properties").read_text()
        text = (
            template.replace("${port}", str(self.port))
            .replace("${controller_port}", str(self.controller_port))
            .replace("${data_dir}", str(self.data_dir))
        )
        self.config_file.write_text(text)

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={KAFKA_DEPLOY_DIR / 'log4j2.yaml'}",
            "-cp",
            f"{self.libs_dir}/*",
            main,
            *args,
        ]

    def format_storage(self) -> None:
        """Format the KRaft metadata log once; a formatted directory is left alone."""
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _kafka_uuid()
        result = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
                "--ignore-formatted",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KafkaError(f"formatting Kafka storage failed: {result.stderr[-2000:]}")

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the broker in the background and return once it answers metadata requests."""
        if self.pid() is not None:
            self.wait_ready(timeout_s)
            return
        if port_open("127.0.0.1", self.port):
            raise KafkaError(f"port {self.port} is taken by another process")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ensure_jars(self.libs_dir)
        self._write_config()
        self.format_storage()
        with open(self.log_dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(self.config_file)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # not killed by the terminal's Ctrl-C; `stop` ends it
            )
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(timeout_s, proc=proc)
        except KafkaError:
            self.stop()
            raise

    def wait_ready(self, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise KafkaError(
                    f"Kafka exited with {proc.returncode}; see {self.log_dir}"
                    + _fatal_lines(self.log_dir / "server.log")
                )
            if port_open("127.0.0.1", self.port) and broker_ready(self.bootstrap):
                return
            time.sleep(0.25)
        raise KafkaError(f"Kafka not ready after {timeout_s:.0f}s; see {self.log_dir}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker: SIGTERM (clean shutdown), SIGKILL after the deadline."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        stop_process(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        return True


def _fatal_lines(server_log: Path, limit: int = 3) -> str:
    """The broker's last ERROR/FATAL lines and the exception after each, for the error message.

    A CI run keeps only the test's output, not the broker's log directory, so the reason a broker
    died has to travel in the exception.
    """
    try:
        lines = server_log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    picked: list[str] = []
    for i, line in enumerate(lines):
        if " ERROR " in line or " FATAL " in line:
            picked.append(line)
            if i + 1 < len(lines) and not lines[i + 1].startswith("["):
                picked.append(lines[i + 1])  # the exception's class and message
    if not picked:
        return ""
    return "\n" + "\n".join(picked[-2 * limit :])


def stop_process(pid: int, timeout_s: float) -> None:
    """SIGTERM the process group, wait with a deadline, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + (timeout_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not process_alive(pid):
                return
            time.sleep(0.1)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return _not_zombie(pid)
    return waited == 0


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, url-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with ``-``: the storage tool would
    read it as an option (that made about one start in 64 fail).
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
