"""Group ownership in Redis: typed wrappers around one Lua script per operation.

This is the seed's ``pg``/``hb_name`` made cluster-wide: registration is
atomic (register-if-absent with an owner token and a lease), leases are
renewed only by their holder, and a stale owner can never release or renew
its successor's registration because every write checks the token.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any

import redis

from .keys import KeySpace
from .records import RequestRecord


def now_ms() -> int:
    return int(time.time() * 1000)


def new_token() -> str:
    return uuid.uuid4().hex


class Outcome(str, Enum):
    LEADER = "leader"
    WAIT = "wait"
    QUEUED = "queued"


@dataclass(frozen=True)
class Submitted:
    outcome: Outcome
    token: str
    other_id: str  # leader: own id; wait: id executing the same key; queued: owner id


@dataclass
class Finished:
    stale: bool
    next_request: RequestRecord | None = None
    next_token: str = ""
    waiters: list[RequestRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Expired:
    kind: str  # gone | alive | requeue | dead
    token: str = ""
    request: RequestRecord | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class Registry:
    """Atomic registry operations; one instance per Redis client."""

    SCRIPTS = ("submit", "claim", "renew", "finish", "expire")

    def __init__(self, client: redis.Redis, keys: KeySpace, lease_ttl: float, queue_ttl: float):
        self.client = client
        self.keys = keys
        self.lease_ms = int(lease_ttl * 1000)
        self.queue_ms = int(queue_ttl * 1000)
        package = resources.files(__package__) / "lua"
        self._scripts = {
            name: client.register_script((package / f"{name}.lua").read_text("utf-8"))
            for name in self.SCRIPTS
        }

    def submit(self, group: str, record: RequestRecord) -> Submitted:
        token = new_token()
        status, other = self._scripts["submit"](
            keys=self.keys.group_keys(group, record.key),
            args=[
                group,
                record.key,
                record.id,
                token,
                record.waiter().dumps(),
                record.dumps(),
                now_ms() + self.queue_ms,
            ],
        )
        return Submitted(Outcome(_text(status)), token, _text(other))

    def claim(self, group: str, token: str) -> bool:
        """Mark the leader as running; False means this copy is stale."""
        keys = [self.keys.owner(group), self.keys.leases()]
        return bool(self._scripts["claim"](keys=keys, args=[group, token, now_ms() + self.lease_ms]))

    def renew(self, leases: list[tuple[str, str]]) -> list[bool]:
        """Renew many (group, token) leases in one round trip."""
        if not leases:
            return []
        deadline = now_ms() + self.lease_ms
        pipe = self.client.pipeline(transaction=False)
        for group, token in leases:
            self._scripts["renew"](
                keys=[self.keys.owner(group), self.keys.leases()],
                args=[group, token, deadline],
                client=pipe,
            )
        return [bool(r) for r in pipe.execute()]

    def finish(self, group: str, key: str, token: str) -> Finished:
        """Release the group (holder only), take the waiters, hand it on."""
        next_token = new_token()
        reply = self._scripts["finish"](
            keys=self.keys.group_keys(group, key),
            args=[group, key, token, next_token, now_ms() + self.queue_ms],
        )
        if _text(reply[0]) == "stale":
            return Finished(stale=True)
        raw_next = reply[1]
        return Finished(
            stale=False,
            next_request=RequestRecord.loads(raw_next) if raw_next else None,
            next_token=next_token,
            waiters=[RequestRecord.loads(w) for w in reply[2:]],
        )

    def take_waiters(self, group: str, key: str) -> list[RequestRecord]:
        """Pop the waiters of (group, key) without releasing the group."""
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(self.keys.waiters(group, key), 0, -1)
        pipe.delete(self.keys.waiters(group, key))
        raw, _ = pipe.execute()
        return [RequestRecord.loads(w) for w in raw]

    def expired(self, limit: int = 100) -> list[tuple[str, str, str]]:
        """(group, token, key) of leases past their deadline; reads only."""
        groups = self.client.zrangebyscore(self.keys.leases(), "-inf", now_ms(), start=0, num=limit)
        if not groups:
            return []
        pipe = self.client.pipeline(transaction=False)
        names = [_text(g) for g in groups]
        for group in names:
            pipe.hmget(self.keys.owner(group), "token", "key")
        found = []
        for group, (token, key) in zip(names, pipe.execute(), strict=False):
            if token is not None:
                found.append((group, _text(token), _text(key)))
            else:
                # The owner hash is gone, so is the group: drop the stray lease.
                self.client.zrem(self.keys.leases(), group)
        return found

    def expire(self, group: str, token: str) -> Expired:
        """Take an expired lease from its owner (atomic, checked)."""
        fresh = new_token()
        reply = self._scripts["expire"](
            keys=[self.keys.owner(group), self.keys.leases()],
            args=[group, token, now_ms(), fresh, now_ms() + self.queue_ms],
        )
        kind = _text(reply[0])
        request = RequestRecord.loads(reply[1]) if len(reply) > 1 and reply[1] else None
        return Expired(kind, fresh, request)

    def owner(self, group: str) -> dict[str, str]:
        raw = self.client.hgetall(self.keys.owner(group))
        return {_text(k): _text(v) for k, v in raw.items() if _text(k) != "request"}
