"""What the benchmarks read about the processes they start: /proc figures and log tails."""

from __future__ import annotations

import os
from pathlib import Path


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
