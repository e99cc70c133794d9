"""Where groups live: pick a persistent worker, place, move, recover, hand on.

Every change of a group's host goes through ``Registry.place`` from here:
``start_worker`` and ``spawn_worker`` (``place``), a draining or failing
worker (``move``), a late placement on a draining worker (``pass_on``) and
a dead worker (``recover``).  A group that no worker can take is dissolved
and its accepted requests are handed on as ordinary requests (``hand_on``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from celery import Celery

from .dispatch import Dispatcher
from .errors import InvalidOptions, PersistentError
from .planning import Planner
from .protocol import Placement, PlaceStatus
from .queues import queue_name
from .records import RequestRecord
from .registry import Registry
from .store import REF_KEY, MessageStore, Ref, as_ref, is_ref

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerHandle:
    """Where a group is hosted."""

    group: str
    queue: str
    hostname: str


class Placer:
    def __init__(self, app: Celery, registry: Registry, store: MessageStore, planner: Planner,
                 dispatcher: Dispatcher, queue_prefix: str) -> None:
        self.app = app
        self.registry = registry
        self.store = store
        self.planner = planner
        self.dispatcher = dispatcher
        self.queue_prefix = queue_prefix

    def pick_worker(self, exclude: str | None = None) -> str | None:
        """The live persistent worker hosting the fewest groups."""
        live = [(count, name) for name, count in self.registry.live_workers() if name != exclude]
        return min(live)[1] if live else None

    def place(self, msg1: Any, opts: Mapping[str, Any], group: str | None, expect: str = "",
              timeout: float = 0.0) -> WorkerHandle:
        """Host a group holding ``msg1`` on the least loaded live worker.

        ``expect`` takes the group over from that owner token (spawn_worker);
        ``timeout`` 0 leaves the idle timeout to the worker.
        """
        ref = as_ref(msg1) if is_ref(msg1) else self.store.put(msg1)
        # A Ref names its device; only a hand-made one without it is fetched.
        device = ref.get("device") or self.store.get(ref).get("device")
        group = group or self.planner.group(ref, None, opts)
        if group is None:
            raise InvalidOptions("a persistent worker needs a group: await_inprogress is off", "await_inprogress")
        host = self.pick_worker()
        if host is None:
            raise PersistentError("no live persistent worker: start one with `celery worker --persistent -P solo`")
        queue = queue_name(self.queue_prefix, group)
        where = Placement(group, host, queue, ref.storage_id, bool(opts["static_worker"]), timeout,
                          str(device), ref.size, str(opts["error_strategy"]))
        placed = self.registry.place(where, expect=expect)
        if placed.status is PlaceStatus.EXISTS:
            return WorkerHandle(group, placed.queue, placed.host)
        if placed.status is not PlaceStatus.PLACED:
            raise PersistentError(f"group {group} cannot be placed now: it is {placed.why or placed.status.value}")
        return WorkerHandle(group, queue, host)

    def move(self, where: Placement, token: str, exclude: str, allow_self: bool) -> str | None:
        """Move a hosted group (as ``where`` describes it) off ``exclude``; the new host, or None.

        ``allow_self`` lets the group restart on ``exclude`` when no other
        worker is live (error_strategy="throw" on a lone worker).
        """
        target = self.pick_worker(exclude=exclude) or (exclude if allow_self else None)
        if target is None:
            return None
        moved = Placement(where.group, target, where.queue, where.ref, where.static, where.timeout, where.device,
                          where.size, where.error_strategy)
        placed = self.registry.place(moved, expect=token)
        return target if placed.status is PlaceStatus.PLACED else None

    def pass_on(self, group: str, hostname: str) -> bool:
        """A draining worker re-places a group that was placed on it before it said so."""
        owner = self.registry.owner(group)
        target = self.pick_worker(exclude=hostname)
        if owner.get("host") != hostname or target is None:
            return False
        placed = self.registry.place(Placement.from_owner(group, target, owner), expect=owner.get("token", ""))
        return placed.status is PlaceStatus.PLACED

    def recover(self, group: str, token: str) -> None:
        """A persistent worker died: place its group elsewhere, or run its requests as usual."""
        owner = self.registry.owner(group)
        target = self.pick_worker(exclude=owner.get("host"))
        if owner.get("mode") == "hosted" and target is not None:
            placed = self.registry.place(Placement.from_owner(group, target, owner), expect=token)
            if placed.status is PlaceStatus.PLACED:
                return
        unhosted = self.registry.unhost(group, token, force=True)
        self.hand_on(unhosted.unfinished, Ref({REF_KEY: owner.get("ref", ""), "device": owner.get("device")}))

    def hand_on(self, records: list[RequestRecord], msg1: Ref) -> int:
        """Resubmit accepted requests of a group that lost its worker, against its last state."""
        for record in records:
            args = list(record.args or [])
            if len(args) < 2:
                continue
            args[0] = msg1
            task = self.app.tasks[record.task]
            planned = self.planner.plan(msg1, args[1], args[2] if len(args) > 2 else None, stack=tuple(record.stack))
            self.dispatcher.submit(task, planned, args, record.id, dict(record.options), flags="r")
        return len(records)
