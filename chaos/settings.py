"""The numbers every part of the suite agrees on, and the environment that carries them to workers.

The app module (``chaos.app``) is imported by worker subprocesses, so the
servers it talks to are passed by environment variables set before import.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository: cwd of every worker, so ``chaos.app`` is importable there."""

LEASE_TTL = 3.0
"""``persistent_lease_ttl`` of the chaos app: short, so recovery fits in a scenario."""

ANSWER_BOUND = LEASE_TTL + 5.0
"""Target: every caller answered within this many seconds of the fault's end."""

GRACE = 30.0
"""A caller with no answer this long after the fault's end (or its send, if later) is lost."""

SMOKE_GRACE = 15.0
"""The same in the smoke subset, which must stay short even when callers are lost."""

ENV_BROKER = "CHAOS_BROKER_URL"
ENV_REDIS = "CHAOS_REDIS_URL"
ENV_EVIDENCE = "CHAOS_EVIDENCE_URL"
ENV_PREFIX = "CHAOS_PREFIX"

PREFIX = "chaos"
"""Key prefix of the registry, name of the default queue, prefix of the evidence keys."""

KEEP_APPLIED = 1000
"""A rolling counter keeps the ids of its last this-many updates (more than any run sends)."""
