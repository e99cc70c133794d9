"""The reaper: groups whose lease ran out are recovered, never left stuck.

Every worker with the plugin reaps on its lease beat, so recovery does not
depend on any one process surviving.  A leader that never started is
published again; one that died while running is answered ``LeaderDied``
with its waiters, and the group is handed on; a dead persistent worker's
group is placed on another worker (``Placer.recover``).
"""

from __future__ import annotations

import logging

from .answers import Answerer
from .dispatch import Dispatcher
from .errors import LeaderDied
from .metrics import Metrics
from .placement import Placer
from .protocol import ExpiredKind
from .records import RequestRecord
from .registry import Registry

logger = logging.getLogger(__name__)


class Reaper:
    def __init__(self, registry: Registry, metrics: Metrics, answer: Answerer, dispatcher: Dispatcher,
                 placer: Placer) -> None:
        self.answer = answer
        self.registry = registry
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.placer = placer

    def reap(self) -> int:
        """Recover groups whose lease expired; return how many."""
        recovered = 0
        for group, token in self.registry.expired():
            expired = self.registry.expire(group, token)
            if expired.kind is ExpiredKind.ORPHAN:
                recovered += 1
                self.metrics.incr("recoveries")
                self.placer.recover(group, expired.token)
                continue
            if expired.request is None:
                continue
            recovered += 1
            self.metrics.incr("recoveries")
            if expired.kind is ExpiredKind.REQUEUE:
                logger.warning("re-publishing request %s of group %s: never started in time",
                               expired.request.id, group)
                self.dispatcher.publish_next(group, expired.request, expired.token)
            elif expired.kind is ExpiredKind.DEAD:
                self._bury(group, expired.request, expired.token)
        return recovered

    def _bury(self, group: str, leader: RequestRecord, token: str) -> None:
        error = LeaderDied(
            f"the execution of group {group} (request {leader.id}) was lost: "
            "its lease expired without renewal",
            group,
            leader.id,
        )
        logger.error("%s", error)
        finished = self.registry.finish(group, leader.key, token)
        if finished.stale:
            return
        if not self.answer.is_answered(leader.id):
            self.answer([leader.waiter()], error)
        self.answer(finished.waiters, error)
        if finished.next_request is not None:
            self.dispatcher.publish_next(group, finished.next_request, finished.next_token)
