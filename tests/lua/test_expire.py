"""expire.lua: the reaper takes a group whose lease ran out away from its owner."""

from __future__ import annotations

import pytest

from tests.lua.support import record

GROUP = "g"
TOKEN = "tok-1"
NEW = "tok-2"
NOW = 10_000
DEADLINE = 40_000


def expire(scripts, ks, token, now=NOW):
    return scripts["expire"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, token, now, NEW, DEADLINE])


def own(db, ks, lease=NOW - 1, **fields):
    db.hset(ks.owner(GROUP), mapping={"token": TOKEN, **fields})
    if lease is not None:
        db.zadd(ks.leases(), {GROUP: lease})
    db.zadd(ks.leases(), {"other": NOW - 5})


def leader(db, ks, state, lease=NOW - 1):
    own(db, ks, lease, mode="leader", task_id="a", key="k", state=state, request=record("a", "k"))


def test_a_leader_that_never_started_is_requeued_under_the_new_token(db, ks, scripts):
    leader(db, ks, "queued")

    assert expire(scripts, ks, TOKEN) == ["requeue", record("a", "k")]

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": NEW, "task_id": "a", "key": "k", "state": "queued", "request": record("a", "k"),
    }
    assert db.zrange(ks.leases(), 0, -1, withscores=True) == [("other", NOW - 5.0), (GROUP, float(DEADLINE))]


def test_a_leader_that_died_while_running_is_dead(db, ks, scripts):
    leader(db, ks, "running")

    assert expire(scripts, ks, TOKEN) == ["dead", record("a", "k")]

    owner = db.hgetall(ks.owner(GROUP))
    assert (owner["token"], owner["state"], owner["task_id"]) == (NEW, "dead", "a")
    assert db.zscore(ks.leases(), GROUP) == DEADLINE


def test_a_lease_at_exactly_now_has_run_out(db, ks, scripts):
    leader(db, ks, "running", lease=NOW)

    assert expire(scripts, ks, TOKEN)[0] == "dead"


def test_an_owner_without_lease_is_taken(db, ks, scripts):
    leader(db, ks, "running", lease=None)

    assert expire(scripts, ks, TOKEN)[0] == "dead"
    assert db.zscore(ks.leases(), GROUP) == DEADLINE


@pytest.mark.parametrize("mode", ["hosted", "moved"])
def test_a_dead_persistent_worker_orphans_its_group(db, ks, scripts, mode):
    own(db, ks, mode=mode, host="w1", queue="q1", state="active", target="g2")

    assert expire(scripts, ks, TOKEN) == ["orphan", "w1", mode]

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": mode, "token": NEW, "host": "w1", "queue": "q1", "state": "orphaned", "target": "g2",
    }
    assert db.zscore(ks.leases(), GROUP) == DEADLINE


def test_a_lease_renewed_meanwhile_is_alive(db, ks, scripts, state):
    leader(db, ks, "running", lease=NOW + 1)
    before = state()

    assert expire(scripts, ks, TOKEN) == ["alive"]

    assert state() == before


def test_an_owner_changed_meanwhile_is_gone(db, ks, scripts, state):
    """The reaper saw tok-old; the group has been handed on since."""
    leader(db, ks, "running")
    before = state()

    assert expire(scripts, ks, "tok-old") == ["gone"]

    assert state() == before


def test_the_second_of_two_reapers_finds_it_gone(db, ks, scripts, state):
    leader(db, ks, "running")
    assert expire(scripts, ks, TOKEN)[0] == "dead"
    after_first = state()

    assert expire(scripts, ks, TOKEN, now=DEADLINE + 1) == ["gone"]

    assert state() == after_first


def test_a_lease_without_owner_hash_is_removed(db, ks, scripts):
    """What ``expired()`` reports with an empty token when the owner hash is gone."""
    db.zadd(ks.leases(), {GROUP: NOW - 1, "other": NOW - 5})

    assert expire(scripts, ks, "") == ["gone"]

    assert db.zrange(ks.leases(), 0, -1, withscores=True) == [("other", NOW - 5.0)]
    assert not db.exists(ks.owner(GROUP))
