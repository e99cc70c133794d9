"""Helpers of the end-to-end tests: a cluster of real workers that hosts groups, and what they share."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support import Cluster, Worker

LEASE_TTL = float(os.environ.get("CP_LEASE_TTL", "3"))


def hosted(persistent: Any, group: str) -> dict[str, Any] | None:
    """The row of ``persistent.groups()`` for a hosted group, or None."""
    return next((g for g in persistent.groups() if g["group"] == group), None)


class Site(Cluster):
    """A Cluster of one test app (``tests.apps.basic`` or ``tests.apps.rabbit``), with the set-up the tests repeat."""

    def __init__(self, module: ModuleType, logdir: Path) -> None:
        super().__init__(module.__name__, module.persistent, logdir)
        self.module = module

    def start(self, persistent: int = 1, ordinary: int = 0, options: Sequence[str] = ()) -> list[Worker]:
        """Start ``persistent`` persistent workers (each given ``options``), then ``ordinary`` ordinary ones.

        Returns once every worker is ready and every persistent worker has
        reported in; the result is the persistent workers, in start order.
        """
        started = [self.persistent_worker(*options) for _ in range(persistent)]
        for _ in range(ordinary):
            self.ordinary_worker()
        self.ready()
        return started

    def host(self, msg1: Any, opts: Mapping[str, Any] | None = None, *, persistent: int = 1, ordinary: int = 0,
             options: Sequence[str] = ()) -> Any:
        """``start(...)`` the workers, then place Msg1's group on a persistent worker; returns the WorkerHandle."""
        self.start(persistent, ordinary, options)
        if opts is None:
            return self.persistent.start_worker(msg1)
        return self.persistent.start_worker(msg1, opts)
