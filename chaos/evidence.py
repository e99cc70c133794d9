"""What the chaos devices record, and where: key names in the evidence Redis, and how to read them.

The evidence Redis is a server of its own that no scenario faults (and that
the partitioned worker reaches over a link that is never cut), so the record
of what really executed survives every fault the scenarios inject.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis

from chaos.settings import ENV_EVIDENCE, PREFIX

_client: redis.Redis | None = None


def key(*parts: str) -> str:
    return ":".join((PREFIX, "ev", *parts))


def client(url: str | None = None) -> redis.Redis:
    """The evidence Redis (of this process, from the environment, unless ``url`` is given)."""
    global _client
    if url is not None:
        return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    if _client is None:
        _client = redis.Redis.from_url(os.environ[ENV_EVIDENCE], socket_timeout=5, socket_connect_timeout=2)
    return _client


@dataclass(frozen=True)
class Execution:
    """One execution of a request; ``end`` is None if its process died in it."""

    exec_id: str
    group: str
    rid: str
    pid: int
    start: float
    end: float | None


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def executions(r: redis.Redis, group: str) -> list[Execution]:
    ends = {}
    for raw in r.lrange(key("ends", group), 0, -1):
        exec_id, end = _text(raw).split()
        ends[exec_id] = float(end)
    found = []
    for raw in r.lrange(key("starts", group), 0, -1):
        exec_id, start, pid, rid = _text(raw).split()
        found.append(Execution(exec_id, group, rid, int(pid), float(start), ends.get(exec_id)))
    return found


def runs(r: redis.Redis) -> dict[str, int]:
    """Executions per request id (ordinary groups)."""
    return {_text(k): int(v) for k, v in r.hgetall(key("runs")).items()}


def reapplied(r: redis.Redis) -> dict[str, int]:
    """Updates a device found already applied in the state it was given (counted at the source)."""
    return {_text(k): int(v) for k, v in r.hgetall(key("reapplied")).items()}
