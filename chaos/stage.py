"""The servers and workers of one scenario run, and their certain teardown.

A ``Stage`` starts the chaos Redis (registry, result backend, and broker
unless RabbitMQ is asked for), a separate evidence Redis, optionally a
RabbitMQ node and a network namespace, then imports ``chaos.app`` against
them.  ``close`` ends everything it started, in reverse order; it is safe to
call twice and is also registered with ``atexit``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from celery_persistent.faults import ENV as CRASH_ENV
from celery_persistent.testing import wait_until
from chaos.ledger import Ledger
from chaos.netns import Partition
from chaos.rabbit_node import RabbitNode
from chaos.redis_server import RedisServer
from chaos.settings import ENV_BROKER, ENV_EVIDENCE, ENV_PREFIX, ENV_REDIS, PREFIX
from chaos.workers import Worker

logger = logging.getLogger("chaos")

UNUSED_QUEUE = f"{PREFIX}-unused"
"""A persistent worker given only this queue consumes group queues and nothing else."""


class Stage:
    def __init__(self, workdir: Path, *, broker: str = "redis", appendonly: bool = False,
                 partition: bool = False) -> None:
        self.workdir = workdir
        self.ledger = Ledger(workdir / "ledger.jsonl")
        self.broker_kind = broker
        self.appendonly = appendonly
        self.want_partition = partition
        self.partition: Partition | None = None
        self.rabbit: RabbitNode | None = None
        self.workers: list[Worker] = []
        self._closers: list[tuple[str, Any]] = []
        self._closed = False
        self.app_module: ModuleType | None = None

    # -- servers ----------------------------------------------------------------------

    def open(self) -> Stage:
        atexit.register(self.close)
        redis_binds, evidence_binds = ["127.0.0.1"], ["127.0.0.1"]
        if self.want_partition:
            self.partition = Partition(self.ledger, os.getpid() % 100000)
            self._closers.append(("netns", self.partition.destroy))
            self.partition.create()
            redis_binds.append(self.partition.data.host_ip)
            evidence_binds.append(self.partition.evidence.host_ip)
        self.redis = RedisServer(self.workdir, self.ledger, "registry", appendonly=self.appendonly, binds=redis_binds)
        self._closers.append(("redis", self.redis.stop))
        self.redis.start()
        self.evidence = RedisServer(self.workdir, self.ledger, "evidence", appendonly=False, binds=evidence_binds)
        self._closers.append(("evidence redis", self.evidence.stop))
        self.evidence.start()
        broker = self.redis.url()
        if self.broker_kind == "rabbit":
            self.rabbit = RabbitNode(self.workdir, self.ledger)
            self._closers.append(("rabbit", self.rabbit.stop))
            self.rabbit.start()
            broker = self.rabbit.url
        os.environ.update({ENV_REDIS: self.redis.url(), ENV_BROKER: broker, ENV_EVIDENCE: self.evidence.url(),
                           ENV_PREFIX: PREFIX})
        self.app_module = importlib.import_module("chaos.app")
        return self

    @property
    def persistent(self) -> Any:
        assert self.app_module is not None
        return self.app_module.persistent

    # -- workers ----------------------------------------------------------------------

    def worker(self, name: str, *, persistent: bool = False, ordinary_queue: bool = True, crash: str = "",
               inside: bool = False) -> Worker:
        """Start a worker; ``persistent`` hosts groups, ``crash`` arms a crash point, ``inside`` the namespace."""
        env: dict[str, str] = {CRASH_ENV: crash} if crash else {}
        prefix: list[str] = []
        if inside:
            assert self.partition is not None, "a worker inside needs a stage with partition=True"
            data, evidence = self.partition.data.host_ip, self.partition.evidence.host_ip
            env.update({ENV_REDIS: self.redis.url(data), ENV_BROKER: self.redis.url(data),
                        ENV_EVIDENCE: self.evidence.url(evidence)})
            prefix = self.partition.prefix
        queues = [] if ordinary_queue else [UNUSED_QUEUE]
        worker = Worker(name, self.ledger, self.workdir, env, persistent=persistent, queues=queues, prefix=prefix)
        self.workers.append(worker)
        return worker

    def ready(self, *workers: Worker, timeout: float = 90.0) -> None:
        """Each worker is ready; each persistent one has reported in to the registry."""
        for worker in workers:
            worker.wait_ready(timeout)
        hosts = {w.hostname for w in workers if w.persistent}
        wait_until(lambda: hosts <= {w["hostname"] for w in self.persistent.workers()}, timeout, 0.1,
                   "persistent workers to report in")

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in reversed(self.workers):
            with contextlib.suppress(Exception):
                worker.stop()
        for what, close in reversed(self._closers):
            try:
                close()
            except Exception:
                logger.exception("could not close %s", what)
