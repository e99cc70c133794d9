"""The coalescing path: register on send, claim on start, hand on at the end.

A request registers when it is sent (so identical requests coalesce even
while every worker is busy), again when it starts if it reached the worker
some other way (``send_task``, beat), and hands the group on when it ends:
its waiters get its Msg3, and the next queued request of the group is
published.  Lost leaders are found by their expired lease (``reap``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore

from .answers import answer, is_answered
from .context import executing
from .errors import InfiniteRecursionError, LeaderDied
from .messages import encode
from .planning import Plan
from .records import RequestRecord, keep_options, options_from_context
from .registry import Outcome

if TYPE_CHECKING:
    from celery.result import AsyncResult

    from .plugin import Persistent

logger = logging.getLogger(__name__)

HEADER = "persistent_request"
"""Message header naming the group, owner token and recursion stack."""


def recursion_error(group: str) -> InfiniteRecursionError:
    return InfiniteRecursionError(
        f"group {group} requested from inside its own execution; waiting would deadlock "
        "(set allow_infinite to allow it)",
        group,
    )


class Coalescer:
    def __init__(self, persistent: Persistent) -> None:
        self.p = persistent

    # -- client side -------------------------------------------------------

    def submit(
        self,
        task: Any,
        plan: Plan,
        args: list[Any],
        task_id: str | None,
        options: dict[str, Any],
    ) -> AsyncResult:
        """Register a request as it is sent; publish it only if it leads."""
        task_id = task_id or str(uuid.uuid4())
        options.setdefault("shadow", plan.shadow)
        if plan.group is None:
            header = {"stack": list(plan.stack)}
            return task.publish(args, task_id, header, options)
        if plan.recursive:
            raise recursion_error(plan.group)
        record = RequestRecord(
            id=task_id,
            key=plan.key,
            task=task.name,
            options=keep_options(options),
            args=args,
            kwargs={},
            stack=list(plan.stack),
        )
        submitted = self.p.registry.submit(plan.group, record)
        if submitted.outcome is not Outcome.LEADER:
            self.p.metrics.incr("coalesced" if submitted.outcome is Outcome.WAIT else "queued")
            return task.AsyncResult(task_id)
        try:
            return self.publish(record, plan.group, submitted.token, options)
        except Exception as exc:
            # Never leave a lock orphaned by a failed publish.
            self.complete(plan.group, plan.key, submitted.token, exc)
            raise

    def publish(
        self,
        record: RequestRecord,
        group: str,
        token: str,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncResult:
        """Put a registered request on the broker, carrying its owner token."""
        task = self.p.app.tasks[record.task]
        header = {"group": group, "token": token, "key": record.key, "stack": record.stack}
        return task.publish(record.args, record.id, header, dict(options or record.options))

    # -- worker side -------------------------------------------------------

    def run(self, task: Any, plan: Plan, header: Mapping[str, Any] | None, args: list[Any]) -> Any:
        """Execute a request on a worker, under its group's registration."""
        if plan.group is None:
            return self.execute(plan)
        token = header.get("token") if header else None
        if token and header:
            if header.get("group") != plan.group:
                logger.warning("request %s: group %s in header, %s computed", task.request.id,
                               header.get("group"), plan.group)
            if not self.p.registry.claim(plan.group, token):
                logger.info("request %s is a stale copy; its group moved on", task.request.id)
                raise Ignore()
        else:
            token = self._register_at_start(task, plan, args)
        return self.lead(plan, token)

    def _register_at_start(self, task: Any, plan: Plan, args: list[Any]) -> str:
        """For requests that bypassed apply_async (send_task, beat)."""
        assert plan.group is not None
        if plan.recursive:
            raise recursion_error(plan.group)
        record = RequestRecord(
            id=task.request.id,
            key=plan.key,
            task=task.name,
            options=options_from_context(task.request),
            args=args,
            kwargs={},
            stack=list(plan.stack),
        )
        submitted = self.p.registry.submit(plan.group, record)
        if submitted.outcome is not Outcome.LEADER:
            # Answered later by the leader (wait) or published in turn (queued).
            self.p.metrics.incr("coalesced" if submitted.outcome is Outcome.WAIT else "queued")
            raise Ignore()
        self.p.registry.claim(plan.group, submitted.token)
        return submitted.token

    def lead(self, plan: Plan, token: str) -> Any:
        """Execute as the group's leader, then answer waiters and hand on."""
        assert plan.group is not None
        self.p.keeper.hold(plan.group, token)
        try:
            msg3 = self.execute(plan)
        except BaseException as exc:
            self.complete(plan.group, plan.key, token, exc)
            raise
        finally:
            self.p.keeper.drop(token)
        self.complete(plan.group, plan.key, token, msg3)
        return msg3

    def execute(self, plan: Plan) -> Any:
        """Call the device key under the recursion stack; check Msg3."""
        with executing(plan.stack, plan.group):
            msg3 = plan.method(plan.msg1, plan.msg2, plan.opts)
        encode(msg3, "msg3")
        self.p.metrics.incr("executions")
        return msg3

    def complete(self, group: str, key: str, token: str, outcome: Any) -> int:
        """Release the group (holder only), answer its waiters, publish the next."""
        finished = self.p.registry.finish(group, key, token)
        if finished.stale:
            logger.warning("group %s was taken over before its leader finished", group)
            return 0
        answered = answer(self.p.app, finished.waiters, outcome)
        if finished.next_request is not None:
            self._publish_next(group, finished.next_request, finished.next_token)
        return answered

    def _publish_next(self, group: str, record: RequestRecord, token: str) -> None:
        try:
            self.publish(record, group, token)
        except Exception:
            # The lease expires and the reaper publishes it again.
            logger.exception("could not publish the next request %s of group %s", record.id, group)

    # -- recovery ----------------------------------------------------------

    def reap(self) -> int:
        """Recover groups whose lease expired; return how many."""
        recovered = 0
        for group, token, _key in self.p.registry.expired():
            expired = self.p.registry.expire(group, token)
            if expired.request is None:
                continue
            recovered += 1
            self.p.metrics.incr("recoveries")
            if expired.kind == "requeue":
                logger.warning("re-publishing request %s of group %s: never started in time",
                               expired.request.id, group)
                self._publish_next(group, expired.request, expired.token)
            elif expired.kind == "dead":
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
        finished = self.p.registry.finish(group, leader.key, token)
        if finished.stale:
            return
        if not is_answered(self.p.app, leader.id):
            answer(self.p.app, [leader.waiter()], error)
        answer(self.p.app, finished.waiters, error)
        if finished.next_request is not None:
            self._publish_next(group, finished.next_request, finished.next_token)
