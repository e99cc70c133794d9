"""Real `celery worker` processes for tests and benchmarks of apps using the plugin.

Celery's own ``celery.contrib.testing.worker`` runs a worker in a thread of
the test process; a persistent worker needs its own process (solo pool, its
event loop, SIGKILL and SIGTERM of the whole worker), so these helpers start
the real ``celery worker`` command as a subprocess in a session of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class WaitTimeout(AssertionError, TimeoutError):
    """A condition did not hold by its deadline (fails a test like an assertion)."""


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy and return it; raise WaitTimeout at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class WorkerProcess:
    """``celery -A <app> worker`` as a subprocess, with its output in a log file."""

    def __init__(self, app: str, *, pool: str = "solo", concurrency: int = 1, name: str | None = None,
                 node: str = "test", options: Sequence[str] = (), env: dict[str, str] | None = None,
                 logdir: Path | None = None, loglevel: str = "info", cwd: Path | None = None) -> None:
        self.name = name or f"w{uuid.uuid4().hex[:6]}"
        self.pool = pool
        self.concurrency = concurrency
        self.hostname = f"{self.name}@{node}"
        self.logfile = (logdir or Path("/tmp")) / f"celery-{self.name}.log"
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool, "-c", str(concurrency),
               "-n", self.hostname, "--without-gossip", "--without-mingle", "-l", loglevel, *options]
        self._log = open(self.logfile, "w")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def alive(self) -> bool:
        """True while running; raises with the log's tail once it has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker {self.hostname} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
        return True

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        """Wait for the worker's "ready." line (logged at level info)."""
        wait_until(lambda: self.alive() and " ready." in self.log(), timeout, 0.1, f"worker {self.name} to be ready")
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not go in time."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
