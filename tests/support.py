"""Test support: real `celery worker` subprocesses of the test apps, and clusters of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery_persistent.testing import WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parent.parent


class Worker(WorkerProcess):
    """A real `celery worker` subprocess of a test app."""

    def __init__(self, app: str = "tests.apps.basic", pool: str = "solo", concurrency: int = 1,
                 name: str | None = None, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, logdir: Path | None = None) -> None:
        super().__init__(app, pool=pool, concurrency=concurrency, name=name, node="cptest", options=extra or (),
                         env=env, logdir=logdir, cwd=ROOT)

    def wait_ready(self, timeout: float = 30.0) -> Worker:
        try:
            super().wait_ready(timeout)
        except RuntimeError as exc:
            raise AssertionError(f"worker {self.name} exited early: {exc}") from exc
        return self


class Cluster:
    """Real workers of one test app: persistent (solo, --persistent) and ordinary."""

    def __init__(self, app_module: str, persistent: Any, logdir: Path) -> None:
        self.app_module = app_module
        self.persistent = persistent
        self.logdir = logdir
        self.workers: list[Worker] = []

    def persistent_worker(self, *extra: str, env: dict[str, str] | None = None) -> Worker:
        # -Q names a queue nobody sends to: the worker consumes only group queues.
        queue = f"{os.environ.get('CP_QUEUE', 'cptest')}-unused"
        return self._add(Worker(app=self.app_module, pool="solo", logdir=self.logdir,
                                extra=["--persistent", "-Q", queue, *extra], env=env))

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
        self.discard_groups(names)

    def discard_groups(self, hosts: set[str]) -> None:
        """End the groups these workers left: parked ones (a rolling group whose last worker stopped is
        parked, not reset) and those of killed workers, so that the next test's workers never take them up."""
        registry = self.persistent.registry
        names = {_text(g) for key in (registry.keys.parked(), registry.keys.hosts())
                 for g in registry.client.zrange(key, 0, -1)}
        for group in names:
            owner = registry.owner(group)
            if owner.get("state") == "parked" or owner.get("host") in hosts:
                registry.unhost(group, owner.get("token", ""), force=True, drop=owner.get("ref", ""))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
