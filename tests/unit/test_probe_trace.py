"""The bench's probe trace: sightings of a probe's records turned into hops."""

from __future__ import annotations

import pytest

from bench.probe_trace import HOPS, ProbeTrace, summarize


def test_a_probe_seen_at_every_point_splits_into_the_hops_in_path_order() -> None:
    trace = ProbeTrace("ab12cd")
    trace.acked[7] = 100.0
    # The resolved record holds the raw event (message id and email); the profile row the email.
    trace.see(trace.resolved, b'..."probe-ab12cd-7@e2e.bench"...', created_ms=100_100, now=100.35)
    row = b'{"email":["probe-ab12cd-7@e2e.bench"]}'
    trace.see(trace.profile, row, created_ms=100_600, now=100.8)
    trace.found[7] = 101.0

    [hops] = trace.hops()

    assert len(hops) == len(HOPS)
    assert hops == pytest.approx((0.1, 0.25, 0.25, 0.2, 0.2))
    assert sum(hops) == pytest.approx(1.0)  # the hops add up to the probe's latency


def test_only_the_first_sighting_counts_and_other_probes_do_not_match() -> None:
    trace = ProbeTrace("ab12cd")
    trace.see(trace.profile, b"probe-ab12cd-7@e2e.bench", created_ms=1_000, now=1.5)
    # The same customer's row sent again later, another run's probe, a longer number.
    trace.see(trace.profile, b"probe-ab12cd-7@e2e.bench", created_ms=9_000, now=9.5)
    trace.see(trace.profile, b"probe-ffffff-7@e2e.bench probe-ab12cd-77@e2e.bench", 2_000, 2.5)

    assert set(trace.profile) == {7, 77}
    assert trace.profile[7].created == 1.0
    assert trace.profile[7].seen == 1.5


def test_a_probe_missing_any_point_is_not_timed() -> None:
    trace = ProbeTrace("t")
    for n in (1, 2, 3):
        trace.acked[n] = 0.0
    trace.see(trace.resolved, b"probe-t-1@ probe-t-2@ probe-t-3@", 100, 0.2)
    trace.see(trace.profile, b"probe-t-1@ probe-t-3@", 300, 0.4)
    trace.found.update({1: 0.5, 2: 0.5})  # 2: no profile row seen; 3: never found

    assert len(trace.hops()) == 1


def test_summary_gives_each_hops_quantiles_in_ms() -> None:
    hops = [(0.1 * i, 0.2, 0.3, 0.4, 0.5) for i in range(1, 101)]

    out = summarize(hops)

    assert out["probes_traced"] == 100
    assert out["identity"]["p50_ms"] == pytest.approx(5100)
    assert out["identity"]["p99_ms"] == pytest.approx(10000)
    assert out["sink_api"]["mean_ms"] == pytest.approx(500)
    assert summarize([]) == {"probes_traced": 0}
