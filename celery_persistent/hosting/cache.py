"""The in-memory Msg1 of each hosted group, bounded in bytes.

A persistent worker exists to keep Msg1 in memory; with many groups the sum
is bounded, and the least recently used Msg1s are dropped first and loaded
again when their group runs (a rolling group's checkpoint with its journal
replayed: ``GroupState.load``).  The Msg1 in use is never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ..metrics import Metrics
from ..store import REF_KEY, MessageStore, Ref
from .hosted import Hosted, HostedTable

logger = logging.getLogger(__name__)


class Msg1Cache:
    def __init__(self, table: HostedTable, store: MessageStore, metrics: Metrics, max_bytes: int,
                 load: Callable[[Hosted], Mapping[str, Any]] | None = None) -> None:
        self.table = table
        self.store = store
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.load = load or self._stored

    def _stored(self, h: Hosted) -> Mapping[str, Any]:
        return self.store.get(Ref({REF_KEY: h.ref, "device": h.device}), cache=False)

    def get(self, h: Hosted) -> Mapping[str, Any]:
        """The group's Msg1, loaded from its checkpoint if it was evicted."""
        self.table.touch(h)
        if h.msg1 is None:
            h.msg1 = self.load(h)
            self.fit(keep=h)
        return h.msg1

    def put(self, h: Hosted, msg1: Mapping[str, Any], ref: str, size: int) -> None:
        """A rolling group's new state (checkpointed under ``ref``, or journaled on it)."""
        h.msg1, h.ref, h.size = msg1, ref, size
        self.fit(keep=h)

    def used(self) -> int:
        return sum(h.size for h in self.table.all() if h.msg1 is not None)

    def fit(self, keep: Hosted) -> None:
        """Evict least recently used Msg1s until the cache is within its bound."""
        hosted = self.table.all()
        used = sum(h.size for h in hosted if h.msg1 is not None)
        for h in hosted:
            if used <= self.max_bytes:
                break
            if h is keep or h.msg1 is None:
                continue
            h.msg1 = None
            used -= h.size
            self.metrics.incr("evictions")
            logger.info("evicted Msg1 of group %s (%d bytes) from the cache", h.group, h.size)
