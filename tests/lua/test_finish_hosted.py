"""finish_hosted.lua: a hosted request is done; take its waiters, record the group's new state, keep a delivery.

The delivery holds the request's own record, its outcome (or "" when the
outcome is the new checkpoint ``ref``), the group's device and its waiters,
until deliver.lua "done" (or the reaper, past its deadline).
"""

from __future__ import annotations

import json

import pytest

from tests.lua.support import record, server_clock, waiter

GROUP = "g"
TOKEN = "host-tok"
DELIVERY_LEASE = 9_000
OUTCOME = json.dumps({"error": {"exc_type": "ValueError", "exc_message": ["failed"]}})


def finish_hosted(scripts, ks, task_id="a", key="k", token=TOKEN, ref="", size=0, outcome=""):
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, key), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ks.metrics(), ks.delivery(GROUP, task_id),
            ks.delivery_waiters(GROUP, task_id), ks.deliveries()]
    args = [token, key, task_id, ref, size, outcome, DELIVERY_LEASE, f"{GROUP} {task_id}"]
    return scripts["finish_hosted"](keys=keys, args=args)


@pytest.fixture
def hosted(db, ks):
    """A hosted group runs a (key k, one waiter); b (key k2) is accepted and waits its turn."""
    db.hset(ks.owner(GROUP), mapping={
        "mode": "hosted", "token": TOKEN, "host": "w1", "queue": "q1", "ref": "ref-1", "bytes": "10",
        "device": "counter", "state": "active", "executions": "2", "last": "100", "running": "a", "seq": "2",
    })
    db.hset(ks.inflight(GROUP), mapping={"k": "a", "k2": "b"})
    db.rpush(ks.waiters(GROUP, "k"), waiter("w1", "k"))
    db.zadd(ks.hosted_ids(GROUP), {"a": 1, "b": 2})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "k"), "b": record("b", "k2")})


def test_a_finished_request_with_a_new_msg1(db, ks, scripts, hosted):
    with server_clock(db) as now:
        assert finish_hosted(scripts, ks, ref="ref-2", size=25) == ["done", waiter("w1", "k")]

    owner = db.hgetall(ks.owner(GROUP))
    assert owner.pop("last") in now
    assert owner == {
        "mode": "hosted", "token": TOKEN, "host": "w1", "queue": "q1", "ref": "ref-2", "bytes": "25",
        "device": "counter", "state": "active", "executions": "3", "seq": "2",
    }
    assert db.hgetall(ks.inflight(GROUP)) == {"k2": "b"}
    assert not db.exists(ks.waiters(GROUP, "k"))
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1, withscores=True) == [("b", 2.0)]
    assert db.hgetall(ks.hosted_records(GROUP)) == {"b": record("b", "k2")}
    assert db.hgetall(ks.metrics()) == {"executions": "1"}
    # The outcome is the new checkpoint: the delivery names it instead of repeating it.
    assert db.hgetall(ks.delivery(GROUP, "a")) == {"self": record("a", "k"), "outcome": "", "ref": "ref-2",
                                                   "device": "counter"}
    assert db.lrange(ks.delivery_waiters(GROUP, "a"), 0, -1) == [waiter("w1", "k")]
    assert db.zrange(ks.deliveries(), 0, -1) == [f"{GROUP} a"]
    assert db.zscore(ks.deliveries(), f"{GROUP} a") in now + DELIVERY_LEASE


def test_an_empty_ref_keeps_msg1(db, ks, scripts, hosted):
    with server_clock(db) as now:
        assert finish_hosted(scripts, ks, ref="", size=99, outcome=OUTCOME) == ["done", waiter("w1", "k")]

    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["ref"], owner["bytes"], owner["executions"]) == ("ref-1", "10", "3")
    assert owner["last"] in now
    assert "running" not in owner
    assert db.hgetall(ks.delivery(GROUP, "a")) == {"self": record("a", "k"), "outcome": OUTCOME, "ref": "",
                                                   "device": "counter"}


def test_a_group_without_a_device_field_delivers_an_empty_device(db, ks, scripts, hosted):
    db.hdel(ks.owner(GROUP), "device")

    finish_hosted(scripts, ks, outcome=OUTCOME)

    assert db.hget(ks.delivery(GROUP, "a"), "device") == ""


def test_no_waiters(db, ks, scripts, hosted):
    with server_clock(db) as now:
        assert finish_hosted(scripts, ks, task_id="b", key="k2", outcome=OUTCOME) == ["done"]

    assert db.hgetall(ks.inflight(GROUP)) == {"k": "a"}
    assert db.hgetall(ks.hosted_records(GROUP)) == {"a": record("a", "k")}
    # b's own answer is still owed: a delivery without a waiters list.
    assert db.hgetall(ks.delivery(GROUP, "b"))["self"] == record("b", "k2")
    assert not db.exists(ks.delivery_waiters(GROUP, "b"))
    assert db.zscore(ks.deliveries(), f"{GROUP} b") in now + DELIVERY_LEASE
    assert db.lrange(ks.waiters(GROUP, "k"), 0, -1) == [waiter("w1", "k")]  # a's waiters are a's


def test_an_inflight_entry_of_another_request_stays(db, ks, scripts, hosted):
    db.hset(ks.inflight(GROUP), "k", "z")

    finish_hosted(scripts, ks)

    assert db.hgetall(ks.inflight(GROUP)) == {"k": "z", "k2": "b"}


def test_a_stale_token_changes_nothing(ks, scripts, state, hosted):
    """Another host owns the group now."""
    before = state()

    assert finish_hosted(scripts, ks, token="old-host-tok", ref="ref-2", size=5) == ["stale"]

    assert state() == before  # no delivery either


def test_a_stale_token_is_stale_even_for_a_request_that_is_gone(ks, scripts, state, hosted):
    before = state()

    assert finish_hosted(scripts, ks, task_id="zzz", token="old-host-tok") == ["stale"]

    assert state() == before


def test_a_second_finish_of_the_same_request_is_gone(db, ks, scripts, state, hosted):
    """A repeat (after a reply lost in an outage) finds it finished: nothing is counted or delivered twice."""
    assert finish_hosted(scripts, ks, ref="ref-2", size=25) == ["done", waiter("w1", "k")]
    after_first = state()

    assert finish_hosted(scripts, ks, ref="ref-3", size=30) == ["gone"]

    assert state() == after_first
    assert db.hget(ks.owner(GROUP), "executions") == "3"
    assert db.hgetall(ks.metrics()) == {"executions": "1"}


@pytest.mark.parametrize("missing", ["both", "ids", "records"])
def test_a_request_no_longer_accepted_is_gone(db, ks, scripts, state, hosted, missing):
    """Withdrawn (or finished) already: its id, its record, or both are gone; nothing changes."""
    if missing in ("both", "ids"):
        db.zrem(ks.hosted_ids(GROUP), "a")
    if missing in ("both", "records"):
        db.hdel(ks.hosted_records(GROUP), "a")
    before = state()

    assert finish_hosted(scripts, ks, ref="ref-2", size=25, outcome=OUTCOME) == ["gone"]

    assert state() == before
