"""The sink's flush order: what the profile API reads goes to ClickHouse first."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from pipeline.metrics import WorkerMetrics
from pipeline.settings import Settings
from pipeline.sink.wiring import build_sink_service


def test_api_tables_flush_before_the_events() -> None:
    settings = Settings()  # type: ignore[call-arg]
    service = build_sink_service(
        settings, client=None, metrics=WorkerMetrics.create(CollectorRegistry())
    )
    order = [sink.table for sink in service._sinks]
    assert sorted(order) == sorted(
        ["identities", "customer_merges", "profiles", "events", "identity_refusals"]
    )
    # A lookup by email reads identity_lookup, merge_lookup and profile_lookup (kept by
    # materialized views on these three): all of them before the largest insert.
    api_tables = {"identities", "customer_merges", "profiles"}
    assert set(order[:3]) == api_tables
    assert order.index("events") > max(order.index(t) for t in api_tables)
