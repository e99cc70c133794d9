"""Recovery time is bounded by the lease, however many groups a dead worker hosted."""

from __future__ import annotations

import time

from tests.apps.devices import ekey
from tests.e2e.support import LEASE_TTL, hosted
from tests.support import wait_until


def first_start_after(rdb, tag: str, moment: float) -> float | None:
    starts = [float(raw.split()[0]) for raw in rdb.lrange(ekey("intervals", tag), 0, -1)]
    later = [start for start in starts if start > moment]
    return min(later) if later else None


def test_every_group_of_a_dead_worker_resumes_within_the_lease(redis_app, redis_cluster, rdb, uid) -> None:
    """Adopted groups take turns with their backlogs: the last one does not wait for all the others'."""
    p = redis_app.persistent
    [victim] = redis_cluster.start(persistent=1)
    ids = [f"{uid}-{i}" for i in range(5)]
    msgs = [{"device": "state", "id": i, "count": 0} for i in ids]
    for msg in msgs:
        assert p.start_worker(msg, {"static_worker": True}).hostname == victim.hostname
    redis_cluster.persistent_worker()  # the survivor, started once every group is on the victim
    redis_cluster.ready()
    results = [p.resolve.delay(msg, {"path": "peek", "n": n, "sleep": 0.5}) for n in range(4) for msg in msgs]
    wait_until(lambda: int(rdb.get(ekey("runs", ids[0])) or 0) >= 1, message="the victim to be executing")
    victim.kill()
    killed = time.time()
    for result in results:
        result.get(timeout=LEASE_TTL * 3 + 30)
    resumed = {i: first_start_after(rdb, i, killed) for i in ids}
    waits = {i: round(start - killed, 2) for i, start in resumed.items() if start is not None}
    assert waits, "no group ran after the kill"
    assert max(waits.values()) <= LEASE_TTL + 5, f"time from the kill to each group's first execution: {waits}"


def test_a_group_placed_on_a_worker_that_just_died_is_not_held_by_it(redis_app, redis_cluster, uid) -> None:
    p = redis_app.persistent
    first, second = redis_cluster.start(persistent=2)
    first.kill()
    killed = time.monotonic()
    msgs = [{"device": "state", "id": f"{uid}-{i}", "count": i} for i in range(4)]
    for msg in msgs:  # some may land on the dead worker before its heartbeat is stale
        p.start_worker(msg, {"static_worker": True})
    answers = [p.resolve.delay(msg, {"path": "peek", "n": 0}).get(timeout=LEASE_TTL * 3 + 30) for msg in msgs]
    assert [a["count"] for a in answers] == [0, 1, 2, 3]
    assert {a["pid"] for a in answers} == {second.proc.pid}
    assert time.monotonic() - killed <= LEASE_TTL + 5 + 3, "placement on the dead worker held a group too long"
    for msg in msgs:
        assert hosted(p, f"state-{msg['id']}")["hostname"] == second.hostname
