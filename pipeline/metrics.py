"""Prometheus metrics, grouped in objects built from a registry (as faust's sensor does).

Each process builds its metrics from its own registry, so tests can use a fresh
``CollectorRegistry()`` and read values back without global state leaking between them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Info

from pipeline import __version__


@dataclass(frozen=True)
class BuildMetrics:
    info: Info

    @classmethod
    def create(cls, registry: CollectorRegistry, component: str) -> BuildMetrics:
        info = Info("cdp_build", "Build and runtime information.", registry=registry)
        info.info(
            {"version": __version__, "component": component, "python": platform.python_version()}
        )
        return cls(info)
