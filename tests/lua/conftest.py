"""Fixtures of the Lua tests: a real Redis, every script registered once, a fresh key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

import pytest
import redis
from redis.commands.core import Script

from celery_persistent.keys import KeySpace
from tests.lua.support import SCAN_COUNT, snapshot

REDIS_URL = os.environ.get("CP_TEST_REDIS_URL") or "redis://127.0.0.1:6379/13"
SCRIPTS = (
    "adopt",
    "checkpoint",
    "claim",
    "deliver",
    "expire",
    "finish",
    "finish_hosted",
    "heartbeat",
    "live",
    "observe",
    "park",
    "place",
    "published",
    "rename",
    "renew",
    "reserve",
    "start_hosted",
    "submit",
    "take",
    "unhost",
)


def lua_source(name: str) -> str:
    return (resources.files("celery_persistent") / "lua" / f"{name}.lua").read_text("utf-8")


@pytest.fixture(scope="session")
def db() -> Iterator[redis.Redis]:
    """Replies decoded to ``str``, so that assertions read like the scripts."""
    conn = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    conn.ping()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def scripts(db: redis.Redis) -> dict[str, Script]:
    """Each script registered once for the session (EVALSHA, loaded on first use)."""
    return {name: db.register_script(lua_source(name)) for name in SCRIPTS}


@pytest.fixture
def ks(db: redis.Redis) -> Iterator[KeySpace]:
    """A key space of its own for each test; all its keys are deleted afterwards."""
    space = KeySpace(prefix=f"cplua{uuid.uuid4().hex[:12]}")
    yield space
    names = list(db.scan_iter(match=f"{space.prefix}:*", count=SCAN_COUNT))
    if names:
        db.delete(*names)


@pytest.fixture
def state(db: redis.Redis, ks: KeySpace) -> Callable[[], dict[str, Any]]:
    """``state()``: everything the test's key space holds right now."""
    return lambda: snapshot(db, ks.prefix)
