"""The Prometheus configuration, alert rules and their unit tests, checked by promtool.

promtool comes with the Debian package ``prometheus`` (``.ci/run`` installs it). Without it the
tests skip, saying so, rather than pass silently.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.settings import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (apt-get install prometheus; .ci/run does)"
)
REQUIRED_ALERTS = {
    "CdpWorkerDown",
    "CdpCollectorDown",
    "CdpCollector5xx",
    "CdpConsumerLagGrowing",
    "CdpDeadLetterRateHigh",
    "CdpSinkFailing",
    "CdpE2eLatencyHigh",
}


def _promtool(*args: str | Path) -> str:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"promtool {args[0]} {args[1]} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


@needs_promtool
def test_config_is_valid() -> None:
    _promtool("check", "config", PROMETHEUS / "prometheus.yml")


@needs_promtool
def test_rules_are_valid() -> None:
    _promtool("check", "rules", PROMETHEUS / "alerts.yml")


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests, "no promtool unit tests under deploy/prometheus/tests"
    _promtool("test", "rules", *tests)


def _alerts() -> dict[str, dict[str, object]]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_the_required_alerts_exist_with_severity_and_summary() -> None:
    alerts = _alerts()
    assert set(alerts) >= REQUIRED_ALERTS
    for name, rule in alerts.items():
        labels = rule.get("labels")
        annotations = rule.get("annotations")
        assert isinstance(labels, dict) and labels.get("severity") in {"warning", "critical"}, name
        assert isinstance(annotations, dict) and annotations.get("summary"), name


def test_at_least_two_alerts_have_unit_tests() -> None:
    tested = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):  # a test that the alert fires, not only that it not
                    tested.add(check["alertname"])
    assert len(tested & set(_alerts())) >= 2, tested
