"""Helpers shared by the Lua tests (records and Redis snapshots)."""

from __future__ import annotations

from typing import Any

import redis

from celery_persistent.records import RequestRecord

# Keys one SCAN call looks at: a few calls cover a shared test database (COUNT 10 would take hundreds).
SCAN_COUNT = 10_000


def record(task_id: str, key: str, *args: Any) -> str:
    """A request record as the scripts receive it: ``id\\nkey\\njson``."""
    return RequestRecord(task_id, key, "tests.lua.task", args=list(args)).dumps()


def waiter(task_id: str, key: str) -> str:
    """The waiter record of the same request (no arguments)."""
    return RequestRecord(task_id, key, "tests.lua.task").waiter().dumps()


def snapshot(db: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its type and content, to compare before and after a call."""
    state: dict[str, Any] = {}
    for name in db.scan_iter(match=f"{prefix}:*", count=SCAN_COUNT):
        kind = db.type(name)
        if kind == "hash":
            state[name] = db.hgetall(name)
        elif kind == "list":
            state[name] = db.lrange(name, 0, -1)
        elif kind == "zset":
            state[name] = db.zrange(name, 0, -1, withscores=True)
        else:  # the scripts write no other type than these and strings
            state[name] = db.get(name)
    return state
