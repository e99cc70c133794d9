"""Benchmarks of celery_persistent against its baselines: ``python -m bench`` (see docs/benchmarks.md)."""
