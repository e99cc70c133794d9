"""Celery's ``revoke`` on the plugin's requests: a revoked caller gets REVOKED, nothing else changes.

Two cases, because a coalesced caller has no message of its own:

- A request with a message (a leader, a queued request once it is published,
  a hosted request) is discarded by the worker that receives it, which
  stores REVOKED and sends ``task_revoked``.  ``Revocation`` then gives up
  its place: the group moves on, and its waiters are not told REVOKED: the
  first of them takes its place (with the same Msg1 and Msg2) and the rest
  wait for that one.  The same happens to a request that expired.
- A coalesced waiter has no message, so no worker ever discards it.  Workers
  copy the ids they were told to revoke into Redis (``RevokedIds``, on their
  lease beat), and answers skip them: they are stored as REVOKED instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery
from celery.exceptions import TaskRevokedError

from .dispatch import HEADER, Dispatcher
from .records import RequestRecord
from .registry import Registry

logger = logging.getLogger(__name__)

KEEP_SECONDS = 3 * 3600
"""How long a revoked id is remembered (Celery's workers keep theirs about as long)."""


class RevokedIds:
    """Revoked task ids in a Redis ZSET scored by when they were seen."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self.client = client
        self.key = key

    def add(self, ids: Iterable[str], now: float) -> None:
        ids = list(ids)
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.key, {task_id: now for task_id in ids})
        pipe.zremrangebyscore(self.key, "-inf", now - KEEP_SECONDS)
        pipe.execute()

    def which(self, ids: list[str]) -> set[str]:
        """The revoked ones among ``ids`` (one round trip)."""
        if not ids:
            return set()
        scores = self.client.zmscore(self.key, ids)
        return {task_id for task_id, score in zip(ids, scores, strict=True) if score is not None}


class RevokeSync:
    """A lease-beat tick in a worker's main process: copy newly revoked ids to ``RevokedIds``."""

    def __init__(self, revoked: Any, ids: RevokedIds, clock: Any) -> None:
        self.revoked = revoked  # celery.worker.state.revoked (a LimitedSet)
        self.ids = ids
        self.clock = clock
        self._seen: set[str] = set()

    def __call__(self) -> None:
        current = set(self.revoked)
        fresh = current - self._seen
        if fresh:
            self.ids.add(fresh, self.clock())
        self._seen = current


class Revocation:
    """``task_revoked`` receiver (a worker's main process): the revoked request gives up its place."""

    def __init__(self, app: Celery, registry: Registry, dispatcher: Dispatcher) -> None:
        self.app = app
        self.registry = registry
        self.dispatcher = dispatcher

    def __call__(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is None or getattr(sender, "app", None) is not self.app:
            return
        header = getattr(request, HEADER, None) or (getattr(request, "headers", None) or {}).get(HEADER) or {}
        group, key = header.get("group"), str(header.get("key", ""))
        if not group:
            return
        try:
            if header.get("token"):
                self._leader(group, key, header["token"], request)
            elif header.get("hosted"):
                self._hosted(group, key, request)
        except Exception:  # never break the consumer; the lease still bounds the group's wait
            logger.exception("could not release the group of revoked request %s", request.id)

    def _leader(self, group: str, key: str, token: str, request: Any) -> None:
        error = _revoked(request.id)
        finished = self.registry.steady(
            lambda: self.registry.finish(group, key, token, self.dispatcher.answer.encode_outcome(error)))
        if finished.stale:
            return
        self._promote(group, key, finished.waiters, list(request.args or []))
        if finished.next_request is not None:
            self.dispatcher.publish_next(group, finished.next_request, finished.next_token)
        self.dispatcher.settle(finished.delivery)

    def _hosted(self, group: str, key: str, request: Any) -> None:
        withdrawn = self.registry.steady(lambda: self.registry.withdraw(group, request.id, key))
        self._promote(group, key, withdrawn.waiters, list(request.args or []))

    def _promote(self, group: str, key: str, waiters: list[RequestRecord], args: list[Any]) -> None:
        """The first waiter takes the revoked request's place; the others wait for it."""
        for waiter in waiters:
            record = RequestRecord(waiter.id, key, waiter.task, waiter.options, args=args, kwargs={},
                                   stack=waiter.stack)
            self.dispatcher.resubmit(record, group)
        if waiters:
            logger.info("revoked request's place in group %s goes to %s", group, waiters[0].id)


def _revoked(task_id: str) -> Exception:
    error: Exception = TaskRevokedError(f"request {task_id} was revoked")
    return error
