"""``Persistent(app)``: the plugin object and the seed's interface as methods."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any, TypeVar

import redis
from celery import Celery

from .answers import answer
from .coalescing import Coalescer
from .config import Settings
from .device import Device, DeviceRegistry
from .errors import InfiniteRecursionError, PersistentError
from .grouping import default_group
from .keys import KeySpace
from .leases import LeaseKeeper
from .messages import message_digest, validate
from .metrics import Metrics
from .outcomes import InfiniteRecursion, Leader, Wait
from .planning import Plan, group_of, plan
from .records import RequestRecord
from .registry import Outcome, Registry
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
        self._clients: dict[int, redis.Redis] = {}
        self._lock = threading.Lock()
        self.resolve = app.task(
            name=task_name,
            base=PersistentTask,
            bind=True,
            persistent=self,
            shared=False,
        )(_resolve)
        from .bootstep import make_step
        from .discovery import remember

        app.steps["worker"].add(make_step(self))
        remember(app, self)

    # -- configuration -----------------------------------------------------

    @cached_property
    def settings(self) -> Settings:
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
                    self.__dict__.pop("registry", None)
        return client

    @property
    def registry(self) -> Registry:
        client = self.redis
        registry: Registry | None = self.__dict__.get("_registry")
        if registry is None or registry.client is not client:
            registry = Registry(client, self.keys, self.settings.lease_ttl, self.settings.queue_ttl)
            self.__dict__["_registry"] = registry
        return registry

    # -- devices -----------------------------------------------------------

    def device(self, name: str) -> Callable[[D], D]:
        """Class decorator registering a device under ``name``."""

        def register(cls: D) -> D:
            self.devices.register(name, cls)
            return cls

        return register

    def plan(self, msg1: Any, msg2: Any, opts: Mapping[str, Any] | None, stack: Any = None) -> Plan:
        return plan(self.devices, self.app.conf, self.settings.max_message_bytes, msg1, msg2, opts, stack)

    # -- the seed's interface ----------------------------------------------

    def group(self, msg1: Any, msg2: Any = None, opts: Mapping[str, Any] | None = None) -> str | None:
        """The group of a request; None when it is not coalesced."""
        from .config import resolve_options

        merged = resolve_options(opts, self.app.conf)
        encoded = validate(msg1, "msg1", self.settings.max_message_bytes)
        if msg2 is not None:
            validate(msg2, "msg2", self.settings.max_message_bytes)
        return group_of(self.devices.for_message(msg1), msg1, msg2, merged, encoded)

    def default_grouper(self, msg1: Any, msg2: Any = None, opts: Mapping[str, Any] | None = None) -> str:
        """The grouper used when a device has none: a hash of both messages."""
        encoded = validate(msg1, "msg1", self.settings.max_message_bytes)
        if msg2 is not None:
            validate(msg2, "msg2", self.settings.max_message_bytes)
        return default_group(encoded, msg2)

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
        record = RequestRecord(request_id, planned.key, self.resolve.name, {}, args, {}, list(planned.stack))
        submitted = self.registry.submit(planned.group, record)
        if submitted.outcome is Outcome.LEADER:
            self.registry.claim(planned.group, submitted.token)
            self.keeper.hold(planned.group, submitted.token)
            return Leader(planned.group, planned.key, submitted.token, request_id)
        queued = submitted.outcome is Outcome.QUEUED
        return Wait(planned.group, planned.key, submitted.other_id, request_id, queued)

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
        return self.coalescer.complete(name, message_digest(msg2), token, msg3)

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


def _resolve(
    task: PersistentTask, msg1: Mapping[str, Any], msg2: Mapping[str, Any], opts: Mapping[str, Any] | None = None
) -> Any:
    """Resolve Msg2 against Msg1, with no registration.

    Workers never call this directly: ``PersistentTask.__call__`` wraps the
    same execution with the group's registration and the waiters' answers.
    """
    persistent = task.persistent
    return persistent.coalescer.execute(persistent.plan(msg1, msg2, opts))
