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
    """Msg1s in memory, within ``max_bytes``.

    The bytes held are kept as a running sum (``_held``) so that a rolling
    group's put is O(1): summing every hosted group on each put cost 1 ms
    per request with 10,000 groups hosted.  Memory is let go outside the
    cache too (a group released, a stale state dropped), so the sum runs
    high rather than low (low only by the few bytes a checkpoint's encoding
    re-sizes a state held); the exact walk runs when it crosses the bound,
    and resets it.
    """

    def __init__(self, table: HostedTable, store: MessageStore, metrics: Metrics, max_bytes: int,
                 load: Callable[[Hosted], Mapping[str, Any]] | None = None) -> None:
        self.table = table
        self.store = store
        self.metrics = metrics
        self.max_bytes = max_bytes
        self.load = load or self._stored
        self._held = 0

    def _stored(self, h: Hosted) -> Mapping[str, Any]:
        return self.store.get(Ref({REF_KEY: h.ref, "device": h.device}), cache=False)

    def get(self, h: Hosted) -> Mapping[str, Any]:
        """The group's Msg1, loaded from its checkpoint if it was evicted."""
        self.table.touch(h)
        if h.msg1 is None:
            h.msg1 = self.load(h)
            self._charge(h, h.size)
        return h.msg1

    def put(self, h: Hosted, msg1: Mapping[str, Any], ref: str, size: int) -> None:
        """A rolling group's new state (checkpointed under ``ref``, or journaled on it)."""
        held = h.size if h.msg1 is not None else 0
        h.msg1, h.ref, h.size = msg1, ref, size
        self._charge(h, size - held)

    def used(self) -> int:
        return sum(h.size for h in self.table.all() if h.msg1 is not None)

    def _charge(self, keep: Hosted, delta: int) -> None:
        self._held += delta
        if self._held > self.max_bytes:
            self.fit(keep)

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
        self._held = used
