"""place.lua: give a group to a persistent worker (free group, takeover, hand-off)."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock

GROUP = "g"
HOST = "w1"
TOKEN = "host-tok"
LEASE = 90_000
COMMAND = "place:g"


def place(scripts, ks, expect="", host=HOST, token=TOKEN):
    keys = [ks.owner(GROUP), ks.leases(), ks.hosts(), ks.inbox(host), ks.pending(GROUP), ks.hosted_ids(GROUP),
            ks.hosted_records(GROUP), ks.worker(host)]
    args = [GROUP, token, host, "q1", "ref-1", "1", "30", LEASE, expect, "dev", "123", "stop", COMMAND]
    return scripts["place"](keys=keys, args=args)


# The owner hash place writes, but for "last" (the server's now; see ``owner``).
PLACED = {
    "mode": "hosted", "token": TOKEN, "host": HOST, "queue": "q1", "ref": "ref-1", "static": "1", "timeout": "30",
    "state": "placing", "device": "dev", "bytes": "123", "errors": "stop",
}


def owner(db, ks, now):
    """The owner hash without "last", once "last" is checked to be the server's time of the call."""
    fields = db.hgetall(ks.owner(GROUP))
    assert fields.pop("last") in now
    return fields


def assert_placed_at(db, ks, now):
    """The lease runs until the server's now + LEASE; the hosts ZSET scores the group with that now."""
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    assert db.zscore(ks.hosts(), GROUP) in now


def leader(db, ks, token="tok-1", **fields):
    db.hset(ks.owner(GROUP), mapping={
        "mode": "leader", "token": token, "task_id": "a", "key": "k", "state": "running",
        "request": record("a", "k"), **fields,
    })
    db.zadd(ks.leases(), {GROUP: 1000})


def test_a_free_group_is_placed(db, ks, scripts):
    with server_clock(db) as now:
        assert place(scripts, ks) == ["placed"]

    assert owner(db, ks, now) == PLACED
    assert db.zrange(ks.leases(), 0, -1) == [GROUP]
    assert db.zrange(ks.hosts(), 0, -1) == [GROUP]
    assert_placed_at(db, ks, now)
    assert db.lrange(ks.inbox(HOST), 0, -1) == [COMMAND]
    assert db.hgetall(ks.worker(HOST)) == {"groups": "1"}
    assert not db.exists(ks.hosted_ids(GROUP), ks.hosted_records(GROUP), ks.pending(GROUP))


def test_the_command_goes_after_earlier_ones_and_the_load_adds_up(db, ks, scripts):
    db.rpush(ks.inbox(HOST), "stop:other")
    db.hset(ks.worker(HOST), mapping={"groups": "4", "limit": "10"})

    assert place(scripts, ks) == ["placed"]

    assert db.lrange(ks.inbox(HOST), 0, -1) == ["stop:other", COMMAND]
    assert db.hgetall(ks.worker(HOST)) == {"groups": "5", "limit": "10"}


def test_a_group_hosted_already_exists(db, ks, scripts, state):
    db.hset(ks.owner(GROUP), mapping={**PLACED, "host": "w2", "queue": "q2", "token": "other-tok", "last": "100"})
    before = state()

    assert place(scripts, ks) == ["exists", "w2", "q2"]

    assert state() == before


@pytest.mark.parametrize("mode", ["leader", "moved"])
def test_a_group_owned_otherwise_is_busy_executing(db, ks, scripts, state, mode):
    leader(db, ks, mode=mode)
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    before = state()

    assert place(scripts, ks) == ["busy", "executing"]

    assert state() == before


def test_an_expected_token_that_changed_is_busy_changed(db, ks, scripts, state):
    leader(db, ks, token="tok-2")
    db.rpush(ks.pending(GROUP), record("b", "k2"))
    before = state()

    assert place(scripts, ks, expect="tok-1") == ["busy", "changed"]

    assert state() == before


def test_an_expected_token_on_a_free_group_is_busy_changed(ks, scripts, state):
    """The owner the caller saw has gone meanwhile."""
    assert place(scripts, ks, expect="tok-1") == ["busy", "changed"]

    assert state() == {}


def test_a_takeover_makes_the_queued_requests_the_workers(db, ks, scripts):
    """A leader kept the group (finish "keep"); b and c queued behind it become hosted requests, in order."""
    leader(db, ks, target="old", stop="1", running="a")
    db.rpush(ks.pending(GROUP), record("b", "k2", 1), record("c", "k3", 2))
    db.hset(ks.inflight(GROUP), mapping={"k2": "b", "k3": "c"})

    with server_clock(db) as now:
        assert place(scripts, ks, expect="tok-1") == ["placed"]

    assert owner(db, ks, now) == {**PLACED, "seq": "2"}
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1, withscores=True) == [("b", 1.0), ("c", 2.0)]
    assert db.hgetall(ks.hosted_records(GROUP)) == {"b": record("b", "k2", 1), "c": record("c", "k3", 2)}
    assert not db.exists(ks.pending(GROUP))
    assert db.hgetall(ks.inflight(GROUP)) == {"k2": "b", "k3": "c"}
    assert_placed_at(db, ks, now)
    assert db.lrange(ks.inbox(HOST), 0, -1) == [COMMAND]


def test_a_hand_off_keeps_the_accepted_requests_and_counts_on(db, ks, scripts):
    """Moving a hosted group from w0 (token old-tok): 'running' is cleared, executions stay, seq goes on."""
    db.hset(ks.owner(GROUP), mapping={**PLACED, "token": "old-tok", "host": "w0", "state": "orphaned", "last": "100",
                                          "running": "a", "executions": "7", "seq": "3"})
    db.zadd(ks.leases(), {GROUP: 5})
    db.zadd(ks.hosts(), {GROUP: 100})
    db.zadd(ks.hosted_ids(GROUP), {"a": 3})
    db.hset(ks.hosted_records(GROUP), "a", record("a", "k"))
    db.rpush(ks.pending(GROUP), record("d", "k4"))

    with server_clock(db) as now:
        assert place(scripts, ks, expect="old-tok") == ["placed"]

    assert owner(db, ks, now) == {**PLACED, "executions": "7", "seq": "4"}
    assert_placed_at(db, ks, now)
    assert db.zrange(ks.hosted_ids(GROUP), 0, -1, withscores=True) == [("a", 3.0), ("d", 4.0)]
    assert db.hgetall(ks.hosted_records(GROUP)) == {"a": record("a", "k"), "d": record("d", "k4")}
    assert db.lrange(ks.inbox(HOST), 0, -1) == [COMMAND]
    assert not db.exists(ks.inbox("w0"), ks.worker("w0"))


def test_placing_twice_the_second_exists(db, ks, scripts, state):
    assert place(scripts, ks) == ["placed"]
    before = state()

    assert place(scripts, ks, host="w2", token="tok-x") == ["exists", HOST, "q1"]

    assert state() == before
