"""Benchmarks: run as `python -m bench.NAME` from the repo root; results in docs/benchmarks.md."""
