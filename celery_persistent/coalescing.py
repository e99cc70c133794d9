"""Executing under a group's registration: claim on start, lead, hand on at the end.

A request that reached a worker with an owner token claims its group (a
stale copy is fenced and skipped); one that bypassed our ``apply_async``
(``send_task``, beat) registers on arrival.  The leader executes, then its
waiters get its Msg3 and the group is handed on (``Dispatcher.complete``),
or, with ``spawn_worker``, the group is placed on a persistent worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from celery import Celery
from celery.exceptions import Ignore

from . import faults
from .answers import Answerer
from .dispatch import Dispatcher
from .errors import PersistentError
from .execution import execute, recursion_error
from .leases import LeaseKeeper
from .metrics import Metrics
from .placement import Placer
from .planning import Plan
from .protocol import SubmitOutcome
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
            msg3 = self.execute(plan)
            self.metrics.incr("executions")
            return msg3
        if token and header:
            if header.get("group") != plan.group:
                # Registered under the group the client computed: keep to it.
                logger.warning("request %s: group %s in header, %s computed here", task.request.id,
                               header.get("group"), plan.group)
                plan = replace(plan, group=str(header["group"]), key=str(header.get("key", plan.key)))
            assert plan.group is not None
            if not self.registry.claim(plan.group, token):
                logger.info("request %s is a stale copy; its group moved on", task.request.id)
                raise Ignore()
        else:
            group, token = self._register_at_start(task, plan, args)
            plan = replace(plan, group=group)
        return self.lead(plan, token, task.request.id)

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

    def lead(self, plan: Plan, token: str, task_id: str = "") -> Any:
        """Execute as the group's leader, then answer waiters and hand on.

        The leader's own outcome is stored before the group moves on (its
        tracer stores it again and runs its links): a process that dies
        after that point leaves an answer for its caller, and the reaper
        gives the same outcome to its waiters.
        """
        assert plan.group is not None
        self.keeper.hold(plan.group, token)
        try:
            msg3 = self.execute(plan)
        except Exception as exc:
            self._store_own(task_id, exc)
            self.dispatcher.complete(plan.group, plan.key, token, exc, executed=True)
            raise
        except BaseException as exc:
            self.dispatcher.complete(plan.group, plan.key, token, exc, executed=True)
            raise
        finally:
            self.keeper.drop(token)
        faults.point("after-execute")
        self._store_own(task_id, msg3)
        if plan.opts["spawn_worker"] and self.spawn(plan, token, msg3):
            return msg3
        self.dispatcher.complete(plan.group, plan.key, token, msg3, executed=True)
        return msg3

    def _store_own(self, task_id: str, outcome: Any) -> None:
        if not task_id:
            return
        try:
            self.answer.store_own(task_id, outcome)
        except Exception:  # the tracer stores it too; the waiters must still be answered
            logger.warning("could not store the outcome of %s ahead of its tracer", task_id, exc_info=True)

    def spawn(self, plan: Plan, token: str, msg3: Any) -> bool:
        """spawn_worker: a persistent worker takes the group, holding Msg3.

        The leader's waiters get Msg3; requests queued behind it (other
        Msg2s) become the new worker's, in order.  False if no persistent
        worker could take it (the group is then handed on as usual).
        """
        assert plan.group is not None
        if not isinstance(msg3, Mapping):
            logger.warning("spawn_worker needs Msg3 to be a message; not spawning for %s", plan.group)
            return False
        finished = self.registry.finish(plan.group, plan.key, token, keep=True, executed=True)
        if finished.stale:
            return True
        self.answer(finished.waiters, msg3)
        try:
            self.placer.place(msg3, plan.opts, plan.group, expect=token, timeout=float(plan.opts["worker_timeout"]))
        except PersistentError as exc:
            logger.warning("spawn_worker for %s: %s; handing the group on instead", plan.group, exc)
            self.dispatcher.complete(plan.group, plan.key, token, msg3)
        return True

    def execute(self, plan: Plan, check_result: bool = True) -> Any:
        return execute(self.store, plan, check_result)
