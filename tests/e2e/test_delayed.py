"""countdown / eta: a delayed request keeps its delay, and never delays an identical immediate one."""

from __future__ import annotations

import time

from tests.conftest import evidence_key
from tests.e2e.support import LEASE_TTL


def test_an_immediate_request_does_not_wait_for_a_delayed_twin(persistent, solo_worker, rdb, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    msg2 = {"path": "run", "n": 0}
    sent = time.monotonic()
    delayed = persistent.resolve.apply_async((msg1, msg2), countdown=3)
    immediate = persistent.resolve.delay(msg1, msg2)
    assert immediate.get(timeout=LEASE_TTL + 10)["n"] == 0
    assert time.monotonic() - sent < 2.5, "the immediate request waited for its delayed twin"
    assert delayed.get(timeout=LEASE_TTL + 15)["n"] == 0
    assert time.monotonic() - sent >= 3.0, "the delayed request lost its countdown"
    # Two requests, two executions: the delayed one ran on its own, after its delay.
    assert int(rdb.get(evidence_key("runs", uid))) == 2


def test_a_delayed_request_behind_a_busy_group_keeps_its_delay(persistent, solo_worker, rdb, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    sent = time.monotonic()
    busy = persistent.resolve.delay(msg1, {"path": "run", "n": 0, "sleep": 0.5})
    delayed = persistent.resolve.apply_async((msg1, {"path": "run", "n": 1}), countdown=2)
    assert busy.get(timeout=LEASE_TTL + 10)["n"] == 0
    assert delayed.get(timeout=LEASE_TTL + 15)["n"] == 1
    starts = [float(line.split()[0]) for line in rdb.lrange(evidence_key("intervals", uid), 0, -1)]
    assert len(starts) == 2
    assert starts[1] - starts[0] >= 1.4, "the delayed request ran before its countdown"
    assert time.monotonic() - sent >= 2.0
