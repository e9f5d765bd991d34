"""Metrics of the profile API, built from the process registry (one object per application)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

# Point lookups take milliseconds; the goal is p99 <= 20 ms, so the buckets straddle it.
LOOKUP_BUCKETS_S: Final = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


@dataclass(frozen=True)
class ApiMetrics:
    requests: Counter
    request_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ApiMetrics:
        return cls(
            requests=Counter(
                "cdp_api_requests",
                "Profile API requests, by route template and status.",
                ["route", "status"],
                registry=registry,
            ),
            request_seconds=Histogram(
                "cdp_api_request_seconds",
                "Profile API request duration, by route template.",
                ["route"],
                buckets=LOOKUP_BUCKETS_S,
                registry=registry,
            ),
        )
