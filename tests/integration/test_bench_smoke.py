"""The benchmark harness works end to end in its quick mode (nothing asserted about speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.settings import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timeout(1200)  # every suite starts its own broker, worker or chDB child
def test_quick_benchmarks_write_a_results_table(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = out.read_text()
    sections = (
        "Identity engine",
        "Profile aggregation",
        "Collector",
        "Worker",
        "Physical ceilings",
        "End to end",
        "Identity memory",
        "Profile API",
        "Ratios",
    )
    for section in sections:
        assert f"## {section}" in text
    assert "Failed:" not in text
    assert "Not computed" not in text  # the ratios found our throughput and the ceilings
