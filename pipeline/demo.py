"""``make demo``: start the local stack, send a realistic stream, wait, and report what came out.

Everything read back goes through the stack's HTTP interfaces (the worker's ``/metrics`` and the
bearer-token profile API), never the chDB files: in local mode the worker process owns them.
The aggregate figures (RFM segments, channels, top customers) are computed from the profiles of
the simulated people, looked up one by one with ``GET /v1/profiles?<identifier>=…``; the profile
API has no cross-customer endpoint yet (the same figures are ClickHouse views: ``cdp.rfm``,
``cdp.channel_performance``).
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from pipeline.demo_report import (
    IdentityScore,
    fetch_profiles,
    fetch_timelines,
    render_report,
    score_identity,
)
from pipeline.loadgen.model import ModelConfig, Person, SimEvent, Simulation
from pipeline.loadgen.send import SendOptions, SendStats, send_events
from pipeline.loadgen.truth import TruthWriter
from pipeline.localstack import stack
from pipeline.settings import Settings

Echo = Callable[[str], None]
#: No progress in the worker for this long means something is wrong: stop and say where to look.
STALL_S = 60.0
#: People read back through the profile API. A lookup costs ~30 ms on the busy 2-core box, so the
#: report reads the heaviest customers (where the revenue is) and a random sample of the rest.
REPORT_HEAVIEST = 100
REPORT_SAMPLE = 500
QUALITY_SAMPLE = 200


class DemoError(RuntimeError):
    """The demo could not complete (the stack did not process what it accepted)."""


@dataclass
class StreamFacts:
    """What the sender sent, counted on the way (the truth the report compares against)."""

    owner: dict[str, str] = field(default_factory=dict)  # messageId → person
    kinds: Counter[str] = field(default_factory=Counter)

    def tee(self, events: Iterable[SimEvent]) -> Iterator[SimEvent]:
        for event in events:
            if event.duplicate:
                self.kinds["duplicates"] += 1
            else:
                self.owner[event.message_id] = event.person_id
            self.kinds["late"] += event.late
            self.kinds["bot"] += event.bot
            self.kinds["shared device"] += event.shared_device
            self.kinds["email-open pixels"] += event.channel == "pixel"
            yield event


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Prometheus samples of ``url`` as ``{'name{k="v"}': value}`` (sorted label order)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our URL
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


EVENTS_ROWS = 'cdp_sink_rows_total{table="events"}'
PROFILE_EVENTS = 'cdp_agent_events_total{agent="profile"}'
#: Resends identity dropped (pipeline/identity/dedup.py): accepted, never a row nor profiled.
DUPLICATES = "cdp_identity_duplicate_events_total"


def wait_processed(
    metrics_url: str,
    before: dict[str, float],
    accepted: int,
    *,
    deadline_s: float,
    echo: Echo,
    clock: Callable[[], float] = time.monotonic,
    poll_s: float = 0.5,
) -> dict[str, float]:
    """Poll the worker until every accepted event is a ClickHouse row and in a profile."""

    def done(now: dict[str, float]) -> int:
        # Both the events table and the profile stage must have seen every event that was not
        # dropped as a duplicate send.
        rows, profiled = _delta(now, before, EVENTS_ROWS), _delta(now, before, PROFILE_EVENTS)
        return int(min(rows, profiled) + _delta(now, before, DUPLICATES))

    started = clock()
    last_progress, last_done = started, -1
    with tqdm(total=accepted, desc="processing", unit="ev", dynamic_ncols=True) as bar:
        while True:
            now = scrape(metrics_url)
            current = done(now)
            bar.update(max(0, min(current, accepted) - bar.n))
            if current >= accepted:
                return now
            if current > last_done:
                last_progress, last_done = clock(), current
            waited = clock() - started
            if clock() - last_progress > STALL_S or waited > deadline_s:
                raise DemoError(
                    f"the worker processed {current:,} of {accepted:,} accepted events and "
                    f"{'stalled' if waited <= deadline_s else 'ran out of time'} after "
                    f"{waited:.0f}s; see the worker's log (.run/logs/worker.log) and `cdp status`. "
                    "The stack is still running; `make down` stops it."
                )
            time.sleep(poll_s)


def run_demo(
    settings: Settings,
    *,
    customers: int,
    events: int,
    seed: int,
    wait_s: float,
    echo: Echo = print,
) -> None:
    began = time.monotonic()
    stack.up(settings, echo=echo)
    worker_metrics = f"{settings.api_url}/metrics"
    before = scrape(worker_metrics)

    echo("")
    echo(f"Sending {events:,} events of {customers:,} simulated customers (seed {seed})")
    config = ModelConfig(
        customers=customers, events=events, seed=seed, end_ms=int(time.time() * 1000)
    )
    sim = Simulation(config)
    facts = StreamFacts()
    write_key = next(iter(settings.write_key_sources), "local-write-key")
    options = SendOptions(collector_url=settings.collector_url, write_key=write_key, concurrency=6)
    truth_path = settings.data_dir / "demo" / "truth.jsonl"
    stats = _send(sim, facts, options, truth_path)
    if stats.failed or not stats.accepted:
        raise DemoError(
            f"the collector accepted {stats.accepted:,} of {events:,} events "
            f"({stats.failed:,} failed; last error: {stats.last_error})"
        )

    sent_done = time.monotonic()
    after = wait_processed(worker_metrics, before, stats.accepted, deadline_s=wait_s, echo=echo)
    processed_s = time.monotonic() - sent_done

    token = settings.api_token.get_secret_value()
    _wait_scores_refresh(settings.api_url, token, sim.persons[0], echo)
    echo("Reading the profiles back through the profile API …")
    heaviest, sample = _report_people(sim, seed)
    profiles = asyncio.run(fetch_profiles(settings.api_url, token, heaviest + sample))
    sample = sample[:QUALITY_SAMPLE]
    timelines = asyncio.run(fetch_timelines(settings.api_url, token, profiles, sample))
    score: IdentityScore | None = score_identity(facts.owner, sample, profiles, timelines)

    for line in render_report(
        settings=settings,
        sim=sim,
        stats=stats,
        kinds=facts.kinds,
        metrics_delta={k: _delta(after, before, k) for k in after},
        profiles=profiles,
        identity=score,
        processed_s=processed_s,
        total_s=time.monotonic() - began,
        truth_path=truth_path,
    ):
        echo(line)


#: The scores (RFM, ABC, XYZ, LTV) are recomputed every minute (0005_customer_scores.sql).
SCORES_WAIT_S = 75.0


def _wait_scores_refresh(api_url: str, token: str, person: Person, echo: Echo) -> None:
    """Wait for the first score refresh after the data landed, so the RFM table is complete."""
    since = datetime.now(UTC) + timedelta(seconds=2)  # the last profile rows' flush
    echo("Waiting for the per-minute refresh of the RFM / ABC / LTV scores …")
    deadline = time.monotonic() + SCORES_WAIT_S
    while time.monotonic() < deadline:
        doc = asyncio.run(fetch_profiles(api_url, token, [person])).get(person.person_id)
        refreshed = ((doc or {}).get("scores") or {}).get("refreshed_at")
        if refreshed and datetime.fromisoformat(refreshed.replace("Z", "+00:00")) >= since:
            return
        time.sleep(2)
    echo("  no refresh seen yet; the report shows the scores as they are")


def _send(sim: Simulation, facts: StreamFacts, options: SendOptions, truth: Path) -> SendStats:
    with (
        tqdm(total=sim.config.events, desc="sending", unit="ev", dynamic_ncols=True) as bar,
        TruthWriter(truth) as writer,
    ):
        stream = writer.tee(facts.tee(sim.events()))
        stats = asyncio.run(send_events(stream, options, bar.update))
        writer.people(sim)
    return stats


def _report_people(sim: Simulation, seed: int) -> tuple[list[Person], list[Person]]:
    """(the heaviest people, a random sample of the others). Zipf rank is the person's index."""
    heaviest = sim.persons[:REPORT_HEAVIEST]
    rest = sim.persons[REPORT_HEAVIEST:]
    sample = random.Random(seed).sample(rest, min(REPORT_SAMPLE, len(rest)))
    return heaviest, sample
