"""A process that dies right after an execution's outcome is recorded loses no answer.

Each test arms a named crash point (``celery_persistent.faults``) in one
worker: the worker exits as abruptly as SIGKILL at that instruction, and a
surviving worker's reaper must complete what the dead one started.
"""

from __future__ import annotations

import time

from celery_persistent.faults import ENV
from tests.conftest import evidence_key
from tests.e2e.support import LEASE_TTL, hosted
from tests.support import Worker, wait_until

BOUND = LEASE_TTL + 10  # lease TTL plus recovery


def test_death_after_finish_still_answers_waiters_and_runs_the_next(workers, persistent, rdb, uid, tmp_path):
    """Killed between finish.lua and the answers: waiters get the leader's Msg3, the queued request runs."""
    victim_queue = f"victim-{uid}"
    victim = Worker(pool="solo", extra=["-Q", victim_queue], env={ENV: "after-finish"}, logdir=tmp_path)
    survivor = Worker(pool="solo", logdir=tmp_path)
    workers.extend([victim, survivor])
    victim.wait_ready()
    survivor.wait_ready()

    msg1 = {"device": "serial", "id": uid}
    first = {"path": "run", "sleep": 1.5, "n": 0}
    leader = persistent.resolve.apply_async((msg1, first), queue=victim_queue)
    wait_until(lambda: rdb.get(evidence_key("runs", uid)) == b"1", message="the leader to start")
    waiters = [persistent.resolve.delay(msg1, first) for _ in range(3)]
    queued = persistent.resolve.delay(msg1, {"path": "run", "sleep": 0, "n": 1})

    wait_until(lambda: victim.proc.poll() is not None, timeout=20, message="the victim to die at its crash point")
    died = time.monotonic()
    answers = [r.get(timeout=BOUND) for r in [leader, *waiters]]
    assert {a["n"] for a in answers} == {0}
    assert len({a["pid"] for a in answers}) == 1, "every caller got the one execution's Msg3"
    assert queued.get(timeout=BOUND)["n"] == 1
    assert time.monotonic() - died < BOUND
    # The first Msg2 ran once: its waiters were answered, not executed again.
    assert int(rdb.get(evidence_key("runs", uid))) == 2


def test_death_between_fetch_and_reception_is_recovered_within_a_lease(workers, persistent, rdb, uid, tmp_path):
    """Killed after kombu's fetch put the leader in its unacked hash, before the worker received it.

    Without the reaper's look at kombu's unacked index (stranded.py) the leader
    keeps its queue-TTL lease (600 s) and its message waits out the 1 h
    visibility timeout: its caller and the request queued behind it hang.
    """
    victim_queue = f"victim-{uid}"
    victim = Worker(pool="solo", extra=["-Q", victim_queue], env={ENV: "before-reception"}, logdir=tmp_path)
    workers.append(victim)
    victim.wait_ready()
    msg1 = {"device": "serial", "id": uid}
    leader = persistent.resolve.apply_async((msg1, {"path": "run", "sleep": 0, "n": 0}), queue=victim_queue)
    wait_until(lambda: victim.proc.poll() is not None, timeout=20, message="the victim to die at its crash point")
    died = time.monotonic()
    queued = persistent.resolve.apply_async((msg1, {"path": "run", "sleep": 0, "n": 1}), queue=victim_queue)

    survivor = Worker(pool="solo", extra=["-Q", victim_queue], logdir=tmp_path)
    workers.append(survivor)
    survivor.wait_ready()
    assert leader.get(timeout=BOUND)["n"] == 0
    assert queued.get(timeout=BOUND)["n"] == 1
    assert time.monotonic() - died < BOUND
    assert int(rdb.get(evidence_key("runs", uid))) == 2  # each ran once: the stranded copy stayed fenced


def test_death_after_finish_hosted_keeps_the_state_and_every_answer(redis_app, redis_cluster, rdb, uid):
    """Killed between finish_hosted.lua and the answers: the checkpoint stands, its caller is answered."""
    p = redis_app.persistent
    victim = redis_cluster.persistent_worker(env={ENV: "after-finish-hosted"})
    redis_cluster.ready()
    msg1 = {"device": "state", "id": uid, "count": 0}
    handle = p.start_worker(msg1)
    assert handle.hostname == victim.hostname
    redis_cluster.persistent_worker()  # the survivor, started after placement
    redis_cluster.ready()

    results = [p.resolve.delay(msg1, {"path": "add", "by": 1, "n": n}) for n in range(6)]
    wait_until(lambda: victim.proc.poll() is not None, timeout=20, message="the victim to die at its crash point")
    counts = [r.get(timeout=BOUND + LEASE_TTL)["count"] for r in results]
    # Each deposit applied exactly once and each caller saw its own: no update lost or applied twice.
    assert counts == list(range(1, 7))
    assert int(rdb.get(evidence_key("runs", uid))) == 6
    info = wait_until(lambda: hosted(p, handle.group), message="the group on the survivor")
    assert info["hostname"] != victim.hostname


def test_a_request_answered_with_worker_lost_is_never_run_later(workers, persistent, rdb, uid, tmp_path):
    """A prefork child dies before it claims: Celery answers WorkerLostError, and that stays the one outcome."""
    from billiard.exceptions import WorkerLostError

    victim_queue = f"victim-{uid}"
    victim = Worker(pool="prefork", concurrency=1, extra=["-Q", victim_queue], env={ENV: "before-claim"},
                    logdir=tmp_path)
    survivor = Worker(pool="solo", logdir=tmp_path)
    workers.extend([victim, survivor])
    victim.wait_ready()
    survivor.wait_ready()

    msg1 = {"device": "serial", "id": uid}
    lost = persistent.resolve.apply_async((msg1, {"path": "run", "n": 0}), queue=victim_queue)
    twin = persistent.resolve.delay(msg1, {"path": "run", "n": 0})
    try:
        lost.get(timeout=BOUND)
        raise AssertionError("the lost request must not succeed")
    except WorkerLostError:
        pass
    # Its twin coalesced onto it: it gets the same outcome, not an execution of its own.
    try:
        twin.get(timeout=BOUND)
        raise AssertionError("the twin must share the lost request's outcome")
    except WorkerLostError:
        pass
    # The group moved on: a later request runs (on the survivor), the lost one never does.
    later = persistent.resolve.delay(msg1, {"path": "run", "n": 1})
    assert later.get(timeout=BOUND)["n"] == 1
    assert [int(n) for n in rdb.lrange(evidence_key("order", uid), 0, -1)] == [1]
    assert lost.state == "FAILURE"
