"""A prefork child forked while the lease beat sends a step without waiting can still send its own."""

from __future__ import annotations

import os

import redis

from celery_persistent.registry import Unawaited
from tests.unit.conftest import UNIT_REDIS_URL


def test_a_child_forked_while_the_lock_is_held_gets_a_lock_of_its_own() -> None:
    client = redis.Redis.from_url(UNIT_REDIS_URL)
    unawaited = Unawaited(client)
    with unawaited._lock:  # the beat thread is inside run() at the fork
        pid = os.fork()
        if pid == 0:  # the child: its lock must be free, or its first reserve/published hangs for ever
            os._exit(0 if unawaited._lock.acquire(timeout=2) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client.close()
