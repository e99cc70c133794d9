"""``Persistent(app)``: the plugin's public facade, and the seed's interface as its methods."""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from celery import Celery

from . import inbox
from .answers import Answerer
from .bootstep import WORKER_OPTIONS, HostQueuesStep, PersistentStep
from .coalescing import Coalescer
from .config import Settings, placement_timeout, resolve_options
from .device import Device, DeviceRegistry
from .discovery import remember
from .dispatch import Dispatcher
from .errors import InfiniteRecursionError, PersistentError
from .events import Events
from .grouping import check_group_name
from .hosting import Host, build_host
from .hubwake import HubWakeStep
from .keys import KeySpace
from .leases import LeaseKeeper
from .messages import message_digest
from .metrics import Metrics
from .outcomes import InfiniteRecursion, Leader, Wait
from .placement import Placer, WorkerHandle
from .planning import Plan, Planner
from .protocol import SubmitOutcome
from .records import RequestRecord
from .recovery import Reaper
from .registry import Registry
from .revocation import Revocation, RevokedIds
from .runtime import Runtime
from .store import MessageStore, Ref, as_ref, is_ref
from .stranded import stranded_leaders
from .task import PersistentTask

__all__ = ["Persistent", "WorkerHandle"]

D = TypeVar("D", bound=type[Device])

RESOLVE_TASK = "persistent.resolve"


class Persistent:
    """The public facade: installs the plugin on a Celery app and forwards the seed's calls.

    It is also the composition root: ``_wiring`` builds, once per process,
    the runtime and the components on it, each given what it uses.
    """

    def __init__(self, app: Celery, *, task_name: str = RESOLVE_TASK) -> None:
        self.app = app
        self.devices = DeviceRegistry()
        self.host: Host | None = None  # set in a worker started with --persistent
        self._settings: Settings | None = None
        self._wired: Wiring | None = None
        self._lock = threading.Lock()
        # A prefork child is forked while the parent's lease thread runs: any lock
        # it held at that instant would stay locked in the child for ever.  The
        # child builds its own runtime (new locks) and gets a fresh lock here.
        _fork_safe(self)
        self.resolve = app.task(
            name=task_name,
            base=PersistentTask,
            bind=True,
            persistent=self,
            shared=False,
        )(_resolve)
        app.steps["worker"].add(PersistentStep)
        app.steps["consumer"].add(HostQueuesStep)
        app.steps["consumer"].add(HubWakeStep)  # RabbitMQ: no sleep with an ack queued (hubwake.py)
        for option in WORKER_OPTIONS:
            app.user_options["worker"].add(option)
        remember(app, self)

    # -- composition ----------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """Read once, on first use: the app may be configured after Persistent(app)."""
        if self._settings is None:
            self._settings = Settings.from_conf(self.app.conf)
        return self._settings

    @property
    def wiring(self) -> Wiring:
        """This process's components (built on first use, and again after a fork)."""
        wired = self._wired
        if wired is None or not wired.runtime.current:
            with self._lock:
                wired = self._wired
                if wired is None or not wired.runtime.current:
                    wired = Wiring.build(self.app, self.devices, Runtime.build(self.settings))
                    self._wired = wired
        return wired

    @property
    def runtime(self) -> Runtime:
        """This process's settings, Redis client, registry, store, lease keeper and metrics."""
        return self.wiring.runtime

    @property
    def redis(self) -> redis.Redis:
        return self.runtime.client

    @property
    def keys(self) -> KeySpace:
        return self.runtime.keys

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def store(self) -> MessageStore:
        return self.runtime.store

    @property
    def keeper(self) -> LeaseKeeper:
        return self.runtime.keeper

    @property
    def metrics(self) -> Metrics:
        return self.runtime.metrics

    @property
    def planner(self) -> Planner:
        return self.wiring.planner

    @property
    def dispatcher(self) -> Dispatcher:
        return self.wiring.dispatcher

    @property
    def coalescer(self) -> Coalescer:
        return self.wiring.coalescer

    @property
    def placer(self) -> Placer:
        return self.wiring.placer

    @property
    def reaper(self) -> Reaper:
        return self.wiring.reaper

    def host_on(self, hostname: str, cache_bytes: int | None = None, default_timeout: float | None = None,
                reserved_groups: Callable[[], set[str]] = set) -> Host:
        """Make this process a persistent worker (the --persistent bootstep calls it)."""
        wired = self.wiring
        settings = self.settings
        self.host = build_host(
            self.app, hostname, wired.runtime, wired.planner, wired.placer, self.devices, wired.answer,
            wired.dispatcher,
            cache_bytes=cache_bytes or settings.cache_bytes,
            default_timeout=default_timeout or settings.default_worker_timeout,
            reserved_groups=reserved_groups,
        )
        return self.host

    # -- devices -----------------------------------------------------------

    def device(self, name: str) -> Callable[[D], D]:
        """Class decorator registering a device under ``name``."""

        def register(cls: D) -> D:
            self.devices.register(name, cls)
            return cls

        return register

    def plan(self, msg1: Any, msg2: Any, opts: Mapping[str, Any] | None, stack: Any = None) -> Plan:
        return self.planner.plan(msg1, msg2, opts, stack)

    def ref(self, msg: Any) -> Ref:
        """Store ``msg`` (content addressed) and return a small reference to it.

        The Ref is accepted wherever a message is; passing it instead of a
        large Msg1 means the message is neither hashed nor sent again.
        """
        if is_ref(msg):
            return as_ref(msg)
        return self.store.put(msg)

    # -- the seed's interface ----------------------------------------------

    def group(self, msg1: Any, msg2: Any = None, opts: Mapping[str, Any] | None = None) -> str | None:
        """The group of a request; None when it is not coalesced."""
        return self.planner.group(msg1, msg2, opts)

    def default_grouper(self, msg1: Any, msg2: Any = None, opts: Mapping[str, Any] | None = None) -> str:
        """The grouper used when a device has none: a hash of both messages."""
        return self.planner.default_grouper(msg1, msg2)

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
        dispatcher = self.dispatcher
        group, submitted = dispatcher.register(planned, record)
        if submitted.outcome is SubmitOutcome.LEADER:
            self.registry.claim(group, submitted.token)
            self.keeper.hold(group, submitted.token)
            return Leader(group, planned.key, submitted.token, request_id)
        if submitted.outcome is SubmitOutcome.HOSTED:
            # A persistent worker owns the group: it executes this request.
            dispatcher.publish_hosted(self.resolve, record, group, submitted.queue, submitted.ref,
                                      dict(record.options))
            return Wait(group, planned.key, submitted.host, request_id, queued=True)
        queued = submitted.outcome is SubmitOutcome.QUEUED
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
        finished = self.dispatcher.complete(name, message_digest(msg2), token, msg3, executed=True)
        return len(finished.waiters)

    def notify(self, group: str, msg2: Any, msg3: Any, opts: Mapping[str, Any] | None = None) -> int:
        """Answer the current waiters of (group, Msg2) without releasing the group."""
        waiters = self.registry.take_waiters(group, message_digest(msg2))
        return self.wiring.answer(waiters, msg3)

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
        if group is not None:
            group = check_group_name(group)
        merged = resolve_options(opts, self.app.conf)
        # An idle timeout nobody set is left to the worker (--persistent-timeout).
        return self.placer.place(msg1, merged, group, timeout=placement_timeout(opts, self.app.conf, merged))

    def pick_worker(self, exclude: str | None = None) -> str | None:
        """The live persistent worker hosting the fewest groups."""
        return self.placer.pick_worker(exclude)

    def stop_worker(self, group: str) -> bool:
        """Ask the worker hosting ``group`` to let it go once its queue is done.

        A parked rolling group (no persistent worker ran) is marked instead:
        the worker that takes it up next runs what it accepted, lets
        ``on_idle`` see the final state and ends it.  False if no such group.
        """
        for _ in range(3):  # a parked group may be placed between the read and the mark
            owner = self.registry.owner(group)
            if owner.get("mode") != "hosted":
                return False
            if owner.get("host"):
                self.registry.post(owner["host"], inbox.stop(group))
                return True
            if owner.get("state") != "parked":
                return False
            if self.registry.stop_parked(group, owner.get("token", "")):
                return True
        return False

    def drain(self, hostname: str) -> bool:
        """Ask a persistent worker to hand all its groups to others (before a restart)."""
        if hostname not in dict(self.registry.live_workers()):
            return False
        self.registry.post(hostname, inbox.DRAIN)
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
        return [row.as_dict() for row in self.registry.hosted_groups()]

    def forward_work(self, group: str, to: str, opts: Mapping[str, Any] | None = None) -> int:
        """Send the requests waiting on ``group`` to group ``to``, in order; return how many.

        The seed's forward_work/2: what a group had accepted but not started
        (requests queued behind its leader, or accepted by its persistent
        worker) is registered with ``to`` instead and runs there.  Their old
        queue messages are left to be skipped.
        """
        to = check_group_name(to)
        records = self.registry.take(group)
        for record in records:
            self.dispatcher.resubmit(record, to)
        return len(records)


