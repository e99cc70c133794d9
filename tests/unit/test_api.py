"""The seed's interface as methods of Persistent: find_or_register, await_, notify, unregister_notify."""

from __future__ import annotations

import threading

import pytest

from celery_persistent import InfiniteRecursionError, Leader, LeaderDied, Wait

MSG2 = {"path": "run"}


def test_leader_then_waiter_then_notify(persistent, uid) -> None:
    msg1 = {"device": "work", "id": uid}
    leader = persistent.find_or_register(msg1, MSG2)
    assert isinstance(leader, Leader)
    assert leader.group == persistent.group(msg1, MSG2) == persistent.default_grouper(msg1, MSG2)
    waiters = [persistent.find_or_register(msg1, MSG2) for _ in range(3)]
    assert all(isinstance(w, Wait) and not w.queued and w.leader_id == leader.task_id for w in waiters)
    assert len({w.waiter_id for w in waiters}) == 3
    got: list[object] = []
    threads = [threading.Thread(target=lambda w=w: got.append(persistent.await_(w, msg1, MSG2, timeout=10)))
               for w in waiters]
    for t in threads:
        t.start()
    assert persistent.unregister_notify(leader, MSG2, {"answer": 42}) == 3
    for t in threads:
        t.join(10)
    assert got == [{"answer": 42}] * 3
    # The group is free again: the next caller leads.
    again = persistent.find_or_register(msg1, MSG2)
    assert isinstance(again, Leader)
    assert persistent.unregister_notify(again.group, MSG2, {"answer": 0}) == 0


def test_notify_answers_waiters_without_releasing(persistent, uid) -> None:
    msg1 = {"device": "work", "id": uid}
    leader = persistent.find_or_register(msg1, MSG2)
    waiter = persistent.find_or_register(msg1, MSG2)
    assert persistent.notify(leader.group, MSG2, {"partial": True}) == 1
    assert persistent.await_(waiter, msg1, MSG2, timeout=10) == {"partial": True}
    assert isinstance(persistent.find_or_register(msg1, MSG2), Wait), "still registered after notify"
    assert persistent.unregister_notify(leader, MSG2, {"final": True}) == 1


def test_errors_reach_waiters_as_the_same_type(persistent, uid) -> None:
    msg1 = {"device": "work", "id": uid}
    leader = persistent.find_or_register(msg1, MSG2)
    waiter = persistent.find_or_register(msg1, MSG2)
    persistent.unregister_notify(leader, MSG2, LeaderDied("gone", leader.group, leader.task_id))
    with pytest.raises(LeaderDied) as info:
        persistent.await_(waiter, msg1, MSG2, timeout=10)
    assert info.value.leader_id == leader.task_id


def test_await_modes(persistent, uid) -> None:
    work = {"device": "work", "id": uid}
    serial = {"device": "serial", "id": uid}
    assert persistent.group(work, MSG2, {"await_inprogress": False}) is None
    assert persistent.group(work, MSG2, {"await_inprogress": "named"}) is None, "work has no grouper"
    assert persistent.group(serial, MSG2, {"await_inprogress": "named"}) == f"serial-{uid}"
    free = persistent.find_or_register(work, MSG2, {"await_inprogress": False})
    assert isinstance(free, Leader) and free.group == ""
    assert isinstance(persistent.find_or_register(work, MSG2, {"await_inprogress": False}), Leader)


def test_await_of_recursion_raises(persistent, uid) -> None:
    from celery_persistent import InfiniteRecursion

    with pytest.raises(InfiniteRecursionError):
        persistent.await_(InfiniteRecursion(f"g-{uid}"), {}, {})


def test_private_key_does_not_change_the_group(persistent, uid) -> None:
    msg1 = {"device": "work", "id": uid}
    plain = persistent.group(msg1, MSG2)
    assert persistent.group({**msg1, "priv": {"trace": 1}}, {**MSG2, "priv": "x"}) == plain
    assert persistent.group(msg1, {**MSG2, "extra": 1}) != plain

