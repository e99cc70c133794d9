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
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore

from .answers import answer, is_answered
from .context import executing
from .errors import InfiniteRecursionError, LeaderDied, PersistentError
from .messages import encode
from .planning import Plan
from .records import RequestRecord, keep_options, options_from_context
from .registry import Outcome, Submitted
from .routing import group_queue
from .store import REF_KEY, Ref, is_ref

if TYPE_CHECKING:
    from celery.result import AsyncResult

    from .plugin import Persistent

logger = logging.getLogger(__name__)

HEADER = "persistent_request"
"""Message header naming the group, owner token and recursion stack."""

MAX_MOVES = 8
"""How many "moved" markers (rolling re-registrations) a request follows."""


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
        flags: str = "",
    ) -> AsyncResult:
        """Register a request as it is sent; publish it only if it leads or is hosted."""
        task_id = task_id or str(uuid.uuid4())
        options.setdefault("shadow", plan.shadow)
        if plan.group is None:
            header = {"stack": list(plan.stack)}
            return task.publish(args, task_id, header, options)
        if plan.recursive:
            raise recursion_error(plan.group)
        args = self._by_reference(plan, args)
        record = RequestRecord(
            id=task_id,
            key=plan.key,
            task=task.name,
            options=keep_options(options),
            args=args,
            kwargs={},
            stack=list(plan.stack),
        )
        group, submitted = self.register(plan, record, flags)
        if submitted.outcome is Outcome.HOSTED:
            return self.publish_hosted(task, record, group, submitted.queue, submitted.ref, options)
        if submitted.outcome is not Outcome.LEADER:
            return task.AsyncResult(task_id)
        try:
            return self.publish(record, group, submitted.token, options)
        except Exception as exc:
            # Never leave a lock orphaned by a failed publish.
            self.complete(group, plan.key, submitted.token, exc)
            raise

    def register(self, plan: Plan, record: RequestRecord, flags: str = "") -> tuple[str, Submitted]:
        """Submit to the persistent worker of Msg1 if there is one, else to the group."""
        assert plan.group is not None
        registry = self.p.registry
        submitted = registry.submit(plan.group, record, flags, host_group=plan.host_group)
        group = submitted.group
        for _ in range(MAX_MOVES):
            if submitted.outcome is not Outcome.MOVED:
                return group, submitted
            group = submitted.target
            submitted = registry.submit(group, record, flags)
        raise PersistentError(f"group {plan.group} moved more than {MAX_MOVES} times while sending; retry")

    def _by_reference(self, plan: Plan, args: list[Any]) -> list[Any]:
        """A large Msg1 travels (and is kept in Redis) as a reference."""
        if is_ref(plan.msg1) or plan.msg1_size <= self.p.settings.inline_bytes:
            return args
        ref = self.p.store.put(plan.msg1, digest=plan.msg1_digest, size=plan.msg1_size)
        return [ref, *args[1:]]

    def resubmit(self, record: RequestRecord, group: str) -> None:
        """Register an already accepted request with ``group`` and send it on."""
        task = self.p.app.tasks[record.task]
        submitted = self.p.registry.submit(group, record, "r")
        if submitted.outcome is Outcome.HOSTED:
            self.publish_hosted(task, record, group, submitted.queue, submitted.ref, dict(record.options))
        elif submitted.outcome is Outcome.LEADER:
            self._publish_next(group, record, submitted.token)

    def publish_hosted(self, task: Any, record: RequestRecord, group: str, queue: str, ref: str,
                       options: dict[str, Any]) -> AsyncResult:
        """Send a request to its persistent worker's queue; Msg1 goes as the worker's ref."""
        args = list(record.args or [])
        device = args[0].get("device") if args and isinstance(args[0], Mapping) else None
        args[0] = Ref({REF_KEY: ref, "device": device})
        header = {"group": group, "hosted": True, "key": record.key, "stack": record.stack}
        options = {**options, "queue": group_queue(queue)}
        options.pop("routing_key", None)
        options.pop("exchange", None)
        return task.publish(args, record.id, header, options)

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
        token = header.get("token") if header else None
        if not token and plan.group is None:
            msg3 = self.execute(plan)
            self.p.metrics.incr("executions")
            return msg3
        if token and header:
            if header.get("group") != plan.group:
                # Registered under the group the client computed: keep to it.
                logger.warning("request %s: group %s in header, %s computed here", task.request.id,
                               header.get("group"), plan.group)
                plan = replace(plan, group=str(header["group"]), key=str(header.get("key", plan.key)))
            assert plan.group is not None
            if not self.p.registry.claim(plan.group, token):
                logger.info("request %s is a stale copy; its group moved on", task.request.id)
                raise Ignore()
        else:
            group, token = self._register_at_start(task, plan, args)
            plan = replace(plan, group=group)
        return self.lead(plan, token)

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
        group, submitted = self.register(plan, record)
        if submitted.outcome is Outcome.HOSTED:
            # Its group has a persistent worker: send it there, by reference.
            self.publish_hosted(task, record, group, submitted.queue, submitted.ref, dict(record.options))
            raise Ignore()
        if submitted.outcome is not Outcome.LEADER:
            # Answered later by the leader (wait) or published in turn (queued).
            raise Ignore()
        self.p.registry.claim(group, submitted.token)
        return group, submitted.token

    def lead(self, plan: Plan, token: str) -> Any:
        """Execute as the group's leader, then answer waiters and hand on."""
        assert plan.group is not None
        self.p.keeper.hold(plan.group, token)
        try:
            msg3 = self.execute(plan)
        except BaseException as exc:
            self.complete(plan.group, plan.key, token, exc, executed=True)
            raise
        finally:
            self.p.keeper.drop(token)
        if plan.opts["spawn_worker"] and self.spawn(plan, token, msg3):
            return msg3
        self.complete(plan.group, plan.key, token, msg3, executed=True)
        return msg3

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
        finished = self.p.registry.finish(plan.group, plan.key, token, keep=True, executed=True)
        if finished.stale:
            return True
        answer(self.p.app, finished.waiters, msg3)
        try:
            self.p.place(msg3, plan.opts, plan.group, expect=token)
        except PersistentError as exc:
            logger.warning("spawn_worker for %s: %s; handing the group on instead", plan.group, exc)
            self.complete(plan.group, plan.key, token, msg3)
        return True

    def execute(self, plan: Plan, check_result: bool = True) -> Any:
        """Call the device key under the recursion stack; check that Msg3 is a message value.

        ``check_result=False`` for a caller that validates Msg3 itself anyway
        (a rolling persistent worker checkpoints it), so it is encoded once.
        """
        msg1 = self.p.store.get(plan.msg1) if is_ref(plan.msg1) else plan.msg1
        with executing(plan.stack, plan.group):
            msg3 = plan.method(msg1, plan.msg2, plan.opts)
        if check_result:
            encode(msg3, "msg3")
        return msg3

    def complete(self, group: str, key: str, token: str, outcome: Any, executed: bool = False) -> int:
        """Release the group (holder only), answer its waiters, publish the next."""
        finished = self.p.registry.finish(group, key, token, executed=executed)
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
            if expired.kind == "orphan":
                recovered += 1
                self.p.metrics.incr("recoveries")
                self.p.recover_hosted(group, expired.token)
                continue
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
