"""Helpers shared by the Lua tests (records, Redis snapshots, the server's clock)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


def server_ms(db: redis.Redis) -> int:
    """The Redis server's clock in ms, computed from TIME as the scripts compute their "now"."""
    seconds, micros = db.time()
    return seconds * 1000 + micros // 1000


@dataclass
class Window:
    """The server times (ms, both ends included) a script that ran inside ``server_clock`` may have read.

    ``value in window`` accepts a ZSET score or a hash field, which must be a whole number of ms
    (a field such as "1.7e+12" is not); ``window + ms`` is the window of "now + ms" (a deadline).
    """

    first: int
    last: int

    def __contains__(self, value: object) -> bool:
        if isinstance(value, str):
            if not value.isdigit():
                return False
            number = int(value)
        elif isinstance(value, (int, float)) and float(value).is_integer():
            number = int(value)
        else:
            return False
        return self.first <= number <= self.last

    def __add__(self, ms: int) -> Window:
        return Window(self.first + ms, self.last + ms)


@contextmanager
def server_clock(db: redis.Redis) -> Iterator[Window]:
    """``with server_clock(db) as now:`` one script call; afterwards ``now`` holds [server time before, after]."""
    before = server_ms(db)
    window = Window(before, before)
    yield window
    window.last = server_ms(db)
