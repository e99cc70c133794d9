"""Test support: real `celery worker` subprocesses and deadline-bound waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Worker:
    """A real `celery worker` subprocess of a test app."""

    def __init__(self, app: str = "tests.apps.basic", pool: str = "solo", concurrency: int = 1,
                 name: str | None = None, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, logdir: Path | None = None) -> None:
        self.name = name or f"w{uuid.uuid4().hex[:6]}"
        self.pool = pool
        self.concurrency = concurrency
        self.hostname = f"{self.name}@cptest"
        self.logfile = (logdir or Path("/tmp")) / f"celery-{self.name}.log"
        cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool, "-c", str(concurrency),
               "-n", self.hostname, "--without-gossip", "--without-mingle", "-l", "info",
               *(extra or [])]
        self._log = open(self.logfile, "w")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.logfile.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> Worker:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited early:\n{self.log()[-3000:]}")
            return " ready." in self.log()

        wait_until(ready, timeout, 0.1, f"worker {self.name} to be ready")
        return self

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not go in time."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def port_open(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Cluster:
    """Real workers of one test app: persistent (solo, --persistent) and ordinary."""

    def __init__(self, app_module: str, persistent: Any, logdir: Path) -> None:
        self.app_module = app_module
        self.persistent = persistent
        self.logdir = logdir
        self.workers: list[Worker] = []

    def persistent_worker(self, *extra: str) -> Worker:
        # -Q names a queue nobody sends to: the worker consumes only group queues.
        queue = f"{os.environ.get('CP_QUEUE', 'cptest')}-unused"
        return self._add(Worker(app=self.app_module, pool="solo", logdir=self.logdir,
                                extra=["--persistent", "-Q", queue, *extra]))

    def ordinary_worker(self, pool: str = "prefork", concurrency: int = 2) -> Worker:
        return self._add(Worker(app=self.app_module, pool=pool, concurrency=concurrency, logdir=self.logdir))

    def _add(self, worker: Worker) -> Worker:
        self.workers.append(worker)
        return worker

    def ready(self) -> None:
        for worker in self.workers:
            worker.wait_ready()
        hosts = {w.hostname for w in self.workers if "--persistent" in w.proc.args}
        wait_until(lambda: hosts <= {w["hostname"] for w in self.persistent.workers()},
                   message="persistent workers to report in")

    def by_hostname(self, hostname: str) -> Worker:
        return next(w for w in self.workers if w.hostname == hostname)

    def stop(self) -> None:
        names = {w.hostname for w in self.workers}
        for worker in self.workers:
            worker.stop()
        # A killed worker stays "live" until its heartbeat lapses; wait so that
        # the next test never places a group on it.
        wait_until(lambda: not names & {w["hostname"] for w in self.persistent.workers()},
                   timeout=30, message="stopped workers to leave the registry")
