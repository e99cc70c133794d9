"""A leader SIGKILLed mid-execution: nobody waits for ever (lease, not visibility timeout)."""

from __future__ import annotations

import time

import pytest

from celery_persistent import LeaderDied
from tests.conftest import evidence_key
from tests.e2e.support import LEASE_TTL
from tests.support import Worker, wait_until


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_sigkill_of_leader_answers_waiters_with_leader_died(pool, workers, persistent, rdb, uid, tmp_path):
    victim_queue = f"victim-{uid}"
    victim = Worker(pool=pool, concurrency=1, extra=["-Q", victim_queue], logdir=tmp_path)
    survivor = Worker(pool="solo", logdir=tmp_path)
    workers.extend([victim, survivor])
    victim.wait_ready()
    survivor.wait_ready()

    msg1 = {"device": "serial", "id": uid}
    long_run = {"path": "run", "sleep": 60, "n": 0}
    leader = persistent.resolve.apply_async((msg1, long_run), queue=victim_queue)
    wait_until(lambda: rdb.get(evidence_key("runs", uid)) == b"1", message="the leader to start")
    waiters = [persistent.resolve.delay(msg1, long_run) for _ in range(3)]
    queued = persistent.resolve.delay(msg1, {"path": "run", "sleep": 0, "n": 1})

    victim.kill()
    killed_at = time.monotonic()

    for result in [leader, *waiters]:
        with pytest.raises(LeaderDied) as info:
            result.get(timeout=LEASE_TTL + 15)
        assert info.value.group == f"serial-{uid}"
        assert info.value.leader_id == leader.id
    recovered_in = time.monotonic() - killed_at
    # The queued request with another Msg2 is not lost: the group moves on to it.
    assert queued.get(timeout=LEASE_TTL + 15)["n"] == 1
    assert recovered_in < LEASE_TTL + 10
    assert int(rdb.get(evidence_key("runs", uid))) == 2
