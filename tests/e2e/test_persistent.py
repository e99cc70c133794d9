"""Persistent workers end to end: real `celery worker --persistent` subprocesses.

The tests marked with the ``broker`` fixture run on Redis and on RabbitMQ
(Redis stays result backend and registry); RabbitMQ runs skip with a reason
when it cannot be reached.  ``cluster`` / ``redis_cluster`` (tests/e2e/conftest.py)
start the workers and place the group: ``start(...)`` and ``host(msg1, ...)``.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from celery.signals import before_task_publish

from celery_persistent import StateLost
from celery_persistent.queues import queue_exists
from tests.e2e.support import LEASE_TTL, hosted
from tests.support import wait_until


def ev(rdb, *parts: str) -> Any:
    from tests.apps.devices import ekey

    return ekey(*parts)


def intervals(rdb, tag: str) -> list[tuple[float, float, int]]:
    out = []
    for raw in rdb.lrange(ev(rdb, "intervals", tag), 0, -1):
        start, end, pid = raw.split()
        out.append((float(start), float(end), int(pid)))
    return sorted(out)


def assert_serial(spans: list[tuple[float, float, int]]) -> None:
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert end <= start, "two executions of one group overlapped"


def queue_known(persistent, rdb, queue: str) -> bool:
    """Whether the broker still has the queue: a binding on Redis, a declared queue on RabbitMQ."""
    if persistent.app.conf.broker_url.startswith("redis"):
        return bool(rdb.exists(f"_kombu.binding.{queue}"))
    return queue_exists(persistent.app, queue)


def test_static_worker_runs_requests_serially_in_one_process(broker, cluster, rdb, uid) -> None:
    """The seed's persistent_worker_test."""
    p = broker.persistent
    [worker] = cluster.start()
    msg1 = {"device": "state", "id": uid, "blob": "x" * 1000}
    handle = p.start_worker(msg1, {"static_worker": True})
    assert (handle.group, handle.queue, handle.hostname) == (f"state-{uid}", f"persistent.state-{uid}", worker.hostname)
    results = [p.resolve.delay(msg1, {"path": "peek", "n": n, "sleep": 0.2}) for n in range(3)]
    answers = [r.get(timeout=30) for r in results]
    assert [a["n"] for a in answers] == [0, 1, 2]
    assert {a["pid"] for a in answers} == {worker.proc.pid}
    assert len({a["identity"] for a in answers}) == 1, "Msg1 was not the same in-memory object"
    spans = intervals(rdb, uid)
    assert len(spans) == 3
    assert_serial(spans)
    info = wait_until(lambda: hosted(p, handle.group), message="the group in groups()")
    assert info["hostname"] == worker.hostname and info["static"] is True
    assert info["executions"] == 3


def test_spawn_after_execution(broker, cluster, rdb, uid) -> None:
    """The seed's spawn_after_execution_test: the leader leaves a worker holding Msg3."""
    p = broker.persistent
    [pworker] = cluster.start(ordinary=1)
    msg1 = {"device": "state", "id": uid, "count": 0}
    first = {"path": "add", "by": 1, "sleep": 0.5, "n": 0}
    leader = p.resolve.delay(msg1, first, opts={"spawn_worker": True})
    wait_until(lambda: rdb.get(ev(rdb, "runs", uid)) == b"1", message="the leader to start")
    twin = p.resolve.delay(msg1, first, opts={"spawn_worker": True})
    later = [p.resolve.delay(msg1, {"path": "add", "by": 1, "n": n}) for n in (1, 2)]
    assert leader.get(timeout=30)["count"] == 1
    assert twin.get(timeout=30)["count"] == 1
    # The queued requests ran on the spawned worker, against Msg3, rolling.
    assert [r.get(timeout=30)["count"] for r in later] == [2, 3]
    pids = [int(x.split()[2]) for x in rdb.lrange(ev(rdb, "intervals", uid), 0, -1)]
    assert pids[1:] == [pworker.proc.pid, pworker.proc.pid]
    assert pids[0] != pworker.proc.pid
    info = wait_until(lambda: hosted(p, f"state-{uid}"), message="the spawned group")
    assert info["hostname"] == pworker.hostname and info["static"] is False


