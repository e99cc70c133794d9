"""``Persistent(app)``: the plugin object and the seed's interface as methods."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import redis
from celery import Celery

from .answers import answer
from .coalescing import Coalescer
from .config import Settings, resolve_options
from .device import Device, DeviceRegistry
from .errors import InfiniteRecursionError, InvalidOptions, PersistentError
from .grouping import default_group
from .hosting import Host
from .keys import KeySpace
from .leases import LeaseKeeper
from .messages import digest, message_digest, validate
from .metrics import Metrics
from .outcomes import InfiniteRecursion, Leader, Wait
from .planning import Lazy, Plan, group_of, plan
from .records import RequestRecord
from .registry import Outcome, Placement, Registry
from .routing import queue_name
from .store import REF_KEY, MessageStore, Ref, as_ref, is_ref
from .task import PersistentTask

D = TypeVar("D", bound=type[Device])

RESOLVE_TASK = "persistent.resolve"


class Persistent:
    """Installs the plugin on a Celery app: task, worker bootstep, devices."""

    def __init__(self, app: Celery, *, task_name: str = RESOLVE_TASK) -> None:
        self.app = app
        self.devices = DeviceRegistry()
        self.coalescer = Coalescer(self)
        self.metrics = Metrics(lambda: self.redis, lambda: self.keys.metrics())
        self.keeper = LeaseKeeper(lambda: self.registry, interval=1.0)
        self.store = MessageStore(
            lambda: self.redis,
            lambda: self.keys,
            lambda: self.settings.max_message_bytes,
            lambda: self.settings.store_ttl,
        )
        self.host: Host | None = None  # set in a worker started with --persistent
        self._clients: dict[int, redis.Redis] = {}
        self._registry: Registry | None = None
        self._lock = threading.Lock()
        self.resolve = app.task(
            name=task_name,
            base=PersistentTask,
            bind=True,
            persistent=self,
            shared=False,
        )(_resolve)
        from .bootstep import WORKER_OPTIONS, make_steps
        from .discovery import remember

        worker_step, consumer_step = make_steps(self)
        app.steps["worker"].add(worker_step)
        app.steps["consumer"].add(consumer_step)
        for option in WORKER_OPTIONS:
            app.user_options["worker"].add(option)
        remember(app, self)

    # -- configuration -----------------------------------------------------

    @cached_property
    def settings(self) -> Settings:
        """Read once, on first use: the app may be configured after Persistent(app)."""
        settings = Settings.from_conf(self.app.conf)
        self.keeper.interval = min(settings.lease_ttl / 3, settings.reap_interval)
        return settings

    @cached_property
    def keys(self) -> KeySpace:
        return KeySpace(self.settings.key_prefix)

    @property
    def redis(self) -> redis.Redis:
        """One client per process (redis-py pools are not fork-safe to share)."""
        pid = os.getpid()
        client = self._clients.get(pid)
        if client is None:
            with self._lock:
                client = self._clients.get(pid)
                if client is None:
                    client = redis.Redis.from_url(self.settings.redis_url)
                    self._clients = {pid: client}
        return client

    @property
    def registry(self) -> Registry:
        """The Lua scripts registered on this process's client."""
        client = self.redis
        registry = self._registry
        if registry is None or registry.client is not client:
            registry = Registry(client, self.keys, self.settings.lease_ttl, self.settings.queue_ttl)
            self._registry = registry
        return registry

    # -- devices -----------------------------------------------------------

    def device(self, name: str) -> Callable[[D], D]:
        """Class decorator registering a device under ``name``."""

        def register(cls: D) -> D:
            self.devices.register(name, cls)
            return cls

        return register

    def plan(self, msg1: Any, msg2: Any, opts: Mapping[str, Any] | None, stack: Any = None) -> Plan:
        return plan(self.devices, self.store, self.app.conf, self.settings.max_message_bytes,
                    msg1, msg2, opts, stack)

    def ref(self, msg: Any) -> Ref:
        """Store ``msg`` (content addressed) and return a small reference to it.

        The Ref is accepted wherever a message is; passing it instead of a
        large Msg1 means the message is neither hashed nor sent again.
        """
        if is_ref(msg):
            return as_ref(msg)
        return self.store.put(msg)

    def _msg1_digest(self, msg1: Any) -> tuple[str, Any]:
        if is_ref(msg1):
            ref = as_ref(msg1)
            return ref.digest, Lazy(lambda: self.store.get(ref))
        return digest(validate(msg1, "msg1", self.settings.max_message_bytes)), msg1

    # -- the seed's interface ----------------------------------------------

    def group(self, msg1: Any, msg2: Any = None, opts: Mapping[str, Any] | None = None) -> str | None:
        """The group of a request; None when it is not coalesced."""
        merged = resolve_options(opts, self.app.conf)
        msg1_digest, content = self._msg1_digest(msg1)
        if msg2 is not None:
            validate(msg2, "msg2", self.settings.max_message_bytes)
        return group_of(self.devices.for_message(msg1), content, msg2, merged, msg1_digest)

    def default_grouper(self, msg1: Any, msg2: Any = None, opts: Mapping[str, Any] | None = None) -> str:
        """The grouper used when a device has none: a hash of both messages."""
        msg1_digest, _ = self._msg1_digest(msg1)
        if msg2 is not None:
            validate(msg2, "msg2", self.settings.max_message_bytes)
        return default_group(msg1_digest, msg2)

    def find_or_register(
        self, msg1: Any, msg2: Any, opts: Mapping[str, Any] | None = None
    ) -> Leader | Wait | InfiniteRecursion:
        """Become the group's leader, or wait for the one executing it."""
        planned = self.plan(msg1, msg2, opts)
        request_id = str(uuid.uuid4())
        if planned.group is None:
            return Leader(group="", key=planned.key, token="", task_id=request_id)
        if planned.recursive:
            return InfiniteRecursion(planned.group)
        args = [msg1, msg2, opts] if opts is not None else [msg1, msg2]
        record = RequestRecord(request_id, planned.key, self.resolve.name, {"shadow": planned.shadow}, args, {},
                               list(planned.stack))
        group, submitted = self.coalescer.register(planned, record)
        if submitted.outcome is Outcome.LEADER:
            self.registry.claim(group, submitted.token)
            self.keeper.hold(group, submitted.token)
            return Leader(group, planned.key, submitted.token, request_id)
        if submitted.outcome is Outcome.HOSTED:
            # A persistent worker owns the group: it executes this request.
            self.coalescer.publish_hosted(self.resolve, record, group, submitted.queue, submitted.ref,
                                          dict(record.options))
            return Wait(group, planned.key, submitted.host, request_id, queued=True)
        queued = submitted.outcome is Outcome.QUEUED
        return Wait(group, planned.key, submitted.other_id, request_id, queued)

    def unregister_notify(
        self, group: str | Leader, msg2: Any, msg3: Any, opts: Mapping[str, Any] | None = None
    ) -> int:
        """Release a group this process leads; give Msg3 (or an error) to its waiters."""
        if isinstance(group, Leader):
            name, token = group.group, group.token
        else:
            name, token = group, self.keeper.token_for(group) or ""
        if not name or not token:
            return 0
        self.keeper.drop(token)
        return self.coalescer.complete(name, message_digest(msg2), token, msg3, executed=True)

    def notify(self, group: str, msg2: Any, msg3: Any, opts: Mapping[str, Any] | None = None) -> int:
        """Answer the current waiters of (group, Msg2) without releasing the group."""
        waiters = self.registry.take_waiters(group, message_digest(msg2))
        return answer(self.app, waiters, msg3)

    def await_(
        self,
        leader: Wait | Leader | InfiniteRecursion,
        msg1: Any,
        msg2: Any,
        opts: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Block until the awaited execution answers; raises its error or LeaderDied."""
        if isinstance(leader, InfiniteRecursion):
            raise InfiniteRecursionError(f"group {leader.group} awaits itself", leader.group)
        if isinstance(leader, Leader):
            raise PersistentError("await_ takes a Wait: a Leader executes and notifies instead")
        return self.app.AsyncResult(leader.waiter_id).get(timeout=timeout)

    # -- persistent workers ----------------------------------------------------

    def start_worker(self, msg1: Any, opts: Mapping[str, Any] | None = None, group: str | None = None) -> WorkerHandle:
        """Place a group on the least loaded live persistent worker; never blocks on it.

        Msg1 is stored (content addressed) so that another worker can take the
        group over after a crash.  Starting a group that is already hosted
        returns where it is.
        """
        # An idle timeout nobody set is left to the worker (--persistent-timeout).
        explicit = (opts is not None and "worker_timeout" in opts) or "persistent_worker_timeout" in self.app.conf
        return self.place(msg1, resolve_options(opts, self.app.conf), group, timeout_set=bool(explicit))

    def place(self, msg1: Any, opts: dict[str, Any], group: str | None, expect: str = "",
              timeout_set: bool = True) -> WorkerHandle:
        ref = self.ref(msg1)
        # A Ref names its device; only a hand-made one without it is fetched.
        device = ref.get("device") or self.store.get(ref).get("device")
        group = group or self.group(ref, None, opts)
        if group is None:
            raise InvalidOptions("a persistent worker needs a group: await_inprogress is off", "await_inprogress")
        host = self.pick_worker()
        if host is None:
            raise PersistentError("no live persistent worker: start one with `celery worker --persistent -P solo`")
        queue = queue_name(self.settings.queue_prefix, group)
        timeout = float(opts["worker_timeout"]) if timeout_set else 0.0
        where = Placement(group, host, queue, ref.storage_id, bool(opts["static_worker"]), timeout,
                          str(device), ref.size, str(opts["error_strategy"]))
        status, _token, info = self.registry.place(where, expect=expect)
        if status == "exists":
            return WorkerHandle(group, info[1], info[0])
        if status != "placed":
            raise PersistentError(f"group {group} cannot be placed now: it is {info[0] if info else status}")
        return WorkerHandle(group, queue, host)

    def pick_worker(self, exclude: str | None = None) -> str | None:
        """The live persistent worker hosting the fewest groups."""
        live = [(count, name) for name, count in self.registry.live_workers() if name != exclude]
        return min(live)[1] if live else None

    def stop_worker(self, group: str) -> bool:
        """Ask the worker hosting ``group`` to let it go once its queue is done."""
        owner = self.registry.owner(group)
        if owner.get("mode") != "hosted" or not owner.get("host"):
            return False
        self.registry.post(owner["host"], f"stop:{group}")
        return True

    def drain(self, hostname: str) -> bool:
        """Ask a persistent worker to hand all its groups to others (before a restart)."""
        if hostname not in dict(self.registry.live_workers()):
            return False
        self.registry.post(hostname, "drain")
        return True

    def workers(self) -> list[dict[str, Any]]:
        """Live persistent workers and their load."""
        return self.registry.worker_info()

    def start_monitor(self, group: str | None = None, interval: float = 1.0, stream: Any = None) -> Any:
        """Print the seed's sitrep (groups, workers, counters) on change, to stderr by default."""
        from .monitor import Monitor

        monitor = Monitor(self, group=group, interval=interval, stream=stream)
        monitor.start()
        return monitor

    def stop_monitor(self, monitor: Any) -> None:
        monitor.stop()

    def groups(self) -> list[dict[str, Any]]:
        """Live hosted groups, for tools (status, monitor, Flower docs)."""
        now = time.time()
        out = []
        for group, owner in self.registry.hosted_groups():
            if owner.get("mode") != "hosted":
                continue
            last = float(owner.get("last") or 0) / 1000
            out.append({
                "group": group,
                "hostname": owner.get("host", ""),
                "queue": owner.get("queue", ""),
                "static": owner.get("static") == "1",
                "executions": int(owner.get("executions") or 0),
                "idle": round(max(0.0, now - last), 3) if last else None,
                "msg1_bytes": int(owner.get("bytes") or 0),
                "state": owner.get("state", ""),
                "timeout": float(owner.get("timeout") or 0),
            })
        return out

    def forward_work(self, group: str, to: str, opts: Mapping[str, Any] | None = None) -> int:
        """Send the requests waiting on ``group`` to group ``to``, in order; return how many.

        The seed's forward_work/2: what a group had accepted but not started
        (requests queued behind its leader, or accepted by its persistent
        worker) is registered with ``to`` instead and runs there.  Their old
        queue messages are left to be skipped.
        """
        records = self.registry.take(group)
        for record in records:
            self.coalescer.resubmit(record, to)
        return len(records)

    def hand_on(self, records: list[RequestRecord], msg1: Ref) -> int:
        """Resubmit accepted requests of a group that lost its worker, against its last state."""
        for record in records:
            args = list(record.args or [])
            if len(args) < 2:
                continue
            args[0] = msg1
            task = self.app.tasks[record.task]
            planned = self.plan(msg1, args[1], args[2] if len(args) > 2 else None, stack=record.stack)
            self.coalescer.submit(task, planned, args, record.id, dict(record.options), flags="r")
        return len(records)

    def recover_hosted(self, group: str, token: str) -> None:
        """A persistent worker died: place its group elsewhere, or run its requests as usual."""
        owner = self.registry.owner(group)
        target = self.pick_worker(exclude=owner.get("host"))
        if owner.get("mode") == "hosted" and target is not None:
            where = Placement.from_owner(group, target, owner)
            status, _, _ = self.registry.place(where, expect=token)
            if status == "placed":
                return
        _, unfinished = self.registry.unhost(group, token, force=True)
        self.hand_on(unfinished, Ref({REF_KEY: owner.get("ref", ""), "device": owner.get("device")}))


@dataclass(frozen=True)
class WorkerHandle:
    """Where a group is hosted."""

    group: str
    queue: str
    hostname: str


def _resolve(
    task: PersistentTask, msg1: Mapping[str, Any], msg2: Mapping[str, Any], opts: Mapping[str, Any] | None = None
) -> Any:
    """Resolve Msg2 against Msg1, with no registration.

    Workers never call this directly: ``PersistentTask.__call__`` wraps the
    same execution with the group's registration and the waiters' answers.
    """
    persistent = task.persistent
    return persistent.coalescer.execute(persistent.plan(msg1, msg2, opts))
