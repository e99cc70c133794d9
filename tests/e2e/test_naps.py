"""Napping groups, with a real `celery worker --persistent`.

On the Redis broker an idle group's queue is no longer consumed
(``celery_persistent/hosting/naps.py``); its next request rings the host's bell
and is answered.  On RabbitMQ only its lease naps, and its queue stays consumed.
The apps nap a group after 0.5 s idle and sweep napping queues every second
(tests/apps/napping.py, tests/apps/napping_rabbit.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from celery_persistent.embedded import reachable
from tests.apps import napping
from tests.apps.basic import BACKEND, PREFIX
from tests.support import Cluster, Worker, wait_until

persistent = napping.persistent


@pytest.fixture(scope="module")
def worker(tmp_path_factory) -> Iterator[Worker]:
    cluster = Cluster("tests.apps.napping", persistent, tmp_path_factory.mktemp("naps"))
    [started] = [cluster.persistent_worker()]
    cluster.ready()
    yield started
    cluster.stop()


@pytest.fixture
def rdb() -> redis.Redis:
    return redis.Redis.from_url(BACKEND, decode_responses=True)


def owner(rdb: redis.Redis, group: str) -> dict[str, str]:
    return rdb.hgetall(f"{PREFIX}:{{{group}}}:owner")


def consumed(worker: Worker) -> set[str]:
    """The queues the worker consumes now (Celery's inspect active_queues)."""
    replies = persistent.app.control.inspect([worker.hostname], timeout=5).active_queues() or {}
    return {q["name"] for q in replies.get(worker.hostname, [])}


def napping_now(rdb: redis.Redis, worker: Worker, group: str, queue: str) -> bool:
    return "bell" in owner(rdb, group) and queue not in consumed(worker)


def hosted_group(worker: Worker) -> tuple[dict[str, Any], str, str]:
    msg1 = {"device": "state", "id": uuid.uuid4().hex[:8], "count": 0}
    handle = persistent.start_worker(msg1, {"static_worker": True, "worker_timeout": 120})
    assert handle.hostname == worker.hostname
    return msg1, handle.group, handle.queue


def ask(msg1: dict[str, Any], n: int) -> dict[str, Any]:
    answer: dict[str, Any] = persistent.resolve.delay(msg1, {"path": "peek", "n": n}).get(timeout=30)
    return answer


def test_a_request_to_a_napping_group_is_answered(worker: Worker, rdb: redis.Redis) -> None:
    msg1, group, queue = hosted_group(worker)
    assert ask(msg1, 1)["n"] == 1
    wait_until(lambda: napping_now(rdb, worker, group, queue), timeout=20, message="the group's queue to nap")
    assert ask(msg1, 2)["n"] == 2
    assert "bell" not in owner(rdb, group), "the request rang: the bell is down"
    assert ask(msg1, 3)["n"] == 3
    assert owner(rdb, group)["host"] == worker.hostname


def test_a_message_in_a_napping_queue_without_a_ring_is_consumed_by_the_sweep(worker: Worker,
                                                                              rdb: redis.Redis) -> None:
    """As a hand-back or a re-published message would be: the host's sweep finds it (every second here)."""
    msg1, group, queue = hosted_group(worker)
    assert ask(msg1, 1)["n"] == 1
    wait_until(lambda: napping_now(rdb, worker, group, queue), timeout=20, message="the group's queue to nap")
    elsewhere = f"{PREFIX}:bell:nobody-{uuid.uuid4().hex[:6]}"
    rdb.hset(f"{PREFIX}:{{{group}}}:owner", "bell", elsewhere)  # the ring goes where no worker listens
    try:
        sent = time.monotonic()
        assert ask(msg1, 2)["n"] == 2
        took = time.monotonic() - sent
        assert rdb.lrange(elsewhere, 0, -1) == [group], "the request rang, but not this worker"
        assert "waking 1 napping group(s) with messages and no ring" in worker.logfile.read_text(errors="replace")
        assert took < 15, f"answered {took:.1f} s after it was sent: the sweep runs every second"
    finally:
        rdb.delete(elsewhere)


def test_requests_racing_a_nap_are_all_answered(worker: Worker, rdb: redis.Redis) -> None:
    """Requests sent around the moment the idle queue naps (0.5 s): each is accepted before the nap
    (which is then refused) or rings after it; none is left in a queue nobody consumes."""
    msg1, group, queue = hosted_group(worker)
    assert ask(msg1, 0)["n"] == 0
    pauses = [0.35, 0.45, 0.5, 0.55, 0.6, 0.65, 0.75, 0.9, 1.1, 0.5, 0.55, 2.6]
    rang = 0
    for n, pause in enumerate(pauses, start=1):
        time.sleep(pause)  # the pacing under test, not a wait for a result
        rang += "bell" in owner(rdb, group)  # napping as it is sent: this one rings
        assert ask(msg1, n)["n"] == n
    assert rang >= 1, "no request was sent to a napping queue: the test did not test the ring"
    wait_until(lambda: napping_now(rdb, worker, group, queue), timeout=20, message="the group's queue to nap")
    assert worker.logfile.read_text(errors="replace").count("lost group") == 0


# -- RabbitMQ: the lease naps, the queue stays consumed ---------------------------------------------


@pytest.fixture(scope="module")
def rabbit_worker(tmp_path_factory) -> Iterator[Worker]:
    if not reachable("127.0.0.1", 5672, timeout=1):
        pytest.skip("RabbitMQ is not reachable at 127.0.0.1:5672")
    from tests.apps import napping_rabbit

    cluster = Cluster("tests.apps.napping_rabbit", napping_rabbit.persistent, tmp_path_factory.mktemp("naps-rabbit"))
    [started] = [cluster.persistent_worker()]
    cluster.ready()
    yield started
    cluster.stop()


def lease_left(rdb: redis.Redis, group: str) -> float:
    seconds, micros = rdb.time()
    score = rdb.zscore(f"{PREFIX}:leases", group)
    assert score is not None, f"{group} has no lease"
    return (score - (seconds * 1000 + micros // 1000)) / 1000


def test_on_rabbitmq_an_idle_group_naps_its_lease_and_keeps_its_queue_consumed(rabbit_worker: Worker,
                                                                               rdb: redis.Redis) -> None:
    from tests.apps.napping_rabbit import persistent as rabbit

    msg1 = {"device": "state", "id": uuid.uuid4().hex[:8], "count": 0}
    handle = rabbit.start_worker(msg1, {"static_worker": True, "worker_timeout": 120})
    group = handle.group
    ask = lambda n: rabbit.resolve.delay(msg1, {"path": "peek", "n": n}).get(timeout=30)["n"]  # noqa: E731
    assert ask(1) == 1
    wait_until(lambda: "bell" in owner(rdb, group), timeout=20, message="the group to nap")
    assert lease_left(rdb, group) > 60, "napping: a long lease, renewed rarely"
    replies = rabbit.app.control.inspect([rabbit_worker.hostname], timeout=5).active_queues() or {}
    assert handle.queue in {q["name"] for q in replies.get(rabbit_worker.hostname, [])}, "still consumed"
    # Its next request rings, and is answered at once by the queue's consumer.
    assert ask(2) == 2
    assert "bell" not in owner(rdb, group)
    # A message that arrives with no ring (the bell points where no worker listens, as after a hand-back)
    # is run, and wakes the group first: an ordinary lease while it runs, so a death is found in one lease.
    wait_until(lambda: "bell" in owner(rdb, group), timeout=20, message="the group to nap again")
    elsewhere = f"{PREFIX}:bell:nobody-{uuid.uuid4().hex[:6]}"
    rdb.hset(f"{PREFIX}:{{{group}}}:owner", "bell", elsewhere)
    try:
        assert ask(3) == 3
        assert rdb.lrange(elsewhere, 0, -1) == [group], "the request rang, but not this worker"
        assert "waking" not in rabbit_worker.logfile.read_text(errors="replace"), "no sweep on RabbitMQ"
    finally:
        rdb.delete(elsewhere)
    # Awake, it is renewed on every beat and naps again once idle (still asleep in the host's eyes, its
    # lease, cut to one lease by the request, would have run out instead, and the group been recovered).
    wait_until(lambda: "bell" in owner(rdb, group), timeout=20, message="the woken group to nap again")
    assert owner(rdb, group)["host"] == rabbit_worker.hostname
    assert rabbit_worker.logfile.read_text(errors="replace").count("lost group") == 0
