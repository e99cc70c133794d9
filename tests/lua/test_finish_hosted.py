"""finish_hosted.lua: a hosted request is done; take its waiters and record the group's new state."""

from __future__ import annotations

import pytest

from tests.lua.support import record, waiter

GROUP = "g"
TOKEN = "host-tok"
NOW = 77_000


def finish_hosted(scripts, ks, task_id="a", key="k", token=TOKEN, ref="", size=0):
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, key), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ks.metrics()]
    return scripts["finish_hosted"](keys=keys, args=[token, key, task_id, ref, NOW, size])


@pytest.fixture
def hosted(db, ks):
    """A hosted group runs a (key k, one waiter); b (key k2) is accepted and waits its turn."""
    db.hset(ks.owner(GROUP), mapping={
        "mode": "hosted", "token": TOKEN, "host": "w1", "queue": "q1", "ref": "ref-1", "bytes": "10",
        "state": "active", "executions": "2", "last": "100", "running": "a", "seq": "2",
    })
    db.hset(ks.inflight(GROUP), mapping={"k": "a", "k2": "b"})
    db.rpush(ks.waiters(GROUP, "k"), waiter("w1", "k"))
    db.zadd(ks.hosted_ids(GROUP), {"a": 1, "b": 2})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "k"), "b": record("b", "k2")})


def test_a_finished_request_with_a_new_msg1(db, ks, scripts, hosted):
    assert finish_hosted(scripts, ks, ref="ref-2", size=25) == ["done", waiter("w1", "k")]

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "hosted", "token": TOKEN, "host": "w1", "queue": "q1", "ref": "ref-2", "bytes": "25",
        "state": "active", "executions": "3", "last": str(NOW), "seq": "2",
    }
    assert db.hgetall(ks.inflight(GROUP)) == {"k2": "b"}
    assert not db.exists(ks.waiters(GROUP, "k"))
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1, withscores=True) == [("b", 2.0)]
    assert db.hgetall(ks.hosted_records(GROUP)) == {"b": record("b", "k2")}
    assert db.hgetall(ks.metrics()) == {"executions": "1"}


def test_an_empty_ref_keeps_msg1(db, ks, scripts, hosted):
    assert finish_hosted(scripts, ks, ref="", size=99) == ["done", waiter("w1", "k")]

    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["ref"], owner["bytes"], owner["executions"], owner["last"]) == ("ref-1", "10", "3", str(NOW))
    assert "running" not in owner


def test_no_waiters(db, ks, scripts, hosted):
    assert finish_hosted(scripts, ks, task_id="b", key="k2") == ["done"]

    assert db.hgetall(ks.inflight(GROUP)) == {"k": "a"}
    assert db.hgetall(ks.hosted_records(GROUP)) == {"a": record("a", "k")}


def test_an_inflight_entry_of_another_request_stays(db, ks, scripts, hosted):
    db.hset(ks.inflight(GROUP), "k", "z")

    finish_hosted(scripts, ks)

    assert db.hgetall(ks.inflight(GROUP)) == {"k": "z", "k2": "b"}


def test_a_stale_token_changes_nothing(ks, scripts, state, hosted):
    """Another host owns the group now."""
    before = state()

    assert finish_hosted(scripts, ks, token="old-host-tok", ref="ref-2", size=5) == ["stale"]

    assert state() == before


def test_a_second_finish_of_the_same_request_counts_again(db, ks, scripts, hosted):
    """Current behaviour: nothing fences a repeated finish; the execution is counted twice."""
    assert finish_hosted(scripts, ks) == ["done", waiter("w1", "k")]

    assert finish_hosted(scripts, ks) == ["done"]

    assert db.hget(ks.owner(GROUP), "executions") == "4"
    assert db.hgetall(ks.metrics()) == {"executions": "2"}
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1) == ["b"]
