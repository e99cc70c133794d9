"""Celery's operator commands on group queues never strand a group.

``cancel_consumer`` on the hosting worker hands the group on; ``add_consumer``
of a group queue on an ordinary worker is refused (and a group request that
reaches such a worker anyway goes back to its queue); ``purge`` of a group
queue answers the purged requests with ``RequestLost`` instead of leaving
their callers waiting.
"""

from __future__ import annotations

import pytest

from celery_persistent import RequestLost
from tests.apps.devices import ekey
from tests.e2e.support import LEASE_TTL, hosted
from tests.support import wait_until

BOUND = LEASE_TTL + 10


def test_cancel_consumer_of_a_group_queue_hands_the_group_on(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "state", "id": uid, "count": 1}
    handle = redis_cluster.host(msg1, {"static_worker": True}, persistent=2)
    first = redis_cluster.by_hostname(handle.hostname)
    assert p.resolve.delay(msg1, {"path": "peek", "n": 0}).get(timeout=BOUND)["pid"] == first.proc.pid
    redis_app.app.control.cancel_consumer(handle.queue, destination=[handle.hostname], reply=True, timeout=5)
    moved = wait_until(lambda: (row := hosted(p, handle.group)) and row["hostname"] != handle.hostname and row,
                       timeout=BOUND, message="the group to move to the other worker")
    other = redis_cluster.by_hostname(moved["hostname"])
    answers = [p.resolve.delay(msg1, {"path": "peek", "n": n}).get(timeout=BOUND) for n in range(1, 4)]
    assert {a["pid"] for a in answers} == {other.proc.pid}


def test_add_consumer_of_a_group_queue_on_an_ordinary_worker_is_refused(broker, cluster, uid) -> None:
    p = broker.persistent
    msg1 = {"device": "state", "id": uid, "count": 1}
    handle = cluster.host(msg1, {"static_worker": True}, persistent=1, ordinary=1)
    host = cluster.by_hostname(handle.hostname)
    ordinary = next(w for w in cluster.workers if w is not host)
    replies = broker.app.control.add_consumer(handle.queue, destination=[ordinary.hostname], reply=True, timeout=5)
    assert replies and "group queue" in str(replies[0][ordinary.hostname].get("error", ""))
    answers = [p.resolve.delay(msg1, {"path": "peek", "n": n}).get(timeout=BOUND) for n in range(6)]
    assert [a["n"] for a in answers] == list(range(6))
    assert {a["pid"] for a in answers} == {host.proc.pid}
    assert ordinary.proc.poll() is None, "the ordinary worker must stay up"
    assert hosted(p, handle.group)["hostname"] == handle.hostname


def test_purged_requests_of_a_group_queue_are_answered_not_awaited(redis_app, redis_cluster, rdb, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "state", "id": uid, "count": 1}
    handle = redis_cluster.host(msg1, {"static_worker": True, "worker_timeout": 2}, persistent=1)
    busy = p.resolve.delay(msg1, {"path": "peek", "n": 0, "sleep": 2.0})
    wait_until(lambda: rdb.get(ekey("runs", uid)) == b"1", message="the group to be busy")
    behind = [p.resolve.delay(msg1, {"path": "peek", "n": n}) for n in range(1, 4)]
    # One of them may already sit in the worker's prefetch; the others are on the broker.
    wait_until(lambda: (depth := redis_queue_depth(rdb, handle.queue)) >= 2 and depth, message="queued messages")
    with redis_app.app.connection_for_write() as conn:
        purged = conn.default_channel.queue_purge(handle.queue)
    assert purged >= 2
    assert busy.get(timeout=BOUND)["n"] == 0
    outcomes = []
    for result in behind:
        try:
            outcomes.append(result.get(timeout=BOUND + 4)["n"])
        except RequestLost:
            outcomes.append("lost")
    # Every request on the broker was purged (a prefetched one may have run): each is either run or lost.
    assert outcomes.count("lost") >= 2
    ran = sorted(int(n) for n in rdb.lrange(ekey("order", uid), 0, -1))
    assert ran == sorted([0, *[n for n in outcomes if n != "lost"]]), "no purged request ran"
    # The group is not stranded: it serves new requests, or was let go and serves them anew.
    assert p.resolve.delay(msg1, {"path": "peek", "n": 9}).get(timeout=BOUND)["n"] == 9


def redis_queue_depth(rdb, queue: str) -> int:
    return int(rdb.llen(queue))


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
