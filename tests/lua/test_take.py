"""take.lua: remove a group's waiting requests to send them elsewhere; the running one stays."""

from __future__ import annotations

from tests.lua.support import record

GROUP = "g"


def take(scripts, ks):
    keys = [ks.hosted_ids(GROUP), ks.hosted_records(GROUP), ks.pending(GROUP), ks.inflight(GROUP), ks.owner(GROUP)]
    return scripts["take"](keys=keys, args=[])


def hosted(db, ks, running=None):
    """a, b, c accepted (in that order), d queued; each the inflight request of its key."""
    owner = {"mode": "hosted", "token": "host-tok"}
    if running:
        owner["running"] = running
    db.hset(ks.owner(GROUP), mapping=owner)
    db.zadd(ks.hosted_ids(GROUP), {"b": 2, "a": 1, "c": 3})
    db.hset(ks.hosted_records(GROUP), mapping={"a": record("a", "ka"), "b": record("b", "kb"),
                                                  "c": record("c", "kc")})
    db.rpush(ks.pending(GROUP), record("d", "kd"))
    db.hset(ks.inflight(GROUP), mapping={"ka": "a", "kb": "b", "kc": "c", "kd": "d"})


def test_the_running_request_stays(db, ks, scripts):
    hosted(db, ks, running="a")

    assert take(scripts, ks) == [record("b", "kb"), record("c", "kc"), record("d", "kd")]

    assert db.zrange(ks.hosted_ids(GROUP), 0, -1, withscores=True) == [("a", 1.0)]
    assert db.hgetall(ks.hosted_records(GROUP)) == {"a": record("a", "ka")}
    assert not db.exists(ks.pending(GROUP))
    assert db.hgetall(ks.inflight(GROUP)) == {"ka": "a"}
    assert db.hgetall(ks.owner(GROUP)) == {"mode": "hosted", "token": "host-tok", "running": "a"}


def test_everything_is_taken_when_nothing_runs(db, ks, scripts):
    hosted(db, ks)

    assert take(scripts, ks) == [record("a", "ka"), record("b", "kb"), record("c", "kc"), record("d", "kd")]

    assert not db.exists(ks.hosted_ids(GROUP), ks.hosted_records(GROUP), ks.pending(GROUP), ks.inflight(GROUP))


def test_an_id_without_record_is_dropped(db, ks, scripts):
    hosted(db, ks)
    db.hdel(ks.hosted_records(GROUP), "b")

    assert take(scripts, ks) == [record("a", "ka"), record("c", "kc"), record("d", "kd")]

    assert not db.exists(ks.hosted_ids(GROUP))
    # b's inflight entry is left: nothing named its key.
    assert db.hgetall(ks.inflight(GROUP)) == {"kb": "b"}


def test_inflight_entries_of_other_requests_stay(db, ks, scripts):
    hosted(db, ks)
    db.hset(ks.inflight(GROUP), mapping={"kc": "z", "other": "y"})

    take(scripts, ks)

    assert db.hgetall(ks.inflight(GROUP)) == {"kc": "z", "other": "y"}


def test_a_leader_group_gives_up_its_queue_only(db, ks, scripts):
    db.hset(ks.owner(GROUP), mapping={"mode": "leader", "token": "tok-1", "task_id": "a", "key": "ka"})
    db.rpush(ks.pending(GROUP), record("b", "kb"), record("c", "kc"))
    db.hset(ks.inflight(GROUP), mapping={"ka": "a", "kb": "b", "kc": "c"})

    assert take(scripts, ks) == [record("b", "kb"), record("c", "kc")]

    assert db.hgetall(ks.inflight(GROUP)) == {"ka": "a"}
    assert db.hget(ks.owner(GROUP), "task_id") == "a"


def test_waiters_are_not_taken(db, ks, scripts):
    """Current behaviour: waiters coalesced onto a taken request stay in the old group's list."""
    hosted(db, ks, running="a")
    db.rpush(ks.waiters(GROUP, "kb"), record("w", "kb"))

    take(scripts, ks)

    assert db.lrange(ks.waiters(GROUP, "kb"), 0, -1) == [record("w", "kb")]


def test_nothing_to_take(ks, scripts, state):
    assert take(scripts, ks) == []

    assert state() == {}
