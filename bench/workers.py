"""Real `celery worker` subprocesses of the bench app, and the Redis they share."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from celery_persistent.testing import WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parent.parent


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Worker(WorkerProcess):
    """A `celery -A bench.app worker` subprocess (default log level: warning, as Celery's)."""

    def __init__(self, logdir: Path, queues: list[str], pool: str = "solo", concurrency: int = 1,
                 persistent: bool = False, name: str | None = None, env: dict[str, str] | None = None) -> None:
        options = ["-Q", ",".join(queues), "--without-heartbeat", *(["--persistent"] if persistent else [])]
        super().__init__("bench.app", pool=pool, concurrency=concurrency, name=name or f"b{uuid.uuid4().hex[:6]}",
                         node="bench", options=options, env=env, logdir=logdir, loglevel="warning", cwd=ROOT)
        self.persistent = persistent

    def ready(self) -> bool:
        """Answers a remote-control ping (and, with --persistent, heartbeats in the registry)."""
        from bench.app import app, persistent

        self.alive()
        if self.persistent:
            return self.hostname in dict(persistent.registry.live_workers())
        return bool(app.control.ping(destination=[self.hostname], timeout=0.3))


class Fleet:
    """The workers of one scenario: started together, stopped (or killed) together."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.workers: list[Worker] = []

    def start(self, *specs: dict[str, Any], timeout: float = 60.0) -> list[Worker]:
        """Start one worker per spec (keyword arguments of Worker), wait until all are ready."""
        started = [Worker(self.logdir, **spec) for spec in specs]
        self.workers.extend(started)
        wait_until(lambda: all(w.ready() for w in started), timeout, 0.2, "workers to be ready")
        return started

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def kill(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill() if exc[0] is not None else self.stop()


def wipe(prefix: str) -> int:
    """Delete every key of this run (registry, queues, bindings, counters): SCAN, never KEYS."""
    from bench.app import counters

    client = counters()
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted
