"""finish.lua: the leader is done; take its waiters and hand the group on (or keep it)."""

from __future__ import annotations

import pytest

from tests.lua.support import record, waiter

GROUP = "g"
KEY = "k"
TOKEN = "tok-1"
NEXT = "tok-2"
NEXT_DEADLINE = 50_000


def finish(scripts, ks, token=TOKEN, keep="", count="1"):
    keys = [ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, KEY), ks.pending(GROUP), ks.leases(),
            ks.metrics()]
    return scripts["finish"](keys=keys, args=[GROUP, KEY, token, NEXT, NEXT_DEADLINE, keep, count])


@pytest.fixture
def running(db, ks):
    """Leader "a" of key k runs; "w1" and "w2" wait for it; another group holds a lease too."""
    db.hset(ks.owner(GROUP), mapping={
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": KEY, "state": "running",
        "request": record("a", KEY),
    })
    db.hset(ks.inflight(GROUP), mapping={KEY: "a"})
    db.rpush(ks.waiters(GROUP, KEY), waiter("w1", KEY), waiter("w2", KEY))
    db.zadd(ks.leases(), {GROUP: 1000, "other": 2000})


def test_the_last_leader_releases_the_group(db, ks, scripts, running):
    assert finish(scripts, ks) == ["done", "", waiter("w1", KEY), waiter("w2", KEY)]

    assert not db.exists(ks.owner(GROUP), ks.inflight(GROUP), ks.waiters(GROUP, KEY))
    assert db.zrange(ks.leases(), 0, -1, withscores=True) == [("other", 2000.0)]
    assert db.hgetall(ks.metrics()) == {"executions": "1"}


def test_the_next_queued_request_becomes_the_owner(db, ks, scripts, running):
    """b (key k2) and c (key k3) were queued behind a: b is handed the group, c stays queued."""
    db.rpush(ks.pending(GROUP), record("b", "k2", 1), record("c", "k3", 2))
    db.hset(ks.inflight(GROUP), mapping={"k2": "b", "k3": "c"})

    assert finish(scripts, ks) == ["done", record("b", "k2", 1), waiter("w1", KEY), waiter("w2", KEY)]

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": NEXT, "task_id": "b", "key": "k2", "state": "queued",
        "request": record("b", "k2", 1),
    }
    assert db.lrange(ks.pending(GROUP), 0, -1) == [record("c", "k3", 2)]
    assert db.hgetall(ks.inflight(GROUP)) == {"k2": "b", "k3": "c"}
    assert db.zrange(ks.leases(), 0, -1, withscores=True) == [("other", 2000.0), (GROUP, float(NEXT_DEADLINE))]
    assert not db.exists(ks.waiters(GROUP, KEY))


def test_keep_releases_the_key_but_not_the_group(db, ks, scripts, running):
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    owner = db.hgetall(ks.owner(GROUP))

    assert finish(scripts, ks, keep="keep") == ["done", "", waiter("w1", KEY), waiter("w2", KEY)]

    assert db.hgetall(ks.owner(GROUP)) == owner
    assert db.lrange(ks.pending(GROUP), 0, -1) == [record("b", "k2")]
    assert db.zscore(ks.leases(), GROUP) == 1000
    assert not db.exists(ks.inflight(GROUP), ks.waiters(GROUP, KEY))
    assert db.hgetall(ks.metrics()) == {"executions": "1"}


@pytest.mark.parametrize("count", ["", "0", "yes"])
def test_an_execution_is_counted_only_with_1(db, ks, scripts, running, count):
    assert finish(scripts, ks, count=count)[0] == "done"

    assert not db.exists(ks.metrics())


def test_executions_add_up(db, ks, scripts, running):
    db.hset(ks.metrics(), mapping={"executions": "41", "coalesced": "3"})

    finish(scripts, ks)

    assert db.hgetall(ks.metrics()) == {"executions": "42", "coalesced": "3"}


def test_an_inflight_entry_of_another_request_stays(db, ks, scripts, running):
    """The key's entry names z (registered after a's ran): it is not a's to remove."""
    db.hset(ks.inflight(GROUP), mapping={KEY: "z"})

    finish(scripts, ks)

    assert db.hgetall(ks.inflight(GROUP)) == {KEY: "z"}


def test_no_waiters(db, ks, scripts, running):
    db.delete(ks.waiters(GROUP, KEY))

    assert finish(scripts, ks) == ["done", ""]


def test_a_stale_token_changes_nothing(db, ks, scripts, state, running):
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    before = state()

    assert finish(scripts, ks, token="tok-old") == ["stale"]

    assert state() == before


def test_a_second_finish_of_the_same_token_is_stale(db, ks, scripts, state, running):
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    assert finish(scripts, ks)[1] == record("b", "k2")
    after_first = state()

    assert finish(scripts, ks) == ["stale"]

    assert state() == after_first
