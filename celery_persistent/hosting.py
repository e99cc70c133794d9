"""The persistent worker: hosts groups, keeps their Msg1 in memory, runs their queues.

A worker started with ``--persistent`` (solo pool) hosts groups placed on
it.  For each group it consumes the group's queue, keeps Msg1 in memory
(bounded in bytes, least recently used evicted first), renews the group's
lease, rolls the state forward or keeps it static, and lets the group go
after ``worker_timeout`` idle seconds.

Threads: ``tick`` runs on the lease thread (so it works while a request
runs); everything that touches the consumer or executes requests is handed
to the worker's event loop with ``hub.call_soon``, which runs between tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from celery.exceptions import Ignore

from .answers import answer
from .coalescing import recursion_error
from .errors import InvalidMessage, PersistentError
from .events import worker_event
from .handoff import delete_queue
from .messages import validate
from .registry import Adopted, Placement
from .routing import SINGLE_ACTIVE_CONSUMER, queue_name
from .store import REF_KEY, Ref

if TYPE_CHECKING:
    from .plugin import Persistent
    from .records import RequestRecord

logger = logging.getLogger(__name__)

TOUCH_EVERY = 60
"""Beats between renewals of the stored Msg1s' TTL (days long): not every second."""


@dataclass
class Hosted:
    """One group this process hosts, and its state."""

    group: str
    token: str
    queue: str
    device: str
    static: bool
    timeout: float
    ref: str  # storage id of the stored Msg1 (checkpoint)
    size: int
    error_strategy: str = "ignore"
    msg1: Mapping[str, Any] | None = None  # None: evicted, reload by ref
    last: float = field(default_factory=time.monotonic)
    executions: int = 0
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # old group -> (token, queue)
    releasing: bool = False
    retired: set[str] = field(default_factory=set)  # aliases whose old queue is done and deleted
    stopping: bool = False  # stop_worker: release as soon as its accepted requests are done

    def as_ref(self) -> Ref:
        ref = Ref({REF_KEY: self.ref, "device": self.device, "bytes": self.size})
        ref.value = self.msg1
        return ref


