"""Sending requests: register on send, publish what leads, hand a group on when it ends.

A request registers when it is sent, so identical requests coalesce even
while every worker is busy.  Only a leader (or a request for a hosted
group) is published; waiters are answered by the leader, and requests
queued behind it are published in turn by ``complete``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu.exceptions import OperationalError

from . import faults, lineage
from .answers import Answerer
from .errors import BrokerUnavailable, PersistentError, RegistryUnavailable
from .execution import recursion_error
from .planning import Plan
from .protocol import Finished, SubmitOutcome, Submitted, WithdrawStatus
from .queues import group_queue
from .records import RequestRecord, keep_options
from .registry import UNREACHABLE, Registry
from .store import REF_KEY, MessageStore, Ref, is_ref

if TYPE_CHECKING:
    from celery.result import AsyncResult

logger = logging.getLogger(__name__)

HEADER = "persistent_request"
"""Message header naming the group, owner token and recursion stack."""

MAX_MOVES = 8
"""How many "moved" markers (rolling re-registrations) a request follows."""


class Dispatcher:
    def __init__(self, app: Celery, registry: Registry, store: MessageStore, answer: Answerer,
                 inline_bytes: int) -> None:
        self.app = app
        self.answer = answer
        self.registry = registry
        self.store = store
        self.inline_bytes = inline_bytes

    def submit(
        self,
        task: Any,
        plan: Plan,
        args: list[Any],
        task_id: str | None,
        options: dict[str, Any],
        flags: str = "",
    ) -> AsyncResult:
        """Register a request as it is sent; publish it only if it leads or is hosted.

        A broker that cannot take the message raises ``BrokerUnavailable``,
        once whatever was registered for it has been taken back.
        """
        try:
            return self._submit_request(task, plan, args, task_id, options, flags)
        except OperationalError as exc:
            raise BrokerUnavailable(f"the broker could not take the request: {exc}") from exc

    def _submit_request(self, task: Any, plan: Plan, args: list[Any], task_id: str | None,
                        options: dict[str, Any], flags: str) -> AsyncResult:
        task_id = task_id or str(uuid.uuid4())
        options.setdefault("shadow", plan.shadow)
        if plan.group is None:
            header = {"stack": list(plan.stack)}
            return task.publish(args, task_id, header, options)
        if plan.recursive:
            raise recursion_error(plan.group)
        args = self._by_reference(plan, args)
        if options.get("countdown") is not None or options.get("eta") is not None:
            # A delayed request registers when it starts, not now: it keeps its
            # delay, and an identical immediate request never waits for it.
            return task.publish(args, task_id, {"stack": list(plan.stack), "delayed": True}, options)
        kept, options = self._kept_with_lineage(options)
        record = RequestRecord(
            id=task_id,
            key=plan.key,
            task=task.name,
            options=kept,
            args=args,
            kwargs={},
            stack=list(plan.stack),
            sent=time.time(),
        )
        group, submitted = self.register(plan, record, flags)
        if submitted.outcome is SubmitOutcome.HOSTED:
            try:
                return self.publish_hosted(task, record, group, submitted.queue, submitted.ref, options)
            except BaseException as exc:  # interrupted sends too: nothing may stay registered
                if self.withdraw(group, record, exc):
                    raise
                return task.AsyncResult(task_id)  # its worker has it already (adoption): it will answer
        if submitted.outcome is SubmitOutcome.WAIT:
            return self.announce_coalesced(task, record, group, submitted.other_id, options)
        if submitted.outcome is not SubmitOutcome.LEADER:
            return task.AsyncResult(task_id)  # queued: published, with its lineage, when the group reaches it
        faults.point("after-submit")
        try:
            result = self.publish(record, group, submitted.token, options)
        except BaseException as exc:
            # Never leave a lock orphaned by a failed publish.
            self.complete(group, plan.key, submitted.token, exc)
            raise
        with contextlib.suppress(*UNREACHABLE):
            # It is on the broker: the send succeeded.  Unmarked, it keeps its short
            # lease, and the reaper may send it again; the owner token fences that copy.
            # Not waited for: its reply tells nothing the sender needs.
            self.registry.published_unawaited(group, submitted.token)
        return result

    def _kept_with_lineage(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The options to keep with the record, with the caller's lineage; and those to send with now.

        The caller's parent, root, origin and trace go with the request, which
        may be published later by another process (lineage.py); a resubmitted
        request keeps its own.  A request sent now, by its caller, is sent with
        Celery's own defaults, which are the caller's values.
        """
        fresh = lineage.KEY not in options
        if fresh:
            lineage.of_caller(self.app, options)
        kept = keep_options(options)
        kept[lineage.KEY] = options[lineage.KEY]
        if fresh:
            options = {name: value for name, value in options.items() if name != lineage.KEY}
        return kept, options

    def announce_coalesced(self, task: Any, record: RequestRecord, group: str, onto: str,
                           options: dict[str, Any]) -> AsyncResult:
        """A coalesced caller goes through Celery's send path, without a message (``PersistentTask.publish_unsent``).

        It is registered already and will be answered, so a failure here (a
        task-sent event that cannot be sent) is logged, never raised.
        """
        header = {"group": group, "key": record.key, "onto": onto, "stack": record.stack, "coalesced": True}
        try:
            return task.publish_unsent(list(record.args or []), record.id, header, options)  # type: ignore[no-any-return]
        except Exception:
            logger.warning("could not announce coalesced request %s (it is registered, and will be answered)",
                           record.id, exc_info=True)
            return task.AsyncResult(record.id)  # type: ignore[no-any-return]

    def withdraw(self, group: str, record: RequestRecord, error: BaseException) -> bool:
        """Take back a hosted request that will not run (its publish failed, a worker refused it).

        Its waiters get ``error``; True if it was withdrawn, False if it is
        running or done already (then it has, or will get, its own answer).
        """
        withdrawn = self.registry.steady(lambda: self.registry.withdraw(group, record.id, record.key))
        if withdrawn.status is not WithdrawStatus.WITHDRAWN:
            return False
        self.answer(withdrawn.waiters, error)
        return True

    def register(self, plan: Plan, record: RequestRecord, flags: str = "") -> tuple[str, Submitted]:
        """Submit to the persistent worker of Msg1 if there is one, else to the group."""
        assert plan.group is not None
        submitted = self._submit(plan.group, record, flags, plan.host_group)
        group = submitted.group
        for _ in range(MAX_MOVES):
            if submitted.outcome is not SubmitOutcome.MOVED:
                return group, submitted
            group = submitted.target
            submitted = self.registry.submit(group, record, flags)
        raise PersistentError(f"group {plan.group} moved more than {MAX_MOVES} times while sending; retry")

    def _submit(self, group: str, record: RequestRecord, flags: str, host_group: str | None) -> Submitted:
        """``submit``, through a short outage: a repeat finds an earlier attempt that was applied
        (its reply lost), so a request is never registered twice nor run after its send raised."""
        try:
            return self.registry.submit(group, record, flags, host_group=host_group)
        except UNREACHABLE:
            return self.registry.steady(lambda: self.registry.submit(group, record, flags + "a",
                                                                     host_group=host_group))

    def _by_reference(self, plan: Plan, args: list[Any]) -> list[Any]:
        """A large Msg1 travels (and is kept in Redis) as a reference."""
        if is_ref(plan.msg1) or plan.msg1_size <= self.inline_bytes:
            return args
        ref = self.store.put(plan.msg1, digest=plan.msg1_digest, size=plan.msg1_size)
        return [ref, *args[1:]]

    def resubmit(self, record: RequestRecord, group: str) -> None:
        """Register an already accepted request with ``group`` and send it on."""
        task = self.app.tasks[record.task]
        submitted = self.registry.submit(group, record, "r")
        if submitted.outcome is SubmitOutcome.HOSTED:
            self.publish_hosted(task, record, group, submitted.queue, submitted.ref, dict(record.options))
        elif submitted.outcome is SubmitOutcome.LEADER:
            self.publish_next(group, record, submitted.token, mark=True)

    def publish_hosted(self, task: Any, record: RequestRecord, group: str, queue: str, ref: str,
                       options: dict[str, Any]) -> AsyncResult:
        """Send a request to its persistent worker's queue; Msg1 goes as the worker's ref."""
        args = list(record.args or [])
        device = args[0].get("device") if args and isinstance(args[0], Mapping) else None
        args[0] = Ref({REF_KEY: ref, "device": device})
        header = {"group": group, "hosted": True, "key": record.key, "stack": record.stack, "sent": record.sent}
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
        task = self.app.tasks[record.task]
        header = {"group": group, "token": token, "key": record.key, "stack": record.stack, "sent": record.sent}
        return task.publish(record.args, record.id, header, dict(options or record.options))

    def complete(self, group: str, key: str, token: str, outcome: Any, executed: bool = False,
                 settle: bool = True, keep: bool = False,
                 observed: Sequence[tuple[str, int | float]] = ()) -> Finished:
        """Release the group (holder only), answer its waiters, publish the next.

        ``finish`` records the outcome and keeps the answers as a delivery in
        the same step, so a process that dies at any point after it leaves
        them to the reaper instead of losing them.  ``settle=False`` leaves the
        delivery open for the caller to settle once the leader's own answer is
        stored too (``PersistentTask.after_return``).  ``finished.stale``: the
        group was taken from this leader (its lease expired): it was answered
        already, and must not be answered again.  ``observed``: the execution's
        metrics, recorded in the same step (``metrics.observation``).
        """
        encoded = self.answer.encode_outcome(outcome)
        finished = self.registry.steady(
            lambda: self.registry.finish(group, key, token, encoded, keep=keep, executed=executed,
                                         observed=observed))
        if finished.stale:
            logger.warning("group %s was taken over before its leader finished", group)
            return finished
        faults.point("after-finish")
        self.answer(finished.waiters, outcome)
        if finished.next_request is not None and not self.publish_next(group, finished.next_request,
                                                                       finished.next_token):
            # The delivery also holds the next request: left open, the reaper
            # publishes it once its deadline passes (one lease), instead of the
            # group waiting a queue TTL for a message that never left.
            return replace(finished, delivery="")
        if settle:
            self.settle(finished.delivery)
        return finished

    def settle(self, delivery: str) -> None:
        """Every caller of ``delivery`` is answered; if Redis is gone for longer, the reaper re-checks it.

        Sent without waiting for the reply (``Registry.delivered_unawaited``):
        nothing after it depends on it.  If it cannot be sent, it is repeated
        through a short outage as before.
        """
        if not delivery:
            return
        try:
            self.registry.delivered_unawaited(delivery)
            return
        except UNREACHABLE:
            pass
        try:
            self.registry.steady(lambda: self.registry.delivered(delivery))
        except RegistryUnavailable:
            logger.warning("could not settle delivery %s; the reaper will find its callers answered", delivery)

    def publish_next(self, group: str, record: RequestRecord, token: str, mark: bool = False) -> bool:
        """Publish a request that is the group's owner already; ``mark`` it published if it was re-registered.

        False if it could not be sent: the caller leaves what recovers it (a
        delivery, or the short lease of a re-registered request) to the reaper.
        """
        try:
            self.publish(record, group, token)
        except Exception:
            logger.exception("could not publish the next request %s of group %s", record.id, group)
            return False
        if mark:
            with contextlib.suppress(RegistryUnavailable):
                # Unmarked, it keeps its short lease: the reaper sends it again (a stale copy is fenced).
                self.registry.steady(lambda: self.registry.published(group, token))
        return True
