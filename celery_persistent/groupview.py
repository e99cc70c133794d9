"""Every group the registry knows, read-only: the rows of ``status`` and the full record of ``inspect``.

The leases ZSET is the index of groups in flight: every owner hash has a
lease there (submit, finish, place and rename add it; finish, unhost and
release remove it with the hash), so one ZRANGE finds them all without
scanning keys, and one pipelined round trip reads their details.  Nothing
here writes.  Lease times are on the Redis server's clock, as the leases are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .keys import KeySpace
from .records import RequestRecord
from .registry import Registry

PARKED_INDEX: Callable[[KeySpace], str] | None = KeySpace.parked
"""The registry key listing parked groups: rolling groups kept with their checkpoint while no
persistent worker runs them (a ZSET, by when they were parked; see park.lua)."""

ROW_FIELDS = ("mode", "state", "task_id", "key", "host", "running")


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class GroupRow:
    """One group in flight, as ``status`` shows it."""

    group: str
    mode: str  # "leader" (an ordinary group), "hosted", "moved" (a rolling group's old name)
    state: str  # leader: queued, published, reserved, running, dead; hosted: placing, active, orphaned
    leader: str  # leader: the owner request's task id; hosted: the request running now ("" if none)
    key: str  # leader: its coalescing key (the digest of Msg2)
    host: str  # hosted: the persistent worker
    lease_remaining: float | None  # seconds to the lease deadline (negative: overdue, the reaper takes it)
    lease_age: float | None  # seconds since the lease was last set or renewed (from the lease TTLs)
    waiters: int  # callers coalesced onto a request in flight
    queued: int  # leader: requests queued behind it; hosted: accepted requests not running yet

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GroupDetail:
    """Everything the registry holds about one group (``celery persistent inspect``)."""

    group: str
    known: bool  # False: no key of the group exists
    server_ms: int  # the Redis server's clock when it was read
    owner: dict[str, str] = field(default_factory=dict)  # the owner hash, without the stored request
    lease: dict[str, Any] | None = None  # deadline_ms, remaining, age (seconds)
    leader: dict[str, str] | None = None  # the owner request: id, key, task
    inflight: dict[str, str] = field(default_factory=dict)  # coalescing key -> id of the request running it
    waiters: dict[str, list[str]] = field(default_factory=dict)  # coalescing key -> ids of its waiters
    queued: list[dict[str, str]] = field(default_factory=list)  # leader: the pending requests, in order
    accepted: list[dict[str, Any]] = field(default_factory=list)  # hosted: accepted requests, in order
    hosting: dict[str, Any] | None = None  # hosted: worker, queue, placed_ms, worker_live, static, timeout
    checkpoint: dict[str, Any] | None = None  # hosted: ref, device, bytes, stored, ttl (s)
    counters: dict[str, int] = field(default_factory=dict)  # executions, seq
    deliveries: list[str] = field(default_factory=list)  # tokens of answers still to be delivered
    moved_to: str = ""  # a rolling group's old name: its new name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class GroupView:
    """Reads of the registry for operators: never on a request's path, never a write."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.client = registry.client
        self.keys = registry.keys

    # -- every group in flight ---------------------------------------------------------

    def rows(self, only: str | None = None) -> list[GroupRow]:
        """Every owned group (or just ``only``), by name: two pipelined round trips after the index."""
        now = self.registry.server_ms()
        entries = self._leases(only)
        pipe = self.client.pipeline(transaction=False)
        for group, _ in entries:
            pipe.hmget(self.keys.owner(group), ROW_FIELDS)
            pipe.hkeys(self.keys.inflight(group))
            pipe.llen(self.keys.pending(group))
            pipe.zcard(self.keys.hosted_ids(group))
        replies = pipe.execute()
        found = []
        for i, (group, deadline) in enumerate(entries):
            values, inflight, pending, accepted = replies[4 * i: 4 * i + 4]
            owner = {f: _text(v) for f, v in zip(ROW_FIELDS, values, strict=True) if v is not None}
            if owner.get("mode"):  # a lease whose owner just went: the reaper removes it
                found.append((group, deadline, owner, [_text(k) for k in inflight], int(pending), int(accepted)))
        pipe = self.client.pipeline(transaction=False)
        for group, _, _, inflight, _, _ in found:
            for key in inflight:
                pipe.llen(self.keys.waiters(group, key))
        counts = iter(pipe.execute())
        rows = []
        for group, deadline, owner, inflight, pending, accepted in found:
            waiters = sum(int(next(counts)) for _ in inflight)
            rows.append(self._row(group, owner, deadline, now, waiters, pending, accepted))
        return rows

    def _leases(self, only: str | None) -> list[tuple[str, int]]:
        if only is not None:
            score = self.client.zscore(self.keys.leases(), only)
            return [] if score is None else [(only, int(score))]
        pairs: list[Any] = list(self.client.zrange(self.keys.leases(), 0, -1, withscores=True))
        return [(_text(name), int(score)) for name, score in pairs]

    def _row(self, group: str, owner: Mapping[str, str], deadline: int, now: int, waiters: int, pending: int,
             accepted: int) -> GroupRow:
        mode, state, running = owner.get("mode", ""), owner.get("state", ""), owner.get("running", "")
        hosted = mode == "hosted"
        remaining, age = self._lease_times(state, deadline, now)
        return GroupRow(
            group=group, mode=mode, state=state,
            leader=running if hosted else owner.get("task_id", ""),
            key="" if hosted else owner.get("key", ""),
            host=owner.get("host", ""),
            lease_remaining=remaining, lease_age=age, waiters=waiters,
            queued=max(0, accepted - (1 if running else 0)) if hosted else pending,
        )

    def _lease_times(self, state: str, deadline: int, now: int) -> tuple[float, float]:
        """Seconds left, and seconds since it was set: a published leader may wait the queue TTL, others a lease."""
        length = self.registry.queue_ms if state == "published" else self.registry.lease_ms
        remaining = deadline - now
        return round(remaining / 1000, 3), round(max(0, length - remaining) / 1000, 3)

    def parked(self) -> list[dict[str, Any]]:
        """Parked groups (see ``PARKED_INDEX``): name, device, checkpoint ref and size, state."""
        if PARKED_INDEX is None:
            return []
        names = [_text(g) for g in self.client.zrange(PARKED_INDEX(self.keys), 0, -1)]
        pipe = self.client.pipeline(transaction=False)
        for group in names:
            pipe.hmget(self.keys.owner(group), "device", "ref", "bytes", "state")
        return [
            {"group": group, "device": _text(device or b""), "ref": _text(ref or b""), "bytes": int(size or 0),
             "state": _text(state or b"parked")}
            for group, (device, ref, size, state) in zip(names, pipe.execute(), strict=True)
        ]

    # -- one group, in full -------------------------------------------------------------

    def detail(self, group: str) -> GroupDetail:
        """What every key of ``group`` holds (two round trips, a third for its deliveries)."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        pipe.hgetall(keys.owner(group))
        pipe.zscore(keys.leases(), group)
        pipe.zscore(keys.hosts(), group)
        pipe.hgetall(keys.inflight(group))
        pipe.lrange(keys.pending(group), 0, -1)
        pipe.zrange(keys.hosted_ids(group), 0, -1)
        pipe.hgetall(keys.hosted_records(group))
        clock, raw_owner, lease, placed, raw_inflight, pending, ids, records = pipe.execute()
        now = int(clock[0]) * 1000 + int(clock[1]) // 1000
        owner = {_text(k): _text(v) for k, v in raw_owner.items() if _text(k) != "request"}
        request = raw_owner.get(b"request") or raw_owner.get("request")
        inflight = {_text(k): _text(v) for k, v in raw_inflight.items()}
        accepted = [RequestRecord.loads(records[i]) for i in ids if i in records]
        waiters, extra = self._second_look(group, inflight, owner)
        hosted = owner.get("mode") == "hosted"
        detail = GroupDetail(
            group=group,
            known=bool(owner or inflight or pending or accepted or lease is not None or extra["deliveries"]),
            server_ms=now,
            owner=owner,
            lease=self._lease(owner.get("state", ""), lease, now),
            leader=_summary(RequestRecord.loads(request)) if request else None,
            inflight=inflight,
            waiters=waiters,
            queued=[_summary(RequestRecord.loads(r)) for r in pending],
            accepted=[{**_summary(r), "running": r.id == owner.get("running")} for r in accepted],
            hosting=self._hosting(owner, placed, extra["worker_live"], now) if hosted else None,
            checkpoint=self._checkpoint(owner, extra) if owner.get("ref") else None,
            counters={name: int(owner[name]) for name in ("executions", "seq") if owner.get(name)},
            deliveries=extra["deliveries"],
            moved_to=owner.get("target", "") if owner.get("mode") == "moved" else "",
        )
        return detail

    def _second_look(self, group: str, inflight: Mapping[str, str],
                     owner: Mapping[str, str]) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """Waiter ids per key, the checkpoint's presence, the host's heartbeat, pending deliveries."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        for key in inflight:
            pipe.lrange(keys.waiters(group, key), 0, -1)
        ref, host = owner.get("ref"), owner.get("host")
        if ref:
            pipe.pttl(keys.store(ref))
        if host:
            pipe.zscore(keys.workers(), host)
        replies = iter(pipe.execute())
        waiters = {key: [RequestRecord.loads(w).id for w in next(replies)] for key in inflight}
        extra: dict[str, Any] = {"pttl": next(replies) if ref else None,
                                 "worker_live": next(replies) if host else None}
        match = _glob_escape(group) + " *"
        extra["deliveries"] = sorted(_text(m).partition(" ")[2]
                                     for m, _ in self.client.zscan_iter(keys.deliveries(), match=match))
        return waiters, extra

    def _lease(self, state: str, deadline: Any, now: int) -> dict[str, Any] | None:
        if deadline is None:
            return None
        remaining, age = self._lease_times(state, int(deadline), now)
        return {"deadline_ms": int(deadline), "remaining": remaining, "age": age}

    @staticmethod
    def _hosting(owner: Mapping[str, str], placed: Any, heartbeat: Any, now: int) -> dict[str, Any]:
        last = int(owner.get("last") or 0)
        return {
            "worker": owner.get("host", ""),
            "queue": owner.get("queue", ""),
            "placed_ms": int(placed) if placed is not None else None,
            "worker_live": heartbeat is not None and int(heartbeat) > now,
            "static": owner.get("static") == "1",
            "timeout": float(owner.get("timeout") or 0),
            "idle": round((now - last) / 1000, 3) if last else None,
            "running": owner.get("running", ""),
            "error_strategy": owner.get("errors", ""),
        }

    @staticmethod
    def _checkpoint(owner: Mapping[str, str], extra: Mapping[str, Any]) -> dict[str, Any]:
        """The stored Msg1 (a rolling group's last checkpoint): is it still in the store, for how long."""
        pttl = extra["pttl"]
        return {
            "ref": owner.get("ref", ""),
            "device": owner.get("device", ""),
            "bytes": int(owner.get("bytes") or 0),
            "stored": pttl is not None and int(pttl) != -2,
            "ttl": round(int(pttl) / 1000, 3) if pttl is not None and int(pttl) >= 0 else None,
        }


def _summary(record: RequestRecord) -> dict[str, str]:
    return {"id": record.id, "key": record.key, "task": record.task}


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis MATCH pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
