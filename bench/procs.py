"""What the benchmarks share about processes: /proc figures and log tails of the ones they
start, running a benchmark in a child process of its own, and printing its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.settings import PROJECT_ROOT


def proc_status(pid: int) -> dict[str, int]:
    """kB figures of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile, ...); empty if gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far (NaN if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_tail(path: Path, lines: int = 30) -> str:
    """The first error of the log (its cause, when the end is a cascade) and its last lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    first = next((i for i, line in enumerate(text) if "ERROR" in line or "Traceback" in line), None)
    head = [] if first is None or first >= len(text) - lines else [*text[first : first + 15], "…"]
    return "\n".join([*head, *text[-lines:]])


def run_child(module: str, *args: str) -> dict[str, Any]:
    """``python -m <module> <args> --json`` in a child process; its last stdout line, parsed.

    For benchmarks that ``make bench`` runs in its one process but that must not share it: chDB
    opens one data path per process, and an in-process faust app can leave a consumer thread
    reconnecting to its stopped broker for the rest of the run (seen after ``bench_pipeline``).
    """
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def print_figures(result: dict[str, Any], prefix: str = "", width: int = 42) -> None:
    """A benchmark's (nested) figures, one ``name  value`` line each; nested names dotted."""
    for key, value in result.items():
        if isinstance(value, dict):
            print_figures(value, f"{prefix}{key}.", width)
        elif isinstance(value, float):
            text = f"{value:,.1f}" if abs(value) >= 10 else f"{value:.4g}"
            print(f"{prefix + key:>{width}}  {text}")
        else:
            print(f"{prefix + key:>{width}}  {value}")
