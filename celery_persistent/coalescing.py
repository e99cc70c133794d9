"""Executing under a group's registration: claim on start, lead, hand on at the end.

A request that reached a worker with an owner token claims its group (a
stale copy is fenced and skipped); one that bypassed our ``apply_async``
(``send_task``, beat) registers on arrival.  The leader executes, then its
waiters get its Msg3 and the group is handed on (``Dispatcher.complete``),
or, with ``spawn_worker``, the group is placed on a persistent worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from celery import Celery
from celery.exceptions import Ignore

from . import faults
from .answers import Answerer
from .dispatch import Dispatcher
from .errors import PersistentError, RegistryUnavailable
from .execution import execute, recursion_error
from .leases import LeaseKeeper
from .metrics import Metrics, Mode, observation, sent_of, waited
from .placement import Placer
from .planning import Plan
from .protocol import Finished, SubmitOutcome
from .records import RequestRecord, options_from_context
from .registry import Registry
from .store import MessageStore

logger = logging.getLogger(__name__)


class Coalescer:
    def __init__(self, app: Celery, registry: Registry, store: MessageStore, keeper: LeaseKeeper,
                 metrics: Metrics, answer: Answerer, dispatcher: Dispatcher, placer: Placer) -> None:
        self.app = app
        self.answer = answer
        self.registry = registry
        self.store = store
        self.keeper = keeper
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.placer = placer

    def run(self, task: Any, plan: Plan, header: Mapping[str, Any] | None, args: list[Any]) -> Any:
        """Execute a request on a worker, under its group's registration."""
        token = header.get("token") if header else None
        if not token and plan.group is None:
            return self.metrics.timed(Mode.ORDINARY, None, lambda: self.execute(plan), count="executions")
        if token and header:
            if header.get("group") != plan.group:
                # Registered under the group the client computed: keep to it.
                logger.warning("request %s: group %s in header, %s computed here", task.request.id,
                               header.get("group"), plan.group)
                plan = replace(plan, group=str(header["group"]), key=str(header.get("key", plan.key)))
            assert plan.group is not None
            faults.point("before-claim")
            if not self._claim(plan.group, token, task.request.id):
                raise Ignore()
        else:
            group, token = self._register_at_start(task, plan, args)
            plan = replace(plan, group=group)
        return self.lead(plan, token, task.request)

    def _claim(self, group: str, token: str, task_id: str) -> bool:
        """Start as the group's leader, through a short outage.

        False for a stale copy, and when the registry stays unreachable: then
        the request has not started, keeps its lease, and is answered by
        nobody here (no outcome stored), so the reaper publishes it again once
        the registry is back, and the caller gets one outcome, never two.
        """
        try:
            claimed = self.registry.steady(lambda: self.registry.claim(group, token))
        except RegistryUnavailable:
            logger.error("request %s of group %s not started: the registry is unreachable", task_id, group)
            return False
        if not claimed:
            logger.info("request %s is a stale copy; its group moved on", task_id)
        return claimed

    def _register_at_start(self, task: Any, plan: Plan, args: list[Any]) -> tuple[str, str]:
        """For requests that bypassed apply_async (send_task, beat)."""
        assert plan.group is not None
        if plan.recursive:
            raise recursion_error(plan.group)
        record = RequestRecord(
            id=task.request.id,
            key=plan.key,
            task=task.name,
            options={**options_from_context(task.request), "shadow": plan.shadow},
            args=args,
            kwargs={},
            stack=list(plan.stack),
        )
        group, submitted = self.dispatcher.register(plan, record)
        if submitted.outcome is SubmitOutcome.HOSTED:
            # Its group has a persistent worker: send it there, by reference.
            self.dispatcher.publish_hosted(task, record, group, submitted.queue, submitted.ref,
                                           dict(record.options))
            raise Ignore()
        if submitted.outcome is not SubmitOutcome.LEADER:
            # Answered later by the leader (wait) or published in turn (queued).
            raise Ignore()
        self.registry.claim(group, submitted.token)
        return group, submitted.token

    def lead(self, plan: Plan, token: str, request: Any = None) -> Any:
        """Execute as the group's leader, then answer waiters and hand on.

        The outcome is recorded with the group's release (``finish``), which
        keeps every answer as a delivery until this request's own answer is
        stored by its tracer: ``PersistentTask.after_return`` settles it.  A
        leader whose lease was taken while it ran was answered ``LeaderDied``
        already: its late Msg3 is not stored over that (``Ignore``).
        """
        assert plan.group is not None
        self.keeper.hold(plan.group, token)
        wait = waited(sent_of(request), time.time())
        started = time.perf_counter()
        try:
            msg3 = self.execute(plan)
        except BaseException as exc:
            self.keeper.drop(token)
            self._finish(plan, token, exc, request, observed=self._observed(started, wait))
            raise
        self.keeper.drop(token)
        observed = self._observed(started, wait)
        faults.point("after-execute")
        if plan.opts["spawn_worker"] and isinstance(msg3, Mapping):
            self.spawn(plan, token, msg3, request, observed)
        else:
            if plan.opts["spawn_worker"]:
                logger.warning("spawn_worker needs Msg3 to be a message; not spawning for %s", plan.group)
            self._finish(plan, token, msg3, request, observed=observed)
        return msg3

    @staticmethod
    def _observed(started: float, wait: float | None) -> list[tuple[str, int | float]]:
        """The execution's histograms, recorded by finish.lua with the release (no round trip of their own)."""
        return observation(Mode.ORDINARY, time.perf_counter() - started, wait)

    def _finish(self, plan: Plan, token: str, outcome: Any, request: Any, keep: bool = False,
                observed: Sequence[tuple[str, int | float]] = ()) -> Finished:
        """Record the outcome; ``Ignore`` when it is not this leader's to answer.

        Stale: the reaper took the group and answered (``LeaderDied``).  Not
        recorded because the registry stayed unreachable past the lease: the
        reaper will do the same, so storing this outcome too would give the
        caller two.
        """
        assert plan.group is not None
        try:
            finished = self.dispatcher.complete(plan.group, plan.key, token, outcome, executed=True,
                                                settle=request is None, keep=keep, observed=observed)
        except RegistryUnavailable:
            logger.error("the outcome of group %s's leader could not be recorded: the registry is unreachable; "
                         "the reaper answers its callers", plan.group)
            raise Ignore() from None
        if finished.stale:
            raise Ignore()
        if request is not None:
            request.persistent_delivery = finished.delivery
        return finished

    def spawn(self, plan: Plan, token: str, msg3: Mapping[str, Any], request: Any = None,
              observed: Sequence[tuple[str, int | float]] = ()) -> None:
        """spawn_worker: a persistent worker takes the group, holding Msg3.

        The leader's waiters get Msg3; requests queued behind it (other
        Msg2s) become the new worker's, in order.  If no persistent worker
        can take it, the group is handed on as usual.
        """
        assert plan.group is not None
        self._finish(plan, token, msg3, request, keep=True, observed=observed)
        try:
            self.placer.place(msg3, plan.opts, plan.group, expect=token, timeout=float(plan.opts["worker_timeout"]))
        except PersistentError as exc:
            logger.warning("spawn_worker for %s: %s; handing the group on instead", plan.group, exc)
            # The group is still this token's (finish kept it): release it now.  The
            # delivery (same member) stays open until the tracer stored this request's answer.
            self.dispatcher.complete(plan.group, plan.key, token, msg3, settle=request is None)

    def execute(self, plan: Plan, check_result: bool = True) -> Any:
        return execute(self.store, plan, check_result)