def _fork_safe(plugin: Persistent) -> None:
    ref = weakref.ref(plugin)

    def after_in_child() -> None:
        alive = ref()
        if alive is not None:
            alive._lock = threading.Lock()

    os.register_at_fork(after_in_child=after_in_child)


@dataclass(frozen=True)
class Wiring:
    """One process's components, each built from the parts it uses."""

    runtime: Runtime
    planner: Planner
    answer: Answerer
    dispatcher: Dispatcher
    placer: Placer
    coalescer: Coalescer
    reaper: Reaper
    revocation: Revocation
    revoked: RevokedIds

    @classmethod
    def build(cls, app: Celery, devices: DeviceRegistry, runtime: Runtime) -> Wiring:
        settings, registry, store = runtime.settings, runtime.registry, runtime.store
        planner = Planner(devices, store, app.conf, settings.max_message_bytes)
        revoked = RevokedIds(runtime.client, runtime.keys.revoked())
        answer = Answerer(app, Events(app, settings.send_events), revoked=revoked.which)
        dispatcher = Dispatcher(app, registry, store, answer, settings.inline_bytes)
        placer = Placer(app, registry, store, planner, dispatcher, settings.queue_prefix)
        coalescer = Coalescer(app, registry, store, runtime.keeper, runtime.metrics, answer, dispatcher, placer)
        stranded = stranded_leaders(app, registry, after=settings.lease_ttl)
        reaper = Reaper(registry, store, runtime.metrics, answer, dispatcher, placer, gap=settings.outage_gap,
                        stranded=stranded.scan if stranded is not None else None)
        revocation = Revocation(app, registry, dispatcher)
        return cls(runtime, planner, answer, dispatcher, placer, coalescer, reaper, revocation, revoked)


def _resolve(
    task: PersistentTask, msg1: Mapping[str, Any], msg2: Mapping[str, Any], opts: Mapping[str, Any] | None = None
) -> Any:
    """Resolve Msg2 against Msg1, with no registration.

    Workers never call this directly: ``PersistentTask.__call__`` wraps the
    same execution with the group's registration and the waiters' answers.
    """
    persistent = task.persistent
    return persistent.coalescer.execute(persistent.plan(msg1, msg2, opts))
