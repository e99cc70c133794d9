"""The groups one persistent worker hosts: a record per group, and the table of them.

The table is shared by the lease thread (renewals, idle checks) and the
worker's main thread (executions), so every read and write of it holds one
lock.  A group may be known under old names too (a rolling group that
re-registered under ``group(Msg3)`` keeps its old names as aliases while
their queues drain).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..checkpoints import CheckpointPolicy
from ..store import REF_KEY, Ref


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
    policy: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    journaled: int = 0  # requests applied since the checkpoint (in Redis: the group's journal)
    journaled_at: float = 0.0  # when the oldest of them was applied (monotonic)
    flushing: bool = False  # a checkpoint of the journal is scheduled on the event loop
    msg1: Mapping[str, Any] | None = None  # None: evicted, reload by ref
    last: float = field(default_factory=time.monotonic)
    executions: int = 0
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # old group -> (token, queue)
    releasing: bool = False
    retired: set[str] = field(default_factory=set)  # aliases whose old queue is done and deleted
    stopping: bool = False  # stop_worker: release as soon as its accepted requests are done
    suspects: set[str] = field(default_factory=set)  # accepted ids with no message last time we looked
    asleep: bool = False  # napping: a long lease, a request rings; on Redis its queue is not consumed (naps.py)
    napping: bool = False  # a nap is scheduled on the event loop
    waiting: bool = False  # woken on Redis, its queue not consumed yet: the consume window is full
    kept: float = 0.0  # when its lease was last renewed (monotonic)

    def as_ref(self) -> Ref:
        ref = Ref({REF_KEY: self.ref, "device": self.device, "bytes": self.size})
        ref.value = self.msg1
        return ref

    def token_for(self, name: str) -> str:
        """The owner token of ``name``: the current name's, or an alias's."""
        return self.token if name == self.group else self.aliases[name][0]

    def leases(self) -> list[tuple[str, str]]:
        """(name, token) of every registration this group holds."""
        return [(self.group, self.token), *[(alias, tok) for alias, (tok, _) in self.aliases.items()]]

    def live_aliases(self) -> bool:
        """Whether an old name's queue is still consumed (a renamed group drains it first)."""
        return any(alias not in self.retired for alias in self.aliases)

    def queues(self) -> list[str]:
        """Every queue this group is consumed from (the current one, then live aliases')."""
        return [self.queue, *[q for a, (_, q) in self.aliases.items() if a not in self.retired]]


class HostedTable:
    """Hosted groups by current name (least recently used first) and by every name."""

    def __init__(self) -> None:
        self._groups: OrderedDict[str, Hosted] = OrderedDict()
        self._by_name: dict[str, Hosted] = {}
        self._awake: dict[int, Hosted] = {}  # by id(): the groups not napping (renewed on every beat)
        self._lock = threading.RLock()

    def add(self, h: Hosted) -> None:
        with self._lock:
            self._groups[h.group] = h
            self._by_name[h.group] = h
            if not h.asleep:
                self._awake[id(h)] = h

    def set_asleep(self, h: Hosted, asleep: bool) -> bool:
        """Mark ``h`` napping or awake; False if it already was (another thread did it)."""
        with self._lock:
            if h.asleep == asleep:
                return False
            h.asleep = asleep
            if asleep:
                self._awake.pop(id(h), None)
            elif self._groups.get(h.group) is h:
                self._awake[id(h)] = h
            return True

    def awake(self) -> list[Hosted]:
        """A snapshot of the groups not napping: a beat's work is O(these), not O(all)."""
        with self._lock:
            return list(self._awake.values())

    def lookup(self, name: str) -> Hosted | None:
        with self._lock:
            return self._by_name.get(name)

    def knows(self, name: str) -> bool:
        with self._lock:
            return name in self._by_name

    def all(self) -> list[Hosted]:
        """A snapshot, least recently used first."""
        with self._lock:
            return list(self._groups.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._groups)

    def forget(self, h: Hosted) -> bool:
        """Drop ``h`` under every name; False if it was not here (another thread did it)."""
        with self._lock:
            if self._groups.get(h.group) is not h:
                return False
            del self._groups[h.group]
            self._awake.pop(id(h), None)
            for name in (h.group, *h.aliases):
                if self._by_name.get(name) is h:
                    del self._by_name[name]
            return True

    def touch(self, h: Hosted) -> None:
        """Mark ``h`` most recently used."""
        with self._lock:
            if self._groups.get(h.group) is h:
                self._groups.move_to_end(h.group, last=True)

    def rename(self, h: Hosted, new: str, token: str, queue: str) -> None:
        """``h`` is now registered as ``new``; its old name becomes an alias, all in one step."""
        with self._lock:
            self._groups.pop(h.group, None)
            h.aliases[h.group] = (h.token, h.queue)
            h.group, h.token, h.queue = new, token, queue
            self._groups[new] = h
            self._by_name[new] = h

    def leases_of(self, groups: list[Hosted]) -> list[tuple[str, str]]:
        """(name, token) of every registration of ``groups`` still here, read under the lock: O(len(groups))."""
        with self._lock:
            return [lease for h in groups if self._groups.get(h.group) is h for lease in h.leases()]

    def leases(self, where: Callable[[Hosted], bool] | None = None) -> list[tuple[str, str]]:
        """(name, token) of every registration held (of the groups ``where`` selects), read under the
        lock (never half-renamed)."""
        with self._lock:
            return [lease for h in self._groups.values() if where is None or where(h) for lease in h.leases()]