def test_rolling_state_over_100_requests(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "counter", "id": uid, "count": 0}
    redis_cluster.host(msg1)
    # Distinct Msg2s: identical ones in flight would coalesce into one execution.
    results = [p.resolve.delay(msg1, {"path": "add", "by": 1, "n": n}) for n in range(100)]
    assert [r.get(timeout=60)["count"] for r in results] == list(range(1, 101))
    info = wait_until(lambda: hosted(p, f"counter-{uid}"), message="the group")
    assert info["executions"] == 100
    # The checkpoint is the last state: a new owner would resume from it.
    owner = p.registry.owner(f"counter-{uid}")
    assert p.store.get({"$persistent-ref": owner["ref"]})["count"] == 100


def test_idle_timeout_calls_hook_and_releases(broker, cluster, rdb, uid) -> None:
    p = broker.persistent
    msg1 = {"device": "state", "id": uid, "count": 7}
    handle = cluster.host(msg1, {"worker_timeout": 1, "static_worker": True}, ordinary=1)
    assert p.resolve.delay(msg1, {"path": "peek"}).get(timeout=20)["count"] == 7
    assert queue_known(p, rdb, handle.queue)
    wait_until(lambda: hosted(p, handle.group) is None, message="the idle group to be released")
    assert rdb.lrange(ev(rdb, "idle", uid), 0, -1) == [b"7"]
    assert p.registry.owner(handle.group) == {}
    wait_until(lambda: not queue_known(p, rdb, handle.queue), message="the released queue to be deleted")
    # A request after the group ended is not lost: it runs the ordinary way.
    late = p.resolve.delay(msg1, {"path": "peek", "n": "late"}).get(timeout=20)
    assert late["n"] == "late" and late["count"] == 7


def test_requests_racing_the_idle_timeout_are_all_answered(redis_app, redis_cluster, rdb, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "state", "id": uid, "count": 1}
    redis_cluster.host(msg1, {"worker_timeout": 1, "static_worker": True}, ordinary=1)
    results = []
    # Gaps around the 1 s timeout (the worker checks it on a ~1 s beat): some
    # requests land just before a release, some during it, some after.
    for n, gap in enumerate([0.0, 0.9, 1.0, 1.1, 1.3, 1.6, 3.0, 0.1]):
        time.sleep(gap)  # spacing requests in time is the point of this test
        results.append(p.resolve.delay(msg1, {"path": "peek", "n": n}))
    assert [r.get(timeout=30)["n"] for r in results] == list(range(8))
    assert rdb.llen(ev(rdb, "idle", uid)) >= 1, "the timeout never fired: the race was not exercised"


