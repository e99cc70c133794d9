"""reserve.lua: a worker received a group's leader; from now on its lease is short (renewed by that worker)."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock, server_ms

GROUP = "g"
TOKEN = "tok-1"
LEASE = 5_000


def reserve(scripts, ks, token=TOKEN, lease=LEASE):
    return scripts["reserve"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, token, lease])


def leader(db, ks, state, deadline):
    db.hset(ks.owner(GROUP), mapping={
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": "k", "state": state, "request": record("a", "k"),
    })
    db.zadd(ks.leases(), {GROUP: deadline, "other": 99})


@pytest.mark.parametrize("current", ["queued", "published", "reserved"])
def test_a_leader_not_running_yet_is_reserved_with_a_short_lease(db, ks, scripts, current):
    """Published: it could wait a queue TTL; once a worker holds it, that worker's death shows within one lease."""
    leader(db, ks, current, deadline=server_ms(db) + 600_000)

    with server_clock(db) as now:
        assert reserve(scripts, ks) == 1

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": "k", "state": "reserved",
        "request": record("a", "k"),
    }
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
    assert db.zscore(ks.leases(), "other") == 99


@pytest.mark.parametrize("current", ["running", "dead"])
def test_a_running_or_dead_leader_is_not_reserved(db, ks, scripts, state, current):
    """A redelivered copy reaches a worker while the first runs (or was declared dead): nothing changes."""
    leader(db, ks, current, deadline=1_000)
    before = state()

    assert reserve(scripts, ks) == 0

    assert state() == before


def test_a_stale_token_changes_nothing(db, ks, scripts, state):
    leader(db, ks, "published", deadline=1_000)
    before = state()

    assert reserve(scripts, ks, token="tok-old") == 0

    assert state() == before


def test_a_group_without_owner_gets_nothing(ks, scripts, state):
    assert reserve(scripts, ks) == 0

    assert state() == {}


def test_a_reserved_leader_is_claimed_next(db, ks, scripts):
    leader(db, ks, "published", deadline=1_000)
    assert reserve(scripts, ks) == 1

    assert scripts["claim"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, TOKEN, LEASE]) == 1

    assert db.hget(ks.owner(GROUP), "state") == "running"
    assert reserve(scripts, ks) == 0  # another copy received meanwhile: it keeps running
    assert db.hget(ks.owner(GROUP), "state") == "running"
