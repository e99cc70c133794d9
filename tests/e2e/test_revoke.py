"""Celery's ``revoke`` on the plugin's requests: the revoked caller gets REVOKED, nothing else changes.

A prefork worker: a solo worker reads control commands only between tasks
(Celery's own limit), so a revoke sent while it runs one arrives too late.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery.exceptions import TaskRevokedError

from tests.conftest import evidence_key
from tests.e2e.support import LEASE_TTL
from tests.support import Worker, wait_until

BOUND = LEASE_TTL + 10


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory) -> Iterator[Worker]:
    """A prefork worker with one process: requests run one at a time, control commands meanwhile."""
    worker = Worker(pool="prefork", concurrency=1, logdir=tmp_path_factory.mktemp("revoke")).wait_ready()
    yield worker
    worker.stop()


def order(rdb, uid: str) -> list[int]:
    return [int(n) for n in rdb.lrange(evidence_key("order", uid), 0, -1)]


def test_revoking_a_queued_request_does_not_block_its_group(app, persistent, one_slot, rdb, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    leader = persistent.resolve.delay(msg1, {"path": "run", "n": 0, "sleep": 1.0})
    queued = persistent.resolve.delay(msg1, {"path": "run", "n": 1})
    after = persistent.resolve.delay(msg1, {"path": "run", "n": 2})
    app.control.revoke(queued.id)
    assert leader.get(timeout=BOUND)["n"] == 0
    assert after.get(timeout=BOUND)["n"] == 2
    with pytest.raises(TaskRevokedError):
        queued.get(timeout=BOUND)
    assert order(rdb, uid) == [0, 2], "the revoked request never runs"


def test_a_revoked_leader_gives_its_place_to_a_waiter(app, persistent, one_slot, rdb, uid) -> None:
    busy_msg1 = {"device": "serial", "id": f"busy-{uid}"}
    busy = persistent.resolve.delay(busy_msg1, {"path": "run", "n": 0, "sleep": 1.5})
    wait_until(lambda: rdb.get(evidence_key("runs", f"busy-{uid}")) == b"1", message="the worker to be busy")
    msg1 = {"device": "serial", "id": uid}
    msg2 = {"path": "run", "n": 7}
    leader = persistent.resolve.delay(msg1, msg2)  # waits in the broker behind the busy request
    waiters = [persistent.resolve.delay(msg1, msg2) for _ in range(2)]
    app.control.revoke(leader.id)
    busy.get(timeout=BOUND)
    with pytest.raises(TaskRevokedError):
        leader.get(timeout=BOUND)
    assert [w.get(timeout=BOUND)["n"] for w in waiters] == [7, 7]
    assert order(rdb, uid) == [7], "one execution, for the waiters"


def test_revoking_a_coalesced_caller_answers_only_it_revoked(app, persistent, one_slot, rdb, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    msg2 = {"path": "run", "n": 3, "sleep": 3.0}
    leader = persistent.resolve.delay(msg1, msg2)
    wait_until(lambda: rdb.get(evidence_key("runs", uid)) == b"1", message="the leader to start")
    revoked, kept = persistent.resolve.delay(msg1, msg2), persistent.resolve.delay(msg1, msg2)
    app.control.revoke(revoked.id)
    # The worker's lease beat copies the revoke to Redis well within the leader's 3 s run.
    wait_until(lambda: persistent.wiring.revoked.which([revoked.id]), timeout=2.5,
               message="the revoke to reach the registry")
    assert leader.get(timeout=BOUND)["n"] == 3
    assert kept.get(timeout=BOUND)["n"] == 3
    with pytest.raises(TaskRevokedError):
        revoked.get(timeout=BOUND)
    assert order(rdb, uid) == [3]
