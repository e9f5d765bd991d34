"""``cdp loadgen`` in one call: simulate, record the truth, send, show progress."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.loadgen.model import ModelConfig, Simulation
from pipeline.loadgen.send import SendOptions, SendStats, send_events
from pipeline.loadgen.truth import TruthWriter


@dataclass(frozen=True)
class LoadgenResult:
    stats: SendStats
    simulation: Simulation
    truth_path: Path | None


def run_loadgen(
    config: ModelConfig,
    options: SendOptions,
    truth_path: Path | None = None,
    *,
    progress: bool = True,
    description: str = "sending",
) -> LoadgenResult:
    """Send ``config.events`` simulated messages (fewer if ``options.duration_s`` runs out)."""
    sim = Simulation(config)
    total = None if options.duration_s is not None and options.rate <= 0 else config.events
    with tqdm(
        total=total, desc=description, unit="ev", disable=not progress, dynamic_ncols=True
    ) as bar:
        if truth_path is None:
            stats = asyncio.run(send_events(sim.events(), options, bar.update))
        else:
            with TruthWriter(truth_path) as truth:
                stats = asyncio.run(send_events(truth.tee(sim.events()), options, bar.update))
                truth.people(sim)
    return LoadgenResult(stats, sim, truth_path)
