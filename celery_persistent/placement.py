"""Where groups live: pick a persistent worker, place, move, recover, hand on.

Every change of a group's host goes through ``Registry.place`` from here:
``start_worker`` and ``spawn_worker`` (``place``), a draining or failing
worker (``move``), a late placement on a draining worker (``pass_on``), a
dead worker (``recover``) and a parked group (``unpark``).  A rolling group
that no worker can take is parked: kept in Redis with its state and its
requests until a persistent worker takes it (``unpark``); its requests wait
``persistent_parked_timeout`` at most (``expire_parked``).  A static group is
dissolved instead and its accepted requests are handed on as ordinary
requests (``hand_on``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from celery import Celery

from .checkpoints import CheckpointPolicy, encode_state
from .config import parked_timeout
from .dispatch import Dispatcher
from .errors import GroupParked, InvalidOptions, PersistentError
from .planning import Planner
from .protocol import ParkStatus, Placement, PlaceStatus
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
        static = bool(opts["static_worker"])
        # A rolling group given its state by value gets a first checkpoint of its own (see
        # _first_checkpoint); a Ref, and a static group's Msg1, stay content addressed.
        own_state = not static and not is_ref(msg1)
        ref = None if own_state else as_ref(msg1) if is_ref(msg1) else self.store.put(msg1)
        # A Ref names its device; only a hand-made one without it is fetched.
        device = msg1.get("device") if ref is None else ref.get("device") or self.store.get(ref).get("device")
        group = group or self.planner.group(msg1 if ref is None else ref, None, opts)
        if group is None:
            raise InvalidOptions("a persistent worker needs a group: await_inprogress is off", "await_inprogress")
        host = self.pick_worker()
        if host is None:
            raise PersistentError("no live persistent worker: start one with `celery worker --persistent -P solo`")
        queue = queue_name(self.queue_prefix, group)
        storage_id, size, initial = self._first_checkpoint(msg1, group) if ref is None else \
            (ref.storage_id, ref.size, b"")
        where = Placement(group, host, queue, storage_id, static, timeout, str(device), size,
                          str(opts["error_strategy"]), CheckpointPolicy.from_options(opts).encode())
        placed = self.registry.place(where, expect=expect, initial=initial)
        if placed.status is PlaceStatus.EXISTS:
            return WorkerHandle(group, placed.queue, placed.host)
        if placed.status is not PlaceStatus.PLACED:
            raise PersistentError(f"group {group} cannot be placed now: it is {placed.why or placed.status.value}")
        return WorkerHandle(group, queue, host)

    def _first_checkpoint(self, msg1: Any, group: str) -> tuple[str, int, bytes]:
        """A new rolling group's state as its own first checkpoint (not a shared, content-addressed copy):
        superseded by the next one, it is deleted."""
        encoded = encode_state(msg1, self.planner.max_bytes, group, f"place-{uuid.uuid4().hex}", name="msg1")
        return encoded.storage_id, encoded.size, encoded.data

    def move(self, where: Placement, token: str, exclude: str, allow_self: bool) -> str | None:
        """Move a hosted group (as ``where`` describes it) off ``exclude``; the new host, or None.

        ``allow_self`` lets the group restart on ``exclude`` when no other
        worker is live (error_strategy="throw" on a lone worker).
        """
        target = self.pick_worker(exclude=exclude) or (exclude if allow_self else None)
        if target is None:
            return None
        placed = self.registry.place(replace(where, host=target), expect=token)
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
        """A persistent worker died: place its group elsewhere, park it (rolling), or run its requests as usual.

        A rolling group's old name (a "moved" marker) hands the requests it
        still had on to the group's current name.
        """
        owner = self.registry.owner(group)
        target = self.pick_worker(exclude=owner.get("host"))
        hosted = owner.get("mode") == "hosted"
        if hosted and target is not None:
            placed = self.registry.place(Placement.from_owner(group, target, owner), expect=token)
            if placed.status is PlaceStatus.PLACED:
                return
        if hosted and owner.get("static") != "1":
            if self.registry.park(group, token) is ParkStatus.PARKED:
                logger.warning("parked group %s: its worker died and no other persistent worker is live", group)
            return
        unhosted = self.registry.unhost(group, token, force=True)
        if owner.get("mode") == "moved" and owner.get("target"):
            for record in unhosted.unfinished:
                self.dispatcher.resubmit(record, owner["target"])
            return
        self.hand_on(unhosted.unfinished, Ref({REF_KEY: owner.get("ref", ""), "device": owner.get("device")}))

    def unpark(self, limit: int = 100) -> int:
        """Place parked groups on the least loaded live persistent workers; how many were placed."""
        placed = 0
        for group in self.registry.parked(limit):
            owner = self.registry.owner(group)
            if owner.get("mode") != "hosted" or owner.get("state") != "parked":
                self.registry.forget_parked(group)  # released by an operator: nothing to take up
                continue
            target = self.pick_worker()
            if target is None:
                break
            where = Placement.from_owner(group, target, owner)
            if self.registry.place(where, expect=owner.get("token", "")).status is PlaceStatus.PLACED:
                placed += 1
                logger.info("parked group %s placed on %s", group, target)
                # stop_worker while parked: adopt.lua hands its host the mark with the group.
        return placed

    def expire_parked(self, now: float | None = None) -> int:
        """Answer ``GroupParked`` to requests that waited on a parked group longer than the bound.

        They are withdrawn first, so they never run afterwards; their waiters
        get the same error.  Returns how many requests were answered.
        """
        bound = parked_timeout(self.app.conf)
        now = time.time() if now is None else now
        answered = 0
        for group in self.registry.parked():
            for record in self.registry.accepted(group):
                if record.sent is None or now - float(record.sent) < bound:
                    continue
                error = GroupParked(f"request {record.id} of group {group} waited {now - float(record.sent):.0f}s "
                                    f"for a persistent worker (persistent_parked_timeout={bound:g}s): it will "
                                    "not run", group)
                if self.dispatcher.withdraw(group, record, error):
                    self.dispatcher.answer([record.waiter()], error)
                    answered += 1
        return answered

    def hand_on(self, records: list[RequestRecord], msg1: Mapping[str, Any]) -> int:
        """Resubmit accepted requests of a group that lost its worker, against its last state (a Ref, or
        the state itself)."""
        for record in records:
            args = list(record.args or [])
            if len(args) < 2:
                continue
            args[0] = msg1
            task = self.app.tasks[record.task]
            planned = self.planner.plan(msg1, args[1], args[2] if len(args) > 2 else None, stack=tuple(record.stack))
            self.dispatcher.submit(task, planned, args, record.id, dict(record.options), flags="r")
        return len(records)
