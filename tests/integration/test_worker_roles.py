"""The worker split by ``CDP_WORKER_ROLES`` into two processes on a real broker and the embedded
ClickHouse: identity and profile in one, the sink and the profile API in the other.

What it shows: events sent through the collector reach the profile API of the other process; the
stream process serves no API (it has no ClickHouse) and reports its roles; each process commits
only its own consumer group.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.bench_e2e import _PROBE_CONTEXT, _WRITE_HEADERS, API_TOKEN, local_stack
from pipeline.demo import EVENTS_ROWS, PROFILE_EVENTS, scrape
from tests.integration.e2e_support import eventually

pytestmark = pytest.mark.integration


def _identify(n: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "messageId": f"roles-{n}",
        "anonymousId": f"roles-anon-{n}",
        "traits": {"email": f"Roles.{n}@Example.com"},
        "timestamp": "2026-11-01T10:00:00.000Z",
        "context": _PROBE_CONTEXT,
    }


@pytest.mark.timeout(240)
def test_stream_and_edge_roles_in_two_processes(tmp_path: Path) -> None:
    with local_stack(tmp_path, split=True) as stack:
        assert stack.stream is not None and stack.worker is not None
        stream_health = requests.get(stack.stream.url + "/healthz", timeout=5).json()
        edge_health = requests.get(stack.worker.url + "/healthz", timeout=5).json()
        assert stream_health["roles"] == "identity,profile"
        assert edge_health["roles"] == "sink,api"
        assert "faust_started" not in edge_health  # no faust app in the edge process

        batch = {"batch": [_identify(n) for n in range(20)]}
        sent = requests.post(
            stack.settings.collector_url + "/v1/batch",
            json=batch,
            headers=_WRITE_HEADERS,
            timeout=10,
        )
        assert sent.status_code == 200, sent.text

        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        deadline = time.monotonic() + 120
        while True:
            found = requests.get(
                stack.settings.api_url + "/v1/profiles",
                params={"email": "roles.19@example.com"},
                headers=auth,
                timeout=10,
            )
            if found.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert found.status_code == 200, found.text
        assert found.json()["identities"]["email"] == ["roles.19@example.com"]

        stream_metrics = scrape(stack.stream.url + "/metrics")
        assert stream_metrics.get(PROFILE_EVENTS, 0) == 20
        # The events timeline is inserted on its own clock (CDP_SINK_EVENTS_FLUSH_S), after
        # the profile may already be visible.
        edge_metrics = eventually(
            lambda: m if (m := scrape(stack.worker.url + "/metrics")).get(EVENTS_ROWS) else None,
            30,
            "the event rows",
        )
        assert edge_metrics[EVENTS_ROWS] == 20
        assert edge_metrics.get(PROFILE_EVENTS, 0) == 0  # the profile stage runs elsewhere
        for metrics in (stream_metrics, edge_metrics):  # each process samples its own loop
            assert metrics["cdp_event_loop_lag_seconds_count"] >= 1
        for stage in ("identity", "profile"):  # how old events were when each stage had them
            assert stream_metrics[f'cdp_stage_event_age_seconds_count{{stage="{stage}"}}'] >= 1
            assert stream_metrics[f'cdp_stage_event_age_seconds_sum{{stage="{stage}"}}'] < 60
        # No profile API in the stream process: only /metrics and /healthz.
        missing = requests.get(stack.stream.url + "/v1/profiles/x", headers=auth, timeout=5)
        assert missing.status_code == 404
