"""Durable rolling state, end to end: real `celery worker --persistent` subprocesses on Redis.

The ``tape`` device (tests/apps/rolling.py) appends each request's ``n`` to
its state, so the final state says which requests were applied and how many
times.  Callers send a small Msg1 that only names the group (``handle``): the
state lives on the worker and, durably, in Redis (its checkpoint, and the
journal of requests since).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

from celery_persistent.groupview import GroupView
from celery_persistent.store import checkpoint_of, stored_key
from tests.e2e.support import LEASE_TTL, Site, hosted
from tests.support import wait_until


@pytest.fixture
def rolling(tmp_path) -> Iterator[Site]:
    from tests.apps import rolling as module

    site = Site(module, tmp_path)
    yield site
    site.stop()


def tape(uid: str, blob: int = 0) -> dict[str, Any]:
    return {"device": "tape", "id": uid, "applied": [], "blob": "x" * blob}


def handle(uid: str) -> dict[str, Any]:
    """A Msg1 that only names the group: a hosted group runs on its own state."""
    return {"device": "tape", "id": uid}


def group_keys(p: Any, group: str) -> list[str]:
    return [k.decode() for k in p.redis.scan_iter(match=f"{p.keys.prefix}:{{{group}}}:*", count=10_000)]


def applied(p: Any, uid: str) -> list[int]:
    """The state's record of applied requests, read through the group (a request that changes nothing)."""
    answer = p.resolve.delay(handle(uid), {"path": "peek"}).get(timeout=30)
    return list(answer["applied"])


def test_a_rolling_group_keeps_one_checkpoint_within_twice_its_state(rolling, uid) -> None:
    p = rolling.persistent
    rolling.start()
    stored = len(list(p.redis.scan_iter(match=f"{p.keys.prefix}:store:*", count=10_000)))
    group = p.start_worker(tape(uid, blob=200_000)).group
    results = [p.resolve.delay(handle(uid), {"path": "apply", "n": n}) for n in range(30)]
    assert [r.get(timeout=60)["count"] for r in results] == list(range(1, 31))

    ref = p.registry.owner(group)["ref"]
    assert checkpoint_of(ref) is not None
    # The last delivery is settled just after its caller got the answer (after_return).
    keys = wait_until(lambda: [k for k in group_keys(p, group) if ":delivery:" not in k] == group_keys(p, group)
                      and group_keys(p, group), message="the last delivery to be settled")
    assert sorted(keys) == sorted([p.keys.owner(group), stored_key(p.keys, ref)]), keys
    state_bytes = p.redis.hstrlen(stored_key(p.keys, ref), "state")
    used = sum(p.redis.memory_usage(k) or 0 for k in keys)
    print(f"one rolling group after 30 requests: {used} bytes in Redis for a {state_bytes}-byte state "
          f"({used / state_bytes:.2f}x)")
    assert state_bytes > 200_000 and used <= 2 * state_bytes
    # Nothing went to the content-addressed store: the group's state is its own.
    assert len(list(p.redis.scan_iter(match=f"{p.keys.prefix}:store:*", count=10_000))) == stored


def test_sigterm_of_the_last_persistent_worker_parks_the_group_and_the_next_one_continues(rolling, uid) -> None:
    p = rolling.persistent
    [first] = rolling.start()
    group = p.start_worker(tape(uid)).group
    assert [p.resolve.delay(handle(uid), {"path": "apply", "n": n}).get(timeout=30)["count"]
            for n in range(3)] == [1, 2, 3]
    first.stop()  # warm shutdown of the only persistent worker
    wait_until(lambda: p.registry.owner(group).get("state") == "parked", timeout=20, message="the group parked")
    assert group in [row["group"] for row in GroupView(p.registry).parked()]  # what `status` lists

    meanwhile = p.resolve.delay(handle(uid), {"path": "apply", "n": 3})
    with pytest.raises(CeleryTimeout):
        meanwhile.get(timeout=1)  # accepted, waiting: no persistent worker runs
    second = rolling.persistent_worker().wait_ready()
    answer = meanwhile.get(timeout=30)
    assert applied(p, uid) == [0, 1, 2, 3], "the state was reset"
    assert answer == {"n": 3, "count": 4, "pid": second.pid}
    assert (hosted(p, group) or {}).get("hostname") == second.hostname


def test_stop_worker_and_the_idle_timeout_end_the_group_and_on_idle_sees_its_last_state(rolling, rdb, uid) -> None:
    from tests.apps.devices import ekey

    p = rolling.persistent
    rolling.start()
    idle, stopped = f"{uid}-i", f"{uid}-s"
    opts = {"checkpoint_every": 10}  # the last requests are journaled, not checkpointed
    idle_group = p.start_worker(tape(idle), {**opts, "worker_timeout": 1}).group
    stop_group = p.start_worker(tape(stopped), {**opts, "worker_timeout": 600}).group
    for n in range(2):
        p.resolve.delay(handle(idle), {"path": "apply", "n": n}).get(timeout=30)
    p.resolve.delay(handle(stopped), {"path": "apply", "n": 7}).get(timeout=30)
    assert len(p.registry.journal(idle_group)) == 2
    assert p.stop_worker(stop_group) is True

    for group, uid_, last in ((idle_group, idle, "[0, 1]"), (stop_group, stopped, "[7]")):
        wait_until(lambda g=group: hosted(p, g) is None, timeout=20, message=f"{group} to end")
        assert [x.decode() for x in rdb.lrange(ekey("idle", uid_), 0, -1)] == [last]
        assert group_keys(p, group) == [], "an ended group leaves nothing in Redis"


def test_sigkill_mid_journal_applies_every_answered_request_exactly_once(rolling, rdb, uid) -> None:
    p = rolling.persistent
    victim, _survivor = rolling.start(persistent=2)
    group = p.start_worker(tape(uid), {"checkpoint_every": 1000}).group
    assert (hosted(p, group) or {}).get("hostname") in (victim.hostname, _survivor.hostname)
    victim = rolling.by_hostname(p.registry.owner(group)["host"])
    results = [p.resolve.delay(handle(uid), {"path": "apply", "n": n, "sleep": 0.1}) for n in range(16)]
    wait_until(lambda: sum(r.ready() for r in results) >= 5, timeout=30, message="a few answers")
    journaled = len(p.registry.journal(group))
    victim.kill()
    killed = time.monotonic()
    assert journaled >= 4, "the crash hit a journal, not a checkpoint"
    pending = [r for r in results if not r.ready()]
    assert pending, "the crash came after the last answer"
    pending[0].get(timeout=LEASE_TTL * 3 + 30)
    first = time.monotonic() - killed
    answers = [r.get(timeout=LEASE_TTL * 3 + 30) for r in results]
    # Every request answered once, each with the count of updates applied up to it: in order, none twice.
    assert [(a["n"], a["count"]) for a in answers] == [(n, n + 1) for n in range(16)]
    assert applied(p, uid) == list(range(16))
    print(f"SIGKILL with {journaled} journaled requests: next answer {first:.2f}s after the kill, "
          f"all {time.monotonic() - killed:.2f}s (lease TTL {LEASE_TTL}s)")
