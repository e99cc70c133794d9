"""The seed's interface against a real worker: forward_work moves queued requests to another group."""

from __future__ import annotations


def test_forward_work_moves_queued_requests_to_another_group(prefork_worker, persistent, uid) -> None:
    msg1 = {"device": "serial", "id": uid}
    leader = persistent.resolve.delay(msg1, {"path": "run", "sleep": 3, "n": 0})
    queued = [persistent.resolve.delay(msg1, {"path": "run", "n": n}) for n in (1, 2)]
    assert persistent.forward_work(f"serial-{uid}", f"elsewhere-{uid}") == 2
    assert [r.get(timeout=20)["n"] for r in queued] == [1, 2]
    assert not leader.ready(), "forwarded requests ran without waiting for the first group's leader"
    assert leader.get(timeout=20)["n"] == 0
    assert persistent.forward_work(f"serial-{uid}", f"elsewhere-{uid}") == 0
