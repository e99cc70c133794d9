"""claim.lua: a worker starts the group's leader; a second copy of the message never runs."""

from __future__ import annotations

import pytest

from tests.lua.support import record, server_clock

GROUP = "g"
TOKEN = "tok-1"
LEASE = 5000


@pytest.fixture
def leader(db, ks):
    """A leader registered by submit and not started yet (state queued), with a lease."""
    db.hset(ks.owner(GROUP), mapping={
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": "k", "state": "queued",
        "request": record("a", "k"),
    })
    db.zadd(ks.leases(), {GROUP: 1000})


def claim(scripts, ks, token, lease=LEASE):
    return scripts["claim"](keys=[ks.owner(GROUP), ks.leases()], args=[GROUP, token, lease])


def test_the_owner_claims_a_queued_leader(db, ks, scripts, leader):
    with server_clock(db) as now:
        assert claim(scripts, ks, TOKEN) == 1

    assert db.hgetall(ks.owner(GROUP)) == {
        "mode": "leader", "token": TOKEN, "task_id": "a", "key": "k", "state": "running",
        "request": record("a", "k"),
    }
    assert db.zrange(ks.leases(), 0, -1) == [GROUP]
    assert db.zscore(ks.leases(), GROUP) in now + LEASE


def test_a_second_claim_of_the_same_token_returns_0(db, ks, scripts, state, leader):
    assert claim(scripts, ks, TOKEN) == 1
    deadline = db.zscore(ks.leases(), GROUP)
    before = state()

    assert claim(scripts, ks, TOKEN, lease=9000) == 0

    assert state() == before
    assert db.zscore(ks.leases(), GROUP) == deadline


def test_a_stale_token_changes_nothing(ks, scripts, state, leader):
    before = state()

    assert claim(scripts, ks, "tok-old") == 0

    assert state() == before


def test_a_group_without_owner_is_not_claimed(ks, scripts, state):
    assert claim(scripts, ks, TOKEN) == 0

    assert state() == {}


def test_the_new_token_of_a_dead_leader_claims_it(db, ks, scripts, leader):
    """After expire marked a running leader "dead" under a new token, that token may run it again."""
    db.hset(ks.owner(GROUP), mapping={"token": "tok-2", "state": "dead"})

    assert claim(scripts, ks, TOKEN) == 0
    with server_clock(db) as now:
        assert claim(scripts, ks, "tok-2") == 1
    assert db.hget(ks.owner(GROUP), "state") == "running"
    assert db.zscore(ks.leases(), GROUP) in now + LEASE
