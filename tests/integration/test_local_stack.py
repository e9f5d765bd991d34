"""`cdp up` / `cdp status` / `cdp down` on real processes, with free ports and a temp data dir."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from pipeline.localstack.kafka import free_port, free_port_pair, port_open, process_alive

pytestmark = pytest.mark.integration


def _cdp(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _free_port_except(*taken: int) -> int:
    while (port := free_port()) in taken:
        pass
    return port


def test_up_twice_status_and_down_leave_nothing_running(tmp_path: Path) -> None:
    kafka_port = free_port_pair()  # the controller listens on kafka_port + 1
    env = {
        **os.environ,
        "CDP_DATA_DIR": str(tmp_path / "run"),
        "CDP_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "CDP_COLLECTOR_PORT": str(_free_port_except(kafka_port, kafka_port + 1)),
        "CDP_API_PORT": str(_free_port_except(kafka_port, kafka_port + 1)),
        "CDP_KAFKA_HEAP": "384m",
    }
    ports = [kafka_port, int(env["CDP_COLLECTOR_PORT"]), int(env["CDP_API_PORT"])]
    try:
        first = _cdp(env, "up")
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"http://127.0.0.1:{env['CDP_COLLECTOR_PORT']}" in first.stdout
        second = _cdp(env, "up")  # harmless when everything already runs
        assert second.returncode == 0, second.stdout + second.stderr

        status = _cdp(env, "status").stdout
        assert status.count(" up ") == 3, status
        for port in ports[1:]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert b"cdp_build_info" in r.read()
        pids = [int(p.read_text()) for p in (tmp_path / "run").rglob("*.pid")]
        assert len(pids) == 3
    finally:
        down = _cdp(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(port_open("127.0.0.1", p) for p in ports)
    assert not any(process_alive(pid) for pid in pids), "a process outlived `cdp down`"
    assert "down" in _cdp(env, "status").stdout
