"""Micro-benchmarks for the pure pipeline components (run as ``python -m bench.<name>``)."""