def test_cache_bound_evicts_and_reloads(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    redis_cluster.start(options=("--persistent-cache-bytes", "120000"))
    before = p.metrics.read()["evictions"]
    # 50 KB each: under persistent_inline_bytes, so requests carry Msg1 by value
    # and never store it again themselves.
    msgs = [{"device": "state", "id": f"{uid}-{i}", "blob": str(i) * 50_000} for i in range(3)]
    for msg in msgs:
        p.start_worker(msg, {"static_worker": True})
    first = [p.resolve.delay(m, {"path": "peek"}).get(timeout=20) for m in msgs]
    assert [a["blob"] for a in first] == [50_000] * 3
    assert p.metrics.read()["evictions"] > before
    workers = {w["hostname"]: w for w in p.workers()}
    assert all(w["cache_bytes"] <= 120_000 for w in workers.values())
    # The least recently used Msg1 (the first) was evicted: its next request
    # reloads it from the store.  Without the stored copy that is a typed error.
    stored = p.ref(msgs[0])
    p.redis.delete(p.keys.store(stored.digest))
    with pytest.raises(StateLost):
        p.resolve.delay(msgs[0], {"path": "peek", "n": 1}).get(timeout=20)
    assert p.resolve.delay(msgs[2], {"path": "peek", "n": 1}).get(timeout=20)["blob"] == 50_000
    p.ref(msgs[0])  # stored again
    assert p.resolve.delay(msgs[0], {"path": "peek", "n": 2}).get(timeout=20)["blob"] == 50_000


def test_sigkill_of_persistent_worker_under_load(broker, cluster, rdb, uid) -> None:
    p = broker.persistent
    msg1 = {"device": "state", "id": uid, "blob": "z" * 10_000}
    handle = cluster.host(msg1, {"static_worker": True}, persistent=2, ordinary=1)
    victim = cluster.by_hostname(handle.hostname)
    results = [p.resolve.delay(msg1, {"path": "peek", "n": n, "sleep": 0.3}) for n in range(12)]
    wait_until(lambda: int(rdb.get(ev(rdb, "runs", uid)) or 0) >= 3, message="a few executions")
    victim.kill()
    killed = time.time()
    answers = [r.get(timeout=LEASE_TTL * 3 + 20) for r in results]
    assert [a["n"] for a in answers] == list(range(12))
    order = [int(x) for x in rdb.lrange(ev(rdb, "order", uid), 0, -1)]
    assert sorted(order) == list(range(12)), "every request completes exactly once"
    assert_serial(intervals(rdb, uid))
    survivor_pids = {w.proc.pid for w in cluster.workers if w is not victim}
    assert answers[-1]["pid"] in survivor_pids
    info = wait_until(lambda: hosted(p, handle.group), message="the group on a new worker")
    assert info["hostname"] != victim.hostname
    resumed = min(start for start, _, _ in intervals(rdb, uid) if start > killed)
    print(f"recovery after SIGKILL: next execution started {resumed - killed:.2f}s after the kill "
          f"(lease TTL {LEASE_TTL}s); all answered {time.time() - killed:.2f}s after it")


def test_warm_shutdown_hands_groups_to_another_worker(broker, cluster, uid) -> None:
    p = broker.persistent
    msg1 = {"device": "state", "id": uid, "count": 3}
    handle = cluster.host(msg1, {"static_worker": True}, persistent=2)
    first = cluster.by_hostname(handle.hostname)
    assert p.resolve.delay(msg1, {"path": "peek"}).get(timeout=20)["pid"] == first.proc.pid
    first.stop()
    other = next(w for w in cluster.workers if w is not first)
    wait_until(lambda: (hosted(p, handle.group) or {}).get("hostname") == other.hostname,
               message="the group to move to the other worker")
    answers = [p.resolve.delay(msg1, {"path": "peek", "n": n}).get(timeout=20) for n in range(3)]
    assert {a["pid"] for a in answers} == {other.proc.pid}
    assert {a["count"] for a in answers} == {3}


def test_large_msg1_is_not_resent(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    redis_cluster.start()
    msg1 = {"device": "state", "id": uid, "blob": "m" * (5 * 1024 * 1024)}
    ref = p.ref(msg1)
    assert len(json.dumps(ref)) < 200
    p.start_worker(ref, {"static_worker": True})
    sizes: list[int] = []

    def measure(sender=None, body=None, **kwargs) -> None:
        if sender == p.resolve.name:
            sizes.append(len(json.dumps(body, default=str)))

    before_task_publish.connect(measure)
    try:
        answers = [p.resolve.delay(ref, {"path": "peek", "n": n}).get(timeout=30) for n in range(3)]
    finally:
        before_task_publish.disconnect(measure)
    assert len(sizes) == 3 and max(sizes) < 10_000, f"task messages carried {sizes} bytes"
    assert {a["blob"] for a in answers} == {5 * 1024 * 1024}
    assert len({a["identity"] for a in answers}) == 1, "the device saw another Msg1 object"


def test_error_strategy_ignore_keeps_state(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "counter", "id": uid, "count": 0}
    redis_cluster.host(msg1)
    assert p.resolve.delay(msg1, {"path": "add", "by": 1, "n": 0}).get(timeout=20)["count"] == 1
    with pytest.raises(TypeError):
        p.resolve.delay(msg1, {"path": "add", "by": "not a number"}).get(timeout=20)
    assert p.resolve.delay(msg1, {"path": "add", "by": 1, "n": 1}).get(timeout=20)["count"] == 2
    assert hosted(p, f"counter-{uid}") is not None


def test_error_strategy_throw_restarts_from_the_checkpoint(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    redis_cluster.start(ordinary=1)
    msg1 = {"device": "state", "id": uid, "count": 0}
    placements = p.metrics.read()["placements"]
    p.start_worker(msg1, {"error_strategy": "throw"})
    assert p.resolve.delay(msg1, {"path": "add", "by": 1, "n": 0}).get(timeout=20)["count"] == 1
    failing = p.resolve.delay(msg1, {"path": "fail"})
    behind = [p.resolve.delay(msg1, {"path": "add", "by": 1, "n": n}) for n in (1, 2)]
    with pytest.raises(ValueError, match="on purpose"):
        failing.get(timeout=20)
    # The failed instance ends; a fresh one resumes from the last good state
    # and runs the requests queued behind the failure, in order.
    assert [r.get(timeout=30)["count"] for r in behind] == [2, 3]
    assert p.metrics.read()["placements"] == placements + 2, "placed once, then restarted once"


def test_device_worker_computes_forward_to_a_slot(redis_app, redis_cluster, rdb, uid) -> None:
    """The process-worker pattern: requests name a slot, the worker computes forward."""
    p = redis_app.persistent
    msg1 = {"device": "process", "id": uid, "slot": 0, "sum": 0}
    redis_cluster.host(msg1)
    at3 = p.resolve.delay(msg1, {"path": "compute", "slot": 3}).get(timeout=20)
    at5 = p.resolve.delay(msg1, {"path": "compute", "slot": 5}).get(timeout=20)
    at2 = p.resolve.delay(msg1, {"path": "compute", "slot": 2}).get(timeout=20)
    assert (at3["slot"], at3["sum"]) == (3, 6)
    assert (at5["slot"], at5["sum"]) == (5, 15)
    assert at2["slot"] == 5, "a passed slot is answered from the state"
    assert int(rdb.get(ev(rdb, "steps", uid))) == 5, "each slot was computed once"


def test_stop_worker_lets_the_group_go(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "state", "id": uid, "count": 0}
    handle = redis_cluster.host(msg1, {"static_worker": True, "worker_timeout": 600})
    assert p.resolve.delay(msg1, {"path": "peek"}).get(timeout=20)["count"] == 0
    busy = [p.resolve.delay(msg1, {"path": "peek", "n": n, "sleep": 0.5}) for n in range(3)]
    assert p.stop_worker(handle.group) is True
    # Requests it had accepted still run before it lets the group go.
    assert [r.get(timeout=20)["n"] for r in busy] == [0, 1, 2]
    wait_until(lambda: hosted(p, handle.group) is None, message="the stopped group to go")
    assert p.stop_worker(handle.group) is False


def test_rolling_worker_reregisters_and_old_group_is_forwarded(redis_app, redis_cluster, rdb, uid) -> None:
    p = redis_app.persistent
    [worker] = redis_cluster.start()
    msg1 = {"device": "phased", "id": uid, "phase": 0}
    handle = p.start_worker(msg1)
    assert handle.group == f"ph-{uid}-0"
    assert p.resolve.delay(msg1, {"path": "advance"}).get(timeout=20)["phase"] == 1
    wait_until(lambda: hosted(p, f"ph-{uid}-1"), message="the group under its new name")
    assert hosted(p, f"ph-{uid}-0") is None
    # A caller still holding the old Msg1 computes the old group: it is
    # forwarded to the worker, which answers from its current state.
    answer = p.resolve.delay(msg1, {"path": "peek"}).get(timeout=20)
    assert answer["phase"] == 1 and answer["pid"] == worker.proc.pid
    # The old name's queue is retired once it is done; the name stays a marker.
    wait_until(lambda: not queue_known(p, rdb, handle.queue), message="the old queue to be deleted")
    assert p.registry.owner(handle.group)["mode"] == "moved"


def test_rolling_group_resumes_from_checkpoint_after_sigkill(redis_app, redis_cluster, rdb, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "state", "id": uid, "count": 0}
    handle = redis_cluster.host(msg1, persistent=2)
    victim = redis_cluster.by_hostname(handle.hostname)
    results = [p.resolve.delay(msg1, {"path": "add", "by": 1, "n": n, "sleep": 0.2}) for n in range(10)]
    wait_until(lambda: int(rdb.get(ev(rdb, "runs", uid)) or 0) >= 3, message="a few executions")
    victim.kill()
    # Every deposit applied exactly once, in order, across the crash.
    assert [r.get(timeout=LEASE_TTL * 3 + 20)["count"] for r in results] == list(range(1, 11))
    assert_serial(intervals(rdb, uid))


def test_send_task_for_a_hosted_group_runs_on_its_worker(redis_app, redis_cluster, uid) -> None:
    """Requests that bypass apply_async (send_task, beat) still reach the persistent worker."""
    p = redis_app.persistent
    [pworker] = redis_cluster.start(ordinary=1)
    msg1 = {"device": "state", "id": uid, "count": 5}
    p.start_worker(msg1, {"static_worker": True})
    results = [redis_app.app.send_task("persistent.resolve", args=[msg1, {"path": "peek", "n": n}]) for n in range(3)]
    answers = [r.get(timeout=20) for r in results]
    assert [a["n"] for a in answers] == [0, 1, 2]
    assert {a["pid"] for a in answers} == {pworker.proc.pid}


def test_drain_moves_groups_including_one_placed_right_after(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    redis_cluster.start(persistent=2)
    first = p.start_worker({"device": "state", "id": f"{uid}-a", "count": 0}, {"static_worker": True})
    drained = first.hostname
    assert p.drain(drained) is True
    late = p.start_worker({"device": "state", "id": f"{uid}-b", "count": 0}, {"static_worker": True})
    for group in (first.group, late.group):
        wait_until(lambda g=group: (hosted(p, g) or {}).get("hostname") not in (None, drained),
                   message=f"{group} to leave the draining worker")
    answer = p.resolve.delay({"device": "state", "id": f"{uid}-b", "count": 0}, {"path": "peek"}).get(timeout=20)
    assert answer["pid"] != redis_cluster.by_hostname(drained).proc.pid


def test_worker_default_idle_timeout_applies_when_none_is_given(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    msg1 = {"device": "state", "id": uid, "count": 0}
    # No worker_timeout: the worker's 1 s.
    handle = redis_cluster.host(msg1, {"static_worker": True}, options=("--persistent-timeout", "1"))
    assert p.resolve.delay(msg1, {"path": "peek"}).get(timeout=20)["count"] == 0
    wait_until(lambda: hosted(p, handle.group) is None, timeout=6, message="release after the worker's 1 s")


def test_persistent_worker_refuses_a_concurrent_pool(tmp_path) -> None:
    from tests.support import Worker

    worker = Worker(pool="prefork", concurrency=2, extra=["--persistent"], logdir=tmp_path)
    try:
        worker.proc.wait(60)
        assert worker.proc.returncode != 0
        assert "use -P solo" in worker.log()
    finally:
        worker.stop()