class Host:
    """The groups hosted by this worker process (one per ``--persistent`` worker)."""

    def __init__(self, persistent: Persistent, hostname: str, cache_bytes: int, default_timeout: float) -> None:
        self.p = persistent
        self.hostname = hostname
        self.cache_bytes = cache_bytes
        self.default_timeout = default_timeout
        self.groups: OrderedDict[str, Hosted] = OrderedDict()  # LRU order
        self._by_name: dict[str, Hosted] = {}  # every name (current and aliases) -> Hosted
        self._lock = threading.RLock()
        self._consumer: Any = None
        self._busy = False
        self._draining = False
        self._beats = 0

    # -- wiring ---------------------------------------------------------------

    def bind(self, consumer: Any) -> None:
        """Called when the worker's consumer (re)starts: consume hosted queues again."""
        self._consumer = consumer
        with self._lock:
            queues = [h.queue for h in self.groups.values()]
            queues += [q for h in self.groups.values() for a, (_, q) in h.aliases.items() if a not in h.retired]
        self._consume(*queues)

    def _soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the worker's event loop (between tasks)."""
        hub = getattr(self._consumer, "hub", None) if self._consumer is not None else None
        if hub is None:
            fn()
        else:
            hub.call_soon(fn)

    def _consume(self, *queues: str) -> None:
        """Consume group queues: declared once each, then one consume() for the batch.

        Celery's ``add_task_queue`` restarts consuming for every queue added,
        which is quadratic when a worker takes up thousands of groups at once.
        """
        consumer = self._consumer
        if consumer is None:
            return
        declared = consumer.app.amqp.queues
        tasks = consumer.task_consumer
        added = False
        for name in queues:
            if tasks.consuming_from(name):
                continue
            queue = declared.select_add(name, exchange=name, exchange_type="direct", routing_key=name,
                                        queue_arguments=dict(SINGLE_ACTIVE_CONSUMER), durable=True)
            tasks.add_queue(queue)
            added = True
        if added:
            tasks.consume()
            logger.info("consuming %d more group queue(s)", len(queues))

    def _stop_consuming(self, queue: str) -> None:
        if self._consumer is not None:
            try:
                self._consumer.cancel_task_queue(queue)
            except Exception:
                logger.exception("could not stop consuming %s", queue)

    # -- the lease thread's beat ------------------------------------------------

    def tick(self) -> None:
        registry = self.p.registry
        with self._lock:
            hosted = list(self.groups.values())
        leases = [(h.group, h.token) for h in hosted]
        leases += [(alias, tok) for h in hosted for alias, (tok, _) in h.aliases.items()]
        for (group, _), ok in zip(leases, registry.renew(leases), strict=True):
            if not ok:
                self._lost(group)
        registry.heartbeat(self.hostname, self.load())
        self._beats += 1
        if self._beats % TOUCH_EVERY == 1:
            self.p.store.touch([h.ref for h in hosted])
        adopted = [a for a in (self._inbox(item) for item in registry.take_inbox(self.hostname)) if a is not None]
        if adopted:
            self._soon(partial(self._activate, adopted))
        now = time.monotonic()
        for h in hosted:
            self._retire_aliases(h)
            if h.releasing or self._busy:
                continue
            if h.stopping or now - h.last > h.timeout:
                h.releasing = True
                self._soon(partial(self._release, h, reason="stop" if h.stopping else "idle"))

    def _retire_aliases(self, h: Hosted) -> None:
        """Stop consuming an old name's queue once its accepted requests are done.

        The old name stays registered as a "moved" marker while the group is
        hosted, so callers holding an old Msg1 still find the group.
        """
        for alias, (_token, queue) in list(h.aliases.items()):
            if alias not in h.retired and self.p.registry.unfinished(alias) == 0:
                h.retired.add(alias)
                self._soon(partial(self._drop_queue, queue))

    def _drop_queue(self, queue: str) -> None:
        self._stop_consuming(queue)
        try:
            delete_queue(self.p.app, queue)
        except Exception:
            logger.warning("could not delete the queue %s", queue, exc_info=True)

    def load(self) -> dict[str, int]:
        with self._lock:
            cached = sum(h.size for h in self.groups.values() if h.msg1 is not None)
            return {"groups": len(self.groups), "cache_bytes": cached, "max_cache_bytes": self.cache_bytes,
                    "executions": sum(h.executions for h in self.groups.values()),
                    "draining": int(self._draining)}

    def _inbox(self, item: str) -> tuple[Hosted, Adopted] | None:
        """Handle one inbox entry; a group placed here is adopted and returned."""
        if item == "drain":
            self._draining = True
            # Tell placement at once, so that no new group lands here.
            self.p.registry.heartbeat(self.hostname, self.load())
            self._soon(self.hand_off_all)
            return None
        if item.startswith("stop:"):
            h = self._lookup(item[5:])
            if h is not None:
                h.stopping = True  # released on this beat or, if busy, a later one
            return None
        if self._draining and self._pass_on(item):
            return None
        adopted = self.p.registry.adopt(item, self.hostname)
        if adopted is None:
            logger.info("group %s was placed elsewhere before this worker took it", item)
            return None
        where = adopted.where
        h = Hosted(group=item, token=adopted.token, queue=where.queue, device=where.device, static=where.static,
                   timeout=where.timeout or self.default_timeout, ref=where.ref, size=where.size,
                   error_strategy=where.error_strategy)
        # Known (and renewed by this beat) from now on, before its queue is consumed.
        with self._lock:
            self.groups[item] = h
            self._by_name[item] = h
        return h, adopted

    def _pass_on(self, group: str) -> bool:
        """A draining worker re-places a group that was placed on it before it said so."""
        owner = self.p.registry.owner(group)
        target = self.p.pick_worker(exclude=self.hostname)
        if owner.get("host") != self.hostname or target is None:
            return False
        where = Placement.from_owner(group, target, owner)
        status, _, _ = self.p.registry.place(where, expect=owner.get("token", ""))
        return status == "placed"

    def _lost(self, group: str) -> None:
        """Another owner has the group (this worker stalled past its lease)."""
        with self._lock:
            h = self._by_name.get(group)
            if h is None:
                return
            logger.warning("lost group %s to another owner; letting it go", group)
            self._forget(h)
        for queue in (h.queue, *[a[1] for a in h.aliases.values()]):
            self._soon(partial(self._stop_consuming, queue))

    # -- adoption, release ----------------------------------------------------

    def _activate(self, batch: list[tuple[Hosted, Adopted]]) -> None:
        """Start serving adopted groups (on the event loop)."""
        self.p.metrics.incr("placements", len(batch))
        worker_event(self.p.app, self.hostname, "hosted",
                     groups=[{"group": h.group, "queue": h.queue, "static": h.static,
                              "recovered": len(adopted.unfinished)} for h, adopted in batch])
        for h, adopted in batch:
            logger.info("hosting group %s (%s, queue %s)", h.group, "static" if h.static else "rolling", h.queue)
            # Requests accepted before this worker took over (crash, hand-off,
            # spawn) run first and in order; their queue messages then find
            # them done and are skipped.
            for record in adopted.unfinished:
                self._run_record(h, record)
        self._consume(*[h.queue for h, _ in batch])

    def _release(self, h: Hosted, reason: str, force: bool = False) -> None:
        """Let a group go: timeout hook, unregister if idle, stop consuming."""
        if h.msg1 is not None and reason == "idle":
            try:
                self.p.devices.for_message({"device": h.device}).on_idle(h.msg1, {"worker_timeout": h.timeout})
            except Exception:
                logger.exception("on_idle of device %s failed for group %s", h.device, h.group)
        status, unfinished = self.p.registry.unhost(h.group, h.token, force=force)
        if status == "busy":
            # A request raced the timeout: it is accepted, so keep hosting and run it.
            h.releasing = False
            h.last = time.monotonic()
            return
        for alias, (token, _queue) in h.aliases.items():
            _, more = self.p.registry.unhost(alias, token, force=True)
            unfinished.extend(more)
        with self._lock:
            self._forget(h)
        for alias, (_token, queue) in h.aliases.items():
            if alias not in h.retired:
                self._drop_queue(queue)
        self._drop_queue(h.queue)
        logger.info("released group %s (%s)", h.group, reason)
        worker_event(self.p.app, self.hostname, "released", group=h.group, reason=reason,
                     handed_on=len(unfinished))
        self.p.hand_on(unfinished, h.as_ref() if h.msg1 is not None else Ref({REF_KEY: h.ref, "device": h.device}))

    def _forget(self, h: Hosted) -> None:
        self.groups.pop(h.group, None)
        for name in (h.group, *h.aliases):
            if self._by_name.get(name) is h:
                del self._by_name[name]

    def _lookup(self, group: str) -> Hosted | None:
        with self._lock:
            return self._by_name.get(group)

    def shutdown(self) -> None:
        """Warm shutdown: hand every hosted group to another persistent worker."""
        self.p.registry.leave(self.hostname)
        self.hand_off_all()

    def hand_off_all(self) -> None:
        """Give every hosted group to another live persistent worker (else let it go)."""
        with self._lock:
            hosted = list(self.groups.values())
        for h in hosted:
            if not self._hand_off(h, allow_self=False):
                self._release(h, reason="hand-off", force=True)

    def _hand_off(self, h: Hosted, allow_self: bool) -> bool:
        """Place the group (from its checkpoint, with its unfinished requests) on a worker."""
        target = self.p.pick_worker(exclude=self.hostname) or (self.hostname if allow_self else None)
        if target is None:
            return False
        where = Placement(h.group, target, h.queue, h.ref, h.static, h.timeout, h.device, h.size, h.error_strategy)
        status, _token, _ = self.p.registry.place(where, expect=h.token)
        if status != "placed":
            return False
        with self._lock:
            self._forget(h)
        for queue in (h.queue, *[a[1] for a in h.aliases.values()]):
            self._stop_consuming(queue)
        logger.info("handed group %s to %s", h.group, target)
        worker_event(self.p.app, self.hostname, "handed-off", group=h.group, to=target)
        return True

    def _restart(self, h: Hosted) -> None:
        """error_strategy="throw": end this instance; a fresh one resumes from the checkpoint."""
        if not self._hand_off(h, allow_self=True):
            self._release(h, reason="error", force=True)

    # -- execution ------------------------------------------------------------

    def run(self, task: Any, header: Mapping[str, Any], msg2: Any, opts: Any) -> Any:
        """Execute one request from a group queue (called from the task, main thread)."""
        group = str(header.get("group"))
        h = self._lookup(group)
        task_id = task.request.id
        if h is None or not self.p.registry.start_hosted(group, self._token_for(h, group), task_id):
            # Done already (run at adoption) or the group moved on with it.
            logger.info("skipping %s for group %s: not hosted here or already done", task_id, group)
            raise Ignore()
        outcome = self._execute(h, group, msg2, opts, tuple(header.get("stack") or ()))
        key = str(header.get("key"))
        self._finish(h, group, key, task_id, outcome)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _run_record(self, h: Hosted, record: RequestRecord) -> None:
        """Run an accepted request from its stored record (recovery)."""
        args = list(record.args or [])
        msg2 = args[1] if len(args) > 1 else None
        opts = args[2] if len(args) > 2 else None
        outcome = self._execute(h, h.group, msg2, opts, tuple(record.stack))
        self._finish(h, h.group, record.key, record.id, outcome)
        answer(self.p.app, [record.waiter()], outcome)

    def _token_for(self, h: Hosted, group: str) -> str:
        return h.token if group == h.group else h.aliases[group][0]

    def _execute(self, h: Hosted, group: str, msg2: Any, opts: Any, stack: tuple[str, ...]) -> Any:
        """Msg3, or the exception the execution raised (never raises itself)."""
        self._busy = True
        try:
            msg1 = self._msg1(h)
            ref = h.as_ref()
            plan = self.p.plan(ref, msg2, opts, stack=stack)
            if plan.recursive:
                raise recursion_error(h.group)
            # A rolling group validates Msg3 when it checkpoints it (_roll): check it once.
            run = partial(self.p.coalescer.execute, plan, check_result=h.static)
            return plan.device.worker(msg1, msg2, plan.opts, run)
        except Exception as exc:
            return exc
        finally:
            h.last = time.monotonic()
            h.executions += 1
            self._busy = False

    def _finish(self, h: Hosted, group: str, key: str, task_id: str, outcome: Any) -> None:
        failed = isinstance(outcome, BaseException)
        new_ref, size = "", 0
        if not failed and not h.static:
            try:
                new_ref, size = self._roll(h, outcome)
            except PersistentError as exc:
                outcome, failed = exc, True
        waiters = self.p.registry.finish_hosted(group, self._token_for(h, group), key, task_id, new_ref, size)
        if waiters is None:
            logger.warning("group %s changed owner while %s ran", group, task_id)
            return
        answer(self.p.app, waiters, outcome)
        if failed and h.error_strategy == "throw" and not h.releasing:
            h.releasing = True
            self._soon(lambda: self._restart(h))
        if new_ref:
            self._maybe_rename(h)

    def _roll(self, h: Hosted, msg3: Any) -> tuple[str, int]:
        """Msg3 becomes Msg1: checkpoint it in the store (for recovery)."""
        if not isinstance(msg3, Mapping):
            raise InvalidMessage(f"a rolling worker needs Msg3 to be a message, not {type(msg3).__name__}", "msg3")
        encoded = validate(msg3, "msg3", self.p.settings.max_message_bytes)
        ref = self.p.store.put(msg3, encoded)
        h.msg1, h.ref, h.size = msg3, ref.storage_id, ref.size
        self._fit_cache(keep=h)
        return ref.storage_id, ref.size

    def _maybe_rename(self, h: Hosted) -> None:
        """Re-register under group(Msg3) when the rolled state names another group."""
        assert h.msg1 is not None
        new = self.p.group(h.as_ref(), None)
        if new is None or new == h.group or new in self._by_name:
            return
        queue = queue_name(self.p.settings.queue_prefix, new)
        status, token = self.p.registry.rename(h.group, new, h.token, queue)
        if status != "ok":
            logger.info("group %s keeps its name: %s is %s", h.group, new, status)
            return
        with self._lock:
            self.groups.pop(h.group, None)
            h.aliases[h.group] = (h.token, h.queue)
            h.group, h.token, h.queue = new, token, queue
            self.groups[new] = h
            self._by_name[new] = h
        self._soon(lambda: self._consume(queue))
        logger.info("rolling group re-registered as %s", new)

    # -- the Msg1 cache -------------------------------------------------------

    def _msg1(self, h: Hosted) -> Mapping[str, Any]:
        with self._lock:
            self.groups.move_to_end(h.group, last=True) if h.group in self.groups else None
        if h.msg1 is None:
            h.msg1 = self.p.store.get(Ref({REF_KEY: h.ref, "device": h.device}), cache=False)
            self._fit_cache(keep=h)
        return h.msg1

    def _fit_cache(self, keep: Hosted) -> None:
        """Evict least recently used Msg1s until the cache is within its bound."""
        with self._lock:
            used = sum(h.size for h in self.groups.values() if h.msg1 is not None)
            for h in list(self.groups.values()):
                if used <= self.cache_bytes:
                    break
                if h is keep or h.msg1 is None:
                    continue
                h.msg1 = None
                used -= h.size
                self.p.metrics.incr("evictions")
                logger.info("evicted Msg1 of group %s (%d bytes) from the cache", h.group, h.size)
