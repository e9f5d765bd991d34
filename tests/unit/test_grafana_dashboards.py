"""The Grafana dashboards agree with the data sources, the metrics and the ClickHouse schema.

Grafana cannot run here, so the dashboards are checked where they can break silently: a panel on
a data source uid that is not provisioned, a PromQL query on a metric nobody exports (a renamed
metric leaves an empty graph, not an error), SQL on a table or view that does not exist or does
not compile. The SQL runs against a freshly migrated embedded ClickHouse database.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.settings import PROJECT_ROOT

GRAFANA = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
METRICS_SOURCE = PROJECT_ROOT / "pipeline" / "metrics.py"
# Series Prometheus itself adds to every scrape.
PROMETHEUS_BUILTINS = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_KEYWORDS = {
    "by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
# Suffixes prometheus_client exposes per metric type.
SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Histogram": ("_bucket", "_count", "_sum", "_created"),
    "Summary": ("_count", "_sum", "_created", ""),
    "Gauge": ("",),
    "Info": ("_info",),
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return out


def _targets(datasource_type: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}: {panel['title']}", target)
        for path in DASHBOARDS
        for panel in _panels(_load(path))
        for target in panel.get("targets", [])
        if target["datasource"]["type"] == datasource_type
    ]


def exported_metric_names(source: str) -> set[str]:
    """Every series name the metric definitions in ``source`` expose."""
    names: set[str] = set()
    for kind, name in re.findall(r"\b(Counter|Gauge|Histogram|Info|Summary)\(\s*\"(\w+)\"", source):
        names.update(name + suffix for suffix in SUFFIXES[kind])
    return names


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, labels, groupings, ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call is None and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def test_names_are_parsed_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(cdp_x_bucket{job="a", le!="1"}[5m])))'
        ' / on(instance) group_left max(up{job=~"cdp-.*"}) or vector(0)'
    )
    assert promql_metric_names(expr) == {"cdp_x_bucket", "up"}


def test_dashboards_exist_with_unique_uids_and_panel_ids() -> None:
    assert {p.name for p in DASHBOARDS} >= {"operations.json", "customers.json"}
    uids = [_load(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))
    for path in DASHBOARDS:
        ids = [panel["id"] for panel in _panels(_load(path))]
        assert len(ids) == len(set(ids)), path.name


def test_every_datasource_is_provisioned() -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    by_uid = {ds["uid"]: ds["type"] for ds in provisioned["datasources"]}
    for path in DASHBOARDS:
        for panel in _panels(_load(path)):
            refs = [panel.get("datasource")] + [
                t.get("datasource") for t in panel.get("targets", [])
            ]
            for ref in filter(None, refs):
                where = f"{path.name}: {panel['title']}"
                assert ref["uid"] in by_uid, f"{where}: data source {ref['uid']} not provisioned"
                assert ref["type"] == by_uid[ref["uid"]], where


def test_dashboards_folder_is_the_one_compose_mounts() -> None:
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_every_promql_metric_is_exported() -> None:
    exported = exported_metric_names(METRICS_SOURCE.read_text()) | PROMETHEUS_BUILTINS
    targets = _targets("prometheus")
    assert targets
    used: set[str] = set()
    for where, target in targets:
        names = promql_metric_names(target["expr"])
        assert names, f"{where}: no metric in {target['expr']!r}"
        assert names <= exported, f"{where}: unknown metrics {sorted(names - exported)}"
        used |= names
    # The operations dashboard covers the required names.
    for required in (
        "cdp_events_accepted_total",
        "cdp_events_rejected_total",
        "cdp_e2e_latency_seconds_bucket",
        "cdp_consumer_lag",
        "cdp_identity_merges_total",
        "cdp_sink_rows_total",
        "cdp_dead_letters_total",
    ):
        assert required in used, required


def test_every_alert_metric_is_exported() -> None:
    exported = exported_metric_names(METRICS_SOURCE.read_text()) | PROMETHEUS_BUILTINS
    rules = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = promql_metric_names(rule["expr"])
            assert names <= exported, f"{rule['alert']}: unknown metrics {names - exported}"


# Grafana's ClickHouse macros, replaced by what they expand to over a fixed range.
MACROS = [
    (r"\$__timeFilter\(([^)]+)\)", r"(\1 >= toDateTime64('2020-01-01', 3) AND \1 <= now64(3))"),
    (r"\$__timeInterval\(([^)]+)\)", r"toStartOfInterval(\1, INTERVAL 3600 second)"),
]


def _runnable(sql: str, database: str) -> str:
    for pattern, replacement in MACROS:
        sql = re.sub(pattern, replacement, sql)
    assert "$" not in sql, f"unexpanded macro or variable in {sql!r}"
    # The data source's defaultDatabase names the database; here the test database does.
    return re.sub(r"\b(FROM|JOIN)\s+(?![\w]+\.)(\w+)", rf"\1 {database}.\2", sql)


def test_clickhouse_sql_runs_on_the_schema(clickhouse: tuple[Any, str]) -> None:
    from pipeline.storage.migrate import migrate

    client, database = clickhouse
    migrate(client, database)
    targets = _targets("grafana-clickhouse-datasource")
    assert targets
    for where, target in targets:
        assert target.get("editorType") == "sql", where
        try:
            client.query(_runnable(target["rawSql"], database))
        except Exception as exc:  # the engine's message names the broken part
            pytest.fail(f"{where}: {exc}")
