"""Executing a hosted group's requests against its in-memory Msg1.

One request at a time (a ``--persistent`` worker runs the solo pool): fence
it (``start_hosted``), execute it with the cached Msg1, roll the state
forward unless the group is static (Msg3 is the new state: written as a
checkpoint, or journaled, as the group's checkpoint policy says), answer its
callers with ``Device.reply`` (Msg3 by default) and its waiters
(``finish_hosted``), and re-register under ``group(Msg3)`` when the rolled
state names another group.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from celery.exceptions import Ignore

from .. import faults
from ..answers import Answerer
from ..checkpoints import EncodedState, check_state, encode_state
from ..config import resolve_options
from ..device import Device, has_own_grouper
from ..errors import PersistentError, RegistryUnavailable
from ..execution import execute, recursion_error
from ..grouping import normalise
from ..metrics import Metrics, Mode, timed
from ..planning import Planner
from ..protocol import Finished, HostedStart, RenameStatus
from ..queues import group_queue, queue_name
from ..records import RequestRecord, options_from_context
from ..registry import Registry
from ..store import MessageStore
from .cache import Msg1Cache
from .consumer import GroupQueues
from .hosted import Hosted, HostedTable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Executed:
    """A successful execution: the Msg1 it ran on, its Msg3, and what its callers get (``Device.reply``)."""

    msg1: Any
    msg3: Any
    reply: Any
    device: Device


@dataclass(frozen=True)
class StateChange:
    """How a finished request changes its group's state: written as a checkpoint, or journaled, or not at all."""

    state: Any = None  # the new state (None: unchanged)
    size: int = 0
    checkpoint: EncodedState | None = None
    journaled: bool = False


class NotOurs(Exception):
    """A finished request this host must not answer: another owner has its group, or it was settled."""


