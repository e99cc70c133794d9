"""The reaper: groups whose lease ran out, and answers whose writer died, are recovered.

Every worker with the plugin reaps on its lease beat, so recovery does not
depend on any one process surviving.  An expired lease means:

- a leader that never started: it is published again, unless its caller
  already has a final state (a prefork child lost before it started is
  answered ``WorkerLostError`` by Celery): then that is the request's one
  outcome, and its waiters get the same;
- a leader that died while running: its waiters get the outcome it stored
  before dying, or ``LeaderDied``, and the group is handed on;
- a dead persistent worker's group: placement finds it another worker (a
  rolling group with none is parked, with its state and requests).

A delivery past its deadline (see ``finish.lua``) means the process died
after the execution's outcome was recorded but before every caller had it:
the reaper answers the rest with that outcome and publishes the next request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis

from .answers import Answerer
from .dispatch import Dispatcher
from .errors import LeaderDied
from .metrics import Metrics
from .placement import Placer
from .protocol import Delivery, ExpiredKind
from .records import RequestRecord
from .registry import Registry
from .store import REF_KEY, MessageStore, Ref

logger = logging.getLogger(__name__)


class Reaper:
    def __init__(self, registry: Registry, store: MessageStore, metrics: Metrics, answer: Answerer,
                 dispatcher: Dispatcher, placer: Placer, gap: float = 3.0,
                 stranded: Callable[[], int] | None = None) -> None:
        self.registry = registry
        self.stranded = stranded  # leaders a dead worker fetched but never received (stranded.py)
        self.gap_ms = int(gap * 1000)
        self.store = store
        self.metrics = metrics
        self.answer = answer
        self.dispatcher = dispatcher
        self.placer = placer

    def reap(self) -> int:
        """Recover expired leases and overdue deliveries; return how many.

        Each beat first pulses the registry: after a gap in which no worker
        could reach it (a Redis restart), owners get one lease to renew before
        anything is taken from them (expire.lua).
        """
        self.registry.pulse(self.gap_ms)
        self._scan_stranded()
        recovered = self._reap_leases() + self._reap_deliveries()
        # Requests that waited too long on a parked group (no persistent worker): GroupParked.
        self.placer.expire_parked()
        return recovered

    def _scan_stranded(self) -> None:
        """Leaders stranded in a dead worker's fetch get their lease cut, for ``_reap_leases`` to take now."""
        if self.stranded is None:
            return
        try:
            self.stranded()
        except redis.RedisError as exc:  # the broker's Redis, not the registry's: the queue TTL still bounds it
            logger.warning("could not read the broker's unacknowledged messages: %s", exc)

    def _reap_leases(self) -> int:
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
            settled = self.answer.stored_outcome(expired.request.id)
            if expired.kind is ExpiredKind.REQUEUE and settled is None:
                logger.warning("re-publishing request %s of group %s: never started in time",
                               expired.request.id, group)
                self.dispatcher.publish_next(group, expired.request, expired.token, mark=True)
            else:
                self._bury(group, expired.request, expired.token, settled)
        return recovered

    def _bury(self, group: str, leader: RequestRecord, token: str, settled: Any) -> None:
        """End a leader that will not run (again): one outcome for it and its waiters, then hand on."""
        outcome = settled
        if outcome is None:
            outcome = LeaderDied(
                f"the execution of group {group} (request {leader.id}) was lost: "
                "its lease expired without renewal",
                group,
                leader.id,
            )
            logger.error("%s", outcome)
        finished = self.registry.finish(group, leader.key, token, self.answer.encode_outcome(outcome))
        if finished.stale:
            return
        self.answer(self.answer.unanswered([leader, *finished.waiters]), outcome, onto=leader.id)
        self._hand_on(finished.delivery, group, finished.next_request, finished.next_token)

    def _reap_deliveries(self) -> int:
        recovered = 0
        for member in self.registry.due_deliveries():
            delivery = self.registry.take_delivery(member)
            if delivery is None:
                continue
            recovered += 1
            self.metrics.incr("recoveries")
            logger.warning("completing the answers of %s in group %s: their process died", member, delivery.group)
            own = [delivery.own] if delivery.own is not None else []
            self.answer(self.answer.unanswered([*own, *delivery.waiters]), self._outcome(delivery),
                        onto=delivery.leader or None)
            self._hand_on(member, delivery.group, delivery.next_request, delivery.next_token)
        return recovered

    def _hand_on(self, member: str, group: str, next_request: RequestRecord | None, next_token: str) -> None:
        """Publish the group's next request, then settle the delivery; one that could not be sent keeps
        the delivery open, so a later beat publishes it (instead of the group waiting a queue TTL)."""
        if next_request is not None and not self.dispatcher.publish_next(group, next_request, next_token):
            return
        self.registry.delivered(member)

    def _outcome(self, delivery: Delivery) -> Any:
        if delivery.outcome:
            return self.answer.decode_outcome(delivery.outcome)
        if delivery.ref:
            return self.store.get(Ref({REF_KEY: delivery.ref, "device": delivery.device}))
        stored = self.answer.stored_outcome(delivery.leader) if delivery.leader else None
        if stored is not None:
            return stored
        return LeaderDied(f"the execution of group {delivery.group} (request {delivery.leader}) was lost "
                          "before its outcome was stored", delivery.group, delivery.leader)