class Runner:
    def __init__(self, answer: Answerer, registry: Registry, store: MessageStore, planner: Planner,
                 table: HostedTable, cache: Msg1Cache, queues: GroupQueues, queue_prefix: str,
                 max_message_bytes: int, on_throw: Callable[[Hosted], None], on_lost: Callable[[Hosted], None],
                 settle: Callable[[str], None], metrics: Metrics | None = None,
                 inline_bytes: int = 64 * 1024) -> None:
        self.answer = answer
        self.registry = registry
        self.store = store
        self.planner = planner
        self.table = table
        self.cache = cache
        self.queues = queues
        self.queue_prefix = queue_prefix
        self.max_message_bytes = max_message_bytes
        self.inline_bytes = inline_bytes  # a state above this is not answered from a delivery's own copy
        self.on_throw = on_throw
        self.on_lost = on_lost
        self.settle = settle
        self.metrics = metrics
        self.busy = False  # read by the lease thread: never release a group mid-execution

    def run(self, task: Any, header: Mapping[str, Any], msg2: Any, opts: Any) -> Any:
        """Execute one request from a group queue (called from the task, main thread)."""
        group = str(header.get("group"))
        h = self.table.lookup(group)
        task_id = task.request.id
        started = self.registry.start_hosted(group, h.token_for(group) if h is not None else "", task_id)
        if started is HostedStart.ELSEWHERE:
            self._hand_back(task, header, group, h)
            raise Ignore()
        if started is not HostedStart.RUN or h is None:
            # Done already (run at adoption, or answered): the message is a stale copy.
            logger.info("skipping %s for group %s: already done", task_id, group)
            raise Ignore()
        outcome = timed(self.metrics, Mode.HOSTED, header.get("sent"),
                        lambda: self._execute(h, msg2, opts, tuple(header.get("stack") or ())))
        faults.point("after-execute-hosted")
        # The tracer answers this request itself (links, chord) when the task returns,
        # then settles the delivery (PersistentTask.after_return).
        try:
            outcome = self._finish(h, group, str(header.get("key")), task_id, outcome, own=None,
                                   request=task.request)
        except NotOurs:
            raise Ignore() from None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _hand_back(self, task: Any, header: Mapping[str, Any], group: str, h: Hosted | None) -> None:
        """A message of a group this host lost (it stalled past its lease): put it back for the owner.

        The message was acknowledged when it was taken (a persistent worker
        acks early), so dropping it would lose a request that is still
        accepted; the same message (id, header, links) goes back to the
        group's queue, and this host stops consuming that queue.  It goes to
        the queue's tail: such a request may run after one sent later.
        """
        request = task.request
        queue = (request.delivery_info or {}).get("routing_key") or queue_name(self.queue_prefix, group)
        logger.warning("request %s of group %s reached this worker after it lost the group: handed back to %s",
                       request.id, group, queue)
        options = {**options_from_context(request), "queue": group_queue(queue)}
        task.publish(list(request.args or []), request.id, dict(header), options)
        if h is not None:
            self.on_lost(h)
        else:
            self.queues.soon(partial(self.queues.stop, queue))

    def run_record(self, h: Hosted, record: RequestRecord) -> None:
        """Run an accepted request from its stored record (recovery, hand-off): no tracer answers it."""
        args = list(record.args or [])
        msg2 = args[1] if len(args) > 1 else None
        opts = args[2] if len(args) > 2 else None
        outcome = timed(self.metrics, Mode.HOSTED, record.sent,
                        lambda: self._execute(h, msg2, opts, tuple(record.stack)))
        with contextlib.suppress(NotOurs):
            self._finish(h, h.group, record.key, record.id, outcome, own=record)

    def _execute(self, h: Hosted, msg2: Any, opts: Any, stack: tuple[str, ...]) -> Any:
        """What the execution gave (``Executed``), or the exception it raised (never raises itself)."""
        self.busy = True
        try:
            msg1 = self.cache.get(h)
            plan = self.planner.plan(h.as_ref(), msg2, opts, stack=stack)
            if plan.recursive:
                raise recursion_error(h.group)
            # A rolling group checks Msg3 itself (as its checkpoint, or its journal's check): once.
            run = partial(execute, self.store, plan, check_result=h.static)
            msg3 = plan.device.worker(msg1, msg2, plan.opts, run)
            if h.static:
                return Executed(msg1, msg3, msg3, plan.device)
            return Executed(msg1, msg3, plan.device.reply(msg1, plan.msg2, msg3, plan.opts), plan.device)
        except Exception as exc:
            return exc
        finally:
            h.last = time.monotonic()
            h.executions += 1
            self.busy = False

    def _finish(self, h: Hosted, group: str, key: str, task_id: str, outcome: Any,
                own: RequestRecord | None, request: Any = None) -> Any:
        """Record the outcome, then answer: the request itself (``own``, else its tracer will) and its waiters.

        A rolling group's new state is recorded in the same script that takes
        the waiters (``finish_hosted``), as a checkpoint or, between checkpoints,
        as the request's record appended to the group's journal; that script also
        keeps the answers as a delivery until they are all given: a crash at any
        point after the device returned loses neither the state nor an answer.
        Returns what the callers got (an error if the state could not be kept).
        """
        change = StateChange()
        if isinstance(outcome, Executed):
            outcome, change = self._roll(h, group, task_id, outcome)
        finished = self._record(h, group, key, task_id, outcome, change)
        faults.point("after-finish-hosted")
        self._keep(h, change)
        self.answer(finished.waiters, outcome, onto=task_id)
        if own is not None:
            self.answer([own.waiter()], outcome, onto=task_id)
            self.settle(finished.delivery)
        elif request is not None:
            request.persistent_delivery = finished.delivery
        if isinstance(outcome, BaseException) and h.error_strategy == "throw" and not h.releasing:
            h.releasing = True
            self.queues.soon(lambda: self.on_throw(h))
        if change.checkpoint is not None:
            self._maybe_rename(h)
        return outcome

    def _roll(self, h: Hosted, group: str, task_id: str, done: Executed) -> tuple[Any, StateChange]:
        """What the callers get, and how the group's state changes: a checkpoint, a journaled request, or none.

        The policy decides between a checkpoint and the journal; a checkpoint is
        also written when the journal could not stand for the state (see
        ``_checkpoint_due``).  A Msg3 that cannot be a state is the request's
        error, and the state stays as it was.
        """
        if h.static or done.msg3 is done.msg1:
            return done.reply, StateChange()  # the state did not change: nothing to write
        named = self._named(done)
        try:
            if group == h.group and self._checkpoint_due(h, done, named):
                # The canonical digest only for a group named by it (no grouper of its own).
                encoded = encode_state(done.msg3, self.max_message_bytes, group, task_id, exact=named is None)
                return done.reply, StateChange(done.msg3, encoded.size, checkpoint=encoded)
            # A request under an old name (its queue drains after a rename) is journaled on the
            # group's current name, whose state it changed.
            return done.reply, StateChange(done.msg3, check_state(done.msg3, self.max_message_bytes),
                                           journaled=True)
        except PersistentError as exc:
            return exc, StateChange()

    def _checkpoint_due(self, h: Hosted, done: Executed, named: str | None) -> bool:
        """Whether this request's state is written as a checkpoint rather than journaled.

        The policy says so; or the device cannot be replayed; or the state does
        not name this group by the device's own grouper (a rename starts from a
        checkpoint, and a group named by its state's digest renames at every
        change); or the callers' answer is the large state itself (its delivery
        then answers from the checkpoint instead of holding a second copy).
        """
        age = time.monotonic() - h.journaled_at if h.journaled else 0.0
        if h.policy.due(h.journaled + 1, age) or not done.device.deterministic:
            return True
        if named != h.group:
            return True
        return done.reply is done.msg3 and h.size > self.inline_bytes

    def _named(self, done: Executed) -> str | None:
        """The group the new state names by the device's own grouper; None without one, or if it names none."""
        if not has_own_grouper(done.device):
            return None
        try:
            name = done.device.grouper(done.msg3, None, resolve_options(None, self.planner.conf))
        except Exception:
            return None  # checkpointed, and the rename check (planner.group) reports the failure
        return normalise(name) if name is not None else None

    def _record(self, h: Hosted, group: str, key: str, task_id: str, outcome: Any, change: StateChange) -> Finished:
        """``finish_hosted``, through a short outage; raises NotOurs when this host must not answer."""
        written = change.checkpoint
        # A reply that is the checkpointed state itself is answered from the checkpoint: not stored twice.
        from_checkpoint = written is not None and outcome is change.state
        encoded = "" if from_checkpoint else self.answer.encode_outcome(outcome)
        token = h.token_for(group)
        try:
            finished = self.registry.steady(lambda: self.registry.finish_hosted(
                group, token, key, task_id, encoded,
                new_ref=written.storage_id if written else "", size=written.size if written else 0,
                state=written.data if written else "", replaces=h.ref, journal=change.journaled,
                journal_of=h.group))
        except RegistryUnavailable:
            # Not recorded: the request stays accepted and runs again from the
            # checkpoint on the group's next owner; this host lets the group go.
            logger.error("could not record request %s of group %s: the registry is unreachable", task_id, group)
            self.on_lost(h)
            raise NotOurs(task_id) from None
        if finished.gone:
            # Recorded already (a repeat after a lost reply): the stored state is ahead of memory,
            # and is loaded again (checkpoint and journal) by the next request.
            h.msg1 = None
            h.ref = self.registry.owner(h.group).get("ref", h.ref)
        if finished.stale or finished.gone:
            # Not this host's to answer: the group's new owner runs the request
            # again from its checkpoint (stale), or it was answered already (gone).
            logger.warning("request %s of group %s finished after %s", task_id, group,
                           "the group changed owner" if finished.stale else "it was withdrawn")
            raise NotOurs(task_id)
        return finished

    def _keep(self, h: Hosted, change: StateChange) -> None:
        """The recorded state becomes the group's state in memory."""
        if change.state is None:
            return
        if change.checkpoint is not None:
            self.cache.put(h, change.state, change.checkpoint.storage_id, change.checkpoint.size)
            h.journaled, h.journaled_at = 0, 0.0
            return
        self.cache.put(h, change.state, h.ref, change.size)
        if not h.journaled:
            h.journaled_at = time.monotonic()
        h.journaled += 1

    def _maybe_rename(self, h: Hosted) -> None:
        """Re-register under group(Msg3) when the rolled state names another group."""
        new = self.planner.group(h.as_ref(), None)
        if new is None or new == h.group or self.table.knows(new):
            return
        queue = queue_name(self.queue_prefix, new)
        status, token = self.registry.rename(h.group, new, h.token, queue)
        if status is not RenameStatus.OK:
            logger.info("group %s keeps its name: %s is %s", h.group, new, status.value)
            return
        self.table.rename(h, new, token, queue)
        self.queues.soon(lambda: self.queues.consume(queue))
        logger.info("rolling group re-registered as %s", new)
